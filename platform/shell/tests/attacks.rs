//! The attack suite: hostile tokens, cookies and requests against the shell and the fragments behind it
//! (probes here; each fragment's own refusals are in its crate's tests). Every case must be refused,
//! change nothing, and never produce a 5xx.
//!
//! Tokens "signed with the real key" are made by opening the shell's key ring in the test's data dir, which
//! is what an attacker who stole nothing cannot do; those cases check the claims checks, not the signature.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared_auth::keys::KeyRing;
use support::{each_backend, spawn_with, Backend, Options, Session, TestShell, ADMIN, PASSWORD, SHOPPER};

fn b64(value: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).unwrap())
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An Ed25519 key the attacker made: PKCS#8 bytes and the public key.
fn attacker_key() -> (Vec<u8>, Vec<u8>) {
    use ring::signature::KeyPair;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

fn attacker_sign(header: Header, claims: &Value) -> String {
    let (pkcs8, _) = attacker_key();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&pkcs8)).unwrap()
}

/// What the attacker tries: a token for the access cookie, or raw cookies/headers.
enum Attempt {
    AccessToken(String),
    Cookie(String),
    Header(&'static str, String),
    Url(String),
}

struct Case {
    name: String,
    attempt: Attempt,
}

fn case(name: impl Into<String>, attempt: Attempt) -> Case {
    Case { name: name.into(), attempt }
}

/// Every hostile token and request, built around a real session of Sam and the admin's claims.
fn token_cases(app: &TestShell, sam: &Session, revoked: &Session) -> Vec<Case> {
    let real = sam.access.split_once('=').unwrap().1.to_owned();
    let mut cases = forged_signatures(app, &real);
    cases.extend(wrong_claims_under_the_real_key(app, &real, revoked));
    cases.extend(tokens_in_the_wrong_place(sam, &real));
    cases
}

/// Sam's claims with `changes` made.
fn with_claims(claims: &Value, changes: &[(&str, Value)]) -> Value {
    let mut claims = claims.clone();
    for (key, value) in changes {
        claims[*key] = value.clone();
    }
    claims
}

/// Tokens claiming the admin's roles whose signature is forged, stripped or mangled, or whose header
/// asks for another algorithm or key.
fn forged_signatures(app: &TestShell, real: &str) -> Vec<Case> {
    let parts = segments(real);
    let kid = decode_segment(&parts[0])["kid"].as_str().unwrap().to_owned();
    let admin_claims = with_claims(&decode_segment(&parts[1]), &[("roles", json!(["shopper", "inventory_admin", "admin"]))]);
    let jwks: Value = {
        let path = format!("{}/.well-known/jwks.json", app.url);
        let body = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move { reqwest::get(path).await.unwrap().text().await.unwrap() })
        })
        .join()
        .unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();

    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let forged_header = b64_json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
        cases.push(case(format!("alg {alg}, empty signature"), Attempt::AccessToken(format!("{forged_header}.{}.", b64_json(&admin_claims)))));
        cases.push(case(format!("alg {alg}, two segments"), Attempt::AccessToken(format!("{forged_header}.{}", b64_json(&admin_claims)))));
    }
    let none_header = b64_json(&json!({"alg": "none", "kid": kid}));
    cases.push(case("alg none keeping the real signature", Attempt::AccessToken(format!("{none_header}.{}.{}", parts[1], parts[2]))));
    for (label, secret) in [
        ("public key bytes", URL_SAFE_NO_PAD.decode(&public_x).unwrap()),
        ("public x text", public_x.as_bytes().to_vec()),
        ("JWKS text", jwks.to_string().into_bytes()),
    ] {
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&hs, &admin_claims, &EncodingKey::from_secret(&secret)).unwrap();
        cases.push(case(format!("HS256 keyed with the {label}"), Attempt::AccessToken(token)));
    }
    let rs_header = b64_json(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
    cases.push(case("RS256 header on an EdDSA signature", Attempt::AccessToken(format!("{rs_header}.{}.{}", parts[1], parts[2]))));
    cases.push(case("payload swapped under the kept signature", Attempt::AccessToken(format!("{}.{}.{}", parts[0], b64_json(&admin_claims), parts[2]))));
    cases.push(case("signature stripped", Attempt::AccessToken(format!("{}.{}.", parts[0], parts[1]))));
    let mut flipped = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    flipped[10] ^= 0x01;
    cases.push(case("one signature bit flipped", Attempt::AccessToken(format!("{}.{}.{}", parts[0], parts[1], b64(&flipped)))));
    cases.push(case("signature truncated", Attempt::AccessToken(format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]))));
    cases.push(case("one segment", Attempt::AccessToken(parts[0].clone())));
    cases.push(case("four segments", Attempt::AccessToken(format!("{real}.{}", parts[2]))));
    cases.push(case("five segments (JWE shape)", Attempt::AccessToken(format!("{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[1], parts[2]))));
    cases.push(case("bad base64 in the header", Attempt::AccessToken(format!("!!!{}.{}.{}", parts[0], parts[1], parts[2]))));
    cases.push(case("bad JSON in the header", Attempt::AccessToken(format!("{}.{}.{}", b64(b"{\"alg\":"), parts[1], parts[2]))));
    cases.push(case("bad JSON in the payload", Attempt::AccessToken(format!("{}.{}.{}", parts[0], b64(b"not json"), parts[2]))));
    cases.push(case("bad base64 in the payload", Attempt::AccessToken(format!("{}.%%%.{}", parts[0], parts[2]))));

    let mut attacker = Header::new(Algorithm::EdDSA);
    attacker.kid = Some(kid.clone());
    cases.push(case("attacker's key with the real kid", Attempt::AccessToken(attacker_sign(attacker, &admin_claims))));
    let (_, attacker_public) = attacker_key();
    let embedded: jsonwebtoken::jwk::Jwk = serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&attacker_public)})).unwrap();
    let mut with_jwk = Header::new(Algorithm::EdDSA);
    with_jwk.jwk = Some(embedded.clone());
    cases.push(case("embedded jwk header, no kid", Attempt::AccessToken(attacker_sign(with_jwk, &admin_claims))));
    let mut with_jwk_kid = Header::new(Algorithm::EdDSA);
    with_jwk_kid.jwk = Some(embedded);
    with_jwk_kid.kid = Some(kid.clone());
    cases.push(case("embedded jwk header with the real kid", Attempt::AccessToken(attacker_sign(with_jwk_kid, &admin_claims))));
    let mut with_jku = Header::new(Algorithm::EdDSA);
    with_jku.jku = Some("http://127.0.0.1:9/evil-jwks.json".into());
    with_jku.kid = Some("evil".into());
    cases.push(case("jku header", Attempt::AccessToken(attacker_sign(with_jku, &admin_claims))));
    let mut with_x5u = Header::new(Algorithm::EdDSA);
    with_x5u.x5u = Some("http://127.0.0.1:9/evil.pem".into());
    cases.push(case("x5u header", Attempt::AccessToken(attacker_sign(with_x5u, &admin_claims))));
    for hostile_kid in ["../../../../etc/passwd", "' OR '1'='1", "\u{0}", "😈", &"k".repeat(10_000)] {
        let mut hostile = Header::new(Algorithm::EdDSA);
        hostile.kid = Some(hostile_kid.to_owned());
        let label: String = hostile_kid.chars().take(24).collect();
        cases.push(case(format!("hostile kid {label:?}"), Attempt::AccessToken(attacker_sign(hostile, &admin_claims))));
    }

    cases
}

