//! The catalog fragment: what shoppers browse.
//!
//! A Leptos app that owns `/catalog`: its page (`/catalog`), server functions (`/catalog/api/*`), widget
//! for the shell's home page (`/catalog/widget`) and bundle (`/catalog/pkg/*`). It keeps products in its
//! own database and never reads another service's tables.
//!
//! Layout: `products` holds the domain (types, server functions, queries, components); `server` (feature
//! `ssr`) holds the axum router, migrations and demo seed. The `hydrate` feature builds the browser side,
//! whose [`hydrate`] export the page's module script calls.
//!
//! Interactivity after hydration: a live filter over the product list, and "Add to cart", which calls the
//! cart fragment's typed HTTP API (`tessera_contracts::cart`) with `gloo-net` and announces the new count
//! with a `tessera:cart-updated` DOM event that the shell's badge listens to. No memory is shared with cart.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "256"]

#[cfg(feature = "ssr")]
pub mod availability;
pub mod products;
#[cfg(feature = "ssr")]
pub mod server;

use leptos::prelude::*;

/// Fragment name.
pub const NAME: &str = "catalog";
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/catalog";

/// The whole page body: the empty chrome slot the shell fills, then the catalog.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-catalog">
            <products::ProductsPage/>
        </main>
    }
}

/// Browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
