//! The shell's own pages: home (with the fragments' widgets), login, logout, register, account, JWKS.

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form, Json};
use leptos::prelude::*;
use serde::Deserialize;
use shared_auth::extract::MaybeUser;
use shared_auth::{Role, SessionUser};

use crate::chrome::{chrome_html, document, ChromeContext};
use crate::session_middleware::CurrentSession;
use crate::users::{self, DisplayName, Email, NewPassword, UserError};
use crate::widgets::{fetch_cart_count, fetch_widgets, Visitor, Widget};
use crate::ShellState;
use crate::{session_store, throttle};

/// Renders a shell page with chrome for `user`.
pub(crate) fn page(state: &ShellState, user: Option<&SessionUser>, cart_count: Option<i64>, title: &str, main: impl IntoView + 'static) -> String {
    let chrome = chrome_html(&ChromeContext { registry: &state.registry, user, cart_count, current: None });
    document(title, &state.stylesheet_url, chrome, main)
}

/// The client's address: the socket peer, or behind trusted proxies the address they forwarded
/// (`tessera_host::client_ip`).
pub(crate) struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(tessera_host::client_ip::ClientIp::of(&parts.extensions).map(|client| client.0)))
    }
}

/// Longest `next` followed: an OpenID Connect authorization request waiting for the sign-in fits.
const MAX_NEXT_BYTES: usize = 4096;

/// Only local paths are followed after login, so `next` cannot send a user to another site.
pub(crate) fn local_path(next: Option<&str>) -> String {
    shared_auth::redirect::local_path(next, MAX_NEXT_BYTES)
}

/// A 303 to `location`, setting `cookies`.
pub(crate) fn see_other(location: &str, cookies: impl IntoIterator<Item = String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, location);
    }
    for cookie in cookies {
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    response
}

/// Starts a new session for `user` (a fresh session id on every sign-in: no fixation) and redirects.
pub(crate) async fn start_session(state: &ShellState, user: &SessionUser, headers: &HeaderMap, next: &str) -> Response {
    let now = session_store::now_seconds();
    let session = match session_store::create(&state.db, &state.sessions, &user.id, &crate::session_middleware::user_agent(headers), now).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, "cannot create a session");
            return server_error(state);
        }
    };
    match state.signer.issue_access_token(user, &session.id) {
        Ok(token) => {
            tracing::info!(user = %user.id, session = %session.id, "signed in");
            see_other(
                next,
                [
                    state.cookies.access_cookie(&token, state.signer.access_ttl_seconds()),
                    state.cookies.refresh_cookie(&session.refresh_token, state.sessions.session_ttl_seconds),
                ],
            )
        }
        Err(error) => {
            tracing::error!(%error, "cannot sign an access token");
            server_error(state)
        }
    }
}

/// The message for a form the server could not read at all.
fn form_rejection_message(rejection: &FormRejection) -> (StatusCode, &'static str) {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "That form was far too large to be real. Please try again."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Please send the form as a normal web form."),
        _ => (StatusCode::BAD_REQUEST, "Some fields of the form were missing or unreadable. Please fill in every field."),
    }
}

