//! In-page composition: each fragment's server-rendered widget for the home page, fetched in parallel,
//! each with its own timeout and fallback, and the cart count behind the badge.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::COOKIE;
use axum::http::{HeaderValue, Request, StatusCode};
use shared_auth::SessionUser;
use tessera_contracts::cart::{CartSummary, CART_COOKIE, SUMMARY_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::WIDGET_PATH;

use crate::registry::Fragment;
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

fn get_request(path: &str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).expect("a valid request");
    if let Some(cookie) = cookie {
        request.headers_mut().insert(COOKIE, cookie.clone());
    }
    request
}

async fn fetch_widget(state: &ShellState, fragment: &Fragment, cookie: Option<HeaderValue>) -> Widget {
    let path = format!("{}{WIDGET_PATH}", fragment.prefix);
    let fetch = async {
        let response = state.registry.forward(fragment, get_request(&path, cookie.as_ref()), fragment.timeout).await?;
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
pub async fn fetch_widgets(state: &ShellState, cookie: Option<HeaderValue>) -> Vec<(ServiceName, Widget)> {
    let fragments = state.registry.fragments();
    let fetches = fragments.iter().map(|fragment| {
        let cookie = cookie.clone();
        async move { (fragment.name.clone(), fetch_widget(state, fragment, cookie).await) }
    });
    futures::future::join_all(fetches).await
}

/// The visitor's cart count from the cart fragment (a signed-in user's, or a guest's cart by its cookie),
/// or `None` when there is no cart to ask about or the cart cannot say in time.
pub async fn fetch_cart_count(state: &ShellState, user: Option<&SessionUser>, cookie: Option<HeaderValue>) -> Option<i64> {
    let guest_cart = cookie.as_ref().and_then(|value| value.to_str().ok()).is_some_and(|value| value.contains(&format!("{CART_COOKIE}=")));
    if user.is_none() && !guest_cart {
        return None;
    }
    let cart = state.registry.get("cart")?;
    let timeout = BADGE_TIMEOUT.min(cart.timeout);
    let fetch = async {
        let response = state.registry.forward(&cart, get_request(SUMMARY_PATH, cookie.as_ref()), timeout).await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let body = axum::body::to_bytes(response.into_body(), 4096).await.ok()?;
        serde_json::from_slice::<CartSummary>(&body).ok().map(|summary| summary.item_count)
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}
