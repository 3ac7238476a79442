//! The instances of another service and how a request reaches one of them: the one abstraction of every
//! process that talks to others over the network, the shell's registry included.
//!
//! - [`Pool`] and [`Instance`]: the instances of a service, each ready or not (from its `/readyz`, its
//!   description and the requests that failed to connect), chosen by the power of two choices over the
//!   requests in flight. [`Instance::check`] is the one health check: the shell's registry and a
//!   process's discovery of the services it calls both run it.
//! - [`Remote`]: a pool as a `tessera_fragment::peers::Route`, so a fragment's calls and the relay's
//!   deliveries reach a service's instances with the same code that reaches it in process.
//! - [`Clients`]: the HTTP clients of a process, built once by its host and shared by every route and
//!   the shell's registry, so every call to a service shares its connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tessera_contracts::descriptor::{FragmentDescriptor, DESCRIPTOR_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_fragment::peers::{Outgoing, Reply, Route, SendError, Target};

/// Why a health check took an instance out of rotation (the registry page shows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("not reachable: {0}")]
    Unreachable(String),
    #[error("not ready ({0})")]
    NotReady(reqwest::StatusCode),
    #[error("no description ({0})")]
    NoDescription(reqwest::StatusCode),
    #[error("unreadable description: {0}")]
    Unreadable(String),
    #[error("serves {serves:?}, not the {wanted:?} fragment")]
    OtherService { serves: Vec<String>, wanted: ServiceName },
}

/// The description of `name` among those a process at `base` publishes.
pub async fn describe(client: &reqwest::Client, base: &str, name: &ServiceName, timeout: Duration) -> Result<FragmentDescriptor, CheckError> {
    let response = client.get(format!("{}{DESCRIPTOR_PATH}", base.trim_end_matches('/'))).timeout(timeout).send().await;
    let response = response.map_err(|error| CheckError::Unreachable(error.to_string()))?;
    if !response.status().is_success() {
        return Err(CheckError::NoDescription(response.status()));
    }
    let body = response.bytes().await.map_err(|error| CheckError::Unreadable(error.to_string()))?;
    let descriptors: Vec<FragmentDescriptor> = serde_json::from_slice(&body).map_err(|error| CheckError::Unreadable(error.to_string()))?;
    let serves: Vec<String> = descriptors.iter().map(|descriptor| descriptor.name.to_string()).collect();
    descriptors.into_iter().find(|descriptor| &descriptor.name == name).ok_or_else(|| CheckError::OtherService { serves, wanted: name.clone() })
}

/// The HTTP clients of one process, for calls between services: no redirects followed, kept-alive
/// connections dropped after 30 s idle. Built once by the process host and cloned (a clone shares the
/// connections); not a process-wide static, which would outlive the tokio runtime that opened its
/// connections (tests start many).
#[derive(Clone, Debug)]
pub struct Clients {
    pooled: reqwest::Client,
    /// A client that opens a new connection for every request, for requests that must not be sent twice
    /// (anything but GET and HEAD). On a kept-alive connection a request can be written into a
    /// connection whose process just died, and the error cannot tell that from a process that died while
    /// handling it, so it could not be sent again safely. On a new connection a dead process refuses the
    /// connection — nothing was sent, and the request goes to another instance. (Loopback or LAN connects
    /// cost well under a millisecond; GETs keep their connections.)
    fresh: reqwest::Client,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients::new()
    }
}

impl Clients {
    pub fn new() -> Clients {
        Clients::with_roots(&crate::tls::Roots::default())
    }

    /// Clients that trust `roots` for HTTPS upstreams.
    pub fn with_roots(roots: &crate::tls::Roots) -> Clients {
        let pooled = roots.http().pool_idle_timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        let fresh = roots.http().pool_max_idle_per_host(0).build().expect("an HTTP client");
        Clients { pooled, fresh }
    }

    /// The client for a request of `method`: a connection of its own unless the request changes nothing.
    pub fn for_method(&self, method: &axum::http::Method) -> &reqwest::Client {
        if is_idempotent(method) {
            &self.pooled
        } else {
            &self.fresh
        }
    }

    /// The client with kept-alive connections (health checks, descriptions, GETs).
    pub fn pooled(&self) -> &reqwest::Client {
        &self.pooled
    }
}

