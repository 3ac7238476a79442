//! Typed contracts between Tessera fragments and the shell.
//!
//! Everything two independently built and deployed parts of the site must agree on lives here, and only
//! here: the fragment manifest written by `cargo xtask build` and read by the server at run time
//! ([`manifest`]), the public HTTP APIs one fragment offers another ([`cart`], [`inventory`]), the DOM events that cross
//! fragment boundaries in the browser ([`dom_events`]), the error every server function returns
//! ([`ApiError`]), and the demo data that the services seed consistently ([`demo`]).
//!
//! The crate compiles for both the server and `wasm32` (only `serde` and `server_fn`), so a fragment's
//! browser code and the shell's server code share one definition. [`CONTRACT_VERSION`] is bumped on any
//! breaking change; manifests carry it so the shell can refuse a fragment built against another contract.

pub mod demo;
pub mod domain;
pub mod events;
pub mod inventory;
pub mod manifest;
pub mod payments;

mod api_error;
pub use api_error::ApiError;

/// Version of the contracts in this crate. A fragment built against another major contract is refused.
pub const CONTRACT_VERSION: u32 = 1;

/// Version skew between a page and the server it calls. A hydrated page sends the build that rendered it
/// and the contract version it speaks on every API call to its own origin ([`BUILD_HEADER`],
/// [`CONTRACT_HEADER`]). A server of another build with the same contract version answers as usual; one
/// with another contract version refuses with a 409 that carries [`RELOAD_HEADER`], and the page
/// reloads itself once (to the build that server has) instead of reading an answer it may misunderstand.
pub const BUILD_HEADER: &str = "x-tessera-build";
pub const CONTRACT_HEADER: &str = "x-tessera-contract";
pub const RELOAD_HEADER: &str = "x-tessera-reload";
/// The shell's Content-Security-Policy nonce for the page a fragment renders: set by the shell on the
/// request it forwards (a client's value is replaced), put by the fragment on its inline scripts.
pub const CSP_NONCE_HEADER: &str = "x-tessera-csp-nonce";

/// The id of the empty element each fragment leaves in its page for the shell's chrome (header, nav,
/// user menu, cart badge). Hydration never descends into it, so the shell's HTML survives.
pub const CHROME_SLOT_ID: &str = "tessera-chrome";

/// Relative path, under a fragment's prefix, of its server-rendered widget for the shell's home page.
pub const WIDGET_PATH: &str = "/widget";

/// Cart's public API, used by the shell (badge) and the catalog (add to cart).
pub mod cart {
    use serde::{Deserialize, Serialize};

    /// `GET /cart/api/summary`: what the cart badge shows (the user's cart, or a guest's by its cookie).
    pub const SUMMARY_PATH: &str = "/cart/api/summary";
    /// Server function URL (form-encoded `sku`, `quantity`) that adds a line to the visitor's cart (the
    /// signed-in user's, or an anonymous one kept by cookie and merged into theirs at sign-in).
    pub const ADD_ITEM_PATH: &str = "/cart/api/add_item";
    /// Cookie that finds a guest's cart (HttpOnly; the shell only checks it is there before asking the
    /// cart for the badge count).
    pub const CART_COOKIE: &str = "tessera_cart";

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CartSummary {
        /// Sum of quantities over all lines.
        pub item_count: i64,
        /// Something the shopper should know about the change just made (e.g. the item is in the cart
        /// but inventory could not hold it yet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub message: Option<String>,
    }
}

/// Names of `CustomEvent`s dispatched on `window` to tell other parts of the page that something changed.
pub mod dom_events {
    /// Detail: `{ "item_count": n }`. The shell's chrome updates its cart badge from it.
    pub const CART_UPDATED: &str = "tessera:cart-updated";

    /// Dispatches [`CART_UPDATED`] on `window` with `{ item_count }` (browser builds only).
    #[cfg(feature = "browser")]
    pub fn announce_cart_count(item_count: i64) {
        use wasm_bindgen::JsValue;
        let init = web_sys::CustomEventInit::new();
        let detail = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&detail, &JsValue::from_str("item_count"), &JsValue::from_f64(item_count as f64));
        init.set_detail(&detail);
        let event = web_sys::CustomEvent::new_with_event_init_dict(CART_UPDATED, &init);
        if let (Ok(event), Some(window)) = (event, web_sys::window()) {
            let _ = window.dispatch_event(&event);
        }
    }

    /// Nothing to announce outside the browser.
    #[cfg(not(feature = "browser"))]
    pub fn announce_cart_count(_item_count: i64) {}
}

/// What an island tells the page it lives on (the page runtime in `tessera_kit`, `islands.js`): refresh the
/// page's server-rendered regions after a change, and say what happened in the page's status line.
pub mod page {
    /// The page's one status line (`role="status"`), where [`announce`] writes.
    pub const STATUS_ATTRIBUTE: &str = "data-page-status";
    /// A region the server renders again on [`refresh`]; the value names it.
    pub const REFRESH_ATTRIBUTE: &str = "data-refresh";

    /// Re-renders the page's `[data-refresh]` regions from the server (the page runtime fetches the page
    /// again and swaps them, hydrating their islands) and resolves when they are in place. Without the
    /// runtime, reloads the page.
    #[cfg(feature = "browser")]
    pub async fn refresh() {
        use wasm_bindgen::{JsCast, JsValue};
        let Some(window) = web_sys::window() else { return };
        let runtime = js_sys::Reflect::get(&window, &JsValue::from_str("tesseraPage")).unwrap_or(JsValue::UNDEFINED);
        let refresh = js_sys::Reflect::get(&runtime, &JsValue::from_str("refresh")).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match refresh.and_then(|refresh| refresh.call0(&runtime).ok()).and_then(|promise| promise.dyn_into::<js_sys::Promise>().ok()) {
            Some(promise) => {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            }
            None => {
                let _ = window.location().reload();
            }
        }
    }

    /// Writes `message` into the page's status line.
    #[cfg(feature = "browser")]
    pub fn announce(message: &str) {
        let selector = format!("[{STATUS_ATTRIBUTE}]");
        if let Some(status) = web_sys::window().and_then(|window| window.document()).and_then(|document| document.query_selector(&selector).ok().flatten()) {
            status.set_text_content(Some(message));
        }
    }

    /// Nothing to refresh outside the browser.
    #[cfg(not(feature = "browser"))]
    pub async fn refresh() {}

    /// Nothing to announce outside the browser.
    #[cfg(not(feature = "browser"))]
    pub fn announce(_message: &str) {}
}
