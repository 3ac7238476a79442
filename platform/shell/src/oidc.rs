//! The shell as an OpenID Connect provider, for fragments that run on domains of their own.
//!
//! A fragment served from `admin.example-ops.net` never sees the shell's cookie, so it signs its users in
//! the way sites on different domains do: the authorization code flow of OpenID Connect Core 1.0 with
//! PKCE (RFC 7636, `S256` only), for clients registered by configuration
//! (`TESSERA_OIDC_CLIENTS__<ID>__REDIRECT_URIS`, `…__SECRET`, `…__POST_LOGOUT_REDIRECT_URIS`).
//!
//! Endpoints:
//! - `GET /.well-known/openid-configuration`: discovery; the keys are the shell's one JWKS;
//! - `GET /oauth/authorize`: a signed-in user goes straight back to the client with a code, without a
//!   form; a guest signs in first (the login page's `next` brings them back here);
//! - `POST /oauth/token`: a confidential client (`client_secret_basic` or `client_secret_post`) trades a
//!   code, once and within [`CODE_TTL_SECONDS`], with its PKCE verifier, for an ID token and an access
//!   token, both signed by the shell's key ring (EdDSA);
//! - `GET|POST /oauth/userinfo`: the user of an access token, for as long as its shell session lasts;
//! - `GET|POST /oauth/logout`: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), back to a
//!   registered address only.
//!
//! Decisions:
//! - Nothing in the flow follows an address the client has not registered, character for character: an
//!   unknown client or a redirect URI that differs gets an error page, never a redirect (no open
//!   redirect); every later error goes back to the registered address, as RFC 6749 §4.1.2.1 asks.
//! - A code is 32 random bytes, stored as its SHA-256 hash and bound to the client, the redirect URI,
//!   the PKCE challenge, the nonce and the shell session. Its first use spends it, whatever that use's
//!   outcome; a second use is a replay and ends the shell session the code came from, so the tokens issued
//!   for it, which carry that session, stop working too (RFC 6749 §10.5).
//! - The ID token's audience is the client; the access token is an RFC 9068 JWT (`typ: at+jwt`) that the
//!   userinfo endpoint accepts only while its session is active. The shell's own cookie verifier accepts
//!   neither: other issuer, audience and type.
//! - The issuer is the site's public URL, as discovery requires; the shell's own access tokens keep
//!   their issuer name.
//! - No consent screen: every client is a part of the same site, registered by its operator.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use leptos::prelude::*;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared_auth::oidc::{AccessTokenClaims, IdTokenClaims, UserInfo, ACCESS_TOKEN_JWT_TYPE, ID_TOKEN_JWT_TYPE, SCOPES};
use shared_auth::verify::Expect;
use shared_auth::{Claims, SessionUser};
use tessera_host::login::LoginSettings;

use crate::pages::{page, see_other, ClientAddress};
use crate::session_middleware::CurrentSession;
use crate::{session_store, users, ShellState};

/// How long a code may wait for its exchange.
pub const CODE_TTL_SECONDS: i64 = 60;
/// Lifetime of an ID token (the client keeps its own session; the token only starts it).
pub const ID_TOKEN_TTL_SECONDS: i64 = 300;
/// Longest authorization request read (its query) and longest `state` or `nonce` kept.
const MAX_REQUEST_BYTES: usize = 2048;
const MAX_VALUE_BYTES: usize = 512;
/// Spent and expired codes are kept this long, so a late replay is still recognised, then pruned.
const CODES_KEPT_SECONDS: i64 = 24 * 3600;

/// A client: a site on another domain that signs its users in here.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    secret_hash: [u8; 32],
    /// Exactly these, compared as strings.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.id).field("redirect_uris", &self.redirect_uris).finish_non_exhaustive()
    }
}

/// The provider: its issuer URL and its clients.
#[derive(Debug, Clone, Default)]
pub struct Provider {
    issuer: String,
    clients: BTreeMap<String, Client>,
}

fn sha256(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// Equal without telling by its timing where two digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the registered clients cannot be served (the shell does not start), naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSettingsError {
    #[error("OpenID Connect client id {0:?}: 1 to 64 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("OpenID Connect client id {0:?} is the audience of the shell's own tokens; pick another")]
    AudienceId(String),
    #[error("OpenID Connect client {0}: its secret (TESSERA_OIDC_CLIENTS__{upper}__SECRET) must be at least 32 bytes", upper = .0.to_uppercase())]
    ShortSecret(String),
    #[error("OpenID Connect client {client}: {what} {address:?}: {reason}")]
    NotAnAddress { client: String, what: &'static str, address: String, reason: String },
    #[error(
        "OpenID Connect client {client}: {what} {address:?} must be an https:// address without a #fragment or credentials \
         (http:// only for loopback, or when the site itself is on http://)"
    )]
    UnsafeAddress { client: String, what: &'static str, address: String },
    #[error("OpenID Connect client {0}: at least one redirect URI is needed")]
    NoRedirect(String),
}