/// Claims the shell would never sign, signed with its real key (from its database): each must still be
/// refused for what it says.
fn wrong_claims_under_the_real_key(app: &TestShell, real: &str, revoked: &Session) -> Vec<Case> {
    let claims = decode_segment(&segments(real)[1]);
    // The shell's real key, from its database: forged claims with a valid signature.
    let ring = {
        let shell = app.settings.host.store.clone();
        let sealing = tessera_shell::keys::Sealing::of(&app.settings.host).unwrap();
        let stored = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let (sqlite, postgres) = tessera_shell::migrators();
                let db = shell.open("shell", &tessera_fragment::db::Migrations { sqlite, postgres }).await.unwrap();
                let stored = tessera_shell::keys::load(&db, &sealing).await.unwrap();
                db.close().await;
                stored
            })
        })
        .join()
        .unwrap();
        KeyRing::new(&stored, app.settings.host.login.access_ttl_seconds).unwrap()
    };
    let real_sign = |claims: &Value| ring.signing_key(now()).sign(claims).unwrap();
    let with = |changes: &[(&str, Value)]| with_claims(&claims, changes);
    let without = |key: &str| {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let mut cases = Vec::new();
    let t = now();
    let real_signed: Vec<(&str, Value)> = vec![
        ("expired (real key)", with(&[("exp", json!(t - 3600)), ("iat", json!(t - 3900))])),
        ("not yet valid (nbf in an hour)", with(&[("nbf", json!(t + 3600))])),
        ("issued in the future", with(&[("iat", json!(t + 3600)), ("exp", json!(t + 3900))])),
        ("absurdly long-lived (10 years)", with(&[("exp", json!(t + 10 * 365 * 24 * 3600))])),
        ("wrong issuer", with(&[("iss", json!("https://evil.example"))])),
        ("wrong audience", with(&[("aud", json!("another-site"))])),
        ("audience list without ours", with(&[("aud", json!(["another-site", "third"]))])),
        ("typ refresh", with(&[("typ", json!("refresh"))])),
        ("typ missing", without("typ")),
        ("exp missing", without("exp")),
        ("sid missing", without("sid")),
        ("sid of a signed-out session", with(&[("sid", json!(decode_segment(&segments(revoked.access.split_once('=').unwrap().1)[1])["sid"].clone()))])),
        ("sid of another user's live session", with(&[("sub", json!("someone-else"))])),
        ("made-up sid", with(&[("sid", json!("00000000-0000-0000-0000-000000000000"))])),
    ];
    for (label, claims) in real_signed {
        cases.push(case(label, Attempt::AccessToken(real_sign(&claims))));
    }

    cases
}

