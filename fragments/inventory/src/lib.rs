//! The inventory service and its admin fragment: stock, reservations, ledger, invariants.
//!
//! A Leptos app that owns `/admin/inventory`. Per SKU and location it keeps on-hand, soft-reserved,
//! hard-reserved, unavailable, safety stock and incoming; available is on-hand minus unexpired soft
//! reservations, hard reservations, unavailable units and safety stock (never below zero). Every change
//! is a typed, append-only ledger movement (Broadleaf's SOFT_RESERVED … SHRINKAGE, plus EXPIRED and
//! ADJUSTMENT) linked to its cause, and is announced through the outbox as `inventory.stock_changed`.
//!
//! Layout (the same names in every fragment):
//! - `model`, `server_fns`, `pages` (both builds): page data, the admin server functions, the components
//!   (server-rendered; of `pages` only the `#[island]`s — the buttons and forms that change stock — reach
//!   the browser bundle).
//! - `ledger`, `movements`, `reservations`, `store`, `verify`, `service`, `server` (feature `ssr`, the
//!   default): the guarded counter updates and ledger (which own the stock tables); staff movements; the
//!   reservation lifecycle (soft with TTL and idempotency key → hard on `cart.order_paid` → fulfilled;
//!   released, expired, cancelled) with lazy expiry and a sweeper (which owns the reservation tables); the
//!   admin pages' reads; the invariant checker behind `tessera inventory verify`; the signed service API
//!   for the cart and the event inbox; the router with its role gate, migrations and demo seed.
//!
//! Key decisions. The rules live in the database as well as in code: CHECK constraints keep every counter
//! at or above zero and reservations plus holds within on-hand, triggers make the ledger append-only and
//! the reservation lifecycle one-way, and every change is one guarded `UPDATE … RETURNING`, so concurrent
//! buyers of the last units serialise on the row and never oversell (SQLite and PostgreSQL alike). A
//! transaction that changes several stock rows — a cart's hold replacing another, a batch of order
//! events — locks them in SKU order first (`ledger::lock_in_order`), so on PostgreSQL two of them queue
//! instead of deadlocking (each deadlock cost a second and a retry, enough to time a shopper out).
//! Operations take the clock as an argument, so tests drive expiry. Reservations are open to signed
//! service calls only; staff pages and server functions to the inventory-admin role only (401/403 pages
//! for others). Shrinkage and count corrections cannot take reserved units: staff cancel reservations
//! first, so a paid order is never silently short. Safety stock is a sales buffer: when shrinkage eats into
//! it, available is zero, not negative. `ring` fingerprints idempotent requests (already in the tree for
//! HMAC); `serde_qs` reads page addresses (already in the tree through `server_fn`).

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "512"]

pub mod model;
pub mod pages;
pub mod server_fns;

#[cfg(feature = "ssr")]
pub mod ledger;
#[cfg(feature = "ssr")]
pub mod movements;
#[cfg(feature = "ssr")]
pub mod reservations;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod verify;

#[cfg(feature = "ssr")]
use leptos::prelude::*;

/// Fragment name.
pub const NAME: tessera_contracts::domain::ServiceName = tessera_contracts::domain::ServiceName::INVENTORY;
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/admin/inventory";

/// The page's path and query string, from the request being rendered.
#[cfg(feature = "ssr")]
fn current_address() -> (String, String) {
    use_context::<http::request::Parts>().map(|parts| (parts.uri.path().to_owned(), parts.uri.query().unwrap_or_default().to_owned())).unwrap_or_default()
}

#[cfg(feature = "ssr")]
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    filter: String,
    page: i64,
}

/// The whole page body: the empty chrome slot the shell fills, then the page the address asks for.
/// Server-only (islands mode): only the `#[island]`s inside are hydrated.
#[cfg(feature = "ssr")]
#[component]
pub fn App() -> impl IntoView {
    let (path, query) = current_address();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default().trim_end_matches('/');
    let page = if let Some(sku) = rest.strip_prefix("/sku/") {
        view! { <pages::SkuPage sku=sku.to_owned()/> }.into_any()
    } else if rest == "/reservations" {
        let ListQuery { filter, page } = serde_qs::from_str(&query).unwrap_or_default();
        view! { <pages::ReservationsPage filter=filter page=page/> }.into_any()
    } else {
        let query: model::StockQuery = serde_qs::from_str(&query).unwrap_or_default();
        view! { <pages::StockList query=query/> }.into_any()
    };
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-inventory">{page}</main>
    }
}

/// Browser entry point: the islands' shared root (the page runtime then hydrates each island).
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