/// Splits a comma-separated list of addresses and checks each can be a redirect target.
fn addresses(list: &str, what: &'static str, client: &str, plain_http: bool) -> Result<Vec<String>, ClientSettingsError> {
    let mut found = Vec::new();
    for address in list.split(',').map(str::trim).filter(|address| !address.is_empty()) {
        let url = url::Url::parse(address).map_err(|error| ClientSettingsError::NotAnAddress {
            client: client.to_owned(),
            what,
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && (plain_http || loopback));
        if !scheme_ok || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() || url.host_str().is_none() {
            return Err(ClientSettingsError::UnsafeAddress { client: client.to_owned(), what, address: address.to_owned() });
        }
        found.push(address.to_owned());
    }
    Ok(found)
}

/// The provider's section of the shell's settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OidcSettings {
    /// The sites on other domains that sign their users in here, by client id
    /// (`TESSERA_OIDC_CLIENTS__<ID>__REDIRECT_URIS`, `…__SECRET`, `…__POST_LOGOUT_REDIRECT_URIS`; ids are
    /// lowercase, as environment keys are read so).
    pub oidc_clients: BTreeMap<String, OidcClientSettings>,
}

/// A client of the shell's OpenID Connect provider.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct OidcClientSettings {
    /// The exact addresses the client may be sent back to after sign-in, comma-separated.
    pub redirect_uris: String,
    /// The client's secret, at least 32 bytes: it authenticates the client at the token endpoint.
    pub secret: Option<String>,
    /// The exact addresses the client may send users to after signing out, comma-separated.
    #[serde(default)]
    pub post_logout_redirect_uris: String,
}

impl std::fmt::Debug for OidcClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClientSettings")
            .field("redirect_uris", &self.redirect_uris)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .finish()
    }
}

impl Provider {
    /// The provider of this site: issuer from `login.public_url`, and the registered `clients`
    /// (`TESSERA_OIDC_CLIENTS__<ID>__…`), each checked.
    pub fn from_settings(login: &LoginSettings, registered_clients: &BTreeMap<String, OidcClientSettings>) -> Result<Provider, ClientSettingsError> {
        let issuer = login.public_url.trim_end_matches('/').to_owned();
        let plain_http = issuer.starts_with("http://");
        let mut clients = BTreeMap::new();
        for (id, registered) in registered_clients {
            let valid_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
            if !valid_id {
                return Err(ClientSettingsError::BadId(id.clone()));
            }
            if *id == login.audience {
                return Err(ClientSettingsError::AudienceId(id.clone()));
            }
            let secret = registered.secret.as_deref().unwrap_or_default();
            if secret.len() < 32 {
                return Err(ClientSettingsError::ShortSecret(id.clone()));
            }
            let redirect_uris = addresses(&registered.redirect_uris, "redirect URI", id, plain_http)?;
            if redirect_uris.is_empty() {
                return Err(ClientSettingsError::NoRedirect(id.clone()));
            }
            let post_logout_redirect_uris = addresses(&registered.post_logout_redirect_uris, "post-logout redirect URI", id, plain_http)?;
            clients.insert(id.clone(), Client { id: id.clone(), secret_hash: sha256(secret.as_bytes()), redirect_uris, post_logout_redirect_uris });
        }
        Ok(Provider { issuer, clients })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    fn client_ids(&self) -> Vec<&str> {
        self.clients.keys().map(String::as_str).collect()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// A request that gives a parameter twice (refused, RFC 6749 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the parameter {0:?} is given twice")]
struct RepeatedParam(String);

/// Parameters of a request, each at most once (RFC 6749 §3.1); an empty value counts as absent.
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &str) -> Result<Params, RepeatedParam> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(RepeatedParam(name.clone()));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, value)| key == name && !value.is_empty()).map(|(_, value)| value.as_str())
    }
}

fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `address` with `pairs` added to its query.
fn with_query(address: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return address.to_owned();
    }
    match url::Url::parse(address) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        // Registered addresses were parsed at start-up; this cannot happen, and the home page is safe.
        Err(_) => "/".to_owned(),
    }
}

/// A page for a person: the request cannot be followed anywhere.
fn problem_page(state: &ShellState, user: Option<&SessionUser>, status: StatusCode, message: String) -> Response {
    let main = view! {
        <h1>"This sign-in link does not work"</h1>
        <p role="alert" data-testid="form-error">{message}</p>
        <p><a href="/">"Go to the home page"</a></p>
    };
    let mut response = (status, Html(page(state, user, None, "Sign-in link not valid", main))).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where the authorization response goes: the client's registered address, with its `state`.
struct Back<'a> {
    redirect_uri: &'a str,
    state: Option<&'a str>,
    issuer: &'a str,
}

impl Back<'_> {
    fn go(&self, pairs: &[(&str, &str)]) -> Response {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(state) = self.state {
            all.push(("state", state));
        }
        // RFC 9207: the issuer in the response, so a client talking to several providers cannot be mixed up.
        all.push(("iss", self.issuer));
        let mut response = see_other(&with_query(self.redirect_uri, &all), []);
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn error(&self, error: &str, description: &str) -> Response {
        self.go(&[("error", error), ("error_description", description)])
    }
}

/// A PKCE challenge or verifier: 43 to 128 characters of the unreserved set (RFC 7636 §4.1).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len()) && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
}

fn new_code() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("system randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn code_hash(code: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(code.as_bytes()))
}

/// The scopes of a request that this provider knows, in its own order (others are ignored, as OpenID
/// Connect Core §5.4 allows).
fn known_scopes(requested: &str) -> Vec<&'static str> {
    SCOPES.into_iter().filter(|scope| requested.split(' ').any(|asked| asked == *scope)).collect()
}

