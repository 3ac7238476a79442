//! Signing in at a shell on another domain: a fragment as an OpenID Connect relying party.
//!
//! A fragment that runs alone on a domain of its own (`ops.example` beside the shell's `shop.test`) never
//! sees the shell's cookie. With `TESSERA_OIDC_PROVIDER__*` set, [`attach`] puts this layer in front of
//! its routes and the fragment's code stays as it is: it reads the user through `shared_auth::extract`
//! as always, and this layer vouches for the user instead of the shell's cookie.
//!
//! - **First visit.** A page request without a session here first asks the shell silently
//!   (`prompt=none`): someone signed in there comes back signed in here without seeing a form; a guest
//!   comes back a guest and is not asked again for `session_check_seconds`. The `/login?next=…` link
//!   every fragment already shows starts the flow with the shell's form.
//! - **Callback** (`/oidc/callback`). `state` must match the flow cookie (HMAC-signed with a key derived
//!   from the client secret, ten minutes); the code is exchanged with the PKCE verifier, and the ID token
//!   is verified by the `openidconnect` crate: signature by the shell's JWKS, EdDSA only, issuer,
//!   audience, nonce and expiry.
//! - **Session.** A host-only HttpOnly cookie holds the shell's access token for this client (an RFC 9068
//!   JWT bound to the shell session), verified on every request with the shell's keys. Who the user is
//!   and their roles come from the shell's userinfo endpoint, asked again once its last answer is older
//!   than `session_check_seconds` (default 60 s). That is the bound within which signing out at the
//!   shell, a password change or an admin's "sign out everywhere" ends the session here, and within
//!   which a change of roles arrives. When the shell cannot be asked, the request counts as a guest's
//!   (fail closed) and the next one asks again; the fragment's pages are still served, to a guest, and
//!   nobody is sent to a shell that does not answer.
//! - **Sign-out** (`/logout`, a confirmation page and its form): ends the session here, then at the
//!   shell (RP-initiated logout with the ID token as hint), which sends the browser back to
//!   `<public_url><prefix>`.
//! - Only requests whose `Host` is the fragment's own (`TESSERA_PUBLIC_URL`) pass this layer: the same
//!   process can sit behind the shell too (as its upstream), where the shell's cookie works as always.
//! - The shell is reached server to server at `url` (default: the issuer), so a deployment can use an
//!   internal address; the browser is only ever sent to the issuer's own endpoints.
//!
//! `openidconnect` is used for what it is good at — the code exchange and ID token verification — and
//! built without TLS features, like every other outbound client here (the deployment terminates TLS).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use shared_auth::cookie::read_cookie;
use shared_auth::csrf::{CsrfPolicy, CsrfVerdict};
use shared_auth::oidc::{AccessTokenClaims, UserInfo, ACCESS_TOKEN_JWT_TYPE};
use shared_auth::verify::{Expect, HttpJwks, Verifier, VerifierSettings};
use shared_auth::SessionUser;

use crate::login::LoginSettings;
use crate::tls::Roots;

/// Paths this layer answers on the fragment's domain.
pub const CALLBACK_PATH: &str = "/oidc/callback";
pub const LOGIN_PATH: &str = "/login";
pub const LOGOUT_PATH: &str = "/logout";
/// How long a started sign-in may take.
const FLOW_SECONDS: i64 = 600;
/// How long the provider's discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Sessions whose user is remembered at once; past it the memory starts over (each asks the shell again).
const MAX_REMEMBERED: usize = 10_000;
/// A bound on every call to the shell.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenID Connect provider (the shell) a fragment on another domain signs its users in at.
#[derive(Clone, Serialize, Deserialize)]
pub struct OidcProviderSettings {
    /// The shell's issuer: its public URL, as its discovery document names it.
    pub issuer: String,
    /// Where this process reaches the shell for discovery, keys, tokens and userinfo; default: the issuer.
    #[serde(default)]
    pub url: Option<String>,
    /// This fragment's client id at the shell (registered there as `TESSERA_OIDC_CLIENTS__<ID>__…`).
    pub client_id: String,
    /// The client's secret, the same as the shell's `TESSERA_OIDC_CLIENTS__<ID>__SECRET` (at least 32
    /// bytes): it authenticates this fragment at the shell's token endpoint.
    pub client_secret: String,
    /// How old the shell's last word on a session may get before it is asked again: the bound within
    /// which a sign-out at the shell ends the session here.
    #[serde(default = "default_session_check_seconds")]
    pub session_check_seconds: u64,
}

