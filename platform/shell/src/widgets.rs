//! In-page composition: each fragment's server-rendered widget for the home page, fetched in parallel,
//! each with its own timeout and fallback, and the cart count behind the badge.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::COOKIE;
use axum::http::{HeaderValue, Request, StatusCode};
use tessera_contracts::cart::{CartSummary, CART_COOKIE, SUMMARY_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::WIDGET_PATH;

use crate::registry::Fragment;
use crate::session_middleware::CurrentSession;
use crate::ShellState;

/// Largest widget accepted; a widget is a small piece of HTML.
const MAX_WIDGET_BYTES: usize = 256 * 1024;
/// The badge is decoration: a slow cart must not slow every page down by more than this.
const BADGE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a fragment's widget turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Widget {
    /// Server-rendered HTML to place in the page.
    Html(String),
    /// The fragment has nothing for this user (401/403/404): left out.
    Hidden,
    /// The fragment is down, slow or failing: a fallback box is shown.
    Unavailable,
}

/// The visitor a widget, the badge or a status is asked for: the browser's cookies (of which the
/// fragment gets its own only) and the session the shell verified (of which it gets its own token).
#[derive(Clone, Default)]
pub struct Visitor {
    pub cookie: Option<HeaderValue>,
    pub session: CurrentSession,
}

impl Visitor {
    /// The visitor of a request the session middleware has seen.
    pub fn of(headers: &axum::http::HeaderMap, extensions: &axum::http::Extensions) -> Visitor {
        Visitor { cookie: headers.get(COOKIE).cloned(), session: extensions.get::<CurrentSession>().cloned().unwrap_or_default() }
    }

    fn has_cookie(&self, name: &str) -> bool {
        self.cookie
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(';').any(|pair| pair.trim().starts_with(&format!("{name}="))))
    }

    /// A GET of `path` as this visitor.
    pub fn get_request(&self, path: &str) -> Request<Body> {
        let mut request = Request::get(path).body(Body::empty()).expect("a valid request");
        if let Some(cookie) = &self.cookie {
            request.headers_mut().insert(COOKIE, cookie.clone());
        }
        request.extensions_mut().insert(self.session.clone());
        request
    }
}

async fn fetch_widget(state: &ShellState, fragment: &Fragment, visitor: &Visitor) -> Widget {
    let path = format!("{}{WIDGET_PATH}", fragment.prefix);
    let fetch = async {
        let response = state.registry.forward(fragment, visitor.get_request(&path), fragment.timeout).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_WIDGET_BYTES)
            .await
            .map_err(|error| crate::registry::ForwardError::Unreachable(error.to_string()))?;
        Ok::<_, crate::registry::ForwardError>((status, body))
    };
    // The timeout covers the body too: a widget that starts and then stalls is as late as one that never starts.
    match tokio::time::timeout(fragment.timeout, fetch).await {
        Ok(Ok((status, body))) if status == StatusCode::OK => match String::from_utf8(body.to_vec()) {
            Ok(html) => Widget::Html(html),
            Err(_) => Widget::Unavailable,
        },
        Ok(Ok((status, _))) if status.is_client_error() => Widget::Hidden,
        Ok(Ok((status, _))) => {
            tracing::warn!(fragment = %fragment.name, %status, "widget failed");
            Widget::Unavailable
        }
        Ok(Err(error)) => {
            tracing::warn!(fragment = %fragment.name, %error, "widget unavailable");
            Widget::Unavailable
        }
        Err(_) => {
            tracing::warn!(fragment = %fragment.name, "widget timed out");
            Widget::Unavailable
        }
    }
}

/// Every fragment's widget, in registry order, fetched concurrently.
pub async fn fetch_widgets(state: &ShellState, visitor: &Visitor) -> Vec<(ServiceName, Widget)> {
    let fragments = state.registry.fragments();
    let fetches = fragments.iter().map(|fragment| async move { (fragment.name.clone(), fetch_widget(state, fragment, visitor).await) });
    futures::future::join_all(fetches).await
}

/// The visitor's cart count from the cart fragment (a signed-in user's, or a guest's cart by its cookie),
/// or `None` when there is no cart to ask about or the cart cannot say in time.
pub async fn fetch_cart_count(state: &ShellState, visitor: &Visitor) -> Option<i64> {
    if visitor.session.claims.is_none() && !visitor.has_cookie(CART_COOKIE) {
        return None;
    }
    let cart = state.registry.get("cart")?;
    let timeout = BADGE_TIMEOUT.min(cart.timeout);
    let fetch = async {
        let response = state.registry.forward(&cart, visitor.get_request(SUMMARY_PATH), timeout).await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let body = axum::body::to_bytes(response.into_body(), 4096).await.ok()?;
        serde_json::from_slice::<CartSummary>(&body).ok().map(|summary| summary.item_count)
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}
