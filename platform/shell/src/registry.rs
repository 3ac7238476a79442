//! The fragment registry: which fragment owns which prefix, and how to reach it.
//!
//! A fragment runs in this process (its router) or as one or more instances of another process. The
//! shell learns the latter at run time: it is configured with upstream addresses only
//! (`TESSERA_FRAGMENTS__<NAME>__UPSTREAMS`), and its health checker asks every instance `GET /readyz`
//! and reads its description (`tessera_contracts::descriptor`: prefix, title, navigation, build, contract
//! version), so a fragment the shell has never heard of is served as soon as it answers.
//!
//! Requests to a fragment with several instances go to one of the instances that are ready, chosen by the
//! power of two choices over requests in flight. An instance that fails to connect, or is not ready, is
//! taken out of rotation until a check finds it ready again; the request that met the failure is sent
//! once more to another instance when that is safe: always if it never connected, and for GET and HEAD
//! also when the connection broke before an answer (a draining instance closing a kept-alive connection).
//! Every request waits at most the fragment's timeout for the response head, so a slow or stopped fragment
//! becomes a [`ForwardError`] the shell answers with a fallback instead of hanging.
//!
//! The instances, their health check, the selection and the process's HTTP clients are the host's
//! (`tessera_host::pool`: `Pool`, `Instance::check`, `Clients`), the same ones a process uses to reach the
//! services it calls; what is the shell's own here is forwarding a browser's request whole (streamed
//! answer, hop-by-hop headers, the client's address) and the contract check.
//!
//! Why not tower's `balance`: the shell must know which instance it picked, to eject it and to resend the
//! request elsewhere, and its instances change with each health check; a small selector over a shared
//! list says that more plainly than a `Discover` stream and a retry policy around `Balance`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use serde::{Deserialize, Serialize};
use shared_auth::Role;
use tessera_contracts::descriptor::{EventContract, FragmentDescriptor};
use tessera_contracts::domain::ServiceName;
use tessera_host::client_ip::{ClientIp, FORWARDED_FOR};
use tessera_host::pool::{is_idempotent, Clients, Instance, Pool};
use tower::ServiceExt;

use crate::confinement::Credentials;
use crate::session_middleware::CurrentSession;

/// Largest request body the shell forwards (it keeps the body to resend it to another instance); every
/// fragment endpoint accepts far less.
pub const MAX_FORWARD_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How the shell reaches fragments: this module's section of the shell's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// Default time a fragment has to start answering (`TESSERA_FRAGMENT_TIMEOUT_MS`;
    /// `TESSERA_FRAGMENTS__<NAME>__TIMEOUT_MS` for one fragment).
    pub fragment_timeout_ms: u64,
    /// How often the shell asks each fragment instance whether it is ready (`TESSERA_HEALTH_INTERVAL_MS`).
    pub health_interval_ms: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings { fragment_timeout_ms: 3000, health_interval_ms: 1000 }
    }
}

/// One registered fragment.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// Name, e.g. `catalog`.
    pub name: ServiceName,
    /// Label in the site navigation.
    pub title: String,
    /// URL prefix it owns, e.g. `/catalog`.
    pub prefix: String,
    /// Its router in this process, or its instances.
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

/// Where a fragment's requests go: a whole browser request is forwarded, its answer streamed back.
#[derive(Clone)]
pub enum Upstream {
    /// The fragment runs in this process: its router.
    InProcess(axum::Router),
    /// One or more instances of another process.
    Instances(Arc<Pool>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::InProcess(_) => f.write_str("in process"),
            Upstream::Instances(pool) => f.debug_list().entries(pool.instances.iter().map(|instance| instance.base.as_str())).finish(),
        }
    }
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
pub struct Pending {
    pub name: ServiceName,
    pub pool: Arc<Pool>,
    pub timeout: Duration,
    /// Where the site routes it: from the configuration, never from its description.
    pub prefix: String,
}

/// Every fragment the shell composes.
#[derive(Debug, Default)]
pub struct FragmentRegistry {
    fragments: RwLock<Vec<Arc<Fragment>>>,
    pending: Vec<Pending>,
    /// The process's clients: forwarded requests that change something get a connection of their own
    /// each, so a dead instance refuses it and the request can go to another.
    clients: Clients,
    /// What a fragment gets to know of the visitor (`crate::confinement`).
    credentials: Credentials,
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
    /// A registry of fragments known now; `pending` fragments are added when an instance first
    /// describes itself (see [`FragmentRegistry::check_health`]).
    pub fn new(fragments: Vec<Fragment>, pending: Vec<Pending>, clients: Clients) -> FragmentRegistry {
        FragmentRegistry { fragments: RwLock::new(fragments.into_iter().map(Arc::new).collect()), pending, clients, credentials: Credentials::default() }
    }