/// A real token where a token does not go (the URL, a header, another cookie), the refresh token in
/// its place, and oversized or countless cookies.
fn tokens_in_the_wrong_place(sam: &Session, real: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let refresh_value = sam.refresh.split_once('=').unwrap().1.to_owned();
    cases.push(case("refresh token as the access token", Attempt::AccessToken(refresh_value)));
    cases.push(case("access token as the refresh token", Attempt::Cookie(format!("tessera_refresh={real}"))));
    cases.push(case("access token in the URL", Attempt::Url(format!("access_token={real}&token={real}"))));
    cases.push(case("access token as a bearer header", Attempt::Header("authorization", format!("Bearer {real}"))));
    cases.push(case("access token under another cookie name", Attempt::Cookie(format!("__Host-tessera_access={real}; session={real}"))));
    cases.push(case("oversized access cookie", Attempt::AccessToken("a".repeat(6000))));
    cases.push(case("oversized cookie header", Attempt::Cookie(format!("junk={}", "x".repeat(60_000)))));
    cases.push(case("many cookies", Attempt::Cookie((0..500).map(|n| format!("c{n}=v")).collect::<Vec<_>>().join("; "))));
    cases
}

/// Sends `attempt` to a page and to an API only signed-in users may call; returns the statuses.
async fn try_attempt(app: &TestShell, attempt: &Attempt) -> (StatusCode, String, StatusCode) {
    let (page, api) = match attempt {
        Attempt::AccessToken(token) => {
            let cookie = format!("tessera_access={token}");
            (
                app.client.get(format!("{}/catalog", app.url)).header("cookie", &cookie),
                app.client.post(format!("{}/cart/api/whoami", app.url)).header("cookie", &cookie),
            )
        }
        Attempt::Cookie(cookie) => (
            app.client.get(format!("{}/catalog", app.url)).header("cookie", cookie),
            app.client.post(format!("{}/cart/api/whoami", app.url)).header("cookie", cookie),
        ),
        Attempt::Header(name, value) => {
            (app.client.get(format!("{}/catalog", app.url)).header(*name, value), app.client.post(format!("{}/cart/api/whoami", app.url)).header(*name, value))
        }
        Attempt::Url(query) => (app.client.get(format!("{}/catalog?{query}", app.url)), app.client.post(format!("{}/cart/api/whoami?{query}", app.url))),
    };
    let page = page.send().await.unwrap();
    let page_status = page.status();
    let html = page.text().await.unwrap();
    let api = api.header("content-type", "application/x-www-form-urlencoded").send().await.unwrap();
    (page_status, html, api.status())
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    every_hostile_token_and_cookie_is_refused_without_changing_anything
);
async fn every_hostile_token_and_cookie_is_refused_without_changing_anything(backend: Backend) {
    let app = spawn_with(backend, Options::default()).await;
    let sam = app.sign_in(SHOPPER, PASSWORD).await;
    let revoked = app.sign_in(ADMIN, PASSWORD).await;
    app.post_form("/logout", "", Some(&revoked.both())).await;
    let cases = tokio::task::block_in_place(|| token_cases(&app, &sam, &revoked));
    for case in &cases {
        let (page_status, html, api_status) = try_attempt(&app, &case.attempt).await;
        assert!(!page_status.is_server_error() && !api_status.is_server_error(), "{backend:?} {}: 5xx", case.name);
        assert!(page_status.is_success() || page_status.is_client_error(), "{}: {page_status}", case.name);
        if page_status.is_success() {
            assert!(html.contains("Browsing as a guest"), "{backend:?} {}: accepted on a page", case.name);
        }
        assert!(api_status.is_client_error(), "{backend:?} {}: server function answered {api_status}", case.name);
    }
    // Nothing changed: nothing was counted for Sam, and Sam's real session still works.
    assert_eq!(app.cart_count(Some(&sam.access)).await, 0);
    assert_eq!(app.catalog_user(&sam.access).await.as_deref(), Some("Sam Shopper"));
    eprintln!("attack suite ({backend:?}): {} hostile tokens and cookies refused", cases.len());
    assert!(cases.len() >= 56, "the suite shrank to {}", cases.len());
}

