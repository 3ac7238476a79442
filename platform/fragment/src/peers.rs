//! How a fragment reaches another service: by name, through [`Peers`], without knowing where it runs.
//!
//! A [`Target`] is a route to one service and the prefix it owns. In the all-in-one process it is the
//! service's own router, called in process ([`Target::in_process`]); in a deployment of separate processes
//! it is the host's pool of that service's instances, with their health checks and balancing
//! (`tessera_host::pool`). A fragment's code is the same either way: `runtime.peers.get(&ServiceName::INVENTORY)`,
//! then a signed call through `crate::service::ServiceClient`. The process host fills [`Peers`] after
//! every router exists (services may call each other in both directions), and read on each call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use futures::future::BoxFuture;
use tessera_contracts::domain::ServiceName;
use tower::ServiceExt;

/// Routes to the other services, by name (`inventory`, `payments`, `cart`).
#[derive(Default)]
pub struct Peers {
    targets: RwLock<HashMap<ServiceName, Target>>,
}

impl Peers {
    pub fn set(&self, name: ServiceName, target: Target) {
        self.targets.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(name, target);
    }

    /// Forgets every route (the host's teardown: in-process targets hold routers whose state holds these
    /// same peers, a reference cycle that would keep a stopped server's pools open).
    pub fn clear(&self) {
        self.targets.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The route to `name`, if the process host configured one.
    pub fn get(&self, name: &ServiceName) -> Option<Target> {
        self.targets.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
    }
}

/// Empties a process's [`Peers`] when dropped: its in-process targets hold routers whose state holds the
/// same peers, a reference cycle that would keep every database pool of a stopped server open (tests start
/// many servers in one process). The host keeps one with each running server.
pub struct ClearOnDrop(Arc<Peers>);

impl ClearOnDrop {
    pub fn new(peers: Arc<Peers>) -> ClearOnDrop {
        ClearOnDrop(peers)
    }
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// One request to another service: what [`Route::send`] carries.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: Method,
    /// The full path, under the service's prefix (`/admin/inventory/service/reservations`).
    pub path: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: Vec<u8>,
    /// At most this much of the answer is read; an answer over it reads as empty (the status still counts).
    pub max_bytes: usize,
    /// Over the network, the answer must start within this; in process the callee is not cut off
    /// half-way (a caller that wants a bound there too wraps the call).
    pub timeout: Duration,
}

/// What a service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request did not reach the service (it was never answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// A way to send requests to one service. The host implements it over its instance pools; this crate
/// implements it for a router in the same process.
pub trait Route: Send + Sync + 'static {
    /// The prefix the service owns (empty while a remote service has not described itself yet).
    fn prefix(&self) -> &str;
    /// Sends one request and reads the answer.
    fn send<'a>(&'a self, request: Outgoing<'a>) -> BoxFuture<'a, Result<Reply, SendError>>;
    /// How the route reads in logs.
    fn describe(&self) -> String {
        self.prefix().to_owned()
    }
}

/// A route to one service. Cheap to clone.
#[derive(Clone)]
pub struct Target(Arc<dyn Route>);

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe())
    }
}

impl Target {
    pub fn new(route: impl Route) -> Target {
        Target(Arc::new(route))
    }

    /// A service in this process, reached through its router.
    pub fn in_process(prefix: impl Into<String>, router: axum::Router) -> Target {
        Target::new(InProcess { prefix: prefix.into(), router })
    }

    /// The prefix the service owns.
    pub fn prefix(&self) -> &str {
        self.0.prefix()
    }

    /// Sends one request (see [`Outgoing`]).
    pub async fn send(&self, request: Outgoing<'_>) -> Result<Reply, SendError> {
        self.0.send(request).await
    }
}

/// A service in this process: its router, called directly.
struct InProcess {
    prefix: String,
    router: axum::Router,
}

impl Route for InProcess {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn send<'a>(&'a self, outgoing: Outgoing<'a>) -> BoxFuture<'a, Result<Reply, SendError>> {
        Box::pin(async move {
            let mut request = Request::builder().method(outgoing.method).uri(outgoing.path);
            for (name, value) in outgoing.headers {
                request = request.header(*name, value);
            }
            let request = request.body(Body::from(outgoing.body)).map_err(|error| SendError(error.to_string()))?;
            let response = self.router.clone().oneshot(request).await.map_err(|error| SendError(error.to_string()))?;
            let status = response.status().as_u16();
            // An answer over the limit is read as empty: the status still counts.
            let body = axum::body::to_bytes(response.into_body(), outgoing.max_bytes).await.map(|bytes| bytes.to_vec()).unwrap_or_default();
            Ok(Reply { status, body })
        })
    }

    fn describe(&self) -> String {
        format!("{} in process", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_process_target_calls_the_router_and_bounds_what_it_reads() {
        let router = axum::Router::new().route("/svc/x", axum::routing::post(|body: String| async move { format!("got {body}") }));
        let peers = Peers::default();
        let svc = ServiceName::of("svc");
        peers.set(svc.clone(), Target::in_process("/svc", router));
        let target = peers.get(&svc).expect("a route");
        let request =
            |max_bytes| Outgoing { method: Method::POST, path: "/svc/x", headers: &[], body: b"hi".to_vec(), max_bytes, timeout: Duration::from_secs(1) };
        assert_eq!(target.send(request(100)).await, Ok(Reply { status: 200, body: b"got hi".to_vec() }));
        assert_eq!(target.send(request(3)).await.map(|reply| (reply.status, reply.body.len())), Ok((200, 0)), "over the limit reads as empty");
        assert_eq!(format!("{target:?}"), "/svc in process");
        peers.clear();
        assert!(peers.get(&svc).is_none());
    }
}
