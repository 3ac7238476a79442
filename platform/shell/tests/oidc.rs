//! The shell as an OpenID Connect provider: discovery, the code flow with PKCE, tokens and userinfo,
//! sign-out, the attacks on each step, and a fragment on another domain (a probe behind the host's
//! relying party) signing in at the shell.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{CACHE_CONTROL, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;
use support::{each_backend, spawn_fragment_alone_with, spawn_with, urlencode, Backend, Jar, Options, TestShell, ADMIN, PASSWORD, SHOPPER};
use tessera_host::relying_party::OidcProviderSettings;
use tessera_shell::oidc::OidcClientSettings;
use tessera_shell::settings::ShellSettings;

const ISSUER: &str = "http://127.0.0.1";
const OPS_SECRET: &str = "ops-client-secret-that-is-at-least-32-bytes";
const OTHER_SECRET: &str = "other-client-secret-that-is-at-least-32-bytes";
const OPS_CALLBACK: &str = "https://ops.example/oidc/callback";
const OPS_SIGNED_OUT: &str = "https://ops.example/admin/inventory";
const OTHER_CALLBACK: &str = "https://other.example/cb";

fn with_clients(settings: &mut ShellSettings) {
    let client = |redirect: &str, secret: &str, signed_out: &str| OidcClientSettings {
        redirect_uris: redirect.into(),
        secret: Some(secret.into()),
        post_logout_redirect_uris: signed_out.into(),
    };
    settings.oidc.oidc_clients.insert("ops".into(), client(OPS_CALLBACK, OPS_SECRET, OPS_SIGNED_OUT));
    settings.oidc.oidc_clients.insert("other".into(), client(OTHER_CALLBACK, OTHER_SECRET, ""));
}