/// Whether a request may be sent again when its connection broke (it changes nothing).
pub fn is_idempotent(method: &axum::http::Method) -> bool {
    matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
}

/// One instance of a service process.
#[derive(Debug)]
pub struct Instance {
    /// Base URL, e.g. `http://127.0.0.1:3101`.
    pub base: url::Url,
    ready: AtomicBool,
    /// False once it described itself with contracts this site does not speak: never routed to.
    compatible: AtomicBool,
    in_flight: AtomicUsize,
    /// What the instance last said about itself.
    descriptor: RwLock<Option<FragmentDescriptor>>,
    /// Why it is out of rotation, if it is.
    problem: RwLock<Option<String>>,
}

/// Counts a request in flight at an instance while it lives.
pub struct InFlight<'a>(&'a Instance);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Instance {
    fn new(base: url::Url) -> Instance {
        // Optimistic until the first check: a process that starts beside its peers calls them at once.
        Instance {
            base,
            ready: AtomicBool::new(true),
            compatible: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            descriptor: RwLock::new(None),
            problem: RwLock::new(None),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn is_compatible(&self) -> bool {
        self.compatible.load(Ordering::SeqCst)
    }

    /// Records whether its contracts fit this site; returns whether they did before.
    pub fn set_compatible(&self, compatible: bool) -> bool {
        self.compatible.swap(compatible, Ordering::SeqCst)
    }

    /// Whether this instance's bundle has `asset` (`pkg/…`), as far as its description says.
    fn has_asset(&self, asset: &str) -> bool {
        self.descriptor
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|descriptor| descriptor.assets.iter().any(|known| known == asset))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts one more request in flight until the guard is dropped.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn descriptor(&self) -> Option<FragmentDescriptor> {
        self.descriptor.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn set_descriptor(&self, descriptor: FragmentDescriptor) {
        *self.descriptor.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(descriptor);
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts the instance in rotation or takes it out, with the reason.
    pub fn mark(&self, ready: bool, problem: Option<String>) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if was != ready {
            if ready {
                tracing::info!(instance = %self.base, "instance back in rotation");
            } else {
                tracing::warn!(instance = %self.base, problem = problem.as_deref().unwrap_or(""), "instance out of rotation");
            }
        }
        *self.problem.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = problem;
    }

    /// The health check: whether it is ready (`GET /readyz`), and then what it says it is (the `name`
    /// service's description). Callers put it in rotation or take it out by the answer.
    pub async fn check(&self, clients: &Clients, name: &ServiceName) -> Result<FragmentDescriptor, CheckError> {
        let timeout = Duration::from_secs(1);
        let ready = clients.pooled().get(self.base.join("/readyz").map_err(|error| CheckError::Unreachable(error.to_string()))?).timeout(timeout).send().await;
        match ready {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => return Err(CheckError::NotReady(response.status())),
            Err(error) => return Err(CheckError::Unreachable(error.to_string())),
        }
        describe(clients.pooled(), self.base.as_str(), name, timeout).await
    }
}

/// The instances of one service.
#[derive(Debug)]
pub struct Pool {
    pub instances: Vec<Arc<Instance>>,
    cursor: AtomicUsize,
}

impl Pool {
    pub fn new(bases: Vec<url::Url>) -> Pool {
        Pool { instances: bases.into_iter().map(|base| Arc::new(Instance::new(base))).collect(), cursor: AtomicUsize::new(0) }
    }

    /// The instances at these base URLs (`http://127.0.0.1:3101`); ones that are not URLs are left out,
    /// with a warning.
    pub fn of(bases: &[String]) -> Pool {
        let urls = bases
            .iter()
            .map(|base| base.trim())
            .filter(|base| !base.is_empty())
            .filter_map(|base| match url::Url::parse(base) {
                Ok(url) => Some(url),
                Err(error) => {
                    tracing::warn!(%base, %error, "not an instance address; left out");
                    None
                }
            })
            .collect();
        Pool::new(urls)
    }

    /// An instance for the next request, other than `except`: the less busy of two ready ones (the power
    /// of two choices); if none is ready, any compatible one (a check may simply not have run yet). For a
    /// bundle file (`asset`), instances whose build has it come first: a page rendered by one build loads
    /// that build's files while instances of two builds run side by side.
    pub fn pick(&self, except: Option<&Arc<Instance>>, asset: Option<&str>) -> Option<Arc<Instance>> {
        let mut candidates: Vec<&Arc<Instance>> =
            self.instances.iter().filter(|instance| instance.is_compatible() && except.is_none_or(|except| !Arc::ptr_eq(instance, except))).collect();
        if let Some(asset) = asset {
            let with_asset: Vec<&Arc<Instance>> = candidates.iter().copied().filter(|instance| instance.has_asset(asset)).collect();
            if !with_asset.is_empty() {
                candidates = with_asset;
            }
        }
        let ready: Vec<&Arc<Instance>> = candidates.iter().copied().filter(|instance| instance.is_ready()).collect();
        let pool = if ready.is_empty() { candidates } else { ready };
        match pool.len() {
            0 => None,
            1 => Some(pool[0].clone()),
            count => {
                // Two distinct candidates from a rotating start, so ties spread evenly.
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let first = pool[start % count];
                let second = pool[(start + 1 + rand::random::<usize>() % (count - 1)) % count];
                Some(if second.in_flight() < first.in_flight() { second.clone() } else { first.clone() })
            }
        }
    }

    /// Checks every instance ([`Instance::check`]) and puts each in rotation or out; returns the first
    /// description read.
    pub async fn check_all(&self, clients: &Clients, name: &ServiceName) -> Vec<FragmentDescriptor> {
        let checks = self.instances.iter().map(|instance| async move {
            match instance.check(clients, name).await {
                Ok(descriptor) => {
                    instance.set_descriptor(descriptor.clone());
                    instance.mark(true, None);
                    Some(descriptor)
                }
                Err(problem) => {
                    tracing::debug!(instance = %instance.base, %problem, "instance check failed");
                    instance.mark(false, Some(problem.to_string()));
                    None
                }
            }
        });
        futures::future::join_all(checks).await.into_iter().flatten().collect()
    }
}

/// The instances of a separate process as a route: a request goes to one instance, and a request that
/// could not connect goes once more to another (it never reached the first, so even a request that
/// changes something is safe to send again, and such requests always open a connection of their own, so
/// "could not connect" is exact).
pub struct Remote {
    prefix: String,
    pool: Arc<Pool>,
    clients: Clients,
}

impl Remote {
    /// Instances of a separate process, reached with the process's `clients`.
    pub fn target(prefix: impl Into<String>, pool: Arc<Pool>, clients: &Clients) -> Target {
        Target::new(Remote { prefix: prefix.into(), pool, clients: clients.clone() })
    }

    /// A separate process at these base URLs, with clients of its own: for tests and tools. A process's
    /// routes share its host's clients ([`Remote::target`]).
    pub fn at(prefix: impl Into<String>, bases: Vec<String>) -> Target {
        Remote::target(prefix, Arc::new(Pool::of(&bases)), &Clients::new())
    }

    async fn send_to_an_instance(&self, outgoing: Outgoing<'_>) -> Result<Reply, SendError> {
        let client = self.clients.for_method(&outgoing.method);
        let mut last_error = "no instances configured".to_owned();
        let mut refused: Option<Arc<Instance>> = None;
        while let Some(instance) = self.pool.pick(refused.as_ref(), None) {
            let url = instance.base.join(outgoing.path).map_err(|error| SendError(error.to_string()))?;
            let mut request = client.request(outgoing.method.clone(), url).timeout(outgoing.timeout);
            for (name, value) in outgoing.headers {
                request = request.header(*name, value);
            }
            let in_flight = instance.start_request();
            let sent = request.body(outgoing.body.clone()).send().await;
            drop(in_flight);
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.map_err(|error| SendError(error.to_string()))?;
                    return Ok(Reply { status, body: bytes.iter().take(outgoing.max_bytes).copied().collect() });
                }
                // Out of rotation until a check finds it ready again.
                Err(error) if error.is_connect() && refused.is_none() => {
                    tracing::debug!(instance = %instance.base, %error, "instance refused the connection; trying another");
                    instance.mark(false, Some(format!("not reachable: {error}")));
                    last_error = error.to_string();
                    refused = Some(instance);
                }
                Err(error) => {
                    if error.is_connect() {
                        instance.mark(false, Some(format!("not reachable: {error}")));
                    }
                    return Err(SendError(error.to_string()));
                }
            }
        }
        Err(SendError(last_error))
    }
}

impl Route for Remote {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn send<'a>(&'a self, outgoing: Outgoing<'a>) -> BoxFuture<'a, Result<Reply, SendError>> {
        Box::pin(self.send_to_an_instance(outgoing))
    }

