//! The Tessera shell: the container every page goes through.
//!
//! It owns `/`, `/login`, `/logout`, `/register`, `/account`, `/.well-known/jwks.json`, the OpenID Connect
//! provider's endpoints (`/.well-known/openid-configuration`, `/oauth/*`) and the shared stylesheet, signs the one login (an Ed25519 JWT in an HttpOnly cookie), and routes every other prefix to
//! the fragment that owns it — in this process or over HTTP — composing pages on the way out.
//!
//! Layout:
//! - `registry`: fragments in this process or learned from their upstreams' descriptions, instances
//!   checked for readiness and balanced, forwarding with a per-fragment timeout and one safe resend;
//!   `confinement`: what a fragment learns of the visitor (its own token, its own cookies) and may set;
//! - `site`: assembling a site from the fragments a binary contains and the upstreams it is given;
//! - `keys`: the signing keys in the shell's database, which every replica follows;
//! - `compose`: the streaming `lol_html` rewrite that puts the chrome into a fragment page;
//! - `chrome`: the chrome and the shell's own documents;
//! - `widgets`: the home page's widgets and the cart badge, fetched in parallel with fallbacks;
//! - `session_middleware`: the middleware that refreshes sessions and makes revocations take effect, in one place;
//!   `session_store`: sessions and rotating refresh tokens with reuse detection; `throttle`: sign-in throttling;
//! - `pages`, `account`, `admin`: the shell's handlers; `users`: accounts;
//! - `oidc`: the shell as an OpenID Connect provider, so fragments on other domains share the one login;
//! - `timing`: the `Server-Timing` header, the shell's phases and the fragment's under its name.
//!
//! Responses are compressed on the way out (tower-http's `CompressionLayer`, brotli or gzip as the client
//! asks): the shell's pages, composed fragment pages — chunk by chunk, so streaming survives — and JSON.
//! Pages are fetched from fragments uncompressed (the shell must rewrite them); bundle files come
//! precompressed from the fragment and pass through untouched.
//!
//! Every request passes the CSRF check (`shared_auth::csrf`) and the session middleware before anything
//! else, shell pages and fragment requests alike.
//!
//! Failure isolation is the rule: a fragment that is down, slow or answers 5xx to a page request yields a
//! 503 shell page with the chrome and a message; API and asset requests get a 503 JSON/text answer. Nothing
//! a fragment does can take the shell's own pages or another fragment down.

pub mod account;
pub mod admin;
pub mod chrome;
pub mod compose;
pub mod confinement;
pub mod keys;
pub mod oidc;
pub mod pages;
pub mod paths;
pub mod registry;
pub mod retention;
pub mod security;
pub mod session_middleware;
pub mod session_store;
pub mod settings;
pub mod site;
pub mod throttle;
pub mod timing;
pub mod users;
pub mod widgets;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::*;
use shared_auth::cookie::CookiePolicy;
use shared_auth::csrf::CsrfPolicy;
use shared_auth::keys::TokenSigner;
use shared_auth::verify::{InProcessJwks, Verifier, VerifierSettings};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use tessera_contracts::ApiError;

use crate::chrome::{chrome_html, head_html, ChromeContext};
use crate::registry::{Fragment, FragmentRegistry};
use crate::session_store::SessionSettings;
use crate::throttle::ThrottleSettings;

/// The shared stylesheet, compiled in from `style/` beside this crate.
pub const STYLESHEET: &str = include_str!("../style/tessera.css");

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The shell's migrations (accounts) for both backends.
pub fn migrators() -> (&'static Migrator, &'static Migrator) {
    (&SQLITE, &POSTGRES)
}

/// Largest form the shell accepts (login and registration are a few short fields).
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Everything the shell's handlers share.
pub struct ShellInner {
    pub db: AnyPool,
    pub signer: Arc<TokenSigner>,
    pub verifier: Verifier,
    pub registry: Arc<FragmentRegistry>,
    /// Names and scope of the session cookies.
    pub cookies: CookiePolicy,
    pub sessions: SessionSettings,
    pub throttle: ThrottleSettings,
    /// Turns to hash passwords (see [`users::Hashing`]).
    pub hashing: users::Hashing,
    pub csrf: Arc<CsrfPolicy>,
    /// URL of the shared stylesheet, versioned by its content.
    pub stylesheet_url: String,
    /// The OpenID Connect provider: its issuer and registered clients.
    pub oidc: oidc::Provider,
}

/// Cheap-to-clone handle on [`ShellInner`].
#[derive(Clone)]
pub struct ShellState(Arc<ShellInner>);

impl std::ops::Deref for ShellState {
    type Target = ShellInner;
    fn deref(&self) -> &ShellInner {
        &self.0
    }
}

impl FromRef<ShellState> for Verifier {
    fn from_ref(state: &ShellState) -> Verifier {
        state.verifier.clone()
    }
}

/// The JWKS source fragments in this process use: the signer's public keys, never the signer.
pub fn in_process_jwks(signer: &Arc<TokenSigner>) -> InProcessJwks {
    let signer = signer.clone();
    InProcessJwks(Arc::new(move || signer.jwks()))
}