/// `GET /oauth/authorize`.
pub(crate) async fn authorize(
    State(state): State<ShellState>,
    Extension(current): Extension<CurrentSession>,
    ClientAddress(address): ClientAddress,
    RawQuery(query): RawQuery,
) -> Response {
    let user: Option<SessionUser> = current.claims.clone().map(Into::into);
    let query = query.unwrap_or_default();
    if query.len() > MAX_REQUEST_BYTES {
        return problem_page(&state, user.as_ref(), StatusCode::URI_TOO_LONG, "The sign-in link is far too long to be real.".into());
    }
    // Each request may store a code: bounded per client address and per session.
    let now = session_store::now_seconds();
    let limit = state.throttle.authorize_max_per_window;
    let mut keys = vec![format!("authorize:address:{}", address.map(crate::throttle::bucket).unwrap_or_else(|| "-".into()))];
    keys.extend(current.session_id().map(|sid| format!("authorize:session:{sid}")));
    for key in keys {
        match crate::throttle::count(&state.db, &state.throttle, &key, limit, now).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(%key, "authorization requests throttled");
                let message = "Too many sign-in requests from here. Please wait a few minutes and try again.".to_owned();
                return crate::pages::too_many(&state, problem_page(&state, user.as_ref(), StatusCode::TOO_MANY_REQUESTS, message));
            }
            Err(error) => {
                tracing::error!(%error, "authorization throttle failed");
                return problem_page(&state, user.as_ref(), StatusCode::SERVICE_UNAVAILABLE, "The site cannot sign you in right now; please try again.".into());
            }
        }
    }
    let params = match Params::parse(&query) {
        Ok(params) => params,
        Err(problem) => return problem_page(&state, user.as_ref(), StatusCode::BAD_REQUEST, format!("The sign-in link is malformed: {problem}.")),
    };
    let Some(client) = params.get("client_id").and_then(|id| state.oidc.client(id)) else {
        let message = "The sign-in link names no application this site knows, so it is not followed.".to_owned();
        return problem_page(&state, user.as_ref(), StatusCode::BAD_REQUEST, message);
    };
    let Some(redirect_uri) = params.get("redirect_uri").filter(|uri| client.redirect_uris.iter().any(|registered| registered == uri)) else {
        let message = "The sign-in link would send you to an address its application has not registered, so it is not followed.".to_owned();
        return problem_page(&state, user.as_ref(), StatusCode::BAD_REQUEST, message);
    };
    // From here on the client is known and so is its address: errors go back there (RFC 6749 §4.1.2.1).
    let back = Back { redirect_uri, state: params.get("state").filter(|value| value.len() <= MAX_VALUE_BYTES), issuer: state.oidc.issuer() };
    let asked = match Asked::of(&params, &back) {
        ControlFlow::Continue(asked) => asked,
        ControlFlow::Break(refusal) => return refusal,
    };
    let Some(claims) = current.claims else {
        if asked.prompt_none {
            return back.error("login_required", "the user is not signed in");
        }
        // The login page follows local paths only; this one brings the user back with the same request.
        return see_other(&format!("/login?next={}", url_encode(&format!("/oauth/authorize?{query}"))), []);
    };
    let auth_time = match session_store::lifetime(&state.db, &claims.sid).await {
        Ok(Some((created_at, _))) => created_at,
        Ok(None) => return back.error("login_required", "the session has ended; sign in again"),
        Err(error) => {
            tracing::error!(%error, "cannot read the session for an authorization");
            return back.error("temporarily_unavailable", "the site cannot sign you in right now; please try again");
        }
    };
    // `prompt=login`, or a sign-in older than `max_age`: the user signs in again (OpenID Connect Core
    // §3.1.2.1). The request comes back without them, asking instead for a sign-in after this moment, so
    // the new session answers it and nothing loops.
    let stale = asked.max_age.is_some_and(|max_age| now - auth_time > max_age);
    if asked.prompt_login || stale || asked.signed_in_after.is_some_and(|after| auth_time < after) {
        if asked.prompt_none {
            return back.error("login_required", "the user must sign in again");
        }
        let again = again_after(&query, now);
        return see_other(&format!("/login?next={}", url_encode(&format!("/oauth/authorize?{again}"))), []);
    }
    issue_code(&state, client, &claims, auth_time, &asked, &back).await
}

/// The provider's own parameter: the sign-in must be newer than this (unix time). It replaces `prompt`
/// and `max_age` in the request a re-authentication sends back.
const SIGNED_IN_AFTER: &str = "tessera_signed_in_after";

/// `query` without `prompt`, `max_age` and an earlier [`SIGNED_IN_AFTER`], asking for a sign-in after `now`.
fn again_after(query: &str, now: i64) -> String {
    let kept = url::form_urlencoded::parse(query.as_bytes()).filter(|(name, _)| !matches!(name.as_ref(), "prompt" | "max_age" | SIGNED_IN_AFTER));
    let mut again = url::form_urlencoded::Serializer::new(String::new());
    again.extend_pairs(kept);
    again.append_pair(SIGNED_IN_AFTER, &now.to_string());
    again.finish()
}

/// What an authorization request asks for, once it is one this provider serves.
struct Asked<'p> {
    scopes: Vec<&'static str>,
    challenge: &'p str,
    nonce: Option<&'p str>,
    /// `prompt=none`: answer at once, never show a page.
    prompt_none: bool,
    /// `prompt=login`: the user signs in again, whatever session they have.
    prompt_login: bool,
    /// `max_age`: the most seconds since the user last signed in.
    max_age: Option<i64>,
    /// [`SIGNED_IN_AFTER`]: set by this provider when it sent the user to sign in again.
    signed_in_after: Option<i64>,
}

