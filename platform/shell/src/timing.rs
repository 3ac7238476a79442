//! The shell's `Server-Timing`: its own phases and the fragment's, in one header a developer reads in the
//! browser's network panel.
//!
//! A middleware in front of everything gives each request a [`Timings`] (in its extensions) and writes
//! the header on the way out. The shell records
//! - `session`: verifying the access token and the session, or refreshing it (`crate::session`);
//! - `upstream`: waiting for the fragment's response head (a page's data and rendering included);
//! - `badge`: the cart count for the chrome, fetched beside the page;
//! - `compose`: rendering the chrome and setting up the rewrite (the rewrite itself streams with the body);
//! - `total`: everything until the response head left the shell;
//!
//! and passes the fragment's own entries (`tessera_fragment::timing`: `data`, `render`) on under its name,
//! `catalog-data`, `catalog-render`. A fragment's header is read, never copied: only well-formed entries
//! with a token name and a duration survive, at most [`MAX_FRAGMENT_ENTRIES`] of them, so a fragment can
//! neither inject header text nor grow it without bound.
//!
//! Not exposed for cross-origin reads: a page of another origin sees `Server-Timing` only when the
//! response allows it with `Timing-Allow-Origin`, which the shell never sends and removes from any
//! fragment answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tessera_fragment::timing::SERVER_TIMING;

/// The header that would let other origins read the timings.
pub const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");

/// Entries taken from one fragment answer at most.
pub const MAX_FRAGMENT_ENTRIES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    millis: f64,
    description: Option<String>,
}

/// One request's timing entries, in the order they were recorded.
#[derive(Debug, Clone, Default)]
pub struct Timings(Arc<Mutex<Vec<Entry>>>);

impl Timings {
    /// The request's timings, when the middleware runs in front of it.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Timings> {
        extensions.get::<Timings>().cloned()
    }

    fn push(&self, entry: Entry) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(entry);
    }

    /// Records a phase of the shell.
    pub fn record(&self, name: &'static str, took: Duration, description: &'static str) {
        self.push(Entry { name: name.to_owned(), millis: took.as_secs_f64() * 1000.0, description: Some(description.to_owned()) });
    }

    /// Takes the fragment's `Server-Timing` out of `headers` and records its well-formed entries under
    /// the fragment's name.
    pub fn adopt(&self, fragment: &str, headers: &mut HeaderMap) {
        let values: Vec<String> = headers.get_all(SERVER_TIMING).iter().filter_map(|value| value.to_str().ok().map(str::to_owned)).collect();
        headers.remove(SERVER_TIMING);
        headers.remove(TIMING_ALLOW_ORIGIN);
        for entry in values.iter().flat_map(|value| value.split(',')).filter_map(parse_entry).take(MAX_FRAGMENT_ENTRIES) {
            let description = Some(match entry.description {
                Some(description) => format!("{fragment}: {description}"),
                None => format!("{fragment}: {}", entry.name),
            });
            self.push(Entry { name: format!("{fragment}-{}", entry.name), description, ..entry });
        }
    }

    fn header(&self) -> String {
        let entries = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .iter()
            .map(|entry| match &entry.description {
                Some(description) => format!("{};dur={:.1};desc=\"{description}\"", entry.name, entry.millis),
                None => format!("{};dur={:.1}", entry.name, entry.millis),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_token(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One entry of a `Server-Timing` value (`name;dur=1.5;desc="…"`), or `None` when it is not one the shell
/// passes on: a token name, a finite duration of at most ten minutes, a short plain description if any.
fn parse_entry(text: &str) -> Option<Entry> {
    let mut parts = text.split(';').map(str::trim);
    let name = parts.next().filter(|name| is_token(name))?;
    let (mut millis, mut description) = (None, None);
    for parameter in parts {
        let (key, value) = parameter.split_once('=')?;
        match key.trim().to_ascii_lowercase().as_str() {
            "dur" => millis = Some(value.trim().parse::<f64>().ok().filter(|ms| ms.is_finite() && (0.0..=600_000.0).contains(ms))?),
            "desc" => {
                let value = value.trim();
                let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
                let plain = value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || " .:-_()/".contains(c));
                description = plain.then(|| value.to_owned());
            }
            _ => {}
        }
    }
    Some(Entry { name: name.to_owned(), millis: millis?, description })
}

/// The middleware: gives the request its [`Timings`] and writes them, and the shell's total, on the way out.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let timings = Timings::default();
    request.extensions_mut().insert(timings.clone());
    let started = Instant::now();
    let mut response = next.run(request).await;
    timings.record("total", started.elapsed(), "the shell until the response head");
    let headers = response.headers_mut();
    // Whatever reached this far unread (a shell handler's own) is not passed on as it came.
    headers.remove(SERVER_TIMING);
    headers.remove(TIMING_ALLOW_ORIGIN);
    if let Ok(value) = HeaderValue::from_str(&timings.header()) {
        headers.insert(SERVER_TIMING, value);
    }
    response
}

/// Awaits `work` and records how long it took as `name`, when the request is timed.
pub async fn phase<F: std::future::Future>(timings: Option<&Timings>, name: &'static str, description: &'static str, work: F) -> F::Output {
    let started = Instant::now();
    let output = work.await;
    if let Some(timings) = timings {
        timings.record(name, started.elapsed(), description);
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragments_entries_are_renamed_and_only_well_formed_ones_pass() {
        let timings = Timings::default();
        let mut headers = HeaderMap::new();
        headers.append(SERVER_TIMING, HeaderValue::from_static("data;dur=1.5;desc=\"database and service calls\", render;dur=0.26"));
        headers.append(SERVER_TIMING, HeaderValue::from_static("bad name;dur=1, nodur, neg;dur=-1, inf;dur=1e400, quote;dur=2;desc=\"<script>\", x;dur=oops"));
        headers.insert(TIMING_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        timings.adopt("catalog", &mut headers);
        assert!(headers.is_empty(), "{headers:?}");
        assert_eq!(
            timings.header(),
            "catalog-data;dur=1.5;desc=\"catalog: database and service calls\", catalog-render;dur=0.3;desc=\"catalog: render\", \
             catalog-quote;dur=2.0;desc=\"catalog: quote\""
        );
    }

    #[test]
    fn a_fragment_cannot_grow_the_header_without_bound() {
        let timings = Timings::default();
        let many: Vec<String> = (0..100).map(|n| format!("e{n};dur=1")).collect();
        let mut headers = HeaderMap::new();
        headers.insert(SERVER_TIMING, HeaderValue::from_str(&many.join(",")).unwrap());
        timings.adopt("cart", &mut headers);
        assert_eq!(timings.header().matches("cart-e").count(), MAX_FRAGMENT_ENTRIES);
    }
}
