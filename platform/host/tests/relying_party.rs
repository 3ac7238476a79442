//! The relying party against a provider of the test's own: it answers the protocol correctly, or with
//! exactly one thing forged, so each check of the relying party is seen to refuse what it should.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared_auth::extract::MaybeUser;
use shared_auth::verify::{InProcessJwks, Verifier, VerifierSettings};
use tessera_host::login::LoginSettings;
use tessera_host::relying_party::OidcProviderSettings;
use tessera_testing::web::Jar;

const SECRET: &str = "relying-party-secret-of-at-least-32-bytes";
const PUBLIC: &str = "http://ops.example";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forge {
    Nothing,
    Audience,
    Issuer,
    Nonce,
    Expired,
    Hs256,
    UnknownKey,
    AccessTokenOfAnotherUser,
}

struct Fake {
    url: String,
    pkcs8: Vec<u8>,
    kid: String,
    public: Vec<u8>,
    forge: Mutex<Forge>,
    nonce: Mutex<String>,
    /// The provider's session has ended: userinfo answers 401.
    ended: AtomicBool,
    token_calls: AtomicUsize,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn ed25519() -> (Vec<u8>, Vec<u8>) {
    use ring::signature::KeyPair;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap().public_key().as_ref().to_vec();
    (pkcs8.as_ref().to_vec(), public)
}

impl Fake {
    fn sign(&self, typ: &str, claims: &Value, pkcs8: &[u8]) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(pkcs8)).unwrap()
    }

    fn tokens(&self) -> Value {
        let forge = *self.forge.lock().unwrap();
        let nonce = self.nonce.lock().unwrap().clone();
        let now = now();
        let mut id = json!({ "iss": self.url, "sub": "u1", "aud": "ops", "exp": now + 300, "iat": now, "nonce": nonce, "sid": "s1" });
        match forge {
            Forge::Audience => id["aud"] = json!("other"),
            Forge::Issuer => id["iss"] = json!("http://evil.test"),
            Forge::Nonce => id["nonce"] = json!("another-nonce"),
            Forge::Expired => {
                id["exp"] = json!(now - 3600);
                id["iat"] = json!(now - 7200);
            }
            _ => {}
        }
        let id_token = match forge {
            Forge::Hs256 => {
                let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::HS256) };
                jsonwebtoken::encode(&header, &id, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
            }
            Forge::UnknownKey => self.sign("JWT", &id, &ed25519().0),
            _ => self.sign("JWT", &id, &self.pkcs8),
        };
        let sub = if forge == Forge::AccessTokenOfAnotherUser { "u2" } else { "u1" };
        let access = json!({ "iss": self.url, "sub": sub, "aud": "ops", "client_id": "ops", "exp": now + 3600, "iat": now, "jti": "j1", "scope": "openid profile email roles", "sid": "s1" });
        json!({ "access_token": self.sign("at+jwt", &access, &self.pkcs8), "token_type": "Bearer", "expires_in": 3600, "id_token": id_token })
    }
}

async fn discovery(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let url = &fake.url;
    Json(json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/oauth/authorize"),
        "token_endpoint": format!("{url}/oauth/token"),
        "userinfo_endpoint": format!("{url}/oauth/userinfo"),
        "end_session_endpoint": format!("{url}/oauth/logout"),
        "jwks_uri": format!("{url}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn jwks(State(fake): State<Arc<Fake>>) -> Json<Value> {
    Json(json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&fake.public), "kid": fake.kid, "alg": "EdDSA", "use": "sig" }] }))
}

async fn token(State(fake): State<Arc<Fake>>, headers: axum::http::HeaderMap, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    fake.token_calls.fetch_add(1, Ordering::SeqCst);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("ops:{SECRET}")));
    let authenticated = headers.get("authorization").is_some_and(|value| value == basic.as_str());
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if !authenticated || form.get("code").map(String::as_str) != Some("good-code") || form.get("code_verifier").is_none_or(|verifier| verifier.len() < 43) {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_grant" }))).into_response();
    }
    Json(fake.tokens()).into_response()
}