impl<'p> Asked<'p> {
    /// The request's protocol checks (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1, PKCE); a refusal
    /// goes back to the client's address.
    fn of(params: &'p Params, back: &Back<'_>) -> ControlFlow<Response, Asked<'p>> {
        if params.get("state").is_some_and(|value| value.len() > MAX_VALUE_BYTES) {
            return ControlFlow::Break(back.error("invalid_request", "state is longer than 512 characters"));
        }
        if params.get("request").is_some() || params.get("request_uri").is_some() {
            return ControlFlow::Break(back.error("request_not_supported", "request objects are not supported; send the parameters in the query"));
        }
        if params.get("response_type") != Some("code") {
            return ControlFlow::Break(back.error("unsupported_response_type", "only the authorization code flow (response_type=code) is supported"));
        }
        if params.get("response_mode").is_some_and(|mode| mode != "query") {
            return ControlFlow::Break(back.error("invalid_request", "only response_mode=query is supported"));
        }
        let scopes = known_scopes(params.get("scope").unwrap_or_default());
        if !scopes.contains(&"openid") {
            return ControlFlow::Break(back.error("invalid_scope", "the scope must include openid"));
        }
        if params.get("code_challenge_method") != Some("S256") {
            return ControlFlow::Break(back.error("invalid_request", "PKCE is required, with code_challenge_method=S256"));
        }
        let Some(challenge) = params.get("code_challenge").filter(|challenge| pkce_shaped(challenge)) else {
            return ControlFlow::Break(back.error("invalid_request", "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~"));
        };
        let nonce = params.get("nonce");
        if nonce.is_some_and(|nonce| nonce.len() > MAX_VALUE_BYTES) {
            return ControlFlow::Break(back.error("invalid_request", "nonce is longer than 512 characters"));
        }
        let prompt: Vec<&str> = params.get("prompt").unwrap_or_default().split(' ').filter(|word| !word.is_empty()).collect();
        if prompt.contains(&"none") && prompt.len() > 1 {
            return ControlFlow::Break(back.error("invalid_request", "prompt=none cannot be combined with other prompts"));
        }

        let max_age = match params.get("max_age").map(str::parse::<i64>) {
            None => None,
            Some(Ok(seconds)) if seconds >= 0 => Some(seconds),
            Some(_) => return ControlFlow::Break(back.error("invalid_request", "max_age must be a number of seconds")),
        };
        // Only ever a moment already past: a later one would send the user to sign in again and again.
        let signed_in_after = params.get(SIGNED_IN_AFTER).and_then(|after| after.parse::<i64>().ok()).map(|after| after.min(session_store::now_seconds()));
        ControlFlow::Continue(Asked {
            scopes,
            challenge,
            nonce,
            prompt_none: prompt.contains(&"none"),
            prompt_login: prompt.contains(&"login"),
            max_age,
            signed_in_after,
        })
    }
}

/// Issues a code for the signed-in user's session and sends it back to the client.
async fn issue_code(state: &ShellState, client: &Client, claims: &Claims, auth_time: i64, asked: &Asked<'_>, back: &Back<'_>) -> Response {
    let now = session_store::now_seconds();
    let code = new_code();
    let grant = Grant {
        client_id: client.id.clone(),
        redirect_uri: back.redirect_uri.to_owned(),
        user_id: claims.sub.clone(),
        session_id: claims.sid.clone(),
        code_challenge: asked.challenge.to_owned(),
        nonce: asked.nonce.map(str::to_owned),
        scope: asked.scopes.join(" "),
        auth_time,
        expires_at: now + CODE_TTL_SECONDS,
    };
    if let Err(error) = codes::issue(&state.db, &code_hash(&code), &grant, now).await {
        tracing::error!(%error, "cannot store an authorization code");
        return back.error("temporarily_unavailable", "the site cannot sign you in right now; please try again");
    }
    tracing::info!(client = %client.id, user = %claims.sub, session = %claims.sid, "authorization code issued");
    back.go(&[("code", &code)])
}

/// What a code was issued for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: String,
    pub session_id: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub scope: String,
    pub auth_time: i64,
    pub expires_at: i64,
}

/// The `oidc_codes` table.
pub mod codes {
    use sqlx::AnyPool;

    use super::{Grant, CODES_KEPT_SECONDS};

    pub async fn issue(db: &AnyPool, hash: &str, grant: &Grant, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, user_id, session_id, code_challenge, nonce, scope, auth_time, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(hash)
        .bind(&grant.client_id)
        .bind(&grant.redirect_uri)
        .bind(&grant.user_id)
        .bind(&grant.session_id)
        .bind(&grant.code_challenge)
        .bind(&grant.nonce)
        .bind(&grant.scope)
        .bind(grant.auth_time)
        .bind(now)
        .bind(grant.expires_at)
        .execute(db)
        .await?;
        Ok(())
    }

    /// What presenting a code found.
    #[derive(Debug)]
    pub enum Spent {
        /// Its first use: the grant, now spent.
        First(Grant),
        /// Used before: a replay of the grant's code.
        Again(Grant),
        /// Issued to another client: refused, and still unspent.
        OtherClient {
            issued_to: String,
        },
        Unknown,
    }

