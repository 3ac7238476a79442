//! Assembling and serving a Tessera process, whatever it contains: one fragment (`tessera-catalog`), the
//! shell with none (`tessera-shell`), or the shell with every fragment (`tessera`).
//!
//! - [`Host`] opens each local fragment's database, builds its runtime and router, and connects the
//!   services to each other: in process when they run here, over HTTP (several instances each) when they are
//!   configured as upstreams. Which services a fragment's events go to comes from the consumers'
//!   subscriptions: of the local fragments directly, of the others from their published description
//!   ([`DESCRIPTOR_PATH`]), read at start and again every few seconds.
//! - [`serve`] binds the listener and answers `GET /healthz` (the process is alive) and `GET /readyz`
//!   (it takes traffic) beside the app. On SIGTERM it drains: `/readyz` turns 503 at once while requests
//!   are still served, so balancers (the shell, Kubernetes) stop sending new ones; after
//!   `drain_notice_ms` the listener closes, requests in flight finish (at most `drain_timeout_ms`), and the
//!   process exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use serde::{Deserialize, Serialize};
use shared_auth::verify::{JwksSource, Verifier, VerifierSettings};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::client::{ClientIp, TrustedProxies};

use crate::config::Settings;
use crate::events::{HttpTransport, Outbox, Relay, RelaySettings, Target};
use crate::fragment::{Fragment, NavEntry};
use crate::manifest::ManifestStore;
use crate::peers::{Clients, Peers, Pool};
use crate::secrets::Secrets;
use crate::{FragmentEvents, FragmentRuntime};

/// Where every process describes the fragments it serves, as a JSON list of [`FragmentDescriptor`]s (not
/// under a prefix: only the shell and other services ask). A fragment's own binary lists one; a site
/// that runs fragments in process lists those, so a fragment run alone can find them there too.
pub const DESCRIPTOR_PATH: &str = "/.well-known/tessera-fragments";

/// The description of `name` among those a process at `base` publishes.
pub async fn describe(client: &reqwest::Client, base: &str, name: &str, timeout: Duration) -> Result<FragmentDescriptor, String> {
    let response = client.get(format!("{}{DESCRIPTOR_PATH}", base.trim_end_matches('/'))).timeout(timeout).send().await;
    let response = response.map_err(|error| format!("not reachable: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("no description ({})", response.status()));
    }
    let body = response.bytes().await.map_err(|error| format!("unreadable description: {error}"))?;
    let descriptors: Vec<FragmentDescriptor> = serde_json::from_slice(&body).map_err(|error| format!("unreadable description: {error}"))?;
    let names: Vec<String> = descriptors.iter().map(|descriptor| descriptor.name.clone()).collect();
    descriptors.into_iter().find(|descriptor| descriptor.name == name).ok_or_else(|| format!("serves {names:?}, not the {name:?} fragment"))
}

/// How often a process reads the descriptions of the services it is configured to reach: soon while one
/// has never answered, then now and then (a redeploy may change what it consumes).
const DISCOVERY_EVERY: Duration = Duration::from_secs(5);
const DISCOVERY_RETRY: Duration = Duration::from_millis(500);

/// An event type and the version a fragment writes (published) or decodes (consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventContract {
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
}

/// What a fragment process publishes about itself at [`DESCRIPTOR_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentDescriptor {
    pub name: String,
    pub prefix: String,
    pub title: String,
    pub nav: Option<NavEntry>,
    /// The site contract version (`tessera_contracts::CONTRACT_VERSION`: cart API, DOM events, manifest,
    /// value types) the server code was built against; the shell routes only to its own version.
    pub contract_version: u32,
    /// The bundle this instance serves (`None`: built without one, pages do not hydrate).
    pub build_id: Option<String>,
    /// The bundle's files (`pkg/catalog-<hash>.js`, …), so asset requests reach an instance that has them.
    #[serde(default)]
    pub assets: Vec<String>,
    /// Event types it publishes, with the version it writes.
    pub publishes: Vec<EventContract>,
    /// Event types it consumes, with the version its handler decodes.
    pub consumes: Vec<EventContract>,
    /// Readiness endpoint.
    pub health: String,
}

