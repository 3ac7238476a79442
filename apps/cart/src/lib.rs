//! The cart & checkout fragment (first cut: the signed-in user's cart lines).
//!
//! A Leptos app that owns `/cart`: its page, server functions (`/cart/api/*`, including the typed
//! `add_item` that the catalog calls from the browser), the JSON summary behind the shell's cart badge
//! (`/cart/api/summary`), a mini-cart widget for the home page (`/cart/widget`) and its bundle.
//!
//! Layout: `lines` holds the domain (types, server functions, queries, components); `server` (feature
//! `ssr`) the router, migrations and demo seed. Every query is scoped by the verified user id, so one user
//! can never read or change another's lines. Inputs are parsed into `Sku` and `Quantity` first.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "256"]

pub mod lines;
#[cfg(feature = "ssr")]
pub mod server;

use leptos::prelude::*;

/// Fragment name.
pub const NAME: &str = "cart";
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/cart";

/// The whole page body: the empty chrome slot the shell fills, then the cart.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-cart">
            <lines::CartPage/>
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