pub(crate) async fn home(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    session: Option<Extension<CurrentSession>>,
) -> Response {
    let session = session.map(|Extension(session)| session).unwrap_or_default();
    let visitor = Visitor { cookie: headers.get(COOKIE).cloned(), session };
    let (widgets, cart_count) = tokio::join!(fetch_widgets(&state, &visitor), fetch_cart_count(&state, &visitor));
    let greeting = match &user {
        Some(user) => format!("Welcome back, {}.", user.name),
        None => "Welcome. Browse the catalog, or sign in to use your cart.".to_owned(),
    };
    let widgets = widgets
        .into_iter()
        .filter_map(|(fragment, widget)| match (fragment.to_string(), widget) {
            (fragment, Widget::Html(html)) => Some(view! { <div class="widget-slot" data-widget=fragment inner_html=html></div> }.into_any()),
            (_, Widget::Hidden) => None,
            (fragment, Widget::Unavailable) => {
                let message = format!("The {fragment} is not available right now. The rest of the site works.");
                Some(view! { <div class="widget-slot widget-fallback" data-widget=fragment><p>{message}</p></div> }.into_any())
            }
        })
        .collect_view();
    let main = view! {
        <h1>"Tessera"</h1>
        <p data-testid="greeting">{greeting}</p>
        <div class="widgets">{widgets}</div>
    };
    Html(page(&state, user.as_ref(), cart_count, "Home", main)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

fn login_form(next: &str, email: &str, error: Option<&str>) -> impl IntoView + 'static {
    let (next, email, error) = (next.to_owned(), email.to_owned(), error.map(str::to_owned));
    view! {
        <h1>"Sign in"</h1>
        {error.map(|error| view! { <p class="error" role="alert" data-testid="form-error">{error}</p> })}
        <form method="post" action="/login" class="stacked">
            <input type="hidden" name="next" value=next/>
            <label>"Email" <input type="email" name="email" value=email autocomplete="username" required/></label>
            <label>"Password" <input type="password" name="password" autocomplete="current-password" required/></label>
            <button type="submit">"Sign in"</button>
        </form>
        <p>"No account yet? " <a href="/register">"Register"</a></p>
    }
}

pub(crate) async fn login_page(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    next: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = local_path(next.as_ref().ok().and_then(|q| q.next.as_deref()));
    Html(page(&state, user.as_ref(), None, "Sign in", login_form(&next, "", None))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(state): State<ShellState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let (status, message) = form_rejection_message(&rejection);
            return (status, Html(page(&state, None, None, "Sign in", login_form("/", "", Some(message))))).into_response();
        }
    };
    let next = local_path(form.next.as_deref());
    let now = session_store::now_seconds();
    // Only an email address can be an account: anything else is refused before it becomes a throttle key
    // (of any length) or costs a password hash.
    let email = match users::Email::parse(&form.email) {
        Ok(email) => email,
        Err(error) => {
            let shown: String = form.email.trim().chars().take(users::Email::MAX_LEN).collect();
            let form = login_form(&next, &shown, Some(&error.to_string()));
            return (StatusCode::BAD_REQUEST, Html(page(&state, None, None, "Sign in", form))).into_response();
        }
    };
    let address = address.map(throttle::bucket);
    let attempt = match throttle::attempt(&state.db, &state.throttle, email.as_str(), address.as_deref(), now).await {
        Ok(Some(attempt)) => attempt,
        Ok(None) => {
            tracing::warn!(address = ?address, "sign-in throttled");
            let message = "Too many sign-in attempts. Please wait a few minutes and try again.";
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, Html(page(&state, None, None, "Sign in", login_form(&next, form.email.trim(), Some(message))))).into_response();
            let retry = state.throttle.window_seconds.to_string();
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_str(&retry).expect("digits"));
            return response;
        }
        Err(error) => {
            tracing::error!(%error, "throttle lookup failed");
            return server_error(&state);
        }
    };
    let turns = state.hashing.of(&format!("address:{}", address.as_deref().unwrap_or("-")));
    match users::authenticate(&state.db, &turns, email.as_str(), &form.password).await {
        Ok(Some(user)) => {
            if let Err(error) = attempt.succeeded(&state.db, now).await {
                tracing::warn!(%error, "cannot clear sign-in failures");
            }
            start_session(&state, &user, &headers, &next).await
        }
        Ok(None) => {
            if let Err(error) = attempt.failed(&state.db, &state.throttle, now).await {
                tracing::error!(%error, "cannot prune sign-in failures");
            }
            // One message for unknown email and wrong password.
            let form = login_form(&next, form.email.trim(), Some("Email or password is incorrect."));
            (StatusCode::UNAUTHORIZED, Html(page(&state, None, None, "Sign in", form))).into_response()
        }
        Err(error) => {
            if let Err(error) = attempt.abandoned(&state.db).await {
                tracing::warn!(%error, "cannot take back a sign-in attempt");
            }
            if let UserError::Busy = error {
                let form = login_form(&next, form.email.trim(), Some(BUSY_MESSAGE));
                return come_back_soon(Html(page(&state, None, None, "Sign in", form)).into_response());
            }
            tracing::error!(%error, "login query failed");
            server_error(&state)
        }
    }
}

/// What a person reads when no turn to check a password was free.
pub(crate) const BUSY_MESSAGE: &str = "The site is very busy right now. Please try again in a moment.";

/// `response` as a 503 that says when to come back: no turn to hash a password was free
/// ([`users::Hashing`]).
pub(crate) fn come_back_soon(mut response: Response) -> Response {
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(users::RETRY_AFTER_SECONDS));
    response
}

/// `response` as a 429 that says when to try again (after the throttle's window).
pub(crate) fn too_many(state: &ShellState, mut response: Response) -> Response {
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(state.throttle.window_seconds));
    response
}

pub(crate) fn server_error(state: &ShellState) -> Response {
    let main = view! { <h1>"Something went wrong"</h1><p>"Something went wrong on our side. Please try again."</p> };
    (StatusCode::INTERNAL_SERVER_ERROR, Html(page(state, None, None, "Error", main))).into_response()
}

pub(crate) async fn logout_page(State(state): State<ShellState>, MaybeUser(user): MaybeUser) -> Response {
    let main = view! {
        <h1>"Sign out"</h1>
        <form method="post" action="/logout"><button type="submit">"Sign out everywhere on this site"</button></form>
    };
    Html(page(&state, user.as_ref(), None, "Sign out", main)).into_response()
}

/// Ends this session: the refresh family is revoked (so its access token stops working at the shell at
/// once) and both cookies are removed, for every fragment at the same time.
pub(crate) async fn logout(State(state): State<ShellState>, Extension(current): Extension<CurrentSession>) -> Response {
    if let Some(session_id) = current.session_id() {
        if let Err(error) = session_store::revoke(&state.db, session_id, "signed out").await {
            tracing::error!(%error, "cannot revoke the session at logout");
            return server_error(&state);
        }
    }
    see_other("/", state.cookies.clear_cookies())
}

