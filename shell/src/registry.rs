//! The fragment registry: which fragment owns which prefix, and how to reach it.
//!
//! A fragment runs in this process (its router) or as one or more instances of another process. The
//! shell learns the latter at run time: it is configured with upstream addresses only
//! (`TESSERA_FRAGMENTS__<NAME>__UPSTREAMS`), and its health checker asks every instance `GET /readyz`
//! and reads its description (`tessera_kit::host::DESCRIPTOR_PATH`: prefix, title, navigation, build,
//! contract version), so a fragment the shell has never heard of is served as soon as it answers.
//!
//! Requests to a fragment with several instances go to one of the instances that are ready, chosen by the
//! power of two choices over requests in flight. An instance that fails to connect, or is not ready, is
//! taken out of rotation until a check finds it ready again; the request that met the failure is sent
//! once more to another instance when that is safe: always if it never connected, and for GET and HEAD
//! also when the connection broke before an answer (a draining instance closing a kept-alive connection).
//! Every request waits at most the fragment's timeout for the response head, so a slow or stopped fragment
//! becomes a [`ForwardError`] the shell answers with a fallback instead of hanging.
//!
//! Why not tower's `balance`: the shell must know which instance it picked, to eject it and to resend the
//! request elsewhere, and its instances change with each health check; a small selector over a shared
//! list says that more plainly than a `Discover` stream and a retry policy around `Balance`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use shared_auth::Role;
use tessera_kit::host::{describe, EventContract, FragmentDescriptor};
use tower::ServiceExt;

/// Largest request body the shell forwards (it keeps the body to resend it to another instance); every
/// fragment endpoint accepts far less.
pub const MAX_FORWARD_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How the shell reaches a fragment.
#[derive(Clone)]
pub enum Upstream {
    /// The fragment's router, in this process.
    InProcess(axum::Router),
    /// Instances of a separate process.
    Http(Arc<Pool>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::InProcess(_) => f.write_str("in-process"),
            Upstream::Http(pool) => f.debug_list().entries(pool.instances.iter().map(|instance| instance.base.as_str())).finish(),
        }
    }
}

/// One instance of a fragment process.
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

impl Instance {
    fn new(base: url::Url) -> Instance {
        // Optimistic until the first check: a shell that starts beside its fragments serves at once.
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

    pub fn descriptor(&self) -> Option<FragmentDescriptor> {
        self.descriptor.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn mark(&self, ready: bool, problem: Option<String>) {
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
}

/// The instances of one fragment.
#[derive(Debug)]
pub struct Pool {
    pub instances: Vec<Arc<Instance>>,
    cursor: AtomicUsize,
}

impl Pool {
    pub fn new(bases: Vec<url::Url>) -> Pool {
        Pool { instances: bases.into_iter().map(|base| Arc::new(Instance::new(base))).collect(), cursor: AtomicUsize::new(0) }
    }

    /// An instance for the next request, other than `except`: the less busy of two ready ones (the power
    /// of two choices); if none is ready, any compatible one (a check may simply not have run yet). For a
    /// bundle file (`asset`), instances whose build has it come first: a page rendered by one build loads
    /// that build's files while instances of two builds run side by side.
    fn pick(&self, except: Option<&Arc<Instance>>, asset: Option<&str>) -> Option<Arc<Instance>> {
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
}

/// One registered fragment.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// Name, e.g. `catalog`.
    pub name: String,
    /// Label in the site navigation.
    pub title: String,
    /// URL prefix it owns, e.g. `/catalog`.
    pub prefix: String,
    pub upstream: Upstream,
    /// Longest wait for the response head.
    pub timeout: Duration,
    /// Whether it has a navigation link.
    pub in_nav: bool,
    /// Shown in the navigation only to users with this role (`None`: everyone).
    pub nav_role: Option<Role>,
    /// The events it publishes and consumes, with their versions (checked against the other fragments').
    pub publishes: Vec<EventContract>,
    pub consumes: Vec<EventContract>,
}

impl Fragment {
    /// Whether `path` is under this fragment's prefix (`/catalog`, `/catalog/…`, not `/catalogue`).
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// Why a fragment did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the request body is larger than {MAX_FORWARD_BODY_BYTES} bytes")]
    TooLarge,
}

impl ForwardError {
    /// The metric label of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::Timeout(_) => "timeout",
            ForwardError::Unreachable(_) => "unreachable",
            ForwardError::TooLarge => "too_large",
        }
    }
}

/// A fragment configured by its upstreams only, whose description has not been read yet.
#[derive(Debug)]
struct Pending {
    name: String,
    pool: Arc<Pool>,
    timeout: Duration,
}

/// Every fragment the shell composes.
#[derive(Debug, Default)]
pub struct FragmentRegistry {
    fragments: RwLock<Vec<Arc<Fragment>>>,
    pending: Vec<Pending>,
    client: reqwest::Client,
    /// For forwarded requests that change something: a connection of their own each, so a dead instance
    /// refuses it and the request can go to another (`tessera_kit::peers::fresh_connection_client`).
    fresh: reqwest::Client,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded.
const HOP_BY_HOP: [&str; 8] = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

fn copy_end_to_end_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != axum::http::header::HOST {
            to.append(name.clone(), value.clone());
        }
    }
}

