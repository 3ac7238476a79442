//! Addresses that stay where they point: the shell refuses a request path with a dot segment (`.` or
//! `..`, raw or percent-encoded, `..%2f` included) before routing it, so no address under a fragment's
//! prefix can resolve to another place on the way to the fragment (its `/metrics`, its description,
//! another fragment's prefix). The forwarded URL is then built by appending, never by resolving, and
//! checked to stay under the prefix ([`within`]).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `path`, percent-decoded, has a `.` or `..` segment (a decoded `/` or `\` separates segments,
/// as some servers and URL libraries read them).
pub fn has_dot_segment(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.split(['/', '\\']).any(|segment| segment == "." || segment == "..")
}

/// Whether `path` is `prefix` or below it (whole segments: `/catalogue` is not under `/catalog`).
pub fn within(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Refuses a request whose path has a dot segment with a 400 that says so; nothing else runs for it.
pub async fn refuse_dot_segments(request: Request, next: Next) -> Response {
    if has_dot_segment(request.uri().path()) {
        tracing::warn!(path = %request.uri().path().chars().take(200).collect::<String>(), "dot segment refused");
        return (StatusCode::BAD_REQUEST, "This address has a \".\" or \"..\" segment; addresses here never do.").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_however_they_are_written() {
        for path in [
            "/catalog/../metrics",
            "/catalog/./x",
            "/catalog/%2e%2e/metrics",
            "/catalog/%2E%2e/readyz",
            "/catalog/.%2e/x",
            "/catalog/..%2fmetrics",
            "/catalog/..%5cmetrics",
            "/catalog/%2e",
            "/..",
        ] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in ["/catalog", "/catalog/p/mug.stn", "/catalog/...", "/catalog/.well-known/x", "/catalog/pkg/catalog-1.js", "/"] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn within_a_prefix_means_whole_segments() {
        assert!(within("/catalog", "/catalog"));
        assert!(within("/catalog/p/x", "/catalog"));
        assert!(!within("/catalogue", "/catalog"));
        assert!(!within("/metrics", "/catalog"));
    }
}