impl FragmentDescriptor {
    /// The description of a fragment running in this process (its subscriptions as the runtime holds them,
    /// its bundle as its manifest says now).
    pub fn of(local: &Local) -> FragmentDescriptor {
        let (fragment, runtime) = (local.fragment, &local.runtime);
        let manifest = runtime.manifests.current();
        FragmentDescriptor {
            name: fragment.name().to_owned(),
            prefix: fragment.prefix().to_owned(),
            title: fragment.title().to_owned(),
            nav: fragment.nav(),
            contract_version: tessera_contracts::CONTRACT_VERSION,
            build_id: manifest.as_ref().map(|manifest| manifest.build_id.clone()),
            assets: manifest.iter().flat_map(|manifest| manifest.assets.iter().map(|asset| asset.path.clone())).collect(),
            publishes: fragment.publishes().iter().map(|&(event_type, version)| EventContract { event_type: event_type.to_owned(), version }).collect(),
            consumes: runtime
                .events
                .subscriptions
                .types()
                .into_iter()
                .map(|(event_type, version)| EventContract { event_type: event_type.to_owned(), version })
                .collect(),
            health: "/readyz".into(),
        }
    }
}

/// Why a process could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("seeding the {fragment} demo data: {source}")]
    Seed { fragment: &'static str, source: crate::fragment::SeedError },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("reading or recording event subscriptions: {0}")]
    Subscriptions(sqlx::Error),
}

/// A fragment running in this process.
#[derive(Clone)]
pub struct Local {
    pub fragment: &'static dyn Fragment,
    pub runtime: FragmentRuntime,
    /// Its router, with panics turned into 500s (and so into the shell's fallback page).
    pub router: Router,
}

/// The services of one process, being assembled.
pub struct Host {
    pub settings: Settings,
    /// The deployment's shared secrets (`crate::secrets`): each loaded when a part of the process first
    /// needs it, so a process holds only the secrets of what it runs.
    pub secrets: Arc<Secrets>,
    /// Routes to every service this process knows, shared by all services in it.
    pub peers: Arc<Peers>,
    pub local: Vec<Local>,
    /// Background tasks started so far.
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

/// The verifier settings every service uses for the shared login.
pub fn verifier_settings(settings: &Settings) -> VerifierSettings {
    let mut verifier = VerifierSettings::new(&settings.issuer, &settings.audience);
    verifier.access_cookie = settings.cookie_policy().access_name();
    // No token the shell issues lives longer than this; anything longer is forged or misconfigured.
    verifier.max_lifetime = Duration::from_secs(settings.access_ttl_seconds.max(60) as u64 + 60);
    verifier
}

impl Host {
    /// A host with the deployment's secrets (configured ones are checked now; see `crate::secrets`).
    pub fn new(settings: &Settings) -> Result<Host, HostError> {
        let secrets = Arc::new(Secrets::new(settings)?);
        // The process's one pair of HTTP clients: every route to another service shares it.
        let peers = Arc::new(Peers::new(Clients::new()));
        if let Some(base) = &settings.payment_url {
            // Comma-separated: several processes serve the provider (every shell replica does).
            let bases: Vec<String> = base.split(',').map(str::to_owned).collect();
            peers.set("payments", Target::remote(tessera_contracts::payments::SANDBOX_PREFIX, Arc::new(Pool::of(&bases)), peers.clients()));
        }
        Ok(Host { settings: settings.clone(), secrets, peers, local: Vec::new(), background: Vec::new() })
    }

    /// Opens `fragment`'s database, builds its runtime and router, and makes it reachable in process.
    /// `jwks` is where it finds the shell's public keys.
    pub async fn add_fragment(&mut self, fragment: &'static dyn Fragment, jwks: impl JwksSource) -> Result<&Local, HostError> {
        let settings = &self.settings;
        // Event types are named after their producer (`<producer>.<what happened>`): a broker's streams
        // and a consumer's choice of stream rely on it.
        if let Some((event_type, _)) = fragment.publishes().iter().find(|(event_type, _)| crate::broker::producer_of(event_type) != Some(fragment.name())) {
            return Err(HostError::Config(format!("{} publishes {event_type:?}, which is not named {}.<event>", fragment.name(), fragment.name())));
        }
        let db = settings.store().open_fragment(fragment.name(), fragment.migrations()).await?;
        let subscriptions = fragment.subscriptions();
        let runtime = FragmentRuntime {
            name: fragment.name(),
            prefix: fragment.prefix(),
            db,
            verifier: Verifier::new(verifier_settings(settings), jwks),
            manifests: Arc::new(ManifestStore::new(FragmentRuntime::bundle_dir(&settings.site_dir, fragment.name()))),
            csrf: Arc::new(settings.csrf_policy()),
            events: Arc::new(FragmentEvents { outbox: Outbox::new(fragment.name()), signer: self.secrets.events()?, subscriptions }),
            peers: self.peers.clone(),
            secrets: self.secrets.clone(),
            secure_cookies: settings.secure_cookies(),
        };
        // Timed as a whole: the routes a fragment adds to the kit's are pages too (`crate::timing`).
        let router = fragment.router(runtime.clone()).layer(axum::middleware::from_fn(crate::timing::middleware)).layer(CatchPanicLayer::new());
        self.peers.set(fragment.name(), Target::InProcess { prefix: fragment.prefix().to_owned(), router: router.clone() });
        self.local.push(Local { fragment, runtime, router });
        Ok(self.local.last().expect("just pushed"))
    }

