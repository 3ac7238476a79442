//! Typed contracts between Tessera fragments and the shell.
//!
//! Everything two independently built and deployed parts of the site must agree on lives here, and only
//! here: the fragment manifest written by `cargo xtask build` and read by the server at run time
//! ([`manifest`]), the description every fragment process publishes and the shell routes by
//! ([`descriptor`]), the public HTTP APIs one fragment offers another ([`cart`], [`inventory`]), the DOM events that cross
//! fragment boundaries in the browser ([`dom_events`]), the error every server function returns
//! ([`ApiError`]), and the demo data that the services seed consistently ([`demo`]).
//!
//! The domain's values ([`domain`]: `Sku`, `Quantity`, `OrderId`, `CartId`, `ReservationId`,
//! `ServiceName`) are types, not strings, from one end to the other: a payload, a path or a column that
//! is not one fails to decode, saying which. With feature `server` they (and the status enums) are
//! database columns as well (`text_column!`), so every service binds and reads them as themselves.
//!
//! The crate compiles for both the server and `wasm32` (`serde`, `server_fn`, and the DOM bindings the
//! browser half of [`page`] names), so a fragment's
//! browser code and the shell's server code share one definition. [`CONTRACT_VERSION`] is bumped on any
//! breaking change; manifests carry it so the shell can refuse a fragment built against another contract.

#[cfg(feature = "server")]
mod column;
pub mod demo;
pub mod descriptor;
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
    /// Server function URL ([`AddItem`], form-encoded) that adds a line to the visitor's cart (the
    /// signed-in user's, or an anonymous one kept by cookie and merged into theirs at sign-in); it
    /// answers a [`CartSummary`].
    pub const ADD_ITEM_PATH: &str = "/cart/api/add_item";

    /// The arguments of the cart's `add_item` server function, for another fragment's island
    /// ([`crate::page::call`]). The cart's crate checks at compile time that they are its function's.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AddItem {
        pub sku: String,
        pub quantity: i64,
    }

    impl crate::page::Call for AddItem {
        const PATH: &'static str = ADD_ITEM_PATH;
    }
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

/// What an island tells the page it lives on (the page runtime in `tessera_fragment`, `islands.js`) and how it
/// calls its fragment's server functions: refresh the page's server-rendered regions after a change, say
/// what happened in the page's status line, and POST a form or a few fields.
///
/// The calls go through [`call`] and [`submit`] rather than `server_fn`'s typed client and Leptos's
/// `ActionForm`: those put a form decoder and a decoder of every server function's full answer into each
/// bundle, while an island needs the answer's status and, at most, two fields of it ([`read`]). [`call`]
/// takes the server function's own arguments struct (`SetQuantity { sku, quantity }`), so an island
/// names no field as a string: a renamed argument fails to compile. The server side is unchanged: the
/// same server functions at the same addresses.
pub mod page {
    use crate::ApiError;

    /// Arguments of a server function an island calls, and where they go: every `#[server]` function's
    /// arguments struct (through `server_fn::ServerFn`), and the contracts' structs for another
    /// fragment's functions ([`crate::cart::AddItem`]).
    pub trait Call: serde::Serialize {
        const PATH: &'static str;
    }

    impl<F: server_fn::ServerFn + serde::Serialize> Call for F {
        const PATH: &'static str = <F as server_fn::ServerFn>::PATH;
    }

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

    /// POSTs a server function's arguments, URL-encoded, to its address and returns the body of a
    /// successful answer, or the [`ApiError`] the server answered with.
    #[cfg(feature = "browser")]
    pub async fn call<A: Call>(arguments: &A) -> Result<String, ApiError> {
        let body = serde_urlencoded::to_string(arguments).map_err(|_| ApiError::BadRequest("these values cannot be sent".into()))?;
        send(A::PATH, body).await
    }

    /// POSTs `form`'s fields to its `action` (a server function of this site), as the browser would
    /// without JavaScript, and returns what [`call`] returns.
    #[cfg(feature = "browser")]
    pub async fn submit(form: &web_sys::HtmlFormElement) -> Result<String, ApiError> {
        let fields = web_sys::FormData::new_with_form(form)
            .and_then(|data| web_sys::UrlSearchParams::new_with_str_sequence_sequence(&data))
            .map_err(|_| ApiError::BadRequest("this form cannot be sent".into()))?;
        send(&form.action(), String::from(fields.to_string())).await
    }

    #[cfg(feature = "browser")]
    async fn send(url: &str, body: String) -> Result<String, ApiError> {
        use wasm_bindgen::{JsCast, JsValue};
        use wasm_bindgen_futures::JsFuture;
        let unreachable = || ApiError::Unavailable("the server is not reachable right now; please try again".into());
        let window = web_sys::window().ok_or_else(unreachable)?;
        let headers = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&headers, &JsValue::from_str("content-type"), &JsValue::from_str("application/x-www-form-urlencoded"));
        let _ = js_sys::Reflect::set(&headers, &JsValue::from_str("accept"), &JsValue::from_str("application/json"));
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(&body));
        let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init)).await.map_err(|_| unreachable())?.unchecked_into();
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise).await.ok().and_then(|text| text.as_string()).unwrap_or_default(),
            Err(_) => String::new(),
        };
        if response.ok() {
            Ok(text)
        } else {
            Err(serde_json::from_str(&text).unwrap_or_else(|_| ApiError::Unavailable(format!("the server answered {}", response.status()))))
        }
    }

    /// Nothing to refresh outside the browser.
    #[cfg(not(feature = "browser"))]
    pub async fn refresh() {}

    /// Nothing to announce outside the browser.
    #[cfg(not(feature = "browser"))]
    pub fn announce(_message: &str) {}

    /// Calls are made from the browser only.
    #[cfg(not(feature = "browser"))]
    pub async fn call<A: Call>(_arguments: &A) -> Result<String, ApiError> {
        Err(ApiError::Unavailable("server functions are called from the browser".into()))
    }

    /// Forms are sent from the browser only.
    #[cfg(not(feature = "browser"))]
    pub async fn submit(_form: &web_sys::HtmlFormElement) -> Result<String, ApiError> {
        Err(ApiError::Unavailable("forms are sent from the browser".into()))
    }

    /// The fields of a successful answer an island needs (a struct naming just those: the others are
    /// skipped, not decoded).
    pub fn read<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ApiError> {
        serde_json::from_str(body).map_err(|_| ApiError::Unavailable("the server's answer could not be read; please reload the page".into()))
    }

    /// The form an island's `submit` event is for, with the browser's own sending stopped.
    pub fn form_of(event: &web_sys::Event) -> Option<web_sys::HtmlFormElement> {
        use wasm_bindgen::JsCast;
        event.prevent_default();
        event.target().and_then(|target| target.dyn_into::<web_sys::HtmlFormElement>().ok())
    }
}