fn default_session_check_seconds() -> u64 {
    60
}

impl std::fmt::Debug for OidcProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderSettings")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("session_check_seconds", &self.session_check_seconds)
            .finish_non_exhaustive()
    }
}

type OidcClient = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet, EndpointNotSet>;

/// What the discovery document says, with server-to-server endpoints moved to `url`.
#[derive(Clone)]
struct ProviderInfo {
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    end_session_endpoint: Option<String>,
    jwks_uri: String,
    read_at: Instant,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
}

/// A sign-in under way, in the flow cookie.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    silent: bool,
    started_at: i64,
}

/// The shell's last word on a session.
#[derive(Clone)]
struct Checked {
    user: SessionUser,
    at: Instant,
}

/// A session cookie's verdict.
enum Session {
    Active(SessionUser),
    /// The cookie is not good or the shell says its session ended: remove it.
    Ended,
    /// The shell could not be asked: a guest for this request, the cookie stays.
    Unverified,
    None,
}

/// The relying party of one fragment process.
pub struct RelyingParty {
    issuer: String,
    /// Where this process reaches the shell.
    base: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    post_logout_redirect_uri: String,
    /// The `Host` of requests on the fragment's own domain (`public_url`'s authority).
    public_host: String,
    check_every: Duration,
    secure: bool,
    csrf: CsrfPolicy,
    flow_key: ring::hmac::Key,
    http: reqwest::Client,
    verifier: Verifier,
    provider: Mutex<Option<ProviderInfo>>,
    /// Failed discoveries in a row and when the next may run: a guest page while the shell is down asks
    /// it at most once per wait (1 s, doubling to a minute), not on every request.
    discovery_backoff: Mutex<Backoff>,
    checked: Mutex<HashMap<String, Checked>>,
}

/// Failures in a row of something retried with a doubling wait.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

/// The first wait after a failed discovery, doubled per failure in a row up to [`MAX_DISCOVERY_WAIT`].
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(1);
const MAX_DISCOVERY_WAIT: Duration = Duration::from_secs(60);

impl Backoff {
    fn waiting(&self) -> Option<Duration> {
        self.retry_at.and_then(|at| at.checked_duration_since(Instant::now()))
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let wait = FIRST_DISCOVERY_WAIT.saturating_mul(1 << self.failures.saturating_sub(1).min(6)).min(MAX_DISCOVERY_WAIT);
        self.retry_at = Some(Instant::now() + wait);
    }
}

fn now_seconds() -> i64 {
    shared_auth::keys::now_seconds()
}

/// Only local paths are returned to, so no parameter of the flow can send anyone elsewhere (kept short:
/// the return address travels in the flow cookie).
fn local_path(next: Option<&str>) -> String {
    shared_auth::redirect::local_path(next, 1024)
}

fn query_param(request: &Parts, name: &str) -> Option<String> {
    let query = request.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned()).filter(|value| !value.is_empty())
}

fn see_other(location: &str, cookies: Vec<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    response
}

/// Largest answer read from the provider (its documents are a few kilobytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a fragment cannot sign its users in at the provider its settings name (it does not start).
#[derive(Debug, thiserror::Error)]
pub enum RpSettingsError {
    #[error("{setting} {value:?}: {reason}")]
    Invalid { setting: &'static str, value: String, reason: String },
    #[error("TESSERA_OIDC_PROVIDER__CLIENT_ID must be set and TESSERA_OIDC_PROVIDER__CLIENT_SECRET be at least 32 bytes")]
    Client,
    #[error("TESSERA_PUBLIC_URL {0:?} names no host")]
    NoHost(String),
    #[error("an HTTP client for the OpenID Connect provider: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why talking to the provider did not give what a sign-in needs (logged; the person is told the
/// sign-in is unreachable or misconfigured).
#[derive(Debug, thiserror::Error)]
enum ProviderError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {reason}")]
    Unreadable { url: String, reason: Unreadable },
    #[error("{url} names the issuer {named:?}, not {expected:?}")]
    OtherIssuer { url: String, named: String, expected: String },
    #[error("{0}: the provider does not sign ID tokens with EdDSA")]
    NotEdDsa(String),
    #[error("an address of the provider is unusable: {0}")]
    Endpoint(#[from] openidconnect::url::ParseError),
    #[error("discovery failed {failures} times in a row; the next try is in {wait:?}")]
    BackingOff { failures: u32, wait: Duration },
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0}")]
    Body(#[from] reqwest::Error),
    #[error("the answer is too large")]
    TooLarge,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// A JSON answer, bounded in size.
async fn json<T: serde::de::DeserializeOwned>(mut response: reqwest::Response) -> Result<T, Unreadable> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(Unreadable::TooLarge);
        }
    }
    Ok(serde_json::from_slice(&body)?)
}

