//! The cart & checkout fragment: carts that hold stock for signed-in shoppers, orders, and payment through a provider's
//! signed callback.
//!
//! A Leptos app that owns `/cart`: the cart (`/cart`), checkout (`/cart/checkout`), order history and
//! detail (`/cart/orders`, `/cart/orders/<id>`), their server functions (`/cart/api/*`, including the
//! typed `add_item` the catalog calls from the browser), the badge summary (`/cart/api/summary`), the
//! mini-cart widget (`/cart/widget`), the payment webhook (`/cart/payments/webhook`) and the event inbox
//! (`/cart/events`).
//!
//! Layout: `model`, `server_fns` (the server functions) and `pages` compile for both sides (of `pages`, only the
//! `#[island]`s — the cart's lines, the checkout form, the order page's cancel button and its watcher —
//! reach the browser; the pages around them are server-rendered HTML); the rest is the server half:
//! - `store` owns the tables `carts` and `cart_items` and the projections `prices` and `stock`, and
//!   `orders` owns `orders`, `order_items`, `order_timeline` and `payment_events`: every statement on a
//!   table is in its owner, and the other modules call it;
//! - `carts` (guest carts, merging at sign-in, add/change/remove), `holds` (soft reservations in
//!   inventory, one per line of a signed-in shopper; guests hold nothing), `orders` (placing — a saga of
//!   its steps' own functions —, the webhook's effects, inventory's order events, refunds), `payments`
//!   (the provider trait and the sandbox behind it) and `server` (router, migrations, seed, background
//!   pass);
//! - `error`: [`error::CartError`], the one error of every operation, turned into the wire's `ApiError`
//!   only at the edges (`server_fns`, the webhook).
//!
//! Every state is a type that is the only way to write or read it: a cart's [`store::CartStatus`], an
//! order's [`model::OrderStatus`], a line's [`model::HoldState`] (`tessera_fragment::text_column!` stores
//! each as its text, and a text no variant knows fails to decode).
//!
//! Key decisions: the cart never reads another service's tables; prices come from its projection of
//! `catalog.product_changed`, guests' lines are checked against its projection of
//! `inventory.stock_changed`, a signed-in shopper's stock is held by signed calls to inventory while the shopper waits, and
//! order outcomes travel as events through the outbox. An order is paid only when the provider's signed
//! webhook says so. Every query is scoped by the verified user or the guest cookie's cart, so nobody
//! reaches another shopper's cart or order.

// Leptos view types nest deeply; the default limit is too low for the hydrate build.
#![recursion_limit = "512"]

#[cfg(feature = "ssr")]
pub mod carts;
#[cfg(feature = "ssr")]
pub mod error;
#[cfg(feature = "ssr")]
pub mod holds;
pub mod model;
#[cfg(feature = "ssr")]
pub mod orders;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod payments;
#[cfg(feature = "ssr")]
pub mod server;
pub mod server_fns;
#[cfg(feature = "ssr")]
pub mod store;

#[cfg(feature = "ssr")]
use leptos::prelude::*;

/// Fragment name.
pub const NAME: tessera_contracts::domain::ServiceName = tessera_contracts::domain::ServiceName::CART;
/// URL prefix this fragment owns.
pub const PREFIX: &str = "/cart";

/// The whole page body: the empty chrome slot the shell fills, then the page the address names.
/// Server-only (islands mode): only the `#[island]`s inside are hydrated.
#[cfg(feature = "ssr")]
#[component]
pub fn App() -> impl IntoView {
    let path = use_context::<axum::http::request::Parts>().map(|parts| parts.uri.path().to_owned()).unwrap_or_default();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default().trim_end_matches('/');
    let page = match rest {
        "/checkout" => view! { <pages::CheckoutPage/> }.into_any(),
        "/orders" => view! { <pages::OrdersPage/> }.into_any(),
        _ => match rest.strip_prefix("/orders/") {
            Some(id) => view! { <pages::OrderPage id=id.to_owned()/> }.into_any(),
            None => view! { <pages::CartPage/> }.into_any(),
        },
    };
    view! {
        <header id=tessera_contracts::CHROME_SLOT_ID></header>
        <main class="fragment fragment-cart">{page}</main>
    }
}

/// Browser entry point: the islands' shared root (the page runtime then hydrates each island).
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