/// The shell's security settings.
pub struct ShellConfig {
    pub cookies: CookiePolicy,
    pub sessions: SessionSettings,
    pub throttle: ThrottleSettings,
    pub csrf: CsrfPolicy,
    pub oidc: oidc::Provider,
}

impl ShellState {
    pub fn new(db: AnyPool, signer: Arc<TokenSigner>, verifier_settings: VerifierSettings, registry: Arc<FragmentRegistry>, config: ShellConfig) -> ShellState {
        let verifier = Verifier::new(verifier_settings, in_process_jwks(&signer));
        let version = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            STYLESHEET.hash(&mut hasher);
            hasher.finish()
        };
        let stylesheet_url = format!("/style/tessera.css?v={version:016x}");
        ShellState(Arc::new(ShellInner {
            db,
            signer,
            verifier,
            registry,
            cookies: config.cookies,
            sessions: config.sessions,
            hashing: users::Hashing::new(config.throttle.password_hashes_at_once),
            throttle: config.throttle,
            csrf: Arc::new(config.csrf),
            stylesheet_url,
            oidc: config.oidc,
        }))
    }
}

/// The shell's router; every path it does not own goes to the owning fragment.
pub fn router(state: ShellState) -> Router {
    // Changes to accounts and roles come from the site's own pages: a request that names no origin at
    // all (a token replayed server-side, by a fragment that saw it) is refused like a cross-site one.
    let from_the_site = Router::new()
        .route("/account/password", post(account::change_password))
        .route("/account/sessions/revoke", post(account::revoke_session))
        .route("/admin/users/roles", post(admin::set_roles))
        .route("/admin/users/sign-out", post(admin::sign_out_everywhere))
        .route_layer(axum::middleware::from_fn_with_state(state.csrf.clone(), shared_auth::csrf::require_site_origin));
    let shell_routes = Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", get(pages::logout_page).post(pages::logout))
        .route("/register", get(pages::register_page).post(pages::register))
        .route("/account", get(account::account))
        .route("/admin/users", get(admin::users_page))
        .route("/admin/events", get(admin::events_page))
        .route("/admin/fragments", get(admin::fragments_page))
        .route("/.well-known/jwks.json", get(pages::jwks))
        .route(shared_auth::oidc::DISCOVERY_PATH, get(oidc::discovery))
        .route(shared_auth::oidc::AUTHORIZE_PATH, get(oidc::authorize))
        .route(shared_auth::oidc::TOKEN_PATH, post(oidc::token))
        .route(shared_auth::oidc::USERINFO_PATH, get(oidc::userinfo).post(oidc::userinfo))
        .route(shared_auth::oidc::END_SESSION_PATH, get(oidc::end_session).post(oidc::end_session_confirmed))
        .route("/style/tessera.css", get(pages::stylesheet))
        .route("/chrome.js", get(pages::chrome_script))
        .merge(from_the_site)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES));
    shell_routes
        .fallback(to_fragment)
        .layer(axum::middleware::from_fn_with_state(state.clone(), session_middleware::session_middleware))
        .layer(axum::middleware::from_fn_with_state(state.csrf.clone(), shared_auth::csrf::reject_cross_site))
        .layer(axum::middleware::from_fn(timing::middleware))
        .layer(compression())
        // First of all: an address that could resolve elsewhere is not routed anywhere.
        .layer(axum::middleware::from_fn(paths::refuse_dot_segments))
        .with_state(state)
}

/// Below this many bytes compression costs more than it saves (a frame and a round of the encoder).
const COMPRESS_ABOVE_BYTES: u16 = 256;

/// Brotli or gzip, whichever the client prefers, for every compressible answer of known size above
/// [`COMPRESS_ABOVE_BYTES`] and every streamed one. tower-http's default predicate already leaves
/// images, gRPC and event streams alone, and the layer skips a response that is already encoded (the
/// precompressed bundle files) and sets `Vary: Accept-Encoding` on what it compresses. Brotli at its
/// default level for a streamed page is slower than gzip; tower-http's default quality keeps it cheap.
pub fn compression() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
    tower_http::compression::CompressionLayer::new().compress_when(DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE_BYTES)))
}

/// What a request to a fragment is for; only pages are composed and get the fallback page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Page,
    Other,
}

fn request_kind(fragment: &Fragment, method: &Method, path: &str) -> RequestKind {
    let rest = &path[fragment.prefix.len()..];
    let is_resource = rest.starts_with("/api/") || rest.starts_with("/pkg/") || rest == tessera_contracts::WIDGET_PATH;
    if (method == Method::GET || method == Method::HEAD) && !is_resource {
        RequestKind::Page
    } else {
        RequestKind::Other
    }
}

/// The user of the session the middleware verified (token, session and roles checked once per request).
fn current_user(request: &Request) -> Option<shared_auth::SessionUser> {
    request.extensions().get::<session_middleware::CurrentSession>().and_then(|current| current.claims.clone()).map(Into::into)
}

