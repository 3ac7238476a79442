//! Prometheus metrics of a process, at `GET /metrics` in the text format.
//!
//! Code records through the `metrics` facade (`metrics::counter!`, `histogram!`), which costs an atomic
//! add when nothing is installed; `metrics-exporter-prometheus` aggregates and renders (chosen over the
//! `prometheus` crate: a facade means fragment crates name a metric without depending on an exporter or
//! passing a registry around). What is recorded:
//! - `http_requests_total{method,route,status}` and `http_request_duration_seconds{method,route}`
//!   (time to the response head: a streamed page's body is not included) for every request, by route
//!   pattern, never by raw path, so the number of series stays bounded;
//! - `tessera_outbox_depth`, `tessera_outbox_oldest_undelivered_seconds` and `tessera_dead_letters`
//!   per producer, read from its database when scraped, `tessera_event_delivery_lag_seconds`
//!   (commit to delivery) as the relay delivers, and `tessera_event_applied_lag_seconds{producer,
//!   event_type}` (commit to the consumer's effect) as a consumer applies;
//! - in the shell, `tessera_upstream_errors_total{fragment,kind}` and
//!   `tessera_fragment_fallbacks_total{fragment}`; in inventory, `tessera_reservations_total{outcome}`.
//!
//! Where it is served is the host's choice (`crate::serve`): never on a route the shell exposes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::AnyPool;
use tessera_contracts::domain::ServiceName;
use tessera_fragment::event_admin::SubscriptionLag;

/// Seconds: from a fast API answer to a slow page or a late event.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().set_buckets(BUCKETS).expect("buckets are not empty").build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only what it is given");
        }
        // Histogram samples wait in buffers until drained; drain them even when nobody scrapes.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("a thread");
        handle
    })
}

/// The route label of a response whose request no route pattern matched (a fallback handler that
/// serves many paths, like the shell's forwarding to fragments, names what it served).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// Middleware: counts and times every request by method, route pattern and status.
pub async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let matched = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    // Any token is a valid method: only the standard ones become labels, so a client cannot make series.
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(request).await;
    let route = match (response.extensions().get::<RouteLabel>(), matched) {
        (Some(RouteLabel(label)), _) => label.clone(),
        (None, Some(path)) => path,
        (None, None) => "unmatched".to_owned(),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.clone()).record(elapsed);
    metrics::counter!("http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    response
}

/// What a scrape reads from the databases of the fragments a process runs (name, pool).
#[derive(Clone, Default)]
pub struct Scrape {
    pub producers: Vec<(ServiceName, AnyPool)>,
    /// How far behind a subscription may fall (`TESSERA_EVENTS_MAX_LAG_MS`), for `/readyz`.
    pub max_lag_ms: i64,
    /// The subscribers each producer had deliveries waiting for at an earlier scrape.
    seen: Arc<Mutex<HashMap<ServiceName, BTreeSet<ServiceName>>>>,
}

impl Scrape {
    pub fn new(producers: Vec<(ServiceName, AnyPool)>, max_lag_ms: i64) -> Scrape {
        Scrape { producers, max_lag_ms, seen: Arc::default() }
    }
}

impl Scrape {
    async fn refresh(&self) {
        for (producer, db) in &self.producers {
            match tessera_fragment::event_admin::outbox_gauges(db).await {
                Ok(gauges) => {
                    let label = || ("producer", producer.to_string());
                    metrics::gauge!("tessera_outbox_depth", &[label()]).set(gauges.depth as f64);
                    metrics::gauge!("tessera_outbox_oldest_undelivered_seconds", &[label()]).set(gauges.oldest_age_ms as f64 / 1000.0);
                    metrics::gauge!("tessera_dead_letters", &[label()]).set(gauges.dead as f64);
                }
                Err(error) => tracing::warn!(%producer, %error, "cannot read the outbox for metrics"),
            }
            match tessera_fragment::event_admin::subscription_lags(db, self.max_lag_ms).await {
                Ok(lags) => {
                    // Subscribers with nothing waiting are not listed: their lag is zero.
                    let waiting: Vec<&ServiceName> = lags.iter().map(|lag| &lag.subscriber).collect();
                    for subscriber in self.subscribers_seen(producer, &waiting) {
                        metrics::gauge!("tessera_event_subscription_lag_seconds", "producer" => producer.to_string(), "subscriber" => subscriber.to_string())
                            .set(0.0);
                    }
                    for lag in lags {
                        metrics::gauge!("tessera_event_subscription_lag_seconds", "producer" => producer.to_string(), "subscriber" => lag.subscriber.to_string())
                            .set(lag.lag_ms as f64 / 1000.0);
                    }
                }
                Err(error) => tracing::warn!(%producer, %error, "cannot read the subscriptions' lag for metrics"),
            }
        }
    }

    /// The subscribers of `producer` that had deliveries waiting at an earlier scrape and have none
    /// now (their gauge goes back to zero); remembers `waiting` for the next scrape.
    fn subscribers_seen(&self, producer: &ServiceName, waiting: &[&ServiceName]) -> Vec<ServiceName> {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = seen.entry(producer.clone()).or_default();
        let gone: Vec<ServiceName> = known.iter().filter(|subscriber| !waiting.contains(subscriber)).cloned().collect();
        known.extend(waiting.iter().map(|subscriber| (*subscriber).clone()));
        gone
    }

    /// The subscriptions of this process's producers that are further behind than the bound, with
    /// their producer (for `/readyz`).
    pub async fn behind(&self) -> Vec<(ServiceName, SubscriptionLag)> {
        let mut behind = Vec::new();
        for (producer, db) in &self.producers {
            match tessera_fragment::event_admin::subscription_lags(db, self.max_lag_ms).await {
                Ok(lags) => behind.extend(lags.into_iter().filter(|lag| lag.behind).map(|lag| (producer.clone(), lag))),
                Err(error) => tracing::warn!(%producer, %error, "cannot read the subscriptions' lag"),
            }
        }
        behind
    }
}

/// `GET /metrics`.
pub fn router(scrape: Scrape) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = scrape.clone();
            async move {
                scrape.refresh().await;
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render()).into_response()
            }
        }),
    )
}