#[tokio::test]
async fn a_hostile_token_with_admin_claims_reaches_no_admin_endpoint() {
    let app = spawn_with(Backend::Sqlite, Options::default()).await;
    let sam = app.sign_in(SHOPPER, PASSWORD).await;
    let real = sam.access.split_once('=').unwrap().1.to_owned();
    let parts = segments(&real);
    let mut claims = decode_segment(&parts[1]);
    claims["roles"] = json!(["shopper", "inventory_admin", "admin"]);
    let swapped = format!("tessera_access={}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    for cookie in [swapped.as_str(), sam.access.as_str()] {
        let (status, _) = app.text("/admin/inventory/staff", Some(cookie)).await;
        assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN);
        let (status, _) = app.text("/admin/users", Some(cookie)).await;
        assert!(status == StatusCode::SEE_OTHER || status == StatusCode::FORBIDDEN, "{status}");
        for (path, body) in [("/admin/inventory/api/staff", ""), ("/admin/users/roles", "user_id=x&admin=on"), ("/admin/users/sign-out", "user_id=x")] {
            let response = app.post_form(path, body, Some(cookie)).await;
            assert!(response.status().is_client_error() || response.status() == StatusCode::SEE_OTHER, "{path}: {}", response.status());
            assert_ne!(response.status(), StatusCode::OK);
        }
    }
    // The real admin is let in: the refusals above were the token's, not the endpoints'.
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let (status, html) = app.text("/admin/inventory/staff", Some(&ada.both())).await;
    assert_eq!((status, html.contains("Staff page for Ada Admin")), (StatusCode::OK, true));
    let (status, _) = app.text("/admin/users", Some(&ada.both())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn session_fixation_a_planted_session_is_replaced_at_sign_in() {
    let app = spawn_with(Backend::Sqlite, Options::default()).await;
    // The attacker signs in to their own account and plants those cookies in the victim's browser.
    let attacker = app.register("mallory@example.com", "Mallory", "mallory-password").await;
    let planted_refresh = app.sign_in("mallory@example.com", "mallory-password").await;
    let planted = format!("{attacker}; {}", planted_refresh.refresh);
    let sid = |cookie: &str| decode_segment(&segments(cookie.split_once('=').unwrap().1)[1])["sid"].as_str().unwrap().to_owned();
    let response = app
        .client
        .post(format!("{}/login", app.url))
        .header("cookie", &planted)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email=shopper%40example.com&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let victim_access = support::set_cookie(&response, "tessera_access").unwrap();
    let victim_refresh = support::set_cookie(&response, "tessera_refresh").unwrap();
    assert_ne!(victim_refresh, planted_refresh.refresh, "a fresh refresh token");
    assert_ne!(sid(&victim_access), sid(&attacker), "a fresh session id");
    // The attacker's planted refresh token still belongs to Mallory and never becomes the victim's session.
    assert_eq!(app.catalog_user(&planted_refresh.refresh).await.as_deref(), Some("Mallory"));
    assert_eq!(app.catalog_user(&victim_access).await.as_deref(), Some("Sam Shopper"));
}

#[tokio::test]
async fn a_replayed_refresh_token_ends_the_session_for_thief_and_owner_alike() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.sessions.reuse_grace_seconds = 0), ..Options::default() }).await;
    let sam = app.sign_in(SHOPPER, PASSWORD).await;
    // A stolen refresh token replayed after its legitimate use ends the session for both.
    let rotated = app.get("/", Some(&sam.refresh)).await;
    let next = support::set_cookie(&rotated, "tessera_refresh").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let replay = app.get("/catalog", Some(&sam.refresh)).await;
    assert!(replay.text().await.unwrap().contains("Browsing as a guest"));
    assert_eq!(app.catalog_user(&next).await, None, "the thief's replay revoked the family");
}

#[tokio::test]
async fn oversized_requests_get_4xx_not_5xx() {
    let app = spawn_with(Backend::Sqlite, Options::default()).await;
    for (name, size) in [("x-huge", 200_000), ("cookie", 40_000), ("x-medium", 33_000)] {
        let value = format!("v={}", "h".repeat(size));
        let response = app.client.get(format!("{}/catalog", app.url)).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{name}");
        assert!(response.text().await.unwrap().contains("too large"));
    }
    let (status, _) = app.text("/", None).await;
    assert_eq!(status, StatusCode::OK, "the server is fine afterwards");
}
