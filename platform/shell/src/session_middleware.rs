//! The one place where sessions are refreshed and revocations take effect: a middleware in front of every
//! shell route, fragment pages and fragment APIs alike.
//!
//! For each request it:
//! 1. verifies the access cookie and checks its session in the database: a revoked or expired session, or
//!    a token older than the user's last role change, does not count;
//! 2. without a valid access token, rotates the refresh cookie (if any) and issues a new access token, so
//!    an expired access token never shows as a sign-out, including server-function calls from a hydrated
//!    page;
//! 3. rewrites the request's `Cookie` header so everything downstream sees only a valid access token and
//!    never the refresh token (fragments have no use for it, so they never get it);
//! 4. adds the new cookies to the response (unless the handler set its own, as login and logout do).
//!
//! Revocation therefore takes effect at once for every request through the shell, and within the access
//! token's lifetime for a fragment reached directly on its own subdomain.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE, USER_AGENT};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use shared_auth::cookie::rewrite_cookie_header;
use shared_auth::Claims;

use crate::session_store::{self, now_seconds, Refresh};
use crate::{users, ShellState};

/// The verified session of this request, for the shell's own handlers.
#[derive(Debug, Clone, Default)]
pub struct CurrentSession {
    pub claims: Option<Claims>,
}

impl CurrentSession {
    pub fn session_id(&self) -> Option<&str> {
        self.claims.as_ref().map(|claims| claims.sid.as_str())
    }
}

async fn valid_access(state: &ShellState, token: &str, now: i64) -> Option<Claims> {
    let claims = state.verifier.verify(token).await.ok()?;
    match session_store::status(&state.db, &claims.sid, &claims.sub, now).await {
        Ok(Some(status)) if status.active && (status.roles_changed_at == 0 || claims.iat > status.roles_changed_at) => Some(claims),
        Ok(_) => None,
        Err(error) => {
            // Fail closed: without the database we cannot tell a revoked session from a live one.
            tracing::error!(%error, "session lookup failed");
            None
        }
    }
}

/// A new access token (and maybe refresh token) from a refresh token, or `None` when it is not good.
async fn refresh(state: &ShellState, refresh_token: &str, now: i64) -> Option<(Claims, String, Option<String>)> {
    let outcome = session_store::rotate(&state.db, &state.sessions, refresh_token, now).await;
    match outcome {
        Ok(Refresh::Rotated { session_id, user_id, refresh_token }) => {
            let user = match users::find(&state.db, &user_id).await {
                Ok(Some(user)) => user,
                Ok(None) => return None,
                Err(error) => {
                    tracing::error!(%error, "user lookup during refresh failed");
                    return None;
                }
            };
            let claims = state.signer.access_claims(&user, &session_id);
            match state.signer.sign_claims(&claims) {
                Ok(token) => Some((claims, token, refresh_token)),
                Err(error) => {
                    tracing::error!(%error, "cannot sign a refreshed access token");
                    None
                }
            }
        }
        Ok(Refresh::Invalid | Refresh::Replayed { .. }) => None,
        Err(error) => {
            tracing::error!(%error, "refresh failed");
            None
        }
    }
}

pub async fn session_middleware(State(state): State<ShellState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let policy = &state.cookies;
    let (access_name, refresh_name) = (policy.access_name(), policy.refresh_name());
    let access = policy.read_access_token(request.headers());
    let refresh_token = policy.read_refresh_token(request.headers());
    let now = now_seconds();

    let mut claims = match &access {
        Some(token) => valid_access(&state, token, now).await,
        None => None,
    };
    let mut set_cookies = Vec::new();
    let mut forwarded_access = None;
    if claims.is_none() {
        match &refresh_token {
            Some(token) => match refresh(&state, token, now).await {
                Some((fresh, access_token, next_refresh)) => {
                    set_cookies.push(policy.access_cookie(&access_token, state.signer.access_ttl_seconds()));
                    if let Some(next_refresh) = next_refresh {
                        set_cookies.push(policy.refresh_cookie(&next_refresh, state.sessions.session_ttl_seconds));
                    }
                    forwarded_access = Some(access_token);
                    claims = Some(fresh);
                }
                None => set_cookies.extend(policy.clear_cookies()),
            },
            None if access.is_some() => set_cookies.extend(policy.clear_cookies()),
            None => {}
        }
    }

    let keep_access = claims.is_some() && forwarded_access.is_none();
    let remove: Vec<&str> = if keep_access { vec![refresh_name.as_str()] } else { vec![access_name.as_str(), refresh_name.as_str()] };
    let add: Vec<(String, String)> = forwarded_access.into_iter().map(|token| (access_name.clone(), token)).collect();
    rewrite_cookie_header(request.headers_mut(), &remove, &add);
    let personal = claims.is_some() || is_private_path(request.uri().path());
    request.extensions_mut().insert(CurrentSession { claims });
    if let Some(timings) = crate::timing::Timings::of(request.extensions()) {
        timings.record("session", started.elapsed(), "verifying or refreshing the session");
    }

    let mut response = next.run(request).await;
    if personal && is_document_or_data(&response) {
        // Someone's page or data: never kept by a shared cache, nor on disk by the browser.
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    // The handler's own session cookies win (sign-in, sign-out set both); any other cookie it sets — the
    // cart clearing its guest cookie after a merge — travels beside ours. Dropping ours there would leave
    // the browser with a refresh token already used, and its next use past the grace period would end
    // the session as a replay.
    let set_by_handler: Vec<String> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split_once('=').map(|(name, _)| name.trim().to_owned()))
        .collect();
    for cookie in set_cookies {
        let name = cookie.split_once('=').map(|(name, _)| name).unwrap_or_default();
        if set_by_handler.iter().any(|set| set == name) {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// The shell's pages about one person or for staff, whoever asks (a signed-out visitor gets the
/// sign-in page there, which is not for sharing either).
fn is_private_path(path: &str) -> bool {
    ["/admin", "/account"].iter().any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// A page or an API answer (bundle files, stylesheets and scripts are the same for everyone and keep
/// their long caching).
fn is_document_or_data(response: &Response) -> bool {
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    content_type.starts_with("text/html") || content_type.starts_with("application/json") || response.status().is_redirection()
}

/// The `User-Agent` of a request, for the session list.
pub fn user_agent(headers: &axum::http::HeaderMap) -> String {
    headers.get(USER_AGENT).and_then(|value| value.to_str().ok()).unwrap_or("").to_owned()
}