    fn describe(&self) -> String {
        let bases: Vec<&str> = self.pool.instances.iter().map(|instance| instance.base.as_str()).collect();
        format!("{} at {bases:?}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picking_prefers_ready_and_less_busy_instances_and_skips_the_failed_one() {
        let pool = Pool::of(&["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()]);
        let [a, b, c] = [&pool.instances[0], &pool.instances[1], &pool.instances[2]];
        // c is out of rotation: never picked while others are ready.
        c.mark(false, Some("down".into()));
        for _ in 0..50 {
            assert!(!Arc::ptr_eq(&pool.pick(None, None).unwrap(), c));
        }
        // a is busy: b wins every comparison between the two.
        let _busy: Vec<InFlight> = (0..10).map(|_| a.start_request()).collect();
        for _ in 0..50 {
            assert!(Arc::ptr_eq(&pool.pick(None, None).unwrap(), b));
        }
        // A resend never goes back to the instance that failed.
        for _ in 0..50 {
            assert!(Arc::ptr_eq(&pool.pick(Some(b), None).unwrap(), a));
        }
        // Nothing ready: any instance rather than none.
        a.mark(false, None);
        b.mark(false, None);
        assert!(pool.pick(None, None).is_some());
        // An instance with incompatible contracts is never picked, not even then.
        a.set_compatible(false);
        b.set_compatible(false);
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pool.pick(None, None).unwrap(), c));
        }
        c.set_compatible(false);
        assert!(pool.pick(None, None).is_none());
    }