fn register_form(email: &str, name: &str, errors: &[String]) -> impl IntoView + 'static {
    let (email, name) = (email.to_owned(), name.to_owned());
    let errors = (!errors.is_empty()).then(|| {
        let items = errors.iter().cloned().map(|error| view! { <li>{error}</li> }).collect_view();
        view! { <ul class="error" role="alert" data-testid="form-error">{items}</ul> }
    });
    view! {
        <h1>"Create an account"</h1>
        {errors}
        <form method="post" action="/register" class="stacked">
            <label>"Email" <input type="email" name="email" value=email autocomplete="username" required/></label>
            <label>"Name" <input type="text" name="name" value=name autocomplete="name" required/></label>
            <label>"Password (8 to 128 characters)" <input type="password" name="password" autocomplete="new-password" required minlength="8"/></label>
            <button type="submit">"Create account"</button>
        </form>
    }
}

pub(crate) async fn register_page(State(state): State<ShellState>, MaybeUser(user): MaybeUser) -> Response {
    Html(page(&state, user.as_ref(), None, "Register", register_form("", "", &[]))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct RegisterForm {
    email: String,
    name: String,
    password: String,
}

pub(crate) async fn register(
    State(state): State<ShellState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: Result<Form<RegisterForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let (status, message) = form_rejection_message(&rejection);
            let form = register_form("", "", &[message.to_owned()]);
            return (status, Html(page(&state, None, None, "Register", form))).into_response();
        }
    };
    let email = Email::parse(&form.email);
    let name = DisplayName::parse(&form.name);
    let password = NewPassword::parse(&form.password);
    let (email, name, password) = match (email, name, password) {
        (Ok(email), Ok(name), Ok(password)) => (email, name, password),
        (email, name, password) => {
            let errors: Vec<String> = [email.err(), name.err(), password.err()].into_iter().flatten().map(|error| error.to_string()).collect();
            let form = register_form(form.email.trim(), form.name.trim(), &errors);
            return (StatusCode::UNPROCESSABLE_ENTITY, Html(page(&state, None, None, "Register", form))).into_response();
        }
    };
    // Each registration hashes a password, and a taken email's answer tells that the account exists: both
    // are bounded per address (the answer is kept, see below).
    let key = format!("register:{}", address.map(throttle::bucket).unwrap_or_else(|| "-".into()));
    let counted = match throttle::count(&state.db, &state.throttle, &key, state.throttle.max_registrations_per_address, session_store::now_seconds()).await {
        Ok(Some(counted)) => counted,
        Ok(None) => {
            tracing::warn!(%key, "registration throttled");
            let message = "Too many accounts were registered from your network. Please try again later.".to_owned();
            let form = register_form(email.as_str(), form.name.trim(), &[message]);
            return too_many(&state, Html(page(&state, None, None, "Register", form)).into_response());
        }
        Err(error) => {
            tracing::error!(%error, "registration throttle failed");
            return server_error(&state);
        }
    };
    match users::create(&state.db, &state.hashing.of(&key), &email, &name, &password, &[Role::Shopper]).await {
        Ok(user) => {
            tracing::info!(user = %user.id, "registered");
            start_session(&state, &user, &headers, "/").await
        }
        Err(UserError::Busy) => {
            if let Err(error) = counted.take_back(&state.db).await {
                tracing::warn!(%error, "cannot take back a registration");
            }
            let form = register_form(email.as_str(), form.name.trim(), &[BUSY_MESSAGE.to_owned()]);
            come_back_soon(Html(page(&state, None, None, "Register", form)).into_response())
        }
        // Decided: a taken email is said so. Sign-in answers alike for unknown and wrong, but without
        // email delivery there is no other way to tell someone who forgot they have an account, and
        // hiding it here would only move the question elsewhere. What keeps this from being an oracle
        // for email lists is the per-address bound above.
        Err(UserError::EmailTaken) => {
            let form = register_form(email.as_str(), form.name.trim(), &["An account with this email already exists. Sign in instead.".to_owned()]);
            (StatusCode::CONFLICT, Html(page(&state, None, None, "Register", form))).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "registration failed");
            server_error(&state)
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys fragments verify with.
pub(crate) async fn jwks(State(state): State<ShellState>) -> Response {
    let mut response = Json(state.signer.jwks()).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// `GET /chrome.js`: the chrome's script (the cart badge listener), a file so the policy needs no inline
/// script of the shell's (`crate::security`).
pub(crate) async fn chrome_script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "public, max-age=31536000, immutable")], crate::chrome::badge_script()).into_response()
}

/// `GET /style/tessera.css`: the shared stylesheet (design tokens and chrome).
pub(crate) async fn stylesheet() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "public, max-age=31536000, immutable")], crate::STYLESHEET).into_response()
}

pub(crate) async fn not_found(state: &ShellState, user: Option<&SessionUser>) -> Response {
    let main = view! { <h1>"Not found"</h1><p>"There is no page at this address."</p><p><a href="/">"Go to the home page"</a></p> };
    (StatusCode::NOT_FOUND, Html(page(state, user, None, "Not found", main))).into_response()
}
