//! The inventory service and its admin fragment (first cut: stock levels per SKU).
//!
//! A Leptos app that owns `/admin/inventory`: its page, server functions (`/admin/inventory/api/*`), a
//! low-stock widget for the home page and its bundle. Only the inventory-admin role sees anything: the
//! page handler checks the role before rendering (401 page for visitors, 403 page for other users), and
//! every server function checks it again, since a fragment trusts no gateway.
//!
//! Layout: `stock` holds the domain (types, server functions, queries, components); `server` (feature
//! `ssr`) the router, migrations and demo seed. The schema refuses negative stock (`CHECK on_hand >= 0`);
//! the adjust query checks too so the user gets a 409 that says how much is on hand.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "256"]

pub mod stock;
#[cfg(feature = "ssr")]
pub mod server;

use leptos::prelude::*;

/// Fragment name.
pub const NAME: &str = "inventory";
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/admin/inventory";

/// The whole page body: the empty chrome slot the shell fills, then the stock table.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-inventory">
            <stock::StockPage/>
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