async fn provider(backend: support::Backend) -> TestShell {
    spawn_with(backend, Options { configure: Some(with_clients), ..Options::default() }).await
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn new_pkce() -> Pkce {
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    Pkce { verifier, challenge }
}

fn authorize_path(client: &str, redirect: &str, challenge: &str, extra: &str) -> String {
    format!(
        "/oauth/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20email%20profile%20roles&state=st-1&nonce=n-1\
         &code_challenge={challenge}&code_challenge_method=S256{extra}",
        urlencode(redirect)
    )
}

/// The query parameters of a redirect's `Location`.
fn location_params(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = response.headers().get(LOCATION).expect("a redirect").to_str().unwrap().to_owned();
    let url = url::Url::parse(&location).unwrap_or_else(|_| url::Url::parse(&format!("{ISSUER}{location}")).unwrap());
    let params = url.query_pairs().into_owned().collect();
    (location, params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// A code for the signed-in `cookie`, issued to `client` for `redirect`.
async fn code_for(app: &TestShell, cookie: &str, client: &str, redirect: &str, pkce: &Pkce) -> String {
    let response = app.get(&authorize_path(client, redirect, &pkce.challenge, ""), Some(cookie)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{:?}", response.text().await);
    let (location, params) = location_params(&response);
    assert!(location.starts_with(&format!("{redirect}?")), "{location}");
    assert_eq!(param(&params, "state"), Some("st-1"));
    assert_eq!(param(&params, "iss"), Some(ISSUER));
    param(&params, "code").expect("a code").to_owned()
}

/// A token request with HTTP Basic client authentication (when `client` is given).
async fn token_request(app: &TestShell, client: Option<(&str, &str)>, form: String) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.post(format!("{}/oauth/token", app.url)).header("content-type", "application/x-www-form-urlencoded").body(form);
    if let Some((id, secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn exchange_form(code: &str, redirect: &str, verifier: &str) -> String {
    format!("grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}", urlencode(code), urlencode(redirect))
}

async fn userinfo(app: &TestShell, token: &str) -> (StatusCode, Value) {
    let response = app.client.get(format!("{}/oauth/userinfo", app.url)).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Verifies a token as a relying party would, with the published keys.
async fn verify(app: &TestShell, token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("signed by a published key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}

#[tokio::test]
async fn discovery_describes_the_code_flow_with_pkce_and_eddsa() {
    let app = provider(support::Backend::Sqlite).await;
    let response = app.get("/.well-known/openid-configuration", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["issuer"], ISSUER);
    for (field, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("end_session_endpoint", "/oauth/logout"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(document[field], format!("{ISSUER}{path}"), "{field}");
    }
    assert_eq!(document["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA"]));
    assert_eq!(document["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(document["response_types_supported"], serde_json::json!(["code"]));
}

each_backend!(a_signed_in_user_goes_straight_back_with_a_code_that_buys_tokens_naming_them);
async fn a_signed_in_user_goes_straight_back_with_a_code_that_buys_tokens_naming_them(backend: Backend) {
    let app = provider(backend).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let pkce = new_pkce();
    let code = code_for(&app, &session.both(), "ops", OPS_CALLBACK, &pkce).await;

    let (status, headers, tokens) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {tokens}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(tokens["token_type"], "Bearer");
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = verify(&app, id_token, "ops").await;
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["email"], SHOPPER);
    assert_eq!(claims["roles"], serde_json::json!(["shopper"]));
    assert!(claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()));
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 300);

    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(access).unwrap().typ.as_deref(), Some("at+jwt"));
    assert_eq!(verify(&app, access, "ops").await["sid"], claims["sid"]);
    let (status, info) = userinfo(&app, access).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!((info["sub"].clone(), info["email"].clone(), info["roles"].clone()), (claims["sub"].clone(), SHOPPER.into(), serde_json::json!(["shopper"])));

    // Neither token is a shell session: the fragments behind the shell do not take them.
    for token in [access, id_token] {
        assert_eq!(app.catalog_user(&format!("tessera_access={token}")).await, None, "{backend:?}");
    }
    // The ID token is not an access token at the userinfo endpoint either.
    assert_eq!(userinfo(&app, id_token).await.0, StatusCode::UNAUTHORIZED);

    // Signing out at the shell ends what the client holds.
    let response = app.post_form("/logout", "", Some(&session.both())).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, info) = userinfo(&app, access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: {info}");
}

each_backend!(a_guest_signs_in_first_and_comes_back_to_the_same_request);
async fn a_guest_signs_in_first_and_comes_back_to_the_same_request(backend: Backend) {
    let app = provider(backend).await;
    let pkce = new_pkce();
    let path = authorize_path("ops", OPS_CALLBACK, &pkce.challenge, "");
    let response = app.get(&path, None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (location, params) = location_params(&response);
    assert!(location.starts_with("/login?next="), "{location}");
    let next = param(&params, "next").unwrap().to_owned();
    assert_eq!(next, path);
    let (status, html) = app.text(&location, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"next\""), "{html}");

    let body = format!("email={}&password={PASSWORD}&next={}", urlencode(ADMIN), urlencode(&next));
    let response = app.post_form("/login", body, None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION].to_str().unwrap(), path);
    let cookie = support::access_cookie(&response).unwrap();
    let response = app.get(&path, Some(&cookie)).await;
    let (location, params) = location_params(&response);
    assert!(location.starts_with(OPS_CALLBACK) && param(&params, "code").is_some(), "{backend:?}: {location}");

    // prompt=none asks without showing anything: a guest comes back with login_required.
    let response = app.get(&format!("{path}&prompt=none"), None).await;
    let (location, params) = location_params(&response);
    assert!(location.starts_with(OPS_CALLBACK), "{location}");
    assert_eq!((param(&params, "error"), param(&params, "state"), param(&params, "code")), (Some("login_required"), Some("st-1"), None));
}

each_backend!(prompt_login_and_an_exceeded_max_age_make_the_user_sign_in_again);
async fn prompt_login_and_an_exceeded_max_age_make_the_user_sign_in_again(backend: Backend) {
    let app = provider(backend).await;
    let session = app.sign_in(ADMIN, PASSWORD).await;
    let pkce = new_pkce();
    let db = app.database().await;
    // The sign-in happened an hour ago.
    sqlx::query("UPDATE sessions SET created_at = created_at - 3600").execute(&db).await.unwrap();
    for extra in ["&prompt=login", "&max_age=600", "&prompt=login%20consent"] {
        let path = authorize_path("ops", OPS_CALLBACK, &pkce.challenge, extra);
        let response = app.get(&path, Some(&session.both())).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{extra}");
        let (location, params) = location_params(&response);
        assert!(location.starts_with("/login?next="), "{backend:?} {extra}: sent to sign in again, not back with a code: {location}");
        // Signing in again answers the request: a code whose ID token says when.
        let next = param(&params, "next").unwrap().to_owned();
        assert!(!next.contains("prompt=") && !next.contains("max_age="), "{next}");
        let body = format!("email={}&password={PASSWORD}&next={}", urlencode(ADMIN), urlencode(&next));
        let response = app.post_form("/login", body, None).await;
        let fresh = support::access_cookie(&response).unwrap();
        let response = app.get(response.headers()[LOCATION].to_str().unwrap(), Some(&fresh)).await;
        let (location, params) = location_params(&response);
        assert!(location.starts_with(OPS_CALLBACK), "{backend:?} {extra}: {location}");
        let code = param(&params, "code").expect("a code").to_owned();
        let (status, _, tokens) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        let id = verify(&app, tokens["id_token"].as_str().unwrap(), "ops").await;
        assert!(id["auth_time"].as_i64().unwrap() >= shared_auth::keys::now_seconds() - 60, "{extra}: a fresh sign-in: {id}");
        // The old session, asked again with that continuation, must still sign in (it is older).
        let again = app.get(&next, Some(&session.both())).await;
        assert!(location_params(&again).0.starts_with("/login?next="), "{extra}");
    }
    // A max_age the sign-in is within goes straight back; prompt=none with a stale sign-in says so.
    let recent = app.sign_in(ADMIN, PASSWORD).await;
    let response = app.get(&authorize_path("ops", OPS_CALLBACK, &pkce.challenge, "&max_age=600"), Some(&recent.both())).await;
    assert!(location_params(&response).0.starts_with(OPS_CALLBACK));
    let response = app.get(&authorize_path("ops", OPS_CALLBACK, &pkce.challenge, "&max_age=600&prompt=none"), Some(&session.both())).await;
    let (location, params) = location_params(&response);
    assert!(location.starts_with(OPS_CALLBACK) && param(&params, "error") == Some("login_required"), "{location}");
    let response = app.get(&authorize_path("ops", OPS_CALLBACK, &pkce.challenge, "&max_age=soon"), Some(&recent.both())).await;
    assert_eq!(param(&location_params(&response).1, "error"), Some("invalid_request"));
}

#[tokio::test]
async fn authorization_requests_are_limited_per_address_and_session() {
    let app = spawn_with(
        Backend::Sqlite,
        Options {
            configure: Some(|settings| {
                with_clients(settings);
                settings.throttle.authorize_max_per_window = 3;
            }),
            ..Options::default()
        },
    )
    .await;
    let cookie = app.sign_in(SHOPPER, PASSWORD).await.both();
    let pkce = new_pkce();
    for _ in 0..3 {
        code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    }
    let response = app.get(&authorize_path("ops", OPS_CALLBACK, &pkce.challenge, ""), Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let db = app.database().await;
    assert_eq!(support::count(&db, "SELECT COUNT(*) FROM oidc_codes").await, 3, "the refused request stored no code");
}

each_backend!(a_code_works_once_for_its_own_client_address_and_verifier);
async fn a_code_works_once_for_its_own_client_address_and_verifier(backend: Backend) {
    let app = provider(backend).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let cookie = session.both();
    let pkce = new_pkce();

    // Another client cannot use a code issued to this one, and its attempt does not spend it: the
    // rightful exchange afterwards works and is not taken for a replay (which would end the session).
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let (status, _, error) = token_request(&app, Some(("other", OTHER_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{backend:?}: {error}");
    assert!(error["error_description"].as_str().unwrap().contains("another client"), "{error}");
    let (status, _, tokens) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {tokens}");
    assert_eq!(app.catalog_user(&cookie).await.as_deref(), Some("Sam Shopper"), "the session goes on");

    // A redirect URI that differs by one character.
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, &format!("{OPS_CALLBACK}x"), &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");

    // A missing, then a wrong PKCE verifier.
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let form = format!("grant_type=authorization_code&code={}&redirect_uri={}", urlencode(&code), urlencode(OPS_CALLBACK));
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), form).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{error}");
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &new_pkce().verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");

    // A wrong client secret, and none at all.
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let (status, headers, error) = token_request(&app, Some(("ops", OTHER_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{error}");
    assert!(headers.contains_key(WWW_AUTHENTICATE));
    let (status, _, error) = token_request(&app, None, format!("client_id=ops&{}", exchange_form(&code, OPS_CALLBACK, &pkce.verifier))).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{error}");
    // The client secret in the form works as well as in the header; the refused attempts did not spend the code.
    let form = format!("client_id=ops&client_secret={}&{}", urlencode(OPS_SECRET), exchange_form(&code, OPS_CALLBACK, &pkce.verifier));
    let (status, _, tokens) = token_request(&app, None, form).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(userinfo(&app, &access).await.0, StatusCode::OK);

    // Replayed: refused, and the sign-in it came from ends, with every token issued for it.
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");
    assert!(error["error_description"].as_str().unwrap().contains("already used"), "{error}");
    assert_eq!(userinfo(&app, &access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.catalog_user(&cookie).await, None, "{backend:?}: the replayed code's session still works");

    // An expired code.
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let code = code_for(&app, &session.both(), "ops", OPS_CALLBACK, &pkce).await;
    let db = app.database().await;
    sqlx::query("UPDATE oidc_codes SET expires_at = 0 WHERE used_at IS NULL").execute(&db).await.unwrap();
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");
    assert!(error["error_description"].as_str().unwrap().contains("expired"), "{error}");
    // A made-up code, an unsupported grant, a JSON body.
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form("made-up", OPS_CALLBACK, &pkce.verifier)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");
    let (status, _, error) = token_request(&app, Some(("ops", OPS_SECRET)), "grant_type=password&username=a&password=b".into()).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")), "{error}");
    let response = app.client.post(format!("{}/oauth/token", app.url)).basic_auth("ops", Some(OPS_SECRET)).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_authorization_request_is_followed_only_to_a_registered_address() {
    let app = provider(support::Backend::Sqlite).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let cookie = session.both();
    let challenge = new_pkce().challenge;
    // Never a redirect: an unknown client, an address that differs by a character or is missing, a
    // parameter given twice, a request far too long.
    for path in [
        authorize_path("nobody", OPS_CALLBACK, &challenge, ""),
        authorize_path("ops", &format!("{OPS_CALLBACK}/"), &challenge, ""),
        authorize_path("ops", "https://ops.example/oidc/callbacK", &challenge, ""),
        authorize_path("ops", OTHER_CALLBACK, &challenge, ""),
        authorize_path("ops", "https://evil.test/", &challenge, ""),
        format!("/oauth/authorize?response_type=code&client_id=ops&scope=openid&code_challenge={challenge}&code_challenge_method=S256"),
        authorize_path("ops", OPS_CALLBACK, &challenge, "&client_id=other"),
        authorize_path("ops", OPS_CALLBACK, &challenge, &format!("&pad={}", "x".repeat(3000))),
    ] {
        let response = app.get(&path, Some(&cookie)).await;
        assert!(response.headers().get(LOCATION).is_none(), "{path} redirected to {:?}", response.headers().get(LOCATION));
        let status = response.status();
        assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::URI_TOO_LONG, "{path}: {status}");
        let html = response.text().await.unwrap();
        assert!(html.contains("This sign-in link does not work"), "{html}");
    }
    // Known client and address: a refusal goes back there, with the state, and carries no code.
    for (extra_or_path, error) in [
        (authorize_path("ops", OPS_CALLBACK, &challenge, "").replace("&code_challenge_method=S256", ""), "invalid_request"),
        (authorize_path("ops", OPS_CALLBACK, &challenge, "").replace("S256", "plain"), "invalid_request"),
        (authorize_path("ops", OPS_CALLBACK, &challenge, "").replace(&challenge, "short"), "invalid_request"),
        (authorize_path("ops", OPS_CALLBACK, &challenge, "").replace("response_type=code", "response_type=token"), "unsupported_response_type"),
        (authorize_path("ops", OPS_CALLBACK, &challenge, "").replace("scope=openid%20", "scope="), "invalid_scope"),
        (authorize_path("ops", OPS_CALLBACK, &challenge, "&request=eyJ"), "request_not_supported"),
    ] {
        let response = app.get(&extra_or_path, Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{extra_or_path}");
        let (location, params) = location_params(&response);
        assert!(location.starts_with(&format!("{OPS_CALLBACK}?")), "{location}");
        assert_eq!((param(&params, "error"), param(&params, "state"), param(&params, "code")), (Some(error), Some("st-1"), None), "{extra_or_path}");
    }
}

each_backend!(signing_out_from_a_client_ends_the_session_at_once_only_with_its_proof);
async fn signing_out_from_a_client_ends_the_session_at_once_only_with_its_proof(backend: Backend) {
    let app = provider(backend).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let cookie = session.both();
    let pkce = new_pkce();
    let code = code_for(&app, &cookie, "ops", OPS_CALLBACK, &pkce).await;
    let (_, _, tokens) = token_request(&app, Some(("ops", OPS_SECRET)), exchange_form(&code, OPS_CALLBACK, &pkce.verifier)).await;
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let back = urlencode(OPS_SIGNED_OUT);

    // Not registered as a place to go after signing out: an error page, never a redirect.
    for target in ["https://evil.test/", OPS_CALLBACK, "https://ops.example/admin/inventoryX"] {
        let response = app.get(&format!("/oauth/logout?client_id=ops&post_logout_redirect_uri={}", urlencode(target)), Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{target}");
        assert!(response.headers().get(LOCATION).is_none(), "{target}");
    }
    // A forged hint is refused.
    let forged = format!("{}x", &id_token[..id_token.len() - 1]);
    let response = app.get(&format!("/oauth/logout?id_token_hint={forged}&post_logout_redirect_uri={back}"), Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Without proof of the session (a link anyone could send), the user is asked first.
    let (status, html) = app.text(&format!("/oauth/logout?client_id=ops&post_logout_redirect_uri={back}&state=s-1"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("action=\"/oauth/logout\"") && html.contains("name=\"post_logout_redirect_uri\""), "{html}");
    assert_eq!(app.catalog_user(&cookie).await.as_deref(), Some("Sam Shopper"), "{backend:?}: asking signed the user out");

    // With the ID token of this very session: signed out at once, and back to the client.
    let response = app.get(&format!("/oauth/logout?id_token_hint={id_token}&post_logout_redirect_uri={back}&state=s-1"), Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], format!("{OPS_SIGNED_OUT}?state=s-1"));
    assert!(response.headers().get_all(SET_COOKIE).iter().any(|value| value.to_str().unwrap().starts_with("tessera_access=;")));
    assert_eq!(app.catalog_user(&cookie).await, None, "{backend:?}");
    assert_eq!(userinfo(&app, tokens["access_token"].as_str().unwrap()).await.0, StatusCode::UNAUTHORIZED);

    // The confirmation form signs out too.
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let response = app.post_form("/oauth/logout", format!("client_id=ops&post_logout_redirect_uri={back}"), Some(&session.both())).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], OPS_SIGNED_OUT);
    assert_eq!(app.catalog_user(&session.both()).await, None);
    // …but not when posted from another site.
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let response = app
        .client
        .post(format!("{}/oauth/logout", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.test")
        .header("cookie", session.both())
        .body("client_id=ops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(app.catalog_user(&session.both()).await.is_some());
}

#[tokio::test]
async fn userinfo_wants_a_valid_access_token() {
    let app = provider(support::Backend::Sqlite).await;
    let response = app.client.get(format!("{}/oauth/userinfo", app.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer realm=\"tessera\"");
    // The shell's own access token (another audience and kind), a token signed with HS256, garbage.
    let shell_token = app.login_as(SHOPPER, PASSWORD).await;
    let shell_token = shell_token.trim_start_matches("tessera_access=").to_owned();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header { typ: Some("at+jwt".into()), ..jsonwebtoken::Header::new(Algorithm::HS256) },
        &serde_json::json!({ "iss": ISSUER, "aud": "ops", "sub": "x", "exp": 9_999_999_999i64, "iat": 0 }),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    for token in [shell_token.as_str(), hs256.as_str(), "not-a-token"] {
        let (status, body) = userinfo(&app, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}: {body}");
        assert_eq!(body["error"], "invalid_token");
    }
}

/// A page visit to the fragment on its own domain (`ops.example`, as a browser that resolved it says).
async fn visit_ops(ops: &support::FragmentAlone, jar: &mut Jar, path_and_query: &str, navigate: bool) -> reqwest::Response {
    let mut request = ops.client.get(format!("{}{path_and_query}", ops.url)).header("host", "ops.example").header("cookie", jar.header());
    if navigate {
        request = request.header("sec-fetch-mode", "navigate");
    }
    let response = request.send().await.unwrap();
    jar.take(&response);
    response
}

each_backend!(the_inventory_on_another_domain_signs_in_at_the_shell_and_follows_its_sign_out);
async fn the_inventory_on_another_domain_signs_in_at_the_shell_and_follows_its_sign_out(backend: Backend) {
    let shell = provider(backend).await;
    let shell_url = shell.url.clone();
    let ops = spawn_fragment_alone_with(&support::probe::INVENTORY, &shell, |settings| {
        settings.login.public_url = "https://ops.example".into();
        settings.site.oidc_provider = Some(OidcProviderSettings {
            issuer: ISSUER.into(),
            url: Some(shell_url),
            client_id: "ops".into(),
            client_secret: OPS_SECRET.into(),
            session_check_seconds: 1,
        });
    })
    .await;
    let session = shell.sign_in(ADMIN, PASSWORD).await;
    let mut jar = Jar::default();

    // The first visit goes through the shell, which knows the user, and comes back with a code.
    let response = visit_ops(&ops, &mut jar, "/admin/inventory/staff", true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{backend:?}");
    let (authorize, _) = location_params(&response);
    let authorize = authorize.strip_prefix(ISSUER).expect("sent to the shell's authorization endpoint").to_owned();
    let response = shell.get(&authorize, Some(&session.both())).await;
    let (callback, params) = location_params(&response);
    assert!(param(&params, "code").is_some(), "{backend:?}: {callback}");
    let callback = callback.strip_prefix("https://ops.example").unwrap().to_owned();
    let response = visit_ops(&ops, &mut jar, &callback, true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{backend:?}: {:?}", response.text().await);
    assert_eq!(response.headers()[LOCATION], "/admin/inventory/staff");
    assert!(jar.get("__Host-tessera_rp_session").is_some(), "{}", jar.header());

    let response = visit_ops(&ops, &mut jar, "/admin/inventory/staff", true).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Staff page for Ada Admin"));

    // Signed out at the shell: within the fragment's bound (1 s here) its session ends too.
    assert_eq!(shell.post_form("/logout", "", Some(&session.both())).await.status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let response = visit_ops(&ops, &mut jar, "/admin/inventory/staff", false).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{backend:?}");
    assert!(jar.get("__Host-tessera_rp_session").is_none());
}
