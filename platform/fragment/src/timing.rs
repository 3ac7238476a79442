//! `Server-Timing` on a fragment's pages and server functions: where the fragment spent a request's time.
//!
//! A middleware starts a clock for each request and scopes an accumulator to the request's task (a tokio
//! task-local). The resources an SSR page loads run in tasks of their own, so the accumulator is also
//! given to them as Leptos context ([`provide`], called by [`crate::api::context`]). Code that waits for
//! its data wraps the wait in [`data`]; the answer then carries
//!
//! ```text
//! Server-Timing: data;dur=1.8;desc="database and service calls", render;dur=0.9;desc="rendering and the rest"
//! ```
//!
//! `data` is the sum of the waits (resources loading at the same time add up, so it can exceed the
//! wall-clock time; `render` is then 0), and `render` is the rest of the time until the response was
//! ready. Pages are rendered whole before they are sent ([`crate::routes::page_renderer`]), so both
//! numbers are known when the header is written. The shell passes the entries on under the fragment's
//! name beside its own phases (`tessera_shell::timing`). Bundle files under `/pkg/` get no header.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The `Server-Timing` header (not among `http`'s constants).
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// One request's accumulated waits.
#[derive(Debug, Clone, Default)]
pub struct RequestTimings(Arc<AtomicU64>);

impl RequestTimings {
    fn add(&self, waited: Duration) {
        self.0.fetch_add(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn data(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

tokio::task_local! {
    static CURRENT: RequestTimings;
}

fn current() -> Option<RequestTimings> {
    CURRENT.try_with(Clone::clone).ok().or_else(leptos::prelude::use_context::<RequestTimings>)
}

/// Gives the request's accumulator to the Leptos owner being set up (SSR and server functions), so the
/// tasks its resources run in count their waits too.
pub fn provide() {
    if let Ok(timings) = CURRENT.try_with(Clone::clone) {
        leptos::prelude::provide_context(timings);
    }
}

/// Awaits `work`, counting the wait as the request's data time (database queries, calls to other
/// services). Outside a timed request it only awaits.
pub async fn data<F: Future>(work: F) -> F::Output {
    let timings = current();
    let started = Instant::now();
    let output = work.await;
    if let Some(timings) = timings {
        timings.add(started.elapsed());
    }
    output
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The header value for a request that took `total`, of which `data` waiting for data.
pub fn header_value(data: Duration, total: Duration) -> String {
    let render = total.saturating_sub(data);
    format!("data;dur={:.1};desc=\"database and service calls\", render;dur={:.1};desc=\"rendering and the rest\"", millis(data), millis(render))
}

/// The middleware: times every request but bundle files and adds the header to its answer.
pub async fn middleware(request: Request, next: Next) -> Response {
    if request.uri().path().contains("/pkg/") {
        return next.run(request).await;
    }
    let timings = RequestTimings::default();
    let started = Instant::now();
    let mut response = CURRENT.scope(timings.clone(), next.run(request)).await;
    let value = header_value(timings.data(), started.elapsed());
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(SERVER_TIMING, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_inside_a_timed_request_add_up_and_outside_one_count_nowhere() {
        // Outside: nothing to count into, the work still runs.
        assert_eq!(data(async { 7 }).await, 7);
        let timings = RequestTimings::default();
        CURRENT
            .scope(timings.clone(), async {
                data(tokio::time::sleep(Duration::from_millis(20))).await;
                data(tokio::time::sleep(Duration::from_millis(10))).await;
            })
            .await;
        assert!(timings.data() >= Duration::from_millis(30), "{:?}", timings.data());
    }

    #[test]
    fn the_header_splits_the_total_into_data_and_the_rest_and_never_goes_negative() {
        assert_eq!(
            header_value(Duration::from_micros(1_240), Duration::from_micros(4_000)),
            "data;dur=1.2;desc=\"database and service calls\", render;dur=2.8;desc=\"rendering and the rest\""
        );
        assert!(header_value(Duration::from_millis(9), Duration::from_millis(5)).contains("render;dur=0.0"));
    }
}