/// A GET of the provider's, answered 2xx.
async fn fetch(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> Result<reqwest::Response, ProviderError> {
    let mut request = http.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.map_err(|error| ProviderError::Unreachable { url: url.to_owned(), reason: error.to_string() })
}

/// Equal, without telling by its timing how much of the two agrees.
fn same(a: &str, b: &str) -> bool {
    let digest = |value: &str| ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let (a, b) = (digest(a), digest(b));
    a.as_ref().iter().zip(b.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A small page of this layer's own (the fragment's pages have their own look; these are rare).
fn page(status: StatusCode, title: &str, body: &str, cookies: Vec<String>) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Tessera</title></head><body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    response
}

fn failed(status: StatusCode, message: &str, cookies: Vec<String>) -> Response {
    let body = format!("<p role=\"alert\">{}</p><p><a href=\"{LOGIN_PATH}\">Sign in again</a></p>", escape(message));
    page(status, "Sign-in did not work", &body, cookies)
}

impl RelyingParty {
    /// The relying party of a fragment served at `prefix` of `login.public_url`.
    pub fn new(login: &LoginSettings, provider: &OidcProviderSettings, prefix: &str, roots: &Roots) -> Result<RelyingParty, RpSettingsError> {
        fn invalid(setting: &'static str, value: &str) -> impl FnOnce(openidconnect::url::ParseError) -> RpSettingsError {
            let value = value.to_owned();
            move |error| RpSettingsError::Invalid { setting, value, reason: error.to_string() }
        }
        let issuer = provider.issuer.trim_end_matches('/').to_owned();
        IssuerUrl::new(issuer.clone()).map_err(invalid("TESSERA_OIDC_PROVIDER__ISSUER", &issuer))?;
        let base = provider.url.clone().unwrap_or_else(|| issuer.clone()).trim_end_matches('/').to_owned();
        let reached = url::Url::parse(&base).map_err(invalid("TESSERA_OIDC_PROVIDER__URL", &base))?;
        // The client secret and the users' tokens travel on this address: never in the clear past this
        // machine.
        if reached.scheme() != "https" && !is_loopback(&reached) {
            let reason = "the provider is reached with the client secret: use https (plain http only on this machine's loopback)".to_owned();
            return Err(RpSettingsError::Invalid { setting: "TESSERA_OIDC_PROVIDER__URL", value: base, reason });
        }
        if provider.client_id.is_empty() || provider.client_secret.len() < 32 {
            return Err(RpSettingsError::Client);
        }
        let public = login.public_url.trim_end_matches('/');
        let public_url = url::Url::parse(public).map_err(invalid("TESSERA_PUBLIC_URL", public))?;
        let public_host = match (public_url.host_str(), public_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(RpSettingsError::NoHost(public.to_owned())),
        };
        let redirect_uri = format!("{public}{CALLBACK_PATH}");
        RedirectUrl::new(redirect_uri.clone()).map_err(invalid("TESSERA_PUBLIC_URL", public))?;
        let key = ring::digest::digest(&ring::digest::SHA256, format!("tessera relying party flow\0{}", provider.client_secret).as_bytes());
        let mut verifier = VerifierSettings::new(&issuer, &provider.client_id);
        verifier.access_cookie = String::new();
        // `roots.http()` follows no redirect: a response must not steer this process's requests (SSRF).
        let http = roots.http().timeout(CALL_TIMEOUT).build()?;
        Ok(RelyingParty {
            verifier: Verifier::new(verifier, HttpJwks::with_client(format!("{base}{}", shared_auth::oidc::JWKS_PATH), roots.http())),
            issuer,
            base,
            client_id: provider.client_id.clone(),
            client_secret: provider.client_secret.clone(),
            redirect_uri,
            post_logout_redirect_uri: format!("{public}{prefix}"),
            public_host,
            check_every: Duration::from_secs(provider.session_check_seconds.max(1)),
            secure: login.secure_cookies(),
            csrf: login.csrf_policy(),
            flow_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_ref()),
            http,
            provider: Mutex::new(None),
            discovery_backoff: Mutex::new(Backoff::default()),
            checked: Mutex::new(HashMap::new()),
        })
    }

    fn cookie_name(&self, name: &str) -> String {
        // `__Host-`: host-only, `Secure`, `Path=/`; the browser refuses one set any other way.
        if self.secure {
            format!("__Host-{name}")
        } else {
            name.to_owned()
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", self.cookie_name(name), max_age.max(0))
    }

    fn session_cookies(&self, access_token: &str, id_token: &str, max_age: i64) -> Vec<String> {
        vec![self.cookie("tessera_rp_session", access_token, max_age), self.cookie("tessera_rp_id", id_token, max_age), self.cookie("tessera_rp_guest", "", 0)]
    }

    fn ended_cookies(&self) -> Vec<String> {
        vec![self.cookie("tessera_rp_session", "", 0), self.cookie("tessera_rp_id", "", 0)]
    }

    fn guest_cookie(&self) -> String {
        self.cookie("tessera_rp_guest", "1", self.check_every.as_secs() as i64)
    }

    fn sign_flow(&self, flow: &Flow) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(flow).expect("a flow serializes"));
        let tag = ring::hmac::sign(&self.flow_key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn read_flow(&self, headers: &HeaderMap) -> Option<Flow> {
        let value = read_cookie(headers, &self.cookie_name("tessera_rp_flow"))?;
        let (payload, tag) = value.split_once('.')?;
        ring::hmac::verify(&self.flow_key, payload.as_bytes(), &URL_SAFE_NO_PAD.decode(tag).ok()?).ok()?;
        let flow: Flow = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (now_seconds() - flow.started_at <= FLOW_SECONDS).then_some(flow)
    }

    /// An endpoint the provider named, moved to `base` when it is under the issuer.
    fn internal(&self, endpoint: &str) -> String {
        match endpoint.strip_prefix(&self.issuer) {
            Some(path) if path.starts_with('/') => format!("{}{path}", self.base),
            _ => endpoint.to_owned(),
        }
    }

    async fn provider(&self, fresh: bool) -> Result<ProviderInfo, ProviderError> {
        if !fresh {
            let known = self.provider.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            if let Some(info) = known.filter(|info| info.read_at.elapsed() < DISCOVERY_TTL) {
                return Ok(info);
            }
        }
        {
            let backoff = self.discovery_backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(wait) = backoff.waiting() {
                return Err(ProviderError::BackingOff { failures: backoff.failures, wait });
            }
        }
        let discovered = self.discover().await;
        let mut backoff = self.discovery_backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &discovered {
            Ok(_) => *backoff = Backoff::default(),
            Err(_) => backoff.failed(),
        }
        discovered
    }

    /// Reads the provider's discovery document (see [`RelyingParty::provider`]).
    async fn discover(&self) -> Result<ProviderInfo, ProviderError> {
        let url = format!("{}{}", self.base, shared_auth::oidc::DISCOVERY_PATH);
        let response = fetch(&self.http, &url, None).await?;
        if !response.status().is_success() {
            return Err(ProviderError::Status { url, status: response.status() });
        }
        let discovery: Discovery = json(response).await.map_err(|reason| ProviderError::Unreadable { url: url.clone(), reason })?;
        if discovery.issuer.trim_end_matches('/') != self.issuer {
            return Err(ProviderError::OtherIssuer { url, named: discovery.issuer, expected: self.issuer.clone() });
        }
        if !discovery.id_token_signing_alg_values_supported.iter().any(|alg| alg == "EdDSA") {
            return Err(ProviderError::NotEdDsa(url));
        }
        let info = ProviderInfo {
            authorization_endpoint: discovery.authorization_endpoint,
            token_endpoint: self.internal(&discovery.token_endpoint),
            userinfo_endpoint: self.internal(&discovery.userinfo_endpoint),
            end_session_endpoint: discovery.end_session_endpoint,
            jwks_uri: self.internal(&discovery.jwks_uri),
            read_at: Instant::now(),
        };
        *self.provider.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(info.clone());
        Ok(info)
    }

    fn client(&self, info: &ProviderInfo, jwks: CoreJsonWebKeySet) -> Result<OidcClient, ProviderError> {
        let issuer = IssuerUrl::new(self.issuer.clone())?;
        Ok(CoreClient::new(ClientId::new(self.client_id.clone()), issuer, jwks)
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(info.authorization_endpoint.clone())?)
            .set_token_uri(TokenUrl::new(info.token_endpoint.clone())?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone())?))
    }

    async fn jwks(&self, info: &ProviderInfo) -> Result<CoreJsonWebKeySet, ProviderError> {
        let url = &info.jwks_uri;
        let response = fetch(&self.http, url, None).await?;
        if !response.status().is_success() {
            return Err(ProviderError::Status { url: url.clone(), status: response.status() });
        }
        json(response).await.map_err(|reason| ProviderError::Unreadable { url: url.clone(), reason })
    }

    /// Sends the browser to the shell to sign in (`silent`: only if it is signed in there already).
    async fn start(&self, return_to: String, silent: bool) -> Response {
        let info = match self.provider(false).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "the OpenID Connect provider is not reachable");
                return failed(StatusCode::SERVICE_UNAVAILABLE, "The site's sign-in is not reachable right now. Please try again shortly.", vec![]);
            }
        };
        // The keys are not needed to build the address; they are fetched when the answer comes.
        let client = match self.client(&info, CoreJsonWebKeySet::new(Vec::new())) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "the OpenID Connect provider's endpoints are unusable");
                return failed(StatusCode::SERVICE_UNAVAILABLE, "The site's sign-in is misconfigured.", vec![]);
            }
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("roles".into()))
            .set_pkce_challenge(challenge);
        if silent {
            request = request.add_prompt(CoreAuthPrompt::None);
        }
        let (url, state, nonce) = request.url();
        let flow = Flow {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            return_to,
            silent,
            started_at: now_seconds(),
        };
        see_other(url.as_str(), vec![self.cookie("tessera_rp_flow", &self.sign_flow(&flow), FLOW_SECONDS)])
    }

    /// Asks the shell who the user of `access_token` is (and whether its session is still on).
    async fn userinfo(&self, endpoint: &str, access_token: &str) -> Result<Option<UserInfo>, ProviderError> {
        let response = fetch(&self.http, endpoint, Some(access_token)).await?;
        match response.status() {
            StatusCode::OK => json::<UserInfo>(response).await.map(Some).map_err(|reason| ProviderError::Unreadable { url: endpoint.to_owned(), reason }),
            StatusCode::UNAUTHORIZED => Ok(None),
            status => Err(ProviderError::Status { url: endpoint.to_owned(), status }),
        }
    }

    fn remember(&self, sid: &str, user: SessionUser) {
        let mut checked = self.checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if checked.len() >= MAX_REMEMBERED {
            checked.clear();
        }
        checked.insert(sid.to_owned(), Checked { user, at: Instant::now() });
    }

    fn forget(&self, sid: &str) {
        self.checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(sid);
    }

    async fn access_claims(&self, token: &str) -> Option<AccessTokenClaims> {
        let audiences = [self.client_id.as_str()];
        let expect = Expect { issuer: &self.issuer, audiences: &audiences, typ: ACCESS_TOKEN_JWT_TYPE, check_expiry: true };
        match self.verifier.verify_other::<AccessTokenClaims>(token, &expect).await {
            Ok(claims) if claims.client_id == self.client_id => Some(claims),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, "relying party: session cookie refused");
                None
            }
        }
    }

    /// The session of a request's cookie.
    async fn session(&self, headers: &HeaderMap) -> Session {
        let Some(token) = read_cookie(headers, &self.cookie_name("tessera_rp_session")) else { return Session::None };
        let Some(claims) = self.access_claims(&token).await else { return Session::Ended };
        let known = self.checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&claims.sid).cloned();
        if let Some(known) = known.filter(|known| known.at.elapsed() < self.check_every && known.user.id == claims.sub) {
            return Session::Active(known.user);
        }
        let endpoint = match self.provider(false).await {
            Ok(info) => info.userinfo_endpoint,
            Err(error) => {
                tracing::warn!(%error, "relying party: cannot re-check a session");
                return Session::Unverified;
            }
        };
        match self.userinfo(&endpoint, &token).await {
            Ok(Some(info)) if info.sub == claims.sub && info.sid == claims.sid => {
                let user = info.into_user();
                self.remember(&claims.sid, user.clone());
                Session::Active(user)
            }
            Ok(_) => {
                tracing::info!(session = %claims.sid, "relying party: the shell ended this session");
                self.forget(&claims.sid);
                Session::Ended
            }
            Err(error) => {
                tracing::warn!(%error, "relying party: cannot re-check a session");
                Session::Unverified
            }
        }
    }

    /// `GET /oidc/callback`: checks the answer against the sign-in this browser started, redeems its
    /// code, and signs the user in here.
    async fn callback(&self, request: &Parts) -> Response {
        let clear_flow = self.cookie("tessera_rp_flow", "", 0);
        let Some(flow) = self.read_flow(&request.headers) else {
            let message = "This sign-in answer does not belong to a sign-in started in this browser in the last ten minutes.";
            return failed(StatusCode::BAD_REQUEST, message, vec![clear_flow]);
        };
        let code = match self.code_of(request, &flow) {
            ControlFlow::Continue(code) => code,
            ControlFlow::Break(response) => return response,
        };
        let SignedIn { user, sid, expires_at, access_token, id_token } = match self.redeem(&flow, code).await {
            ControlFlow::Continue(signed_in) => signed_in,
            ControlFlow::Break(response) => return response,
        };
        tracing::info!(user = %user.id, session = %sid, "relying party: signed in at the provider");
        self.remember(&sid, user);
        let mut cookies = self.session_cookies(&access_token, &id_token, expires_at - now_seconds());
        cookies.push(clear_flow);
        see_other(&flow.return_to, cookies)
    }

    /// The code of an answer that belongs to `flow` (same state, same issuer, no error), or the answer to
    /// give instead (a silent sign-in the shell declined makes a guest).
    fn code_of(&self, request: &Parts, flow: &Flow) -> ControlFlow<Response, String> {
        let clear_flow = || vec![self.cookie("tessera_rp_flow", "", 0)];
        let state = query_param(request, "state").unwrap_or_default();
        if !same(&state, &flow.state) {
            tracing::warn!("relying party: a sign-in answer with a state of another sign-in");
            let message = "This sign-in answer does not belong to the sign-in started in this browser.";
            return ControlFlow::Break(failed(StatusCode::BAD_REQUEST, message, clear_flow()));
        }
        if query_param(request, "iss").is_some_and(|iss| iss.trim_end_matches('/') != self.issuer) {
            return ControlFlow::Break(failed(StatusCode::BAD_REQUEST, "This sign-in answer comes from another site's sign-in.", clear_flow()));
        }
        if let Some(error) = query_param(request, "error") {
            if flow.silent && matches!(error.as_str(), "login_required" | "interaction_required" | "consent_required") {
                // Not signed in at the shell: a guest here, asked again after the bound.
                let mut cookies = clear_flow();
                cookies.push(self.guest_cookie());
                return ControlFlow::Break(see_other(&flow.return_to, cookies));
            }
            let description = query_param(request, "error_description").unwrap_or_else(|| error.clone());
            return ControlFlow::Break(failed(StatusCode::BAD_REQUEST, &format!("The site's sign-in refused: {description}."), clear_flow()));
        }
        match query_param(request, "code") {
            Some(code) => ControlFlow::Continue(code),
            None => ControlFlow::Break(failed(StatusCode::BAD_REQUEST, "This sign-in answer carries no code.", clear_flow())),
        }
    }

    /// Exchanges the code (with the flow's PKCE verifier) and checks what came back: the ID token (its
    /// signature, audience and nonce), the access token (for the same subject) and the userinfo (the
    /// session still open, for the same subject and session).
    async fn redeem(&self, flow: &Flow, code: String) -> ControlFlow<Response, SignedIn> {
        let clear_flow = || vec![self.cookie("tessera_rp_flow", "", 0)];
        let refuse = |status: StatusCode, message: &str| ControlFlow::Break(failed(status, message, clear_flow()));
        let unavailable = |error: ProviderError| {
            tracing::warn!(%error, "relying party: the provider is not reachable");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "The site's sign-in is not reachable right now. Please try again shortly.")
        };
        // Fresh discovery and keys for every sign-in: a rotated key is known at once.
        let info = match self.provider(true).await {
            Ok(info) => info,
            Err(error) => return unavailable(error),
        };
        let client = match self.jwks(&info).await.and_then(|jwks| self.client(&info, jwks)) {
            Ok(client) => client,
            Err(error) => return unavailable(error),
        };
        let exchange = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()));
        let tokens = match exchange.request_async(&self.http).await {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::warn!(error = %error, "relying party: the code exchange failed");
                return refuse(StatusCode::BAD_REQUEST, "The site's sign-in did not accept this answer; it may have been used already.");
            }
        };
        let Some(id_token) = tokens.id_token() else {
            return refuse(StatusCode::BAD_GATEWAY, "The site's sign-in answered without an ID token.");
        };
        let id_verifier = client.id_token_verifier().set_allowed_algs([CoreJwsSigningAlgorithm::EdDsa]);
        let claims = match id_token.claims(&id_verifier, &Nonce::new(flow.nonce.clone())) {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(%error, "relying party: ID token refused");
                return refuse(StatusCode::BAD_REQUEST, "The sign-in answer's ID token is not valid here.");
            }
        };
        let subject = claims.subject().as_str().to_owned();
        let access_token = tokens.access_token().secret().clone();
        let Some(access) = self.access_claims(&access_token).await.filter(|access| access.sub == subject) else {
            return refuse(StatusCode::BAD_REQUEST, "The sign-in answer's access token is not valid here.");
        };
        match self.userinfo(&info.userinfo_endpoint, &access_token).await {
            Ok(Some(info)) if info.sub == subject && info.sid == access.sid => ControlFlow::Continue(SignedIn {
                user: info.into_user(),
                sid: access.sid,
                expires_at: access.exp,
                access_token,
                id_token: id_token.to_string(),
            }),
            Ok(_) => refuse(StatusCode::BAD_REQUEST, "The site's sign-in ended this session at once."),
            Err(error) => unavailable(error),
        }
    }

    /// `GET /logout`: asks first (a link on another site must not sign anyone out); `POST`: signs out here,
    /// then at the shell.
    async fn logout(&self, request: &Parts) -> Response {
        if request.method != Method::POST {
            let body = format!(
                "<p>Signing out here signs you out of every part of the site.</p><form method=\"post\" action=\"{LOGOUT_PATH}\">\
                 <button type=\"submit\">Sign out</button></form>"
            );
            return page(StatusCode::OK, "Sign out", &body, vec![]);
        }
        if let CsrfVerdict::Refused(why) = self.csrf.check(&request.method, &request.headers) {
            return failed(StatusCode::FORBIDDEN, &format!("{why} cannot sign you out; please use this site's own page."), vec![]);
        }
        let mut cookies = self.ended_cookies();
        cookies.push(self.guest_cookie());
        let token = read_cookie(&request.headers, &self.cookie_name("tessera_rp_session"));
        if let Some(claims) = match &token {
            Some(token) => self.access_claims(token).await,
            None => None,
        } {
            self.forget(&claims.sid);
        }
        let end_session = match self.provider(false).await {
            Ok(info) => info.end_session_endpoint,
            Err(error) => {
                tracing::warn!(%error, "relying party: cannot reach the provider to sign out there");
                None
            }
        };
        let Some(end_session) = end_session else {
            let body = "<p>You are signed out here. The site's sign-in could not be reached to sign you out there too; sign out on the main site.</p>";
            return page(StatusCode::SERVICE_UNAVAILABLE, "Signed out here", body, cookies);
        };
        let mut url = match url::Url::parse(&end_session) {
            Ok(url) => url,
            Err(_) => return page(StatusCode::BAD_GATEWAY, "Signed out here", "<p>The site's sign-out address is unusable.</p>", cookies),
        };
        {
            let mut query = url.query_pairs_mut();
            if let Some(id_token) = read_cookie(&request.headers, &self.cookie_name("tessera_rp_id")) {
                query.append_pair("id_token_hint", &id_token);
            }
            query.append_pair("client_id", &self.client_id).append_pair("post_logout_redirect_uri", &self.post_logout_redirect_uri);
        }
        see_other(url.as_str(), cookies)
    }
}

