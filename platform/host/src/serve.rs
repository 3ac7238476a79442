//! Serving a process: binding its listener, the layers every process gets (request ids, the client's
//! address, tracing, header limits, panics as 500s, metrics), `GET /healthz` (alive) and `GET /readyz`
//! (takes traffic) in front of the app, and draining. On SIGTERM `/readyz` turns 503 at once while
//! requests are still served, so balancers (the shell, Kubernetes) stop sending new ones; after
//! `drain_notice_ms` the listener closes, requests in flight finish (at most `drain_timeout_ms`), and the
//! process exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use serde::{Deserialize, Serialize};
use tessera_contracts::domain::ServiceName;
use tessera_fragment::event_admin::SubscriptionLag;
use tessera_fragment::peers::ClearOnDrop;

use crate::client_ip::{self, ClientIp, TrustedProxies};
use crate::error::HostError;
use crate::metrics;

/// How a process serves: this module's section of the process settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerSettings {
    /// Address to listen on (`TESSERA_ADDR`; port 0 picks a free one).
    pub addr: SocketAddr,
    /// On SIGTERM: how long `/readyz` answers 503 before the listener closes, so balancers stop sending
    /// new requests first (`TESSERA_DRAIN_NOTICE_MS`).
    pub drain_notice_ms: u64,
    /// Then how long requests in flight have to finish (`TESSERA_DRAIN_TIMEOUT_MS`).
    pub drain_timeout_ms: u64,
    /// Where this process serves its Prometheus metrics (`GET /metrics`), on a listener of their own
    /// and never on the main one (`TESSERA_METRICS_ADDR`; default `127.0.0.1:0`: loopback, on a port the
    /// system picks and the log names). Set a fixed address for a scraper, e.g. `0.0.0.0:9464` inside a
    /// pod.
    pub metrics_addr: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` is believed, comma-separated addresses or CIDRs
    /// (`TESSERA_TRUSTED_PROXIES`, see `crate::client_ip`); unset: the socket peer is the client.
    pub trusted_proxies: Option<String>,
    /// Certificate authorities this process trusts beyond the system's, for HTTPS and NATS over TLS: a
    /// PEM bundle (`TESSERA_TLS_CA_FILE`; see `crate::tls`).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            drain_notice_ms: 2000,
            drain_timeout_ms: 10_000,
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            trusted_proxies: None,
            tls_ca_file: None,
        }
    }
}

impl ServerSettings {
    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, crate::client_ip::NotAProxy> {
        TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or_default())
    }
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
    let client = ClientIp::of(request.extensions()).map(|ClientIp(address)| address.to_string()).unwrap_or_default();
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), %client, request_id)
}

/// Layers every process gets: request ids, the client's address (behind `proxies` from their
/// `X-Forwarded-For`), tracing, header limits, panics turned into 500s.
pub fn with_common_layers(router: Router, proxies: Arc<TrustedProxies>) -> Router {
    router
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(reject_oversized_headers))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn_with_state(proxies, client_ip::resolve))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Whether the process takes traffic: false while starting and from the moment it is told to stop.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
    /// The subscriptions of this process's producers found behind, and when that was read.
    behind: Arc<tokio::sync::Mutex<Option<LagReading>>>,
}

/// The subscriptions found behind, and when that was read.
type LagReading = (std::time::Instant, Vec<(ServiceName, SubscriptionLag)>);

/// How long `/readyz` reuses what it read of the subscriptions' lag (probes come every few seconds,
/// from Kubernetes and from every shell).
const LAG_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }

    /// The subscriptions found behind, read at most every [`LAG_READ_EVERY`].
    async fn behind(&self, scrape: &metrics::Scrape) -> Vec<(ServiceName, SubscriptionLag)> {
        if scrape.producers.is_empty() {
            return Vec::new();
        }
        let mut cached = self.behind.lock().await;
        match &*cached {
            Some((read, behind)) if read.elapsed() < LAG_READ_EVERY => behind.clone(),
            _ => {
                let behind = scrape.behind().await;
                *cached = Some((std::time::Instant::now(), behind.clone()));
                behind
            }
        }
    }

    /// Starts draining: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// The header of a `/readyz` answer that lists the subscriptions behind (their subscribers).
pub const EVENTS_BEHIND_HEADER: &str = "x-tessera-events-behind";

/// `app` with `/healthz` and `/readyz` in front of it. `/readyz` answers 503 while draining; otherwise
/// 200, saying which subscriptions of this process's events are further behind than
/// `TESSERA_EVENTS_MAX_LAG_MS` (in the body and in [`EVENTS_BEHIND_HEADER`]). A lagging subscription
/// does not take the instance out of rotation: it still serves, and removing it would only slow the
/// producer's relay further; the operator sees it here, on `/admin/events` and in `/metrics`.
fn with_health(app: Router, readiness: Readiness, scrape: metrics::Scrape) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (readiness, scrape) = (readiness.clone(), scrape.clone());
                async move {
                    if !readiness.is_ready() {
                        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
                    }
                    let behind = readiness.behind(&scrape).await;
                    if behind.is_empty() {
                        return (StatusCode::OK, "ready").into_response();
                    }
                    let subscribers: Vec<&str> = behind.iter().map(|(_, lag)| lag.subscriber.as_str()).collect();
                    let header = axum::http::HeaderValue::from_str(&subscribers.join(", ")).unwrap_or(axum::http::HeaderValue::from_static("yes"));
                    let lines: Vec<String> = behind
                        .iter()
                        .map(|(producer, lag)| format!("{producer} → {}: {} waiting, oldest {:.1} s", lag.subscriber, lag.pending, lag.lag_ms as f64 / 1000.0))
                        .collect();
                    let body = format!("ready; events behind:\n{}\n", lines.join("\n"));
                    (StatusCode::OK, [(axum::http::HeaderName::from_static(EVENTS_BEHIND_HEADER), header)], body).into_response()
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
    pub teardown: ClearOnDrop,
}

/// What a process's metrics read.
#[derive(Clone)]
pub struct Exposure {
    /// What a scrape reads from the process's databases.
    pub scrape: metrics::Scrape,
}

/// Binds `settings.addr` (port 0 picks a free one) and serves `app` (with the common layers, health and
/// readiness) in the background until SIGTERM, Ctrl-C or [`Running::stop`], then drains. Metrics go on
/// their own listener (`TESSERA_METRICS_ADDR`), never on the main one: a fragment reached directly, or
/// through the shell, does not show them.
pub async fn serve(
    settings: &ServerSettings,
    app: Router,
    background: Vec<tokio::task::JoinHandle<()>>,
    teardown: ClearOnDrop,
    exposure: Exposure,
) -> Result<Running, HostError> {
    let readiness = Readiness::default();
    let proxies = Arc::new(settings.trusted_proxies()?);
    metrics::handle();
    let metrics = metrics::router(exposure.scrape.clone());
    let app = with_health(with_common_layers(app, proxies), readiness.clone(), exposure.scrape.clone());
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