    /// Makes another service of this process (the sandbox payment provider) reachable by `name`.
    pub fn add_service(&mut self, name: &str, prefix: &str, router: Router) {
        self.peers.set(name, Target::InProcess { prefix: prefix.to_owned(), router });
    }

    /// The fragment of this process called `name`.
    pub fn local(&self, name: &str) -> Option<&Local> {
        self.local.iter().find(|local| local.fragment.name() == name)
    }

    /// Connects the services and starts them: local consumers subscribe to local producers; services
    /// configured as upstreams are discovered (now, and every few seconds in the background); every
    /// producer's relay and every fragment's background jobs start; then demo data is seeded if asked
    /// (after the relays, so the seed's events flow).
    pub async fn start(mut self) -> Result<Started, HostError> {
        let broker = match &self.settings.nats_url {
            Some(url) => Some(crate::broker::Broker::connect(url, &self.settings.nats_prefix).await.map_err(|error| HostError::Config(error.to_string()))?),
            None => None,
        };
        if broker.is_some() {
            for producer in &self.local {
                producer.runtime.events.outbox.use_broker();
            }
        }
        let streamed = self.settings.outbox_relay == crate::config::OutboxRelay::Cdc;
        if streamed {
            let Some(url) = &self.settings.postgres_url else {
                return Err(HostError::Config("TESSERA_OUTBOX_RELAY=cdc reads PostgreSQL's logical replication stream: set TESSERA_POSTGRES_URL too".into()));
            };
            crate::cdc::Source::new(url, "").map_err(HostError::Config)?;
            for producer in self.local.iter().filter(|local| !local.fragment.publishes().is_empty()) {
                crate::cdc::check_server(&producer.runtime.db).await.map_err(HostError::Config)?;
                producer.runtime.events.outbox.use_stream();
            }
        }
        for producer in &self.local {
            producer.runtime.events.outbox.load_subscriptions(&producer.runtime.db).await.map_err(HostError::Subscriptions)?;
        }
        for consumer in &self.local {
            for (event_type, _) in consumer.runtime.events.subscriptions.types() {
                for producer in self.local.iter().filter(|producer| publishes(producer.fragment, event_type)) {
                    let outbox = &producer.runtime.events.outbox;
                    outbox.subscribe(&producer.runtime.db, event_type, consumer.fragment.name()).await.map_err(HostError::Subscriptions)?;
                }
            }
        }
        let discovery = Discovery::new(&self);
        let complete = discovery.run_once().await;
        self.background.push(tokio::spawn(discovery.run(complete)));
        for local in self.local.iter().filter(|local| !local.fragment.publishes().is_empty()) {
            let transport: Arc<dyn crate::events::Transport> = match &broker {
                Some(broker) => Arc::new(crate::broker::BrokerTransport::new(broker.clone(), local.fragment.name(), local.runtime.events.signer.clone())),
                None => Arc::new(HttpTransport::new(local.fragment.name(), local.runtime.events.signer.clone(), self.peers.clone())),
            };
            let relay_settings = RelaySettings {
                max_attempts: self.settings.events_max_attempts,
                base_backoff_ms: self.settings.events_base_backoff_ms,
                ..RelaySettings::default()
            };
            let relay = Relay::new(local.runtime.db.clone(), &local.runtime.events.outbox, transport, relay_settings);
            let task = match (&self.settings.postgres_url, streamed) {
                (Some(url), true) => {
                    let schema = format!("{}{}", self.settings.schema_prefix, local.fragment.name());
                    let source = crate::cdc::Source::new(url, &schema).map_err(HostError::Config)?;
                    crate::cdc::StreamingRelay::new(relay, local.runtime.db.clone(), source, local.fragment.name()).spawn()
                }
                _ => relay.spawn(),
            };
            self.background.push(task);
        }
        if let Some(broker) = &broker {
            let runtimes: Vec<FragmentRuntime> = self.local.iter().map(|local| local.runtime.clone()).collect();
            self.background.extend(crate::broker::spawn_all(broker, &runtimes, self.settings.events_max_attempts, self.settings.events_base_backoff_ms));
        }
        for local in &self.local {
            self.background.extend(local.fragment.background(&local.runtime));
            self.background.push(spawn_event_retention(local.runtime.db.clone(), self.settings.retention()));
        }
        if self.settings.demo {
            let store = self.settings.store();
            for local in &self.local {
                // Instances starting together seed once: the others wait, then find the data there.
                let lock = store.start_lock(local.fragment.name()).await?;
                let seeded = local.fragment.seed_demo(&local.runtime, self.settings.demo_extra_products).await;
                lock.release().await;
                seeded.map_err(|source| HostError::Seed { fragment: local.fragment.name(), source })?;
            }
        }
        Ok(Started { local: self.local, background: self.background, secrets: self.secrets, teardown: Teardown(self.peers.clone()) })
    }
}

/// A started process's services.
pub struct Started {
    pub local: Vec<Local>,
    pub background: Vec<tokio::task::JoinHandle<()>>,
    pub secrets: Arc<Secrets>,
    pub teardown: Teardown,
}

/// Empties the routes between the services of a process when dropped. Services reach each other through
/// [`Peers`], whose in-process targets hold routers whose state holds the same `Peers`: a reference cycle
/// that would keep every database pool of a stopped server open (tests start many servers in one process).
pub struct Teardown(Arc<Peers>);

impl Drop for Teardown {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Checks the instances of the services configured as upstreams (the same check as the shell's
/// registry, `Instance::check`): which are ready, where the service is (its prefix, for events and
/// calls) and what it consumes (so local producers address events to it).
struct Discovery {
    remotes: Vec<(String, Arc<Pool>)>,
    producers: Vec<(&'static dyn Fragment, FragmentRuntime)>,
    peers: Arc<Peers>,
}

impl Discovery {
    fn new(host: &Host) -> Discovery {
        let remotes = host
            .settings
            .fragments
            .keys()
            .filter(|name| host.local(name).is_none())
            .map(|name| (name.clone(), Arc::new(Pool::of(&host.settings.instances_of(name)))))
            .filter(|(_, pool)| !pool.instances.is_empty())
            .collect();
        let producers = host.local.iter().map(|local| (local.fragment, local.runtime.clone())).collect();
        let discovery = Discovery { remotes, producers, peers: host.peers.clone() };
        // Calls use full paths from the contracts, so they can go out before the description is read;
        // event deliveries wait for the prefix (see `HttpTransport`).
        for (name, pool) in &discovery.remotes {
            discovery.peers.set(name, Target::remote("", pool.clone(), discovery.peers.clients()));
        }
        discovery
    }

    /// Checks every instance; returns whether every configured service has been described.
    async fn run_once(&self) -> bool {
        let mut complete = true;
        for (name, pool) in &self.remotes {
            let Some(descriptor) = pool.check_all(self.peers.clients(), name).await else {
                if self.peers.get(name).is_none_or(|target| target.prefix().is_empty()) {
                    complete = false;
                    tracing::debug!(%name, "no instance of this service described itself yet; events to it wait");
                }
                continue;
            };
            // The same pool: what the checks and failed calls learned about its instances is kept.
            self.peers.set(name, Target::remote(descriptor.prefix.clone(), pool.clone(), self.peers.clients()));
            for consumed in &descriptor.consumes {
                for (_, runtime) in self.producers.iter().filter(|(producer, _)| publishes(*producer, &consumed.event_type)) {
                    if let Err(error) = runtime.events.outbox.subscribe(&runtime.db, &consumed.event_type, name).await {
                        tracing::error!(%error, subscriber = %name, event_type = %consumed.event_type, "recording a subscription failed; retried at the next discovery");
                        complete = false;
                    }
                }
            }
        }
        complete
    }

    async fn run(self, mut complete: bool) {
        loop {
            tokio::time::sleep(if complete { DISCOVERY_EVERY } else { DISCOVERY_RETRY }).await;
            complete = self.run_once().await;
        }
    }
}

/// Whether `fragment` publishes `event_type`.
fn publishes(fragment: &dyn Fragment, event_type: &str) -> bool {
    fragment.publishes().iter().any(|(published, _)| *published == event_type)
}

/// `GET /.well-known/tessera-fragments` for the fragments of this process.
pub fn descriptors_route(local: &[Local]) -> Router {
    let described: Arc<Vec<Local>> = Arc::new(local.to_vec());
    Router::new().route(
        DESCRIPTOR_PATH,
        get(move || {
            let list: Vec<FragmentDescriptor> = described.iter().map(FragmentDescriptor::of).collect();
            async move { axum::Json(list) }
        }),
    )
}

/// The router of a process that serves one fragment alone: its routes, and its description.
pub fn fragment_app(local: &Local) -> Router {
    local.router.clone().merge(descriptors_route(std::slice::from_ref(local)))
}

/// Largest header block accepted (all names and values together). Real requests, cookies included, stay
/// far below it; past it a request is refused before any handler runs.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn reject_oversized_headers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size > MAX_HEADER_BYTES {
        tracing::warn!(size, "request headers too large");
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request's headers are too large ({size} bytes; at most {MAX_HEADER_BYTES}). Clearing this site's cookies may help."),
        )
            .into_response();
    }
    next.run(request).await
}

/// The span of one request: method, path, request id and the client's address.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let client = crate::client::ClientIp::of(request.extensions()).map(|ClientIp(address)| address.to_string()).unwrap_or_default();
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), %client, request_id)
}

