//! The server-side runtime every Tessera fragment shares.
//!
//! A fragment crate owns its domain (pages, server functions, queries, migrations); this crate owns what
//! would otherwise be copied into each of them:
//! - `db`: one sqlx pool per service, on its own SQLite file by default or its own PostgreSQL schema when a
//!   URL is configured, with the service's embedded migrations for that backend — and, for a fragment, the
//!   runtime's own event tables (`migrations/`: outbox, deliveries, inbox);
//! - `manifest`: the build manifest read at run time (re-read when the file changes, so a fragment
//!   redeploy needs no restart) and the hydration tags with SRI that load exactly that build, with the
//!   page runtime (`islands.js`: island hydration, in-page navigation inside the fragment, region refresh)
//!   inlined into them;
//! - `page`: the HTML document every fragment page renders into (in Leptos's islands mode), with the
//!   empty chrome slot the shell fills;
//! - `api`: the server-function route and the one place that maps [`ApiError`] kinds to HTTP statuses;
//! - `events`: transactional outbox, relay, signed transport and inbox between services; `broker`: the
//!   same over NATS JetStream when configured; `cdc`: the relay fed by PostgreSQL's logical replication
//!   stream instead of polling, when configured;
//! - `service`: signed service-to-service calls (the cart reserving stock) and their verification;
//! - `secrets`: one shared secret per trust relationship (events, service calls, the payment API, its
//!   webhooks), loaded when first asked for, checked for length, kept owner-only;
//! - `peers`: how a service reaches another, the one abstraction of every process (the shell's registry
//!   too): a `Target` in process or over HTTP, a `Pool` of instances with their health check and the
//!   power-of-two-choices pick, and the process's one pair of HTTP `Clients`;
//! - `lease`: named leases in a fragment's database, so its instances take turns (a cart's changes, a
//!   sweeper's pass) whatever process they run in;
//! - `metrics`: Prometheus metrics (requests, outbox, relay lag) at `GET /metrics`;
//! - `webhook`: the payment provider's signed webhooks (timestamped HMAC, rotation-ready);
//! - `timing`: the `Server-Timing` of a fragment's answers (time waiting for data, time rendering);
//! - `client`: the client's address, from `X-Forwarded-For` only behind the configured trusted proxies;
//! - `relying_party`: a fragment running alone on another domain signs its users in at the shell with
//!   OpenID Connect (the `openidconnect` crate for the code exchange and ID token checks);
//! - `fragment`: the [`fragment::Fragment`] trait each fragment crate implements (name, prefix, nav,
//!   migrations, router, jobs, seed, published events, subscriptions with handlers);
//! - `config` and `host`: the settings of a process and the assembly and serving of one (fragments,
//!   relays, peers, health and readiness, draining on SIGTERM), shared by every binary;
//! - [`FragmentRuntime`]: the state a fragment's router, SSR and server functions share;
//! - `testing` (feature `testing`, for dev-dependencies): one fragment alone in its own crate's tests,
//!   on its own database, with signed-in users, signed events and calls in, and test doubles of the
//!   other services' contracts out.
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
pub mod relying_party;
pub mod routes;
pub mod secrets;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timing;
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
///
/// The release build writes `<file>.br` and `<file>.gz` beside every bundle file (`cargo xtask build`);
/// `ServeDir` picks the variant the request's `Accept-Encoding` prefers and sets `Content-Encoding`, and
/// falls back to the plain file when a variant is missing (a debug build writes none). Every answer
/// carries `Vary: Accept-Encoding` so a shared cache keeps the encodings apart. Compressing once at build
/// time, at brotli's highest level, beats compressing on each request: the files never change.
pub fn asset_service(bundle_dir: &std::path::Path) -> axum::routing::MethodRouter {
    use http::header::{HeaderValue, CACHE_CONTROL, VARY};
    use tower_http::set_header::SetResponseHeaderLayer;
    let serve = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")))
        .layer(SetResponseHeaderLayer::appending(VARY, HeaderValue::from_static("accept-encoding")))
        .service(tower_http::services::ServeDir::new(bundle_dir.join("pkg")).precompressed_br().precompressed_gzip());
    axum::routing::get_service(serve)
}

/// Starts Leptos' task executor on tokio; SSR spawns its resources there. Safe to call more than once.
pub fn init_executor() {
    let _ = any_spawner::Executor::init_tokio();
}

#[cfg(test)]
mod tests {
    use super::asset_service;
    use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
    use http_body_util::BodyExt;
    use std::io::Read;
    use tower::ServiceExt;

    const JS: &[u8] = b"export function hydrate() { return 'the plain bundle file'; }";

    fn bundle(with_variants: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/app-abc.js"), JS).unwrap();
        if with_variants {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut gz, JS).unwrap();
            std::fs::write(dir.path().join("pkg/app-abc.js.gz"), gz.finish().unwrap()).unwrap();
            // Not real brotli: the test only needs to see which file was picked.
            std::fs::write(dir.path().join("pkg/app-abc.js.br"), b"brotli bytes").unwrap();
        }
        dir
    }

    async fn get(dir: &tempfile::TempDir, accept: Option<&str>) -> (http::StatusCode, Option<String>, Option<String>, Vec<u8>) {
        let mut request = http::Request::get("/app-abc.js");
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        let response = asset_service(dir.path()).oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let header = |name| response.headers().get(name).map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned());
        let (status, encoding, vary) = (response.status(), header(CONTENT_ENCODING), header(VARY));
        (status, encoding, vary, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn picks_the_variant_the_client_prefers() {
        let dir = bundle(true);
        let (status, encoding, vary, body) = get(&dir, Some("gzip, deflate, br")).await;
        assert_eq!((status, encoding.as_deref(), vary.as_deref()), (http::StatusCode::OK, Some("br"), Some("accept-encoding")));
        assert_eq!(body, b"brotli bytes");

        let (_, encoding, _, body) = get(&dir, Some("gzip")).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, JS);

        let (_, encoding, vary, body) = get(&dir, None).await;
        assert_eq!((encoding, vary.as_deref(), &body[..]), (None, Some("accept-encoding"), JS));
    }

    #[tokio::test]
    async fn falls_back_to_the_plain_file_when_no_variant_was_written() {
        let dir = bundle(false);
        let (status, encoding, _, body) = get(&dir, Some("br, gzip")).await;
        assert_eq!((status, encoding, &body[..]), (http::StatusCode::OK, None, JS));
    }
}