    /// Spends a code presented by `client_id`: only one of any number of concurrent presentations by the
    /// client it was issued to gets [`Spent::First`]; another client's presentation spends nothing
    /// ([`Spent::OtherClient`]), so it cannot make the rightful exchange look like a replay.
    pub async fn spend(db: &AnyPool, hash: &str, client_id: &str, now: i64) -> Result<Spent, sqlx::Error> {
        let first = sqlx::query("UPDATE oidc_codes SET used_at = $1 WHERE code_hash = $2 AND client_id = $3 AND used_at IS NULL")
            .bind(now)
            .bind(hash)
            .bind(client_id)
            .execute(db)
            .await?
            .rows_affected()
            == 1;
        let grant: Option<Grant> = sqlx::query_as(
            "SELECT client_id, redirect_uri, user_id, session_id, code_challenge, nonce, scope, auth_time, expires_at FROM oidc_codes WHERE code_hash = $1",
        )
        .bind(hash)
        .fetch_optional(db)
        .await?;
        Ok(match (grant, first) {
            (Some(grant), _) if grant.client_id != client_id => Spent::OtherClient { issued_to: grant.client_id },
            (Some(grant), true) => Spent::First(grant),
            (Some(grant), false) => Spent::Again(grant),
            (None, _) => Spent::Unknown,
        })
    }

    /// Removes codes issued more than a day before `now`.
    pub async fn prune(db: &AnyPool, now: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM oidc_codes WHERE created_at < $1").bind(now - CODES_KEPT_SECONDS).execute(db).await?.rows_affected())
    }
}

/// An error of the token endpoint (RFC 6749 §5.2).
fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": error, "error_description": description }))).into_response();
    no_store(response.headers_mut());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tessera\""));
    }
    response
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `application/x-www-form-urlencoded` decoding of one value (RFC 6749 §2.3.1 encodes Basic credentials so).
fn form_decoded(value: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8().ok().map(|decoded| decoded.into_owned())
}

/// Why a token request's client was not accepted (RFC 6749 §5.2).
#[derive(Debug, PartialEq, Eq)]
enum ClientRefused {
    /// Unknown client, wrong secret, unreadable credentials: 401 `invalid_client`.
    Unauthenticated(&'static str),
    /// Credentials given twice or contradicting each other: 400 `invalid_request`.
    Malformed(&'static str),
}

impl ClientRefused {
    fn into_response(self) -> Response {
        match self {
            ClientRefused::Unauthenticated(why) => token_error(StatusCode::UNAUTHORIZED, "invalid_client", why),
            ClientRefused::Malformed(why) => token_error(StatusCode::BAD_REQUEST, "invalid_request", why),
        }
    }
}

/// The client of a token request, authenticated by HTTP Basic or by `client_secret` in the form.
fn authenticate<'a>(provider: &'a Provider, headers: &HeaderMap, params: &Params) -> Result<&'a Client, ClientRefused> {
    const WRONG: ClientRefused = ClientRefused::Unauthenticated("the client is unknown or its secret is wrong");
    let basic = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| WRONG)?;
            let (scheme, encoded) = value.split_once(' ').ok_or(WRONG)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(WRONG);
            }
            let decoded = STANDARD.decode(encoded.trim()).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or(WRONG)?;
            let (id, secret) = decoded.split_once(':').ok_or(WRONG)?;
            Some((form_decoded(id).ok_or(WRONG)?, form_decoded(secret).ok_or(WRONG)?))
        }
    };
    let (id, secret) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => return Err(ClientRefused::Malformed("use one way of client authentication, not two")),
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|named| named != id) {
                return Err(ClientRefused::Malformed("client_id differs from the authenticated client"));
            }
            (id, secret)
        }
        (None, Some(secret)) => (params.get("client_id").ok_or(WRONG)?.to_owned(), secret.to_owned()),
        (None, None) => return Err(ClientRefused::Unauthenticated("client authentication is required")),
    };
    match provider.client(&id) {
        Some(client) if same_digest(&client.secret_hash, &sha256(secret.as_bytes())) => Ok(client),
        _ => {
            tracing::warn!(client = %id, "token request with a wrong client secret or an unknown client");
            Err(WRONG)
        }
    }
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    id_token: String,
    scope: String,
}

/// `POST /oauth/token`.
pub(crate) async fn token(State(state): State<ShellState>, headers: HeaderMap, body: Bytes) -> Response {
    let redeemed = async {
        let params = read_token_form(&headers, &body)?;
        let request = CodeRequest::of(&state.oidc, &headers, &params)?;
        let now = session_store::now_seconds();
        let (grant, user, session_ends) = spend_code(&state, &request, now).await?;
        issue_tokens(&state, request.client, grant, &user, session_ends, now)
    };
    redeemed.await.unwrap_or_else(TokenRefusal::into_response)
}

/// Why a token request is refused: the answer RFC 6749 §5.2 gives it.
enum TokenRefusal {
    Error(StatusCode, &'static str, String),
    Client(ClientRefused),
}

impl TokenRefusal {
    fn invalid_request(description: &str) -> TokenRefusal {
        TokenRefusal::Error(StatusCode::BAD_REQUEST, "invalid_request", description.to_owned())
    }

    fn invalid_grant(description: &str) -> TokenRefusal {
        TokenRefusal::Error(StatusCode::BAD_REQUEST, "invalid_grant", description.to_owned())
    }