async fn userinfo(State(fake): State<Arc<Fake>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if fake.ended.load(Ordering::SeqCst) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": "invalid_token" }))).into_response();
    }
    Json(json!({ "sub": "u1", "sid": "s1", "email": "olive@ops.example", "name": "Olive Ops", "roles": ["inventory_admin"] })).into_response()
}

async fn listen(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn fake_provider() -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (pkcs8, public) = ed25519();
    let fake = Arc::new(Fake {
        url: format!("http://{}", listener.local_addr().unwrap()),
        pkcs8,
        kid: "k1".into(),
        public,
        forge: Mutex::new(Forge::Nothing),
        nonce: Mutex::new(String::new()),
        ended: AtomicBool::new(false),
        token_calls: AtomicUsize::new(0),
    });
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/oauth/token", post(token))
        .route("/oauth/userinfo", get(userinfo))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    fake
}

/// A fragment behind the relying party: it says who it thinks the user is.
async fn fragment(fake: &Fake) -> String {
    fragment_of(&fake.url).await
}

/// The same, signing in at whatever answers at `issuer`.
async fn fragment_of(issuer: &str) -> String {
    let login = LoginSettings { public_url: PUBLIC.into(), ..LoginSettings::default() };
    let provider =
        OidcProviderSettings { issuer: issuer.to_owned(), url: None, client_id: "ops".into(), client_secret: SECRET.into(), session_check_seconds: 1 };
    let unused = Verifier::new(VerifierSettings::new("unused", "unused"), InProcessJwks(Arc::new(|| jsonwebtoken::jwk::JwkSet { keys: Vec::new() })));
    let whoami = |MaybeUser(user): MaybeUser| async move {
        match user {
            Some(user) => format!("user {} {:?}", user.name, user.roles),
            None => "guest".to_owned(),
        }
    };
    let app = Router::new().route("/admin/x", get(whoami)).route("/admin/x/api/me", get(whoami)).with_state(unused);
    listen(tessera_host::relying_party::attach(app, Some(&provider), &login, "/admin/x", &tessera_host::tls::Roots::default()).unwrap()).await
}

struct Browser {
    base: String,
    http: reqwest::Client,
    jar: Jar,
}

impl Browser {
    fn new(base: String) -> Browser {
        Browser { base, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(), jar: Jar::default() }
    }

    /// A request to the fragment's domain (`navigate`: as a page the browser goes to).
    async fn send(&mut self, method: reqwest::Method, path: &str, navigate: bool, extra: &[(&str, &str)]) -> reqwest::Response {
        // The fragment's own domain, as a browser that resolved it would say.
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header("host", "ops.example").header("cookie", self.jar.header());
        if navigate {
            request = request.header("sec-fetch-mode", "navigate").header("sec-fetch-site", "same-origin");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.jar.take(&response);
        response
    }

    async fn get(&mut self, path: &str, navigate: bool) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, navigate, &[]).await
    }
}