/// Layers every process gets: request ids, the client's address (behind `proxies` from their
/// `X-Forwarded-For`), tracing, header limits, panics turned into 500s.
pub fn with_common_layers(router: Router, proxies: Arc<TrustedProxies>) -> Router {
    router
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(reject_oversized_headers))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn_with_state(proxies, crate::client::resolve))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Whether the process takes traffic: false while starting and from the moment it is told to stop.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// `app` with `/healthz` and `/readyz` in front of it.
fn with_health(app: Router, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining")
                    }
                }
            }),
        )
        .fallback_service(app)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// Where metrics are served on a listener of their own (`TESSERA_METRICS_ADDR`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Ends when the server stopped (after draining).
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Background tasks (relays, sweepers); abort them with the server.
    pub background: Vec<tokio::task::JoinHandle<()>>,
    pub readiness: Readiness,
    /// Starts a drain as SIGTERM would (tests use it).
    pub stop: Arc<tokio::sync::Notify>,
    /// Breaks the services' reference cycle when the running server is dropped.
    pub teardown: Teardown,
}

/// Where a process's metrics are served.
#[derive(Clone)]
pub struct Exposure {
    /// What a scrape reads from the process's databases.
    pub scrape: crate::metrics::Scrape,
    /// The process faces the public (it has the shell): `/metrics` only ever on `TESSERA_METRICS_ADDR`.
    /// Otherwise also on the main listener when that setting is absent.
    pub public: bool,
}

