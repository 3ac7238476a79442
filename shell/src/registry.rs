//! The fragment registry: which fragment owns which prefix, and how to reach it.
//!
//! An upstream is either a router in this process or the HTTP address of another `tessera` process; the
//! shell forwards to both the same way, with a per-fragment timeout on the response head, so a slow or
//! stopped fragment becomes a [`ForwardError`] the shell answers with a fallback instead of hanging.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Request, Response};
use shared_auth::Role;
use tower::ServiceExt;

/// How the shell reaches a fragment.
#[derive(Clone)]
pub enum Upstream {
    /// The fragment's router, in this process.
    InProcess(axum::Router),
    /// Base URL of a separate process, e.g. `http://127.0.0.1:3101`.
    Http(url::Url),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::InProcess(_) => f.write_str("in-process"),
            Upstream::Http(url) => write!(f, "{url}"),
        }
    }
}

/// One registered fragment.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// Name, e.g. `catalog`.
    pub name: String,
    /// Label in the site navigation.
    pub title: String,
    /// URL prefix it owns, e.g. `/catalog`.
    pub prefix: String,
    pub upstream: Upstream,
    /// Longest wait for the response head.
    pub timeout: Duration,
    /// Shown in the navigation only to users with this role (`None`: everyone).
    pub nav_role: Option<Role>,
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
}

/// Every fragment the shell composes, from configuration.
#[derive(Clone, Debug, Default)]
pub struct FragmentRegistry {
    fragments: Vec<Fragment>,
    client: reqwest::Client,
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
    pub fn new(fragments: Vec<Fragment>) -> FragmentRegistry {
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_idle_timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        FragmentRegistry { fragments, client }
    }

    pub fn fragments(&self) -> &[Fragment] {
        &self.fragments
    }

    pub fn get(&self, name: &str) -> Option<&Fragment> {
        self.fragments.iter().find(|fragment| fragment.name == name)
    }

    /// The fragment owning `path` (longest prefix wins).
    pub fn route(&self, path: &str) -> Option<&Fragment> {
        self.fragments.iter().filter(|fragment| fragment.owns(path)).max_by_key(|fragment| fragment.prefix.len())
    }

    /// Forwards a request to a fragment, waiting at most `timeout` for the response head.
    pub async fn forward(&self, fragment: &Fragment, request: Request<Body>, timeout: Duration) -> Result<Response<Body>, ForwardError> {
        match &fragment.upstream {
            Upstream::InProcess(router) => tokio::time::timeout(timeout, router.clone().oneshot(request))
                .await
                .map_err(|_| ForwardError::Timeout(timeout))?
                .map_err(|error| ForwardError::Unreachable(error.to_string())),
            Upstream::Http(base) => {
                let (parts, body) = request.into_parts();
                let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
                let url = base.join(path_and_query).map_err(|error| ForwardError::Unreachable(error.to_string()))?;
                let mut headers = HeaderMap::new();
                copy_end_to_end_headers(&parts.headers, &mut headers);
                if let Some(host) = parts.headers.get(axum::http::header::HOST) {
                    headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
                }
                let request = self.client.request(parts.method, url).headers(headers).body(reqwest::Body::wrap_stream(body.into_data_stream()));
                let response = tokio::time::timeout(timeout, request.send())
                    .await
                    .map_err(|_| ForwardError::Timeout(timeout))?
                    .map_err(|error| ForwardError::Unreachable(error.to_string()))?;
                let mut builder = Response::builder().status(response.status());
                if let Some(headers) = builder.headers_mut() {
                    copy_end_to_end_headers(response.headers(), headers);
                }
                builder.body(Body::from_stream(response.bytes_stream())).map_err(|error| ForwardError::Unreachable(error.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(name: &str, prefix: &str) -> Fragment {
        Fragment {
            name: name.into(),
            title: name.into(),
            prefix: prefix.into(),
            upstream: Upstream::Http(url::Url::parse("http://127.0.0.1:9").unwrap()),
            timeout: Duration::from_secs(1),
            nav_role: None,
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let registry = FragmentRegistry::new(vec![fragment("admin", "/admin"), fragment("inventory", "/admin/inventory")]);
        assert_eq!(registry.route("/admin/inventory").unwrap().name, "inventory");
        assert_eq!(registry.route("/admin/inventory/api/x").unwrap().name, "inventory");
        assert_eq!(registry.route("/admin/users").unwrap().name, "admin");
        assert!(registry.route("/administrator").is_none());
        assert!(registry.route("/").is_none());
    }
}