    /// The database or the signing key failed: the client may try again.
    fn unavailable(error: impl std::fmt::Display) -> TokenRefusal {
        tracing::error!(%error, "token request failed on our side");
        TokenRefusal::Error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "please try again shortly".into())
    }

    fn into_response(self) -> Response {
        match self {
            TokenRefusal::Error(status, error, description) => token_error(status, error, &description),
            TokenRefusal::Client(refused) => refused.into_response(),
        }
    }
}

/// The token request's form.
fn read_token_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, TokenRefusal> {
    let form = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(TokenRefusal::invalid_request("send the request as application/x-www-form-urlencoded"));
    }
    let body = std::str::from_utf8(body).map_err(|_| TokenRefusal::invalid_request("the request is not UTF-8"))?;
    Params::parse(body).map_err(|problem| TokenRefusal::invalid_request(&problem.to_string()))
}

/// An authenticated client's request to exchange a code.
struct CodeRequest<'a> {
    client: &'a Client,
    code: &'a str,
    redirect_uri: &'a str,
    verifier: &'a str,
}

impl<'a> CodeRequest<'a> {
    fn of(provider: &'a Provider, headers: &HeaderMap, params: &'a Params) -> Result<CodeRequest<'a>, TokenRefusal> {
        let client = authenticate(provider, headers, params).map_err(TokenRefusal::Client)?;
        if params.get("grant_type") != Some("authorization_code") {
            return Err(TokenRefusal::Error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only grant_type=authorization_code is supported".into()));
        }
        let (Some(code), Some(redirect_uri)) = (params.get("code"), params.get("redirect_uri")) else {
            return Err(TokenRefusal::invalid_request("code and redirect_uri are required"));
        };
        let verifier = params.get("code_verifier").ok_or_else(|| TokenRefusal::invalid_request("code_verifier is required (PKCE)"))?;
        Ok(CodeRequest { client, code, redirect_uri, verifier })
    }
}

/// Spends the code once and checks it against the request (client, redirect, PKCE) and its session:
/// the grant, its user and when the session ends.
async fn spend_code(state: &ShellState, request: &CodeRequest<'_>, now: i64) -> Result<(Grant, SessionUser, i64), TokenRefusal> {
    let client = request.client;
    let grant = match codes::spend(&state.db, &code_hash(request.code), &client.id, now).await.map_err(TokenRefusal::unavailable)? {
        codes::Spent::First(grant) => grant,
        codes::Spent::Again(grant) => {
            // RFC 6749 §10.5: revoke what the code gave. Its tokens are bound to the session; end it.
            tracing::warn!(client = %client.id, code_client = %grant.client_id, session = %grant.session_id, "authorization code replayed; ending its session");
            session_store::revoke(&state.db, &grant.session_id, "an authorization code of this session was replayed")
                .await
                .map_err(TokenRefusal::unavailable)?;
            return Err(TokenRefusal::invalid_grant("this code was already used; the sign-in it came from has been ended"));
        }
        codes::Spent::OtherClient { issued_to } => {
            tracing::warn!(client = %client.id, code_client = %issued_to, "authorization code presented by another client; left unspent");
            return Err(TokenRefusal::invalid_grant("the code was issued to another client"));
        }
        codes::Spent::Unknown => return Err(TokenRefusal::invalid_grant("the code is unknown")),
    };
    if grant.expires_at <= now {
        return Err(TokenRefusal::invalid_grant("the code has expired; sign in again"));
    }
    if grant.redirect_uri != request.redirect_uri {
        return Err(TokenRefusal::invalid_grant("redirect_uri differs from the one the code was issued for"));
    }
    let challenge = URL_SAFE_NO_PAD.encode(sha256(request.verifier.as_bytes()));
    if !pkce_shaped(request.verifier) || challenge != grant.code_challenge {
        return Err(TokenRefusal::invalid_grant("the code_verifier does not match the code_challenge"));
    }
    match session_store::status(&state.db, &grant.session_id, &grant.user_id, now).await.map_err(TokenRefusal::unavailable)? {
        Some(status) if status.active => match users::find(&state.db, &grant.user_id).await.map_err(TokenRefusal::unavailable)? {
            Some(user) => Ok((grant, user, status.expires_at)),
            None => Err(TokenRefusal::invalid_grant("the user no longer exists")),
        },
        _ => Err(TokenRefusal::invalid_grant("the sign-in this code came from has ended")),
    }
}