impl FragmentRegistry {
    /// A registry of fragments known now; `pending` fragments (name, instances, timeout) are added when
    /// an instance first describes itself (see [`FragmentRegistry::check_health`]).
    pub fn new(fragments: Vec<Fragment>, pending: Vec<(String, Arc<Pool>, Duration)>) -> FragmentRegistry {
        FragmentRegistry {
            fragments: RwLock::new(fragments.into_iter().map(Arc::new).collect()),
            pending: pending.into_iter().map(|(name, pool, timeout)| Pending { name, pool, timeout }).collect(),
            client: tessera_kit::peers::http_client(),
            fresh: tessera_kit::peers::fresh_connection_client(),
        }
    }

    /// Every fragment known now, in registration order.
    pub fn fragments(&self) -> Vec<Arc<Fragment>> {
        self.fragments.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Fragment>> {
        self.fragments().into_iter().find(|fragment| fragment.name == name)
    }

    /// The fragment owning `path` (longest prefix wins).
    pub fn route(&self, path: &str) -> Option<Arc<Fragment>> {
        self.fragments().into_iter().filter(|fragment| fragment.owns(path)).max_by_key(|fragment| fragment.prefix.len())
    }

    /// Every instance pool: of known fragments and of those not described yet.
    fn pools(&self) -> Vec<(String, Arc<Pool>)> {
        let mut pools: Vec<(String, Arc<Pool>)> = self
            .fragments()
            .iter()
            .filter_map(|fragment| match &fragment.upstream {
                Upstream::Http(pool) => Some((fragment.name.clone(), pool.clone())),
                Upstream::InProcess(_) => None,
            })
            .collect();
        for pending in &self.pending {
            if !pools.iter().any(|(_, pool)| Arc::ptr_eq(pool, &pending.pool)) {
                pools.push((pending.name.clone(), pending.pool.clone()));
            }
        }
        pools
    }

    /// Asks every instance whether it is ready and who it is; puts ready ones in rotation and takes the
    /// others out, and registers a pending fragment from its first description.
    pub async fn check_health(&self) {
        let checks = self.pools().into_iter().flat_map(|(name, pool)| {
            pool.instances.clone().into_iter().map(move |instance| {
                let name = name.clone();
                async move {
                    let outcome = self.check_instance(&name, &instance).await;
                    match outcome {
                        Ok(descriptor) => {
                            let incompatibility = self.incompatibility(&descriptor);
                            let was = instance.compatible.swap(incompatibility.is_none(), Ordering::SeqCst);
                            if let (true, Some(reason)) = (was, &incompatibility) {
                                tracing::error!(instance = %instance.base, fragment = %name, %reason, "refusing to route to an instance with incompatible contracts");
                            }
                            *instance.descriptor.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(descriptor);
                            instance.mark(incompatibility.is_none(), incompatibility);
                        }
                        Err(problem) => instance.mark(false, Some(problem)),
                    }
                }
            })
        });
        futures::future::join_all(checks).await;
        for pending in &self.pending {
            if self.get(&pending.name).is_some() {
                continue;
            }
            // Registered even when no instance is compatible: its prefix then gets the fallback page and
            // the admin page says why, instead of a 404 that hides the fragment.
            let mut described = pending.pool.instances.iter().filter(|instance| instance.descriptor().is_some()).collect::<Vec<_>>();
            described.sort_by_key(|instance| !(instance.is_ready() && instance.is_compatible()));
            let Some(descriptor) = described.first().and_then(|instance| instance.descriptor()) else {
                continue;
            };
            tracing::info!(fragment = %descriptor.name, prefix = %descriptor.prefix, "fragment registered from its description");
            let fragment = Fragment {
                name: descriptor.name.clone(),
                title: descriptor.title.clone(),
                prefix: descriptor.prefix.clone(),
                upstream: Upstream::Http(pending.pool.clone()),
                timeout: pending.timeout,
                in_nav: descriptor.nav.is_some(),
                nav_role: descriptor.nav.as_ref().and_then(|nav| nav.role),
                publishes: descriptor.publishes.clone(),
                consumes: descriptor.consumes.clone(),
            };
            self.fragments.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Arc::new(fragment));
        }
    }