    fn descriptor(name: &str, assets: &[&str]) -> FragmentDescriptor {
        let assets = assets.iter().map(|asset| asset.to_string()).collect();
        FragmentDescriptor { build_id: Some("b".into()), assets, ..FragmentDescriptor::named(ServiceName::parse(name).unwrap(), &format!("/{name}")) }
    }

    #[test]
    fn a_bundle_file_goes_to_an_instance_of_the_build_that_has_it() {
        let pool = Pool::of(&["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()]);
        let (old, new) = (&pool.instances[0], &pool.instances[1]);
        old.set_descriptor(descriptor("catalog", &["pkg/catalog-aaaa.js"]));
        new.set_descriptor(descriptor("catalog", &["pkg/catalog-bbbb.js"]));
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pool.pick(None, Some("pkg/catalog-aaaa.js")).unwrap(), old));
            assert!(Arc::ptr_eq(&pool.pick(None, Some("pkg/catalog-bbbb.js")).unwrap(), new));
        }
        // A file no build names (an old page after both rolled over): any instance answers (a 404).
        assert!(pool.pick(None, Some("pkg/catalog-cccc.js")).is_some());
    }

    #[tokio::test]
    async fn a_call_that_cannot_connect_goes_to_another_instance_which_then_gets_the_next_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/svc/x", axum::routing::post(|| async { "hello" }))).await });
        let down = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let pool = Arc::new(Pool::of(&[down.clone(), up]));
        let target = Remote::target("/svc", pool.clone(), &Clients::new());
        for _ in 0..4 {
            let outgoing =
                Outgoing { method: axum::http::Method::POST, path: "/svc/x", headers: &[], body: Vec::new(), max_bytes: 100, timeout: Duration::from_secs(5) };
            let reply = target.send(outgoing).await.unwrap();
            assert_eq!((reply.status, reply.body.as_slice()), (200, b"hello".as_slice()));
        }
        let dead = pool.instances.iter().find(|instance| instance.base.as_str().starts_with(&down)).unwrap();
        assert!(!dead.is_ready(), "the instance that refused is out of rotation");
        assert!(dead.problem().unwrap().contains("not reachable"));
    }
}