/// A page the browser navigates to (not a server function, a bundle file or a script's fetch).
fn is_navigation(request: &Request) -> bool {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return false;
    }
    let path = request.uri().path();
    if path.contains("/api/") || path.contains("/pkg/") || path.starts_with("/.well-known/") || path.ends_with(tessera_contracts::WIDGET_PATH) {
        return false;
    }
    match request.headers().get("sec-fetch-mode").and_then(|value| value.to_str().ok()) {
        Some(mode) => mode == "navigate",
        None => request.headers().get(ACCEPT).and_then(|value| value.to_str().ok()).is_some_and(|accept| accept.contains("text/html")),
    }
}

/// The middleware [`attach`] installs.
pub async fn middleware(State(rp): State<Arc<RelyingParty>>, mut request: Request, next: Next) -> Response {
    // Only requests to the fragment's own domain: the same process may also sit behind the shell (its
    // upstream address), where the shell's cookie signs users in as everywhere else.
    let on_own_domain =
        request.headers().get(axum::http::header::HOST).and_then(|host| host.to_str().ok()).is_some_and(|host| host.eq_ignore_ascii_case(&rp.public_host));
    if !on_own_domain {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    if matches!((request.method(), path.as_str()), (&Method::GET, CALLBACK_PATH | LOGIN_PATH) | (_, LOGOUT_PATH)) {
        // This layer's own pages: the body is never read.
        let (parts, _) = request.into_parts();
        return match path.as_str() {
            CALLBACK_PATH => rp.callback(&parts).await,
            LOGIN_PATH => rp.start(local_path(query_param(&parts, "next").as_deref()), false).await,
            _ => rp.logout(&parts).await,
        };
    }
    // `may_ask`: whether a page visit without a session should ask the shell; not when the shell just
    // could not be reached (the visit would end on the shell's error page instead of this page).
    let (user, mut cookies, may_ask) = match rp.session(request.headers()).await {
        Session::Active(user) => (Some(user), Vec::new(), false),
        Session::Ended => (None, rp.ended_cookies(), true),
        Session::Unverified => (None, Vec::new(), false),
        Session::None => (None, Vec::new(), true),
    };
    let guest_marked = read_cookie(request.headers(), &rp.cookie_name("tessera_rp_guest")).is_some();
    let ask = may_ask && !guest_marked && is_navigation(&request) && {
        // A fragment whose shell is down still serves its pages, to guests (failure isolation).
        let reachable = rp.provider(false).await;
        if let Err(error) = &reachable {
            tracing::warn!(%error, "relying party: the provider is not reachable; serving the page to a guest");
        }
        reachable.is_ok()
    };
    if ask {
        let return_to = local_path(request.uri().path_and_query().map(|target| target.as_str()));
        let mut response = rp.start(return_to, true).await;
        for cookie in cookies.drain(..) {
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
        }
        return response;
    }
    shared_auth::extract::vouch(request.extensions_mut(), user);
    let mut response = next.run(request).await;
    for cookie in cookies {
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    response
}

/// `app` behind a relying party when `settings` name a provider; as it is otherwise.
pub fn attach(app: Router, provider: Option<&OidcProviderSettings>, login: &LoginSettings, prefix: &str, roots: &Roots) -> Result<Router, RpSettingsError> {
    let Some(provider) = provider else { return Ok(app) };
    let rp = Arc::new(RelyingParty::new(login, provider, prefix, roots)?);
    tracing::info!(issuer = %rp.issuer, client = %rp.client_id, check_every = ?rp.check_every, "signing in at an OpenID Connect provider");
    Ok(app.layer(axum::middleware::from_fn_with_state(rp, middleware)))
}

/// A user signed in at the provider, as a redeemed code says.
struct SignedIn {
    user: SessionUser,
    sid: String,
    /// When the access token ends (seconds since the epoch).
    expires_at: i64,
    access_token: String,
    id_token: String,
}

/// Whether `url` names this machine: a loopback address, `localhost` or a name under `.localhost`
/// (RFC 6761: they resolve to loopback).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_reached_over_https_unless_it_is_on_this_machine() {
        let login = LoginSettings { public_url: "https://ops.example".into(), ..LoginSettings::default() };
        let provider = |url: &str| OidcProviderSettings {
            issuer: "https://shop.example".into(),
            url: Some(url.into()),
            client_id: "ops".into(),
            client_secret: "a-client-secret-of-at-least-32-bytes".into(),
            session_check_seconds: 60,
        };
        for fine in ["https://shell.internal", "http://127.0.0.1:3000", "http://[::1]:3000", "http://localhost:3000", "http://shop.localhost:3000"] {
            assert!(RelyingParty::new(&login, &provider(fine), "/admin/x", &Roots::default()).is_ok(), "{fine}");
        }
        for refused in ["http://shell.internal", "http://10.0.0.7:3000", "http://localhost.evil.example"] {
            let error = RelyingParty::new(&login, &provider(refused), "/admin/x", &Roots::default()).err().expect("refused").to_string();
            assert!(error.contains("TESSERA_OIDC_PROVIDER__URL") && error.contains("https"), "{refused}: {error}");
        }
    }

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/admin/inventory?sku=1")), "/admin/inventory?sku=1");
        for bad in ["https://evil.test/", "//evil.test", "/\\evil.test", "evil", "/a\nb"] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
    }
}
