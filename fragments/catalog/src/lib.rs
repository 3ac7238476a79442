//! The catalog fragment: what shoppers browse.
//!
//! A Leptos app that owns `/catalog`: its page (`/catalog`), server functions (`/catalog/api/*`), widget
//! for the shell's home page (`/catalog/widget`) and bundle (`/catalog/pkg/*`). It keeps products in its
//! own database and never reads another service's tables.
//!
//! Layout (the same names in every fragment): `model` (listing filters, cards, product pages, editor input
//! and their checks), `server_fns` (the server functions) and `pages` (components) compile for both
//! sides; with feature `ssr` (the default) come `store` (the catalog's SQL: products, variants,
//! categories, search), `availability` (the projection of inventory's `stock_changed` events) and
//! `server` (router, page handlers that answer 404/400 and set the `<head>`, generated images, demo seed,
//! widget).
//!
//! Key decisions. Every listing state (search, category, brand, price, attribute, stock, sort, page) is in
//! the URL, so it is shareable and works without JavaScript. Pages are server-rendered in Leptos's
//! islands mode: the handler looks up what the page shows ([`Page`]) and renders it as plain HTML, and
//! only the interactive parts — "Add to cart", the product page's variant picker, the editor's form —
//! are `#[island]`s compiled into the browser bundle (which is why the bundle carries no router, no
//! listing views and no query code). The page runtime (`tessera_fragment`, `islands.js`) turns links and the
//! GET form under `/catalog` into in-page navigations (fetch the page, swap `<main>`, hydrate its islands)
//! and restores filters on back/forward; links out of the catalog load for real. Search is SQLite FTS5 (bm25, weighted name > brand >
//! description) on the embedded default and a weighted `tsvector` with a GIN index on PostgreSQL; user
//! text is reduced to letters and digits before it reaches either, so no input is query syntax.
//! Availability comes only from the local projection, never from a call to inventory. Product pages get
//! their title, description, canonical link and schema.org JSON-LD from the server handler, which looks
//! the product up first (so an unknown product is a real 404 page). Editing is for catalog editors and
//! announces `catalog.product_changed` through the outbox.
//!
//! "Add to cart" calls the cart fragment's typed HTTP API (`tessera_contracts::cart::AddItem`: its
//! arguments, path and answer) through `tessera_contracts::page::call` and announces the new count with a
//! `tessera:cart-updated` DOM event that the shell's badge listens to.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "512"]

#[cfg(feature = "ssr")]
pub mod availability;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
pub mod server_fns;
#[cfg(feature = "ssr")]
pub mod store;

use leptos::prelude::*;

/// Fragment name.
pub const NAME: tessera_contracts::domain::ServiceName = tessera_contracts::domain::ServiceName::CATALOG;
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/catalog";

/// What a catalog address shows, looked up by the server handler before rendering (so an unknown
/// product or category is a real 404 and the `<head>` fits the page).
#[derive(Debug, Clone)]
pub enum Page {
    /// `/catalog` and `/catalog/c/<slug>`: the listing for these filters.
    Listing(Box<ListingPage>),
    /// `/catalog/p/<id>`.
    Product(model::Detail),
    /// `/catalog/new` (`None`) and `/catalog/p/<id>/edit`.
    Editor(Option<model::Detail>),
}

/// A listing page's data: its filters, one page of results, and who is looking.
#[derive(Debug, Clone)]
pub struct ListingPage {
    pub query: model::ListingQuery,
    pub listing: model::Listing,
    pub user: Option<shared_auth::SessionUser>,
}

/// The whole page body: the empty chrome slot the shell fills, then the page. Server-only (islands
/// mode): only the `#[island]`s inside are hydrated.
#[component]
pub fn App(page: Page) -> impl IntoView {
    let page = match page {
        Page::Listing(data) => {
            let ListingPage { query, listing, user } = *data;
            view! { <pages::ListingPage query=query listing=listing user=user/> }.into_any()
        }
        Page::Product(detail) => view! { <pages::ProductPage detail=detail/> }.into_any(),
        Page::Editor(existing) => view! { <pages::EditorPage existing=existing/> }.into_any(),
    };
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-catalog">{page}</main>
    }
}

/// Browser entry point: the islands' shared root (the page runtime then hydrates each island).
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
