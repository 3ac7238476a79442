//! Cross-site request forgery: every state-changing request must come from the site itself.
//!
//! SameSite=Lax already keeps the session cookies off cross-site POSTs in current browsers; this is the
//! explicit second check OWASP recommends, done with the Fetch Metadata and Origin headers browsers send:
//! - `Sec-Fetch-Site: same-origin` or `none` (typed URL, bookmark) passes; `same-site` passes only for
//!   subdomain deployments and only from an `Origin` the site lists (`TESSERA_ALLOWED_ORIGINS`: its own
//!   hosts — any other host under the parent domain is same-site too, Tessera's or not); `cross-site` is
//!   refused;
//! - without Fetch Metadata (older browsers), an `Origin` header must be one of the site's origins; the
//!   literal `null` origin (sandboxed frames, some redirects) is refused;
//! - a request with neither header is not from a browser, so it cannot carry a victim's cookies by
//!   accident and is let through (API clients, tests) — except where [`require_site_origin`] guards: the
//!   shell's account and admin changes, where such a request is a token replayed server-side (by a
//!   fragment that saw it, say) and is refused.
//!
//! Safe methods (GET, HEAD, OPTIONS) are never checked: they change nothing anywhere in Tessera.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

/// Which origins count as the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfPolicy {
    /// Origins (`scheme://host[:port]`) allowed to send state-changing requests.
    pub allowed_origins: Vec<String>,
    /// Accept `Sec-Fetch-Site: same-site` (subdomain deployments) from an origin in `allowed_origins`.
    pub allow_same_site: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrfVerdict {
    Allowed,
    Refused(&'static str),
}

impl CsrfPolicy {
    pub fn check(&self, method: &Method, headers: &http::HeaderMap) -> CsrfVerdict {
        self.verdict(method, headers, false)
    }

    /// [`CsrfPolicy::check`], refusing also a state-changing request that names no origin at all.
    pub fn check_from_the_site(&self, method: &Method, headers: &http::HeaderMap) -> CsrfVerdict {
        self.verdict(method, headers, true)
    }

    fn verdict(&self, method: &Method, headers: &http::HeaderMap, strict: bool) -> CsrfVerdict {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return CsrfVerdict::Allowed;
        }
        let origin = headers.get(http::header::ORIGIN).map(|origin| origin.to_str().unwrap_or("null"));
        let listed = |origin: &str| self.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin));
        if let Some(site) = headers.get("sec-fetch-site") {
            return match site.to_str().unwrap_or("") {
                "same-origin" | "none" => CsrfVerdict::Allowed,
                // Every host under the parent domain is same-site, a stranger's blog included: the
                // sibling must be one of the site's own.
                "same-site" if self.allow_same_site && origin.is_some_and(listed) => CsrfVerdict::Allowed,
                "same-site" if self.allow_same_site => CsrfVerdict::Refused("a request from a host of the same domain that is not one of the site's"),
                "same-site" => CsrfVerdict::Refused("a request from another site of the same domain"),
                _ => CsrfVerdict::Refused("a cross-site request"),
            };
        }
        match origin {
            None if strict => CsrfVerdict::Refused("a request that does not say where it comes from"),
            None => CsrfVerdict::Allowed,
            Some(origin) if listed(origin) => CsrfVerdict::Allowed,
            Some(_) => CsrfVerdict::Refused("a request from another origin"),
        }
    }
}

/// axum middleware: refuses cross-site state-changing requests with a 403 that says why.
pub async fn reject_cross_site(State(policy): State<Arc<CsrfPolicy>>, request: Request, next: Next) -> Response {
    let verdict = policy.check(request.method(), request.headers());
    answer(verdict, request, next).await
}

/// axum middleware for changes a browser on the site's own pages makes (accounts, roles): a
/// state-changing request must say it comes from the site (`Sec-Fetch-Site` or `Origin`); one that says
/// nothing is refused too.
pub async fn require_site_origin(State(policy): State<Arc<CsrfPolicy>>, request: Request, next: Next) -> Response {
    let verdict = policy.check_from_the_site(request.method(), request.headers());
    answer(verdict, request, next).await
}

async fn answer(verdict: CsrfVerdict, request: Request, next: Next) -> Response {
    match verdict {
        CsrfVerdict::Allowed => next.run(request).await,
        CsrfVerdict::Refused(why) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), why, "cross-site request refused");
            let error = tessera_contracts::ApiError::Forbidden(format!("{why} cannot change anything here; please use the site's own pages"));
            (StatusCode::FORBIDDEN, axum::Json(error)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn policy(allow_same_site: bool) -> CsrfPolicy {
        CsrfPolicy { allowed_origins: vec!["https://shop.example".into()], allow_same_site }
    }

    #[test]
    fn fetch_metadata_decides_first() {
        let strict = policy(false);
        assert_eq!(strict.check(&Method::POST, &headers(&[("sec-fetch-site", "same-origin")])), CsrfVerdict::Allowed);
        assert_eq!(strict.check(&Method::POST, &headers(&[("sec-fetch-site", "none")])), CsrfVerdict::Allowed);
        assert!(matches!(strict.check(&Method::POST, &headers(&[("sec-fetch-site", "cross-site")])), CsrfVerdict::Refused(_)));
        assert!(matches!(strict.check(&Method::POST, &headers(&[("sec-fetch-site", "same-site")])), CsrfVerdict::Refused(_)));
        // Same-site passes in a subdomain deployment from a host the site lists, never from another host
        // under the same parent domain, nor without an Origin.
        let sibling = headers(&[("sec-fetch-site", "same-site"), ("origin", "https://shop.example")]);
        assert_eq!(policy(true).check(&Method::POST, &sibling), CsrfVerdict::Allowed);
        for stranger in [headers(&[("sec-fetch-site", "same-site"), ("origin", "https://blog.shop.example")]), headers(&[("sec-fetch-site", "same-site")])] {
            assert!(matches!(policy(true).check(&Method::POST, &stranger), CsrfVerdict::Refused(_)));
        }
        // A forged-looking Origin does not override Fetch Metadata's verdict.
        let mixed = headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://shop.example")]);
        assert!(matches!(strict.check(&Method::POST, &mixed), CsrfVerdict::Refused(_)));
    }

    #[test]
    fn origin_is_checked_when_fetch_metadata_is_missing() {
        let strict = policy(false);
        assert_eq!(strict.check(&Method::POST, &headers(&[("origin", "https://shop.example")])), CsrfVerdict::Allowed);
        for origin in ["https://evil.example", "null", "http://shop.example", "https://shop.example.evil"] {
            let map = {
                let mut map = http::HeaderMap::new();
                map.insert("origin", origin.parse().unwrap());
                map
            };
            assert!(matches!(strict.check(&Method::POST, &map), CsrfVerdict::Refused(_)), "{origin}");
        }
        assert_eq!(strict.check(&Method::POST, &http::HeaderMap::new()), CsrfVerdict::Allowed);
    }

    #[test]
    fn safe_methods_pass() {
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(policy(false).check(&Method::GET, &cross), CsrfVerdict::Allowed);
        assert!(matches!(policy(false).check(&Method::DELETE, &cross), CsrfVerdict::Refused(_)));
    }
}
