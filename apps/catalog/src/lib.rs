//! The catalog fragment: what shoppers browse.
//!
//! A Leptos app that owns `/catalog`: its page (`/catalog`), server functions (`/catalog/api/*`), widget
//! for the shell's home page (`/catalog/widget`) and bundle (`/catalog/pkg/*`). It keeps products in its
//! own database and never reads another service's tables.
//!
//! Layout: `model` (listing filters, cards, product pages, editor input and their checks), `products`
//! (server functions and the queries behind them), `pages` (components), and with feature `ssr` `server`
//! (router, page handlers that answer 404/400 and set the `<head>`, generated images, demo seed, widget)
//! and `availability` (the projection of inventory's `stock_changed` events).
//!
//! Key decisions. Every listing state (search, category, brand, price, attribute, stock, sort, page) is in
//! the URL, so it is shareable and works without JavaScript; after hydration `leptos_router` turns links
//! and the GET form into client-side navigations and restores filters on back/forward. A link out of the
//! catalog (chrome, other fragments) ends in the router's fallback, which loads that page for real. (The
//! router's `base` option would spare that, but its GET form then prefixes the base twice.) Search is SQLite FTS5 (bm25, weighted name > brand >
//! description) on the embedded default and a weighted `tsvector` with a GIN index on PostgreSQL; user
//! text is reduced to letters and digits before it reaches either, so no input is query syntax.
//! Availability comes only from the local projection, never from a call to inventory. Product pages get
//! their title, description, canonical link and schema.org JSON-LD from the server handler, which looks
//! the product up first (so an unknown product is a real 404 page). Editing is for catalog editors and
//! announces `catalog.product_changed` through the outbox.
//!
//! "Add to cart" calls the cart fragment's typed HTTP API (`tessera_contracts::cart`) with `gloo-net` and
//! announces the new count with a `tessera:cart-updated` DOM event that the shell's badge listens to.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "512"]

#[cfg(feature = "ssr")]
pub mod availability;
pub mod model;
pub mod pages;
pub mod products;
#[cfg(feature = "ssr")]
pub mod server;

use leptos::prelude::*;

/// Fragment name.
pub const NAME: &str = "catalog";
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/catalog";

/// The whole page body: the empty chrome slot the shell fills, then the page the route selects.
#[component]
pub fn App() -> impl IntoView {
    use leptos_router::components::{Route, Router, Routes};
    use leptos_router::path;
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-catalog">
            <Router>
                <Routes fallback=pages::ElsewhereOnTheSite>
                    <Route path=path!("/catalog") view=pages::ListingPage/>
                    <Route path=path!("/catalog/") view=pages::ListingPage/>
                    <Route path=path!("/catalog/c/:slug") view=pages::ListingPage/>
                    <Route path=path!("/catalog/p/:id") view=pages::ProductPage/>
                    <Route path=path!("/catalog/p/:id/edit") view=pages::EditorPage/>
                    <Route path=path!("/catalog/new") view=pages::EditorPage/>
                </Routes>
            </Router>
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