    /// Forwarded requests carry the visitor's per-fragment token (without: every request is a guest's).
    pub fn with_credentials(mut self, credentials: Credentials) -> FragmentRegistry {
        self.credentials = credentials;
        self
    }

    /// The prefix this site routes to fragment `name`, if it knows the fragment.
    fn prefix_of(&self, name: &ServiceName) -> Option<String> {
        match self.fragments().iter().find(|fragment| &fragment.name == name) {
            Some(fragment) => Some(fragment.prefix.clone()),
            None => self.pending.iter().find(|pending| &pending.name == name).map(|pending| pending.prefix.clone()),
        }
    }

    /// Every fragment known now, in registration order.
    pub fn fragments(&self) -> Vec<Arc<Fragment>> {
        self.fragments.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Fragment>> {
        self.fragments().into_iter().find(|fragment| fragment.name.as_str() == name)
    }

    /// The fragment owning `path` (longest prefix wins).
    pub fn route(&self, path: &str) -> Option<Arc<Fragment>> {
        self.fragments().into_iter().filter(|fragment| fragment.owns(path)).max_by_key(|fragment| fragment.prefix.len())
    }

    /// Every instance pool: of known fragments and of those not described yet.
    fn pools(&self) -> Vec<(ServiceName, Arc<Pool>)> {
        let mut pools: Vec<(ServiceName, Arc<Pool>)> = self
            .fragments()
            .iter()
            .filter_map(|fragment| match &fragment.upstream {
                Upstream::Instances(pool) => Some((fragment.name.clone(), pool.clone())),
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
                    let outcome = instance.check(&self.clients, &name).await;
                    match outcome {
                        Ok(descriptor) => {
                            let incompatibility = self.incompatibility(&descriptor);
                            let was = instance.set_compatible(incompatibility.is_none());
                            if let (true, Some(reason)) = (was, &incompatibility) {
                                tracing::error!(instance = %instance.base, fragment = %name, %reason, "refusing to route to an instance with incompatible contracts");
                            }
                            instance.set_descriptor(descriptor);
                            instance.mark(incompatibility.is_none(), incompatibility);
                        }
                        Err(problem) => instance.mark(false, Some(problem.to_string())),
                    }
                }
            })
        });
        futures::future::join_all(checks).await;
        for pending in &self.pending {
            if self.get(pending.name.as_str()).is_some() {
                continue;
            }
            // Registered even when no instance is compatible: its prefix then gets the fallback page and
            // the admin page says why, instead of a 404 that hides the fragment.
            let mut described = pending.pool.instances.iter().filter(|instance| instance.descriptor().is_some()).collect::<Vec<_>>();
            described.sort_by_key(|instance| !(instance.is_ready() && instance.is_compatible()));
            let Some(descriptor) = described.first().and_then(|instance| instance.descriptor()) else {
                continue;
            };
            tracing::info!(fragment = %descriptor.name, prefix = %pending.prefix, "fragment registered from its description");
            let fragment = Fragment {
                name: descriptor.name.clone(),
                title: descriptor.title.clone(),
                prefix: pending.prefix.clone(),
                upstream: Upstream::Instances(pending.pool.clone()),
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
        if let Some(prefix) = self.prefix_of(&descriptor.name).filter(|prefix| *prefix != descriptor.prefix) {
            return Some(format!(
                "describes itself at {:?}, but this site routes {prefix:?} to it (TESSERA_FRAGMENTS__{}__PREFIX)",
                descriptor.prefix,
                descriptor.name.as_str().to_uppercase()
            ));
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

    /// Forwards a request to a fragment, waiting at most `timeout` for the response head. It carries the
    /// fragment's own cookies and, for the session in its [`CurrentSession`] extension, the fragment's
    /// own token (`crate::confinement`); nothing else of the visitor's. Failures are counted per fragment
    /// (`tessera_upstream_errors_total`).
    pub async fn forward(&self, fragment: &Fragment, mut request: Request<Body>, timeout: Duration) -> Result<Response<Body>, ForwardError> {
        let claims = request.extensions().get::<CurrentSession>().and_then(|current| current.claims.clone());
        self.credentials.scope(&fragment.name, request.headers_mut(), claims.as_ref());
        let result = self.forward_once(fragment, request, timeout).await;
        if let Err(error) = &result {
            metrics::counter!("tessera_upstream_errors_total", "fragment" => fragment.name.to_string(), "kind" => error.kind()).increment(1);
        }
        result
    }

    async fn forward_once(&self, fragment: &Fragment, request: Request<Body>, timeout: Duration) -> Result<Response<Body>, ForwardError> {
        match &fragment.upstream {
            Upstream::InProcess(router) => tokio::time::timeout(timeout, router.clone().oneshot(request))
                .await
                .map_err(|_| ForwardError::Timeout(timeout))?
                .map_err(|error| ForwardError::Unreachable(error.to_string())),
            Upstream::Instances(pool) => {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, MAX_FORWARD_BODY_BYTES).await.map_err(|_| ForwardError::TooLarge)?;
                let deadline = tokio::time::Instant::now() + timeout;
                let asset =
                    parts.uri.path().strip_prefix(fragment.prefix.as_str()).and_then(|rest| rest.strip_prefix('/')).filter(|rest| rest.starts_with("pkg/"));
                let first = pool.pick(None, asset).ok_or_else(|| ForwardError::Unreachable("no compatible instance".into()))?;
                match self.send(&first, &fragment.prefix, &parts, body.clone(), deadline, timeout).await {
                    Ok(response) => Ok(response),
                    Err(Attempt::Failed(error)) => Err(error),
                    Err(Attempt::Retryable(error)) => {
                        first.mark(false, Some(error.to_string()));
                        let Some(second) = pool.pick(Some(&first), asset) else {
                            return Err(error);
                        };
                        tracing::info!(fragment = %fragment.name, from = %first.base, to = %second.base, %error, "resending to another instance");
                        metrics::counter!("tessera_upstream_resends_total", "fragment" => fragment.name.to_string()).increment(1);
                        self.send(&second, &fragment.prefix, &parts, body, deadline, timeout).await.map_err(|attempt| match attempt {
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
        prefix: &str,
        parts: &axum::http::request::Parts,
        body: bytes::Bytes,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Response<Body>, Attempt> {
        let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        // Appended to the instance's origin as it is, not resolved against it (no `..` reaches this far:
        // the shell refuses dot segments before routing); and still checked to stay in the prefix.
        let origin = instance.base.as_str().trim_end_matches('/');
        let url = url::Url::parse(&format!("{origin}{path_and_query}")).map_err(|error| Attempt::Failed(ForwardError::Unreachable(error.to_string())))?;
        if !crate::paths::within(url.path(), prefix) {
            return Err(Attempt::Failed(ForwardError::Unreachable(format!("{path_and_query:?} leaves the fragment's prefix"))));
        }
        let mut headers = HeaderMap::new();
        copy_end_to_end_headers(&parts.headers, &mut headers);
        if let Some(host) = parts.headers.get(axum::http::header::HOST) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
        // The client as the shell resolved it (behind its own trusted proxies): a fragment that trusts
        // the shell's address logs the shopper, not the shell. What the client sent is not passed on.
        if let Some(client) = ClientIp::of(&parts.extensions) {
            headers.insert(HeaderName::from_static(FORWARDED_FOR), HeaderValue::from_str(&client.0.to_string()).expect("an address"));
        }
        let idempotent = is_idempotent(&parts.method);
        let request = self.clients.for_method(&parts.method).request(parts.method.clone(), url).headers(headers).body(body);
        let in_flight = instance.start_request();
        let sent = tokio::time::timeout_at(deadline, request.send()).await;
        drop(in_flight);
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
            name: ServiceName::parse(name).unwrap(),
            title: name.into(),
            prefix: prefix.into(),
            upstream: Upstream::Instances(Arc::new(Pool::of(&["http://127.0.0.1:9".into()]))),
            timeout: Duration::from_secs(1),
            in_nav: true,
            nav_role: None,
            publishes: Vec::new(),
            consumes: Vec::new(),
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let registry = FragmentRegistry::new(vec![fragment("admin", "/admin"), fragment("inventory", "/admin/inventory")], Vec::new(), Clients::new());
        assert_eq!(registry.route("/admin/inventory").unwrap().name, ServiceName::INVENTORY);
        assert_eq!(registry.route("/admin/inventory/api/x").unwrap().name, ServiceName::INVENTORY);
        assert_eq!(registry.route("/admin/users").unwrap().name.as_str(), "admin");
        assert!(registry.route("/administrator").is_none());
        assert!(registry.route("/").is_none());
    }

    #[test]
    fn contracts_that_differ_from_the_site_or_the_other_fragments_are_named() {
        let mut cart = fragment("cart", "/cart");
        cart.publishes = vec![EventContract { event_type: "cart.order_paid".into(), version: 1 }];
        let registry = FragmentRegistry::new(vec![cart], Vec::new(), Clients::new());
        let mut inventory = FragmentDescriptor::named(ServiceName::INVENTORY, "/inventory");
        assert_eq!(registry.incompatibility(&inventory), None);
        inventory.consumes = vec![EventContract { event_type: "cart.order_paid".into(), version: 2 }];
        assert_eq!(registry.incompatibility(&inventory).unwrap(), "consumes cart.order_paid v2 but cart publishes v1");
        inventory.consumes.clear();
        inventory.contract_version += 1;
        assert!(registry.incompatibility(&inventory).unwrap().starts_with("built against site contract"));
    }
}