impl Exposure {
    /// The fragments of a started process, as a scrape reads them.
    pub fn of(local: &[Local], public: bool) -> Exposure {
        let producers = local.iter().map(|local| (local.fragment.name(), local.runtime.db.clone())).collect();
        Exposure { scrape: crate::metrics::Scrape { producers }, public }
    }
}

/// Binds `settings.addr` (port 0 picks a free one) and serves `app` (with the common layers, health and
/// readiness) in the background until SIGTERM, Ctrl-C or [`Running::stop`], then drains. Metrics go on
/// their own listener when `TESSERA_METRICS_ADDR` is set, else on the main one unless the process is
/// public ([`Exposure`]).
pub async fn serve(
    settings: &Settings,
    app: Router,
    background: Vec<tokio::task::JoinHandle<()>>,
    teardown: Teardown,
    exposure: Exposure,
) -> Result<Running, HostError> {
    let readiness = Readiness::default();
    let proxies = Arc::new(settings.trusted_proxies().map_err(HostError::Config)?);
    crate::metrics::handle();
    let metrics = crate::metrics::router(exposure.scrape);
    let app = if settings.metrics_addr.is_none() && !exposure.public { app.merge(metrics.clone()) } else { app };
    let app = with_health(with_common_layers(app, proxies), readiness.clone());
    let listener = TcpListener::bind(settings.addr).await.map_err(|source| HostError::Io { context: format!("binding {}", settings.addr), source })?;
    let addr = listener.local_addr().map_err(|source| HostError::Io { context: "reading the bound address".into(), source })?;
    let metrics_server = match settings.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| HostError::Io { context: format!("binding the metrics listener {addr}"), source })?;
            let metrics_addr = listener.local_addr().map_err(|source| HostError::Io { context: "reading the metrics address".into(), source })?;
            tracing::info!(%metrics_addr, "serving metrics");
            Some((metrics_addr, tokio::spawn(async move { axum::serve(listener, metrics).await })))
        }
        None => None,
    };
    // Pages stream in several writes; with Nagle's algorithm each response would wait for the client's
    // delayed ACK (~40 ms) between them.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let notice = Duration::from_millis(settings.drain_notice_ms);
    let drain_timeout = Duration::from_millis(settings.drain_timeout_ms);
    let draining = readiness.clone();
    let stop_signal = stop.clone();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {},
            _ = stop_signal.notified() => {},
        }
        tracing::info!(notice_ms = notice.as_millis() as u64, "stopping: not ready any more, draining");
        draining.drain();
        // Keep serving while balancers notice that this instance is no longer ready.
        tokio::time::sleep(notice).await;
        tracing::info!("closing the listener; finishing requests in flight");
        let _ = closed_tx.send(());
    };
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(shutdown);
    let (metrics_addr, metrics_task) = metrics_server.unzip();
    let handle = tokio::spawn(async move {
        // The metrics listener lives as long as the server.
        let _metrics = metrics_task.map(AbortOnDrop);
        let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
        tokio::select! {
            result = &mut server => result,
            _ = async {
                let _ = closed_rx.await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "requests still in flight after the drain timeout; stopping anyway");
                Ok(())
            }
        }
    });
    Ok(Running { addr, metrics_addr, handle, background, readiness, stop, teardown })
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Starts tracing (`TESSERA_LOG` filter) for a binary.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Adds services beside a fragment running alone and returns their routes (the cart's sandbox provider).
pub type Extra = for<'a> fn(&'a mut Host) -> crate::fragment::BoxFuture<'a, Result<Option<Router>, HostError>>;