/// The ID token and access token of a spent code. The access token lives as long as the shell session,
/// never longer; the userinfo endpoint checks the session on every use, so a client asking there learns
/// of a sign-out at once.
fn issue_tokens(state: &ShellState, client: &Client, grant: Grant, user: &SessionUser, session_ends: i64, now: i64) -> Result<Response, TokenRefusal> {
    let issuer = state.oidc.issuer().to_owned();
    let granted = UserInfo::granted(user, &grant.session_id, &grant.scope);
    let id_token = IdTokenClaims {
        iss: issuer.clone(),
        sub: user.id.clone(),
        aud: client.id.clone(),
        exp: now + ID_TOKEN_TTL_SECONDS,
        iat: now,
        auth_time: grant.auth_time,
        nonce: grant.nonce.clone(),
        sid: grant.session_id.clone(),
        email: granted.email,
        name: granted.name,
        roles: granted.roles,
    };
    let access_ttl = (session_ends - now).max(1);
    let access_token = AccessTokenClaims {
        iss: issuer,
        sub: user.id.clone(),
        aud: client.id.clone(),
        client_id: client.id.clone(),
        exp: now + access_ttl,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: grant.scope.clone(),
        sid: grant.session_id.clone(),
    };
    let id_token = state.signer.sign_typed(&id_token, ID_TOKEN_JWT_TYPE).map_err(TokenRefusal::unavailable)?;
    let access_token = state.signer.sign_typed(&access_token, ACCESS_TOKEN_JWT_TYPE).map_err(TokenRefusal::unavailable)?;
    tracing::info!(client = %client.id, user = %user.id, session = %grant.session_id, "tokens issued for a code");
    let mut response = Json(TokenResponse { access_token, token_type: "Bearer", expires_in: access_ttl, id_token, scope: grant.scope }).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// A refusal of the userinfo endpoint (RFC 6750 §3).
fn bearer_error(description: Option<&str>) -> Response {
    let challenge = match description {
        Some(description) => format!("Bearer realm=\"tessera\", error=\"invalid_token\", error_description=\"{description}\""),
        None => "Bearer realm=\"tessera\"".to_owned(),
    };
    let body = serde_json::json!({ "error": "invalid_token", "error_description": description.unwrap_or("an access token is required") });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    if let Ok(challenge) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    no_store(response.headers_mut());
    response
}

/// `GET|POST /oauth/userinfo`: the user of a bearer access token whose session is still active.
pub(crate) async fn userinfo(State(state): State<ShellState>, headers: HeaderMap) -> Response {
    let token = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    let Some(token) = token else { return bearer_error(None) };
    let audiences = state.oidc.client_ids();
    let expect = Expect { issuer: state.oidc.issuer(), audiences: &audiences, typ: ACCESS_TOKEN_JWT_TYPE, check_expiry: true };
    let claims: AccessTokenClaims = match state.verifier.verify_other(&token, &expect).await {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "userinfo: access token refused");
            return bearer_error(Some("the access token is not valid"));
        }
    };
    let now = session_store::now_seconds();
    let user = match session_store::status(&state.db, &claims.sid, &claims.sub, now).await {
        Ok(Some(status)) if status.active => users::find(&state.db, &claims.sub).await,
        Ok(_) => return bearer_error(Some("the session of this token has ended")),
        Err(error) => Err(error),
    };
    let user = match user {
        Ok(Some(user)) => user,
        Ok(None) => return bearer_error(Some("the session of this token has ended")),
        Err(error) => {
            tracing::error!(%error, "userinfo failed in the database");
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "temporarily_unavailable" }))).into_response();
            no_store(response.headers_mut());
            return response;
        }
    };
    let body = UserInfo::granted(&user, &claims.sid, &claims.scope);
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    response
}

/// `GET /oauth/logout`: signs out at once when the client proves which session it means (an ID token
/// of this session as `id_token_hint`), otherwise asks the user first, so a link on another site
/// cannot sign anyone out.
pub(crate) async fn end_session(State(state): State<ShellState>, Extension(current): Extension<CurrentSession>, RawQuery(query): RawQuery) -> Response {
    end_session_with(&state, &current, query.unwrap_or_default(), false).await
}

/// `POST /oauth/logout`: the user confirmed (the form of [`end_session`]; the CSRF check in front of
/// every route refuses one posted from another site).
pub(crate) async fn end_session_confirmed(State(state): State<ShellState>, Extension(current): Extension<CurrentSession>, body: Bytes) -> Response {
    end_session_with(&state, &current, String::from_utf8_lossy(&body).into_owned(), true).await
}