fn location(response: &reqwest::Response) -> url::Url {
    let location = response.headers().get(LOCATION).unwrap_or_else(|| panic!("no redirect: {}", response.status())).to_str().unwrap();
    url::Url::parse(location).unwrap_or_else(|_| url::Url::parse(&format!("{PUBLIC}{location}")).unwrap())
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// Starts an interactive sign-in and returns the authorization request it sends the browser with.
async fn start(browser: &mut Browser, fake: &Fake) -> url::Url {
    let response = browser.get("/login?next=/admin/x", true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let authorize = location(&response);
    assert!(authorize.as_str().starts_with(&format!("{}/oauth/authorize?", fake.url)), "{authorize}");
    *fake.nonce.lock().unwrap() = query(&authorize, "nonce").expect("a nonce");
    authorize
}

async fn answer(browser: &mut Browser, authorize: &url::Url, code: &str) -> reqwest::Response {
    let state = query(authorize, "state").unwrap();
    browser.get(&format!("/oidc/callback?code={code}&state={state}"), true).await
}

#[tokio::test]
async fn a_silent_check_then_a_sign_in_then_the_provider_ending_the_session() {
    let fake = fake_provider().await;
    let mut browser = Browser::new(fragment(&fake).await);

    // First visit: asked silently, with PKCE, for this client and its registered address.
    let response = browser.get("/admin/x", true).await;
    let authorize = location(&response);
    for (name, value) in [
        ("prompt", "none"),
        ("client_id", "ops"),
        ("redirect_uri", "http://ops.example/oidc/callback"),
        ("code_challenge_method", "S256"),
        ("response_type", "code"),
    ] {
        assert_eq!(query(&authorize, name).as_deref(), Some(value), "{authorize}");
    }
    assert!(query(&authorize, "scope").unwrap().split(' ').any(|scope| scope == "roles"));
    // Not signed in there: a guest here, and not asked again right away.
    let state = query(&authorize, "state").unwrap();
    let response = browser.get(&format!("/oidc/callback?error=login_required&state={state}"), true).await;
    assert_eq!(location(&response).path(), "/admin/x");
    let response = browser.get("/admin/x", true).await;
    assert_eq!((response.status(), response.text().await.unwrap()), (StatusCode::OK, "guest".to_owned()));
    // Requests to another host name (through the shell, to the process's upstream address) pass as they are.
    let behind_shell = reqwest::Client::new().get(format!("{}/admin/x", browser.base)).header("sec-fetch-mode", "navigate").send().await.unwrap();
    assert_eq!((behind_shell.status(), behind_shell.text().await.unwrap()), (StatusCode::OK, "guest".to_owned()));
    // Requests that are not page visits are never redirected.
    let mut api = Browser::new(browser.base.clone());
    assert_eq!(api.get("/admin/x/api/me", false).await.text().await.unwrap(), "guest");

    // Signing in: an answer with another sign-in's state is refused before any code is used.
    let authorize = start(&mut browser, &fake).await;
    let response = browser.get("/oidc/callback?code=good-code&state=forged", true).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), 0);
    // The refusal ended that sign-in: its own answer no longer works either.
    let response = answer(&mut browser, &authorize, "good-code").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let authorize = start(&mut browser, &fake).await;
    let response = answer(&mut browser, &authorize, "good-code").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{:?}", response.text().await);
    let response_location = location(&response);
    assert_eq!(response_location.path(), "/admin/x");
    let session_cookie = browser.jar.get("tessera_rp_session").map(str::to_owned).expect("a session cookie");
    assert_eq!(browser.get("/admin/x", false).await.text().await.unwrap(), "user Olive Ops [InventoryAdmin]");
    // The same answer again (a replayed callback URL) finds no sign-in under way.
    assert_eq!(answer(&mut browser, &authorize, "good-code").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(browser.jar.get("tessera_rp_session"), Some(session_cookie.as_str()), "a refused answer ended the session");

    // The provider ends the session: within the bound (1 s here) the fragment sees a guest and drops it.
    fake.ended.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(browser.get("/admin/x/api/me", false).await.text().await.unwrap(), "guest");
    assert!(browser.jar.get("tessera_rp_session").is_none());
}

#[tokio::test]
async fn sign_out_here_asks_then_ends_the_session_here_and_at_the_provider() {
    let fake = fake_provider().await;
    let mut browser = Browser::new(fragment(&fake).await);
    let authorize = start(&mut browser, &fake).await;
    assert_eq!(answer(&mut browser, &authorize, "good-code").await.status(), StatusCode::SEE_OTHER);

    let response = browser.get("/logout", true).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("<form method=\"post\" action=\"/logout\">"));
    // From another site: refused, still signed in.
    let response = browser.send(reqwest::Method::POST, "/logout", false, &[("origin", "https://evil.test")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(browser.jar.get("tessera_rp_session").is_some());

    let id_token = browser.jar.get("tessera_rp_id").map(str::to_owned).expect("the ID token, for the hint");
    let response = browser.send(reqwest::Method::POST, "/logout", true, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let end_session = location(&response);
    assert!(end_session.as_str().starts_with(&format!("{}/oauth/logout?", fake.url)), "{end_session}");
    assert_eq!(query(&end_session, "id_token_hint"), Some(id_token));
    assert_eq!(query(&end_session, "post_logout_redirect_uri").as_deref(), Some("http://ops.example/admin/x"));
    assert!(browser.jar.get("tessera_rp_session").is_none());
    assert_eq!(browser.get("/admin/x", true).await.text().await.unwrap(), "guest");
}

#[tokio::test]
async fn an_id_token_with_anything_forged_signs_nobody_in() {
    let fake = fake_provider().await;
    let base = fragment(&fake).await;
    for forge in
        [Forge::Audience, Forge::Issuer, Forge::Nonce, Forge::Expired, Forge::Hs256, Forge::UnknownKey, Forge::AccessTokenOfAnotherUser, Forge::Nothing]
    {
        *fake.forge.lock().unwrap() = forge;
        let mut browser = Browser::new(base.clone());
        let authorize = start(&mut browser, &fake).await;
        let response = answer(&mut browser, &authorize, "good-code").await;
        let signed_in = browser.jar.get("tessera_rp_session").is_some();
        if forge == Forge::Nothing {
            // The control: the same provider, nothing forged, signs in — so each refusal above is the check's.
            assert_eq!((response.status(), signed_in), (StatusCode::SEE_OTHER, true));
        } else {
            assert_eq!((response.status(), signed_in), (StatusCode::BAD_REQUEST, false), "{forge:?}");
            assert_eq!(browser.get("/admin/x/api/me", false).await.text().await.unwrap(), "guest", "{forge:?}");
        }
    }
    // An answer naming another issuer (RFC 9207) is refused before the code is used.
    *fake.forge.lock().unwrap() = Forge::Nothing;
    let calls = fake.token_calls.load(Ordering::SeqCst);
    let mut browser = Browser::new(base.clone());
    let authorize = start(&mut browser, &fake).await;
    let state = query(&authorize, "state").unwrap();
    let response = browser.get(&format!("/oidc/callback?code=good-code&state={state}&iss=http%3A%2F%2Fevil.test"), true).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(fake.token_calls.load(Ordering::SeqCst), calls);
    // A code the provider refuses.
    let authorize = start(&mut browser, &fake).await;
    assert_eq!(answer(&mut browser, &authorize, "stolen-code").await.status(), StatusCode::BAD_REQUEST);
    // `next` never leads off the site.
    let response = browser.get("/login?next=https://evil.test/", true).await;
    let authorize = location(&response);
    *fake.nonce.lock().unwrap() = query(&authorize, "nonce").unwrap();
    let response = answer(&mut browser, &authorize, "good-code").await;
    assert_eq!(location(&response).as_str(), format!("{PUBLIC}/"));
}

#[tokio::test]
async fn with_the_provider_down_pages_are_served_to_a_guest_and_sign_in_says_why_it_cannot() {
    // An address nothing listens on any more.
    let gone = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut browser = Browser::new(fragment_of(&gone).await);
    let response = browser.get("/admin/x", true).await;
    assert_eq!((response.status(), response.text().await.unwrap()), (StatusCode::OK, "guest".to_owned()));
    let response = browser.get("/login?next=/admin/x", true).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.text().await.unwrap().contains("not reachable right now"));
}

#[tokio::test]
async fn while_the_provider_fails_discovery_is_retried_with_a_growing_wait_not_on_every_page() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let failing = listen(Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::BAD_GATEWAY }
        }),
    ))
    .await;
    let base = fragment_of(&failing).await;
    // Each fresh browser is a guest on a page navigation, which would ask the provider.
    for _ in 0..20 {
        let response = Browser::new(base.clone()).get("/admin/x", true).await;
        assert_eq!((response.status(), response.text().await.unwrap()), (StatusCode::OK, "guest".to_owned()));
    }
    // One failure, then a wait of a second before the next try (two, on a machine slow enough to take
    // a second over twenty local requests).
    let after_burst = asked.load(Ordering::SeqCst);
    assert!((1..=2).contains(&after_burst), "{after_burst} discoveries for 20 pages");
    // Past the wait (at most two seconds after two failures) one page tries again, and the next waits.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    Browser::new(base.clone()).get("/admin/x", true).await;
    Browser::new(base).get("/admin/x", true).await;
    assert_eq!(asked.load(Ordering::SeqCst), after_burst + 1);
}
