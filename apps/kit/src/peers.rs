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