async fn end_session_with(state: &ShellState, current: &CurrentSession, raw: String, confirmed: bool) -> Response {
    let user: Option<SessionUser> = current.claims.clone().map(Into::into);
    let refuse = |message: &str| problem_page(state, user.as_ref(), StatusCode::BAD_REQUEST, message.to_owned());
    if raw.len() > 2 * MAX_REQUEST_BYTES {
        return refuse("The sign-out link is far too long to be real.");
    }
    let params = match Params::parse(&raw) {
        Ok(params) => params,
        Err(problem) => return refuse(&format!("The sign-out link is malformed: {problem}.")),
    };
    let hint: Option<IdTokenClaims> = match params.get("id_token_hint") {
        None => None,
        Some(token) => {
            let audiences = state.oidc.client_ids();
            // A hint is often expired by the time the user signs out; its signature still says who sent it.
            let expect = Expect { issuer: state.oidc.issuer(), audiences: &audiences, typ: ID_TOKEN_JWT_TYPE, check_expiry: false };
            match state.verifier.verify_other(token, &expect).await {
                Ok(claims) => Some(claims),
                Err(_) => return refuse("The sign-out link carries a token this site did not issue."),
            }
        }
    };
    let client = match (params.get("client_id"), &hint) {
        (Some(id), Some(hint)) if hint.aud != id => return refuse("The sign-out link's token belongs to another application."),
        (Some(id), _) => match state.oidc.client(id) {
            Some(client) => Some(client),
            None => return refuse("The sign-out link names no application this site knows."),
        },
        (None, Some(hint)) => state.oidc.client(&hint.aud),
        (None, None) => None,
    };
    let destination = match params.get("post_logout_redirect_uri") {
        None => "/".to_owned(),
        Some(uri) => match client {
            Some(client) if client.post_logout_redirect_uris.iter().any(|registered| registered == uri) => {
                let state_value = params.get("state").filter(|value| value.len() <= MAX_VALUE_BYTES);
                with_query(uri, &state_value.map(|value| vec![("state", value)]).unwrap_or_default())
            }
            _ => return refuse("The sign-out link would send you to an address its application has not registered, so it is not followed."),
        },
    };
    let Some(session_id) = current.session_id() else {
        return see_other(&destination, []);
    };
    let proven = hint.as_ref().is_some_and(|hint| hint.sid == session_id);
    if proven || confirmed {
        if let Err(error) = session_store::revoke(&state.db, session_id, "signed out from an application").await {
            tracing::error!(%error, "cannot revoke the session at an application's sign-out");
            return crate::pages::server_error(state);
        }
        tracing::info!(session = %session_id, client = client.map(|client| client.id.as_str()).unwrap_or("-"), "signed out from an application");
        return see_other(&destination, state.cookies.clear_cookies());
    }
    let hidden: Vec<(&str, String)> =
        ["client_id", "post_logout_redirect_uri", "state"].into_iter().filter_map(|name| params.get(name).map(|value| (name, value.to_owned()))).collect();
    let fields = hidden.into_iter().map(|(name, value)| view! { <input type="hidden" name=name value=value/> }).collect_view();
    let main = view! {
        <h1>"Sign out"</h1>
        <p>"An application of this site asks to sign you out. Signing out here signs you out of every part of the site."</p>
        <form method="post" action="/oauth/logout">{fields}<button type="submit">"Sign out"</button></form>
        <p><a href="/">"Stay signed in"</a></p>
    };
    Html(page(state, user.as_ref(), None, "Sign out", main)).into_response()
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn discovery(State(state): State<ShellState>) -> Response {
    let provider = &state.oidc;
    let document = serde_json::json!({
        "issuer": provider.issuer(),
        "authorization_endpoint": provider.endpoint("/oauth/authorize"),
        "token_endpoint": provider.endpoint("/oauth/token"),
        "userinfo_endpoint": provider.endpoint("/oauth/userinfo"),
        "end_session_endpoint": provider.endpoint("/oauth/logout"),
        "jwks_uri": provider.endpoint("/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "email", "name", "roles"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    let mut response = Json(document).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider_of(login: &LoginSettings, clients: &[(&str, &str, &str)]) -> Result<Provider, ClientSettingsError> {
        let registered = clients
            .iter()
            .map(|(id, redirect_uris, secret)| {
                let client =
                    OidcClientSettings { redirect_uris: (*redirect_uris).into(), secret: Some((*secret).into()), post_logout_redirect_uris: String::new() };
                ((*id).to_owned(), client)
            })
            .collect();
        Provider::from_settings(login, &registered)
    }

    fn shop() -> LoginSettings {
        LoginSettings { public_url: "https://shop.example/".into(), ..LoginSettings::default() }
    }

    const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes";

    #[test]
    fn clients_are_checked_when_the_shell_starts() {
        let provider = provider_of(&shop(), &[("ops", "https://ops.example/cb, https://ops.example/cb2", SECRET)]).unwrap();
        assert_eq!(provider.issuer(), "https://shop.example");
        assert_eq!(provider.client("ops").unwrap().redirect_uris, ["https://ops.example/cb", "https://ops.example/cb2"]);
        for (clients, why) in [
            (vec![("ops", "https://ops.example/cb", "short")], "secret"),
            (vec![("ops", "", SECRET)], "redirect URI"),
            (vec![("ops", "http://ops.example/cb", SECRET)], "https://"),
            (vec![("ops", "https://ops.example/cb#x", SECRET)], "https://"),
            (vec![("ops", "https://user:pw@ops.example/cb", SECRET)], "https://"),
            (vec![("ops", "not a url", SECRET)], "redirect URI"),
            (vec![("tessera", "https://ops.example/cb", SECRET)], "audience"),
            (vec![("o ps", "https://ops.example/cb", SECRET)], "client id"),
        ] {
            let error = provider_of(&shop(), &clients).unwrap_err();
            assert!(error.to_string().contains(why), "{clients:?}: {error}");
        }
        // Loopback may be plain http (a developer's machine), as may anything when the site itself is.
        provider_of(&shop(), &[("dev", "http://127.0.0.1:4000/cb", SECRET)]).unwrap();
        let plain = LoginSettings { public_url: "http://shop.test".into(), ..LoginSettings::default() };
        provider_of(&plain, &[("ops", "http://ops.example/cb", SECRET)]).unwrap();
    }

    #[test]
    fn a_parameter_given_twice_or_left_empty_does_not_count() {
        assert_eq!(Params::parse("a=1&b=2&a=3").unwrap_err(), RepeatedParam("a".into()));
        let params = Params::parse("a=&b=x%20y").unwrap();
        assert_eq!(params.get("a"), None);
        assert_eq!(params.get("b"), Some("x y"));
    }

    #[test]
    fn pkce_values_have_the_shape_rfc_7636_gives_them() {
        assert!(pkce_shaped(&"a".repeat(43)));
        assert!(pkce_shaped(&"A-._~9".repeat(20)));
        assert!(!pkce_shaped(&"a".repeat(42)));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn only_known_scopes_are_kept() {
        assert_eq!(known_scopes("email openid offline_access roles"), ["openid", "email", "roles"]);
        assert_eq!(known_scopes("openidx"), Vec::<&str>::new());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decoded("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decoded("%FF"), None);
    }
}