    /// Why an instance that describes itself so cannot serve in this site, if it cannot: another site
    /// contract version, or an event version that its producer or consumers here do not share.
    pub fn incompatibility(&self, descriptor: &FragmentDescriptor) -> Option<String> {
        let site = tessera_contracts::CONTRACT_VERSION;
        if descriptor.contract_version != site {
            return Some(format!("built against site contract v{}; this site runs v{site}", descriptor.contract_version));
        }
        for other in self.fragments().iter().filter(|other| other.name != descriptor.name) {
            for consumed in &descriptor.consumes {
                if let Some(published) =
                    other.publishes.iter().find(|published| published.event_type == consumed.event_type && published.version != consumed.version)
                {
                    return Some(format!("consumes {} v{} but {} publishes v{}", consumed.event_type, consumed.version, other.name, published.version));
                }
            }
            for published in &descriptor.publishes {
                if let Some(consumed) =
                    other.consumes.iter().find(|consumed| consumed.event_type == published.event_type && consumed.version != published.version)
                {
                    return Some(format!("publishes {} v{} but {} consumes v{}", published.event_type, published.version, other.name, consumed.version));
                }
            }
        }
        None
    }

    async fn check_instance(&self, name: &str, instance: &Instance) -> Result<FragmentDescriptor, String> {
        let timeout = Duration::from_secs(1);
        let ready = self.client.get(instance.base.join("/readyz").map_err(|error| error.to_string())?).timeout(timeout).send().await;
        match ready {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => return Err(format!("not ready ({})", response.status())),
            Err(error) => return Err(format!("not reachable: {error}")),
        }
        describe(&self.client, instance.base.as_str(), name, timeout).await
    }