/// Serves one fragment alone, as its own binary does: the shell's keys from its JWKS over HTTP, the
/// other services as configured upstreams, and whatever `extra` adds.
pub async fn run_fragment(settings: &Settings, fragment: &'static dyn Fragment, extra: Option<Extra>) -> Result<Running, HostError> {
    crate::init_executor();
    let mut host = Host::new(settings)?;
    host.add_fragment(fragment, shared_auth::verify::HttpJwks::new(settings.jwks_url())).await?;
    let extra_routes = match extra {
        Some(extra) => extra(&mut host).await?,
        None => None,
    };
    tracing::info!(fragment = fragment.name(), jwks = %settings.jwks_url(), "serving one fragment");
    let started = host.start().await?;
    let mut app = fragment_app(&started.local[0]);
    if let Some(routes) = extra_routes {
        app = app.merge(routes);
    }
    // On a domain of its own the fragment signs its users in at the shell (OpenID Connect).
    let app = crate::relying_party::attach(app, settings, fragment.prefix()).map_err(HostError::Config)?;
    let exposure = Exposure::of(&started.local, false);
    serve(settings, app, started.background, started.teardown, exposure).await
}

/// The `main` of a fragment's own binary (`tessera-<fragment>`): settings from the environment (and
/// `TESSERA_CONFIG`), `--demo` to seed demo data, then serve until SIGTERM and drain.
pub async fn main_of(fragment: &'static dyn Fragment, extra: Option<Extra>) -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let mut settings = Settings::load()?;
    for argument in std::env::args().skip(1) {
        match argument.as_str() {
            "--demo" => settings.demo = true,
            "--help" | "-h" => {
                println!(
                    "tessera-{name}: the {name} fragment alone, on TESSERA_ADDR (default 127.0.0.1:3000).\n\
                     Options: --demo (seed demo data). Settings: TESSERA_* variables, see the README.",
                    name = fragment.name()
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    tracing::info!(?settings, fragment = fragment.name(), "starting");
    let running = run_fragment(&settings, fragment, extra).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await??;
    Ok(())
}

/// How often a fragment's old event rows are pruned (one instance per period).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Prunes a fragment's event tables every hour, from now on (`crate::events::prune`).
fn spawn_event_retention(db: sqlx::AnyPool, retention: crate::events::Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RETENTION_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let pass = crate::events::prune(&db, retention, crate::events::now_ms());
            match crate::lease::once_per_period(&db, "event-retention", RETENTION_EVERY, pass).await {
                Ok(Some(Ok((events, inbox)))) if events + inbox > 0 => tracing::info!(events, inbox, "pruned old event rows"),
                Ok(Some(Err(error))) | Err(error) => tracing::warn!(%error, "pruning old event rows failed"),
                Ok(_) => {}
            }
        }
    })
}
