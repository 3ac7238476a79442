//! The server-side runtime every Tessera fragment shares.
//!
//! A fragment crate owns its domain (pages, server functions, queries, migrations); this crate owns what
//! would otherwise be copied into each of them:
//! - `db`: one sqlx pool per service, on its own SQLite file by default or its own PostgreSQL schema when a
//!   URL is configured, with the service's embedded migrations for that backend — and, for a fragment, the
//!   runtime's own event tables (`migrations/`: outbox, deliveries, inbox);
//! - `manifest`: the build manifest read at run time (re-read when the file changes, so a fragment
//!   redeploy needs no restart) and the hydration tags with SRI that load exactly that build;
//! - `page`: the HTML document every fragment page renders into, with the empty chrome slot the shell fills;
//! - `api`: the server-function route and the one place that maps [`ApiError`] kinds to HTTP statuses;
//! - `events`: transactional outbox, relay, signed transport and inbox between services; `broker`: the
//!   same over NATS JetStream when configured; `cdc`: the relay fed by PostgreSQL's logical replication
//!   stream instead of polling, when configured;
//! - `service`: signed service-to-service calls (the cart reserving stock) and their verification;
//! - `secrets`: one shared secret per trust relationship (events, service calls, the payment API, its
//!   webhooks), loaded when first asked for, checked for length, kept owner-only;
//! - `peers`: how a service reaches the others it calls (in process or over HTTP);
//! - `lease`: named leases in a fragment's database, so its instances take turns (a cart's changes, a
//!   sweeper's pass) whatever process they run in;
//! - `metrics`: Prometheus metrics (requests, outbox, relay lag) at `GET /metrics`;
//! - `webhook`: the payment provider's signed webhooks (timestamped HMAC, rotation-ready);
//! - `client`: the client's address, from `X-Forwarded-For` only behind the configured trusted proxies;
//! - `fragment`: the [`fragment::Fragment`] trait each fragment crate implements (name, prefix, nav,
//!   migrations, router, jobs, seed, published events, subscriptions with handlers);
//! - `config` and `host`: the settings of a process and the assembly and serving of one (fragments,
//!   relays, peers, health and readiness, draining on SIGTERM), shared by every binary;
//! - [`FragmentRuntime`]: the state a fragment's router, SSR and server functions share.
//!
//! The runtime uses sqlx's `Any` driver so one query text serves both backends: queries use `$1`
//! placeholders (SQLite accepts them too) and only the types both backends share (`BIGINT`, `TEXT`).

pub mod api;
pub mod broker;
pub mod cdc;
pub mod client;
pub mod config;
pub mod db;
pub mod events;
pub mod fragment;
pub mod host;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod page;
pub mod peers;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRef;
use shared_auth::verify::Verifier;
use sqlx::AnyPool;

pub use tessera_contracts::ApiError;

/// Everything a fragment's handlers, SSR and server functions need. Cheap to clone.
#[derive(Clone)]
pub struct FragmentRuntime {
    /// Fragment name, e.g. `catalog`.
    pub name: &'static str,
    /// URL prefix it owns, e.g. `/catalog`.
    pub prefix: &'static str,
    /// The fragment's own database.
    pub db: AnyPool,
    /// Verifies the shared login with the shell's public keys.
    pub verifier: Verifier,
    /// The fragment's build manifest, for its hydration tags.
    pub manifests: Arc<manifest::ManifestStore>,
    /// Which origins may send this fragment state-changing requests.
    pub csrf: Arc<shared_auth::csrf::CsrfPolicy>,
    /// The fragment's side of the event platform.
    pub events: Arc<FragmentEvents>,
    /// Routes to the services this one calls.
    pub peers: Arc<peers::Peers>,
    /// The deployment's shared secrets, loaded when a part of the fragment first needs one (the cart
    /// the payment secrets, inventory the service secret).
    pub secrets: Arc<secrets::Secrets>,
    /// Whether cookies the fragment sets itself carry `Secure` (the site is served over https).
    pub secure_cookies: bool,
}

/// A fragment's outbox (if it produces events), its subscriptions, and the signer that authenticates
/// event requests.
pub struct FragmentEvents {
    pub outbox: events::Outbox,
    pub signer: events::EventSigner,
    /// The events it consumes, with their handlers (served at `POST <prefix>/events`).
    pub subscriptions: fragment::Subscriptions,
}

impl FragmentRuntime {
    /// Directory of this fragment's bundle: `<site_dir>/<name>`.
    pub fn bundle_dir(site_dir: &std::path::Path, name: &str) -> PathBuf {
        site_dir.join(name)
    }
}

impl FromRef<FragmentRuntime> for Verifier {
    fn from_ref(runtime: &FragmentRuntime) -> Verifier {
        runtime.verifier.clone()
    }
}

/// The runtime of the current server function or SSR render (provided as Leptos context by the fragment).
pub fn use_runtime() -> Result<FragmentRuntime, ApiError> {
    leptos::prelude::use_context::<FragmentRuntime>().ok_or_else(|| {
        tracing::error!("FragmentRuntime missing from the Leptos context");
        ApiError::Internal
    })
}

/// Logs a database error with its cause and turns it into the generic internal error.
pub fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "internal error");
    ApiError::Internal
}

/// Serves a fragment's content-hashed bundle (`<bundle_dir>/pkg`) with a year-long immutable cache.
pub fn asset_service(bundle_dir: &std::path::Path) -> axum::routing::MethodRouter {
    use http::header::{HeaderValue, CACHE_CONTROL};
    let serve = tower::ServiceBuilder::new()
        .layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")))
        .service(tower_http::services::ServeDir::new(bundle_dir.join("pkg")));
    axum::routing::get_service(serve)
}

/// Starts Leptos' task executor on tokio; SSR spawns its resources there. Safe to call more than once.
pub fn init_executor() {
    let _ = any_spawner::Executor::init_tokio();
}