    /// Checks every instance every `every`, until the task is aborted.
    pub fn spawn_health_checks(registry: Arc<FragmentRegistry>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                registry.check_health().await;
            }
        })
    }

    /// Forwards a request to a fragment, waiting at most `timeout` for the response head. Failures are
    /// counted per fragment (`tessera_upstream_errors_total`).
    pub async fn forward(&self, fragment: &Fragment, request: Request<Body>, timeout: Duration) -> Result<Response<Body>, ForwardError> {
        let result = self.forward_once(fragment, request, timeout).await;
        if let Err(error) = &result {
            metrics::counter!("tessera_upstream_errors_total", "fragment" => fragment.name.clone(), "kind" => error.kind()).increment(1);
        }
        result
    }

    async fn forward_once(&self, fragment: &Fragment, request: Request<Body>, timeout: Duration) -> Result<Response<Body>, ForwardError> {
        match &fragment.upstream {
            Upstream::InProcess(router) => tokio::time::timeout(timeout, router.clone().oneshot(request))
                .await
                .map_err(|_| ForwardError::Timeout(timeout))?
                .map_err(|error| ForwardError::Unreachable(error.to_string())),
            Upstream::Http(pool) => {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, MAX_FORWARD_BODY_BYTES).await.map_err(|_| ForwardError::TooLarge)?;
                let deadline = tokio::time::Instant::now() + timeout;
                let asset =
                    parts.uri.path().strip_prefix(fragment.prefix.as_str()).and_then(|rest| rest.strip_prefix('/')).filter(|rest| rest.starts_with("pkg/"));
                let first = pool.pick(None, asset).ok_or_else(|| ForwardError::Unreachable("no compatible instance".into()))?;
                match self.send(&first, &parts, body.clone(), deadline, timeout).await {
                    Ok(response) => Ok(response),
                    Err(Attempt::Failed(error)) => Err(error),
                    Err(Attempt::Retryable(error)) => {
                        first.mark(false, Some(error.to_string()));
                        let Some(second) = pool.pick(Some(&first), asset) else {
                            return Err(error);
                        };
                        tracing::info!(fragment = %fragment.name, from = %first.base, to = %second.base, %error, "resending to another instance");
                        metrics::counter!("tessera_upstream_resends_total", "fragment" => fragment.name.clone()).increment(1);
                        self.send(&second, &parts, body, deadline, timeout).await.map_err(|attempt| match attempt {
                            Attempt::Retryable(error) => {
                                second.mark(false, Some(error.to_string()));
                                error
                            }
                            Attempt::Failed(error) => error,
                        })
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        instance: &Instance,
        parts: &axum::http::request::Parts,
        body: bytes::Bytes,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Response<Body>, Attempt> {
        let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let url = instance.base.join(path_and_query).map_err(|error| Attempt::Failed(ForwardError::Unreachable(error.to_string())))?;
        let mut headers = HeaderMap::new();
        copy_end_to_end_headers(&parts.headers, &mut headers);
        if let Some(host) = parts.headers.get(axum::http::header::HOST) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
        // The client as the shell resolved it (behind its own trusted proxies): a fragment that trusts
        // the shell's address logs the shopper, not the shell. What the client sent is not passed on.
        if let Some(client) = tessera_kit::client::ClientIp::of(&parts.extensions) {
            headers.insert(HeaderName::from_static(tessera_kit::client::FORWARDED_FOR), HeaderValue::from_str(&client.0.to_string()).expect("an address"));
        }
        let idempotent = tessera_kit::peers::is_idempotent(&parts.method);
        let client = if idempotent { &self.client } else { &self.fresh };
        let request = client.request(parts.method.clone(), url).headers(headers).body(body);
        instance.in_flight.fetch_add(1, Ordering::SeqCst);
        let sent = tokio::time::timeout_at(deadline, request.send()).await;
        instance.in_flight.fetch_sub(1, Ordering::SeqCst);
        let response = match sent {
            Err(_) => return Err(Attempt::Failed(ForwardError::Timeout(timeout))),
            Ok(Err(error)) => {
                let failure = ForwardError::Unreachable(error.to_string());
                // Never connected: nothing reached the instance. A GET whose connection broke before any
                // answer changed nothing either.
                return Err(if error.is_connect() || (idempotent && !error.is_timeout()) { Attempt::Retryable(failure) } else { Attempt::Failed(failure) });
            }
            Ok(Ok(response)) => response,
        };
        let mut builder = Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            copy_end_to_end_headers(response.headers(), headers);
        }
        builder.body(Body::from_stream(response.bytes_stream())).map_err(|error| Attempt::Failed(ForwardError::Unreachable(error.to_string())))
    }
}

/// How one attempt to reach an instance failed.
enum Attempt {
    /// Safe to send to another instance.
    Retryable(ForwardError),
    Failed(ForwardError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(name: &str, prefix: &str) -> Fragment {
        Fragment {
            name: name.into(),
            title: name.into(),
            prefix: prefix.into(),
            upstream: Upstream::Http(Arc::new(Pool::new(vec![url::Url::parse("http://127.0.0.1:9").unwrap()]))),
            timeout: Duration::from_secs(1),
            in_nav: true,
            nav_role: None,
            publishes: Vec::new(),
            consumes: Vec::new(),
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let registry = FragmentRegistry::new(vec![fragment("admin", "/admin"), fragment("inventory", "/admin/inventory")], Vec::new());
        assert_eq!(registry.route("/admin/inventory").unwrap().name, "inventory");
        assert_eq!(registry.route("/admin/inventory/api/x").unwrap().name, "inventory");
        assert_eq!(registry.route("/admin/users").unwrap().name, "admin");
        assert!(registry.route("/administrator").is_none());
        assert!(registry.route("/").is_none());
    }

    #[test]
    fn picking_prefers_ready_and_less_busy_instances_and_skips_the_failed_one() {
        let urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"];
        let pool = Pool::new(urls.iter().map(|url| url::Url::parse(url).unwrap()).collect());
        let [a, b, c] = [&pool.instances[0], &pool.instances[1], &pool.instances[2]];
        // c is out of rotation: never picked while others are ready.
        c.mark(false, Some("down".into()));
        for _ in 0..50 {
            assert!(!Arc::ptr_eq(&pool.pick(None, None).unwrap(), c));
        }
        // a is busy: b wins every comparison between the two.
        a.in_flight.store(10, Ordering::SeqCst);
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
        a.compatible.store(false, Ordering::SeqCst);
        b.compatible.store(false, Ordering::SeqCst);
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pool.pick(None, None).unwrap(), c));
        }
        c.compatible.store(false, Ordering::SeqCst);
        assert!(pool.pick(None, None).is_none());
    }

    fn descriptor(name: &str, assets: &[&str]) -> FragmentDescriptor {
        FragmentDescriptor {
            name: name.into(),
            prefix: format!("/{name}"),
            title: name.into(),
            nav: None,
            contract_version: tessera_contracts::CONTRACT_VERSION,
            build_id: Some("b".into()),
            assets: assets.iter().map(|asset| asset.to_string()).collect(),
            publishes: Vec::new(),
            consumes: Vec::new(),
            health: "/readyz".into(),
        }
    }

    #[test]
    fn a_bundle_file_goes_to_an_instance_of_the_build_that_has_it() {
        let pool = Pool::new(vec![url::Url::parse("http://127.0.0.1:1").unwrap(), url::Url::parse("http://127.0.0.1:2").unwrap()]);
        let (old, new) = (&pool.instances[0], &pool.instances[1]);
        *old.descriptor.write().unwrap() = Some(descriptor("catalog", &["pkg/catalog-aaaa.js"]));
        *new.descriptor.write().unwrap() = Some(descriptor("catalog", &["pkg/catalog-bbbb.js"]));
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pool.pick(None, Some("pkg/catalog-aaaa.js")).unwrap(), old));
            assert!(Arc::ptr_eq(&pool.pick(None, Some("pkg/catalog-bbbb.js")).unwrap(), new));
        }
        // A file no build names (an old page after both rolled over): any instance answers (a 404).
        assert!(pool.pick(None, Some("pkg/catalog-cccc.js")).is_some());
    }

    #[test]
    fn contracts_that_differ_from_the_site_or_the_other_fragments_are_named() {
        let mut cart = fragment("cart", "/cart");
        cart.publishes = vec![EventContract { event_type: "cart.order_paid".into(), version: 1 }];
        let registry = FragmentRegistry::new(vec![cart], Vec::new());
        let mut inventory = descriptor("inventory", &[]);
        assert_eq!(registry.incompatibility(&inventory), None);
        inventory.consumes = vec![EventContract { event_type: "cart.order_paid".into(), version: 2 }];
        assert_eq!(registry.incompatibility(&inventory).unwrap(), "consumes cart.order_paid v2 but cart publishes v1");
        inventory.consumes.clear();
        inventory.contract_version += 1;
        assert!(registry.incompatibility(&inventory).unwrap().starts_with("built against site contract"));
    }
}
