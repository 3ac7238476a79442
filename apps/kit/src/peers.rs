//! How one service reaches another it calls at run time (the cart calling inventory and the payment
//! provider, the provider calling the cart back): in the same process through its router, or over HTTP.
//!
//! Filled by the process host after every router exists (services may call each other in both
//! directions), read on each call.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::events::Target;

/// Routes to the other services, by name (`inventory`, `payments`, `cart`).
#[derive(Default)]
pub struct Peers {
    targets: RwLock<HashMap<String, Target>>,
}

impl Peers {
    pub fn set(&self, name: &str, target: Target) {
        self.targets.write().expect("peers lock").insert(name.to_owned(), target);
    }

    /// Forgets every route (see `crate::host::Teardown`).
    pub fn clear(&self) {
        self.targets.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The route to `name`, if the process host configured one.
    pub fn get(&self, name: &str) -> Option<Target> {
        self.targets.read().expect("peers lock").get(name).cloned()
    }
}

/// An HTTP client for calls between services: no redirects followed, kept-alive connections dropped
/// after 30 s idle. Each target's instances keep one (`crate::events::Instances`), so every call to a
/// service shares its connections; it is not a process-wide static, which would outlive the tokio
/// runtime that opened its connections (tests start many).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// An HTTP client that opens a new connection for every request, for requests that must not be sent
/// twice (anything but GET and HEAD). On a kept-alive connection a request can be written into a
/// connection whose process just died, and the error cannot tell that from a process that died while
/// handling it, so it could not be sent again safely. On a new connection a dead process refuses the
/// connection — nothing was sent, and the request goes to another instance. (Loopback or LAN connects
/// cost well under a millisecond; GETs keep their connections.)
pub fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(0).build().expect("an HTTP client")
}

/// Whether a request may be sent again when its connection broke (it changes nothing).
pub fn is_idempotent(method: &axum::http::Method) -> bool {
    matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
}
