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
