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

    /// The route to `name`, if the process host configured one.
    pub fn get(&self, name: &str) -> Option<Target> {
        self.targets.read().expect("peers lock").get(name).cloned()
    }
}

/// The one HTTP client of the process for calls between services (events, service calls): one
/// connection pool, kept warm, instead of a client per call site.
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client")
    })
}