/// What clients may claim about where a request came from; the shell says it itself (`X-Forwarded-For`,
/// `X-Forwarded-Host`, from what it resolved), so a fragment never reads a client's word for it.
const CLIENT_FORWARDING_HEADERS: [&str; 5] = ["forwarded", "x-real-ip", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host"];

async fn to_fragment(State(state): State<ShellState>, mut request: Request) -> Response {
    for name in CLIENT_FORWARDING_HEADERS {
        request.headers_mut().remove(name);
    }
    let path = request.uri().path().to_owned();
    let Some(fragment) = state.registry.route(&path) else {
        let user = current_user(&request);
        return pages::not_found(&state, user.as_ref()).await;
    };
    let kind = request_kind(&fragment, request.method(), &path);
    // Metrics count forwarded requests by fragment and kind, never by raw path.
    let rest = &path[fragment.prefix.len()..];
    let label = match kind {
        RequestKind::Page => format!("{} (page)", fragment.prefix),
        RequestKind::Other if rest.starts_with("/api/") => format!("{}/api/*", fragment.prefix),
        RequestKind::Other if rest.starts_with("/pkg/") => format!("{}/pkg/*", fragment.prefix),
        RequestKind::Other => format!("{}/*", fragment.prefix),
    };
    let name = fragment.name.clone();
    let mut response = forward_to_fragment(&state, fragment, kind, request).await;
    confinement::keep_own_set_cookies(&name, response.headers_mut());
    response.extensions_mut().insert(tessera_host::metrics::RouteLabel(label));
    response
}

async fn forward_to_fragment(state: &ShellState, fragment: Arc<Fragment>, kind: RequestKind, request: Request) -> Response {
    let timings = timing::Timings::of(request.extensions());
    let timings = timings.as_ref();
    const UPSTREAM: &str = "waiting for the fragment's response head";
    if kind == RequestKind::Other {
        let forwarded = timing::phase(timings, "upstream", UPSTREAM, state.registry.forward(&fragment, request, fragment.timeout)).await;
        return match forwarded {
            Ok(mut response) => {
                if let Some(timings) = timings {
                    timings.adopt(fragment.name.as_str(), response.headers_mut());
                }
                response
            }
            Err(error) => {
                tracing::warn!(fragment = %fragment.name, %error, "fragment unavailable");
                let error = ApiError::Unavailable(format!("the {} is not available right now; please try again shortly", fragment.name));
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(error)).into_response()
            }
        };
    }

    let user = current_user(&request);
    let visitor = widgets::Visitor::of(request.headers(), request.extensions());
    // The page is rewritten here and compressed on the way out: ask the fragment for plain HTML.
    let mut request = request;
    request.headers_mut().remove(ACCEPT_ENCODING);
    let (response, cart_count) = tokio::join!(
        timing::phase(timings, "upstream", UPSTREAM, state.registry.forward(&fragment, request, fragment.timeout)),
        timing::phase(timings, "badge", "the cart count for the chrome", widgets::fetch_cart_count(state, &visitor)),
    );
    let chrome = ChromeContext { registry: &state.registry, user: user.as_ref(), cart_count, current: Some(&fragment.prefix) };
    match response {
        Ok(mut response) if !response.status().is_server_error() => {
            let composing = std::time::Instant::now();
            if let Some(timings) = timings {
                timings.adopt(fragment.name.as_str(), response.headers_mut());
            }
            let is_html = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| value.starts_with("text/html"));
            // An encoded body cannot be rewritten; a fragment that encodes anyway is passed through as is.
            if is_html && !response.headers().contains_key(CONTENT_ENCODING) {
                let composed = compose::compose_page(response, chrome_html(&chrome), head_html(&state.stylesheet_url));
                if let Some(timings) = timings {
                    timings.record("compose", composing.elapsed(), "rendering the chrome and setting up the rewrite");
                }
                composed
            } else {
                response
            }
        }
        Ok(response) => {
            tracing::warn!(fragment = %fragment.name, status = %response.status(), "fragment page failed");
            fallback_page(state, &fragment, &chrome)
        }
        Err(error) => {
            tracing::warn!(fragment = %fragment.name, %error, "fragment unavailable");
            fallback_page(state, &fragment, &chrome)
        }
    }
}

/// The 503 page with the chrome, for a fragment that is down, slow or failing.
fn fallback_page(state: &ShellState, fragment: &Fragment, chrome: &ChromeContext<'_>) -> Response {
    metrics::counter!("tessera_fragment_fallbacks_total", "fragment" => fragment.name.to_string()).increment(1);
    let message = format!("The {} is not available right now. Everything else on the site keeps working; please try again in a moment.", fragment.title);
    let main = view! {
        <div class="fallback" data-testid="fragment-fallback">
            <h1>{fragment.title.clone()}</h1>
            <p>{message}</p>
            <p><a href="/">"Go to the home page"</a></p>
        </div>
    };
    let html = chrome::document(&fragment.title, &state.stylesheet_url, chrome_html(chrome), main);
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Html(html)).into_response();
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
    response
}

/// Default time a fragment has to start answering.
pub const DEFAULT_FRAGMENT_TIMEOUT: Duration = Duration::from_secs(3);
