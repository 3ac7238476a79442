//! Composition and failure isolation at the shell: fragments (probes) in this process or in others,
//! down, slow or failing; widgets on the home page; security headers and nonces; compression that keeps
//! streaming; `Server-Timing`.

mod support;

use std::collections::BTreeMap;
use tessera_contracts::domain::ServiceName;

use axum::Router;
use reqwest::StatusCode;
use support::{
    closed_port, each_backend, spawn_fragment_alone, spawn_fragment_alone_with, spawn_shell, spawn_stub, spawn_with, Backend, Options, ADMIN, PASSWORD, SHOPPER,
};
use tessera_host::settings::FragmentSettings;

fn catalog_upstream(url: String, timeout_ms: Option<u64>) -> BTreeMap<ServiceName, FragmentSettings> {
    BTreeMap::from([(ServiceName::parse("catalog").unwrap(), FragmentSettings { upstream: Some(url), timeout_ms, ..FragmentSettings::default() })])
}

async fn assert_catalog_falls_back_while_the_rest_works(app: &support::TestShell) {
    let cookie = app.login_as(SHOPPER, PASSWORD).await;
    let (status, html) = app.text("/catalog", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(html.contains("data-testid=\"fragment-fallback\"") && html.contains("not available"), "{html}");
    assert!(html.contains("Sam Shopper"), "the fallback page keeps the chrome and the login");
    // API calls through the shell get a JSON 503, not a hang or an HTML page.
    let response = app.post_form("/catalog/api/whoami", "", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["kind"], "unavailable");
    // Every other fragment and the shell's own pages are unaffected.
    let (status, html) = app.text("/cart", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Signed in as <strong>Sam Shopper</strong>"));
    let (status, html) = app.text("/", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "the home page renders fully");
    assert!(html.contains("data-widget=\"catalog\"") && html.contains("The catalog is not available right now"));
    assert!(html.contains("data-widget=\"cart\""));
    app.login_as(ADMIN, PASSWORD).await;
}

#[tokio::test]
async fn an_address_with_a_dot_segment_never_reaches_a_fragment() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorded = seen.clone();
    // Only what the shell forwards (it names the original host); its own health checks do not count.
    let stub = spawn_stub(Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        if headers.contains_key("x-forwarded-host") {
            recorded.lock().unwrap().push(uri.to_string());
        }
        async { "the upstream answered" }
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{stub}"), None), ..Options::default() }).await;
    // Written on the wire as an attacker would (a browser resolves these before sending).
    for target in [
        "/catalog/../metrics",
        "/catalog/%2e%2e/metrics",
        "/catalog/%2E%2e/.well-known/tessera-fragments",
        "/catalog/.%2e/readyz",
        "/catalog/..%2fmetrics",
        "/catalog/..%5cmetrics",
        "/catalog/./api/x",
        "/catalog/api/%2e%2e/%2e%2e/cart/api/summary",
    ] {
        let (status, body) = app.raw_get(target).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}: {body}");
        assert!(body.contains("segment"), "{target}: the answer says why: {body}");
    }
    assert!(seen.lock().unwrap().is_empty(), "the upstream saw {:?}", seen.lock().unwrap());
    // An ordinary address under the prefix still goes through, as it was written.
    let (status, body) = app.raw_get("/catalog/api/x?q=%2e").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(*seen.lock().unwrap(), ["/catalog/api/x?q=%2e"]);
}

#[tokio::test]
async fn a_client_cannot_tell_a_fragment_where_the_request_came_from() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<axum::http::HeaderMap>::new()));
    let recorded = seen.clone();
    let stub = spawn_stub(Router::new().fallback(move |headers: axum::http::HeaderMap| {
        if headers.contains_key("x-forwarded-host") {
            recorded.lock().unwrap().push(headers);
        }
        async { "ok" }
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{stub}"), None), ..Options::default() }).await;
    let response = app
        .client
        .get(format!("{}/catalog/api/x", app.url))
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    let headers = seen.first().expect("the request was forwarded");
    for name in ["forwarded", "x-real-ip", "x-forwarded-proto"] {
        assert!(!headers.contains_key(name), "{name} reached the fragment: {headers:?}");
    }
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "the shell says who the client is, not the client");
}

#[tokio::test]
async fn a_fragment_cannot_set_the_shells_cookies_nor_another_fragments() {
    let stub = spawn_stub(Router::new().fallback(|| async {
        let mut headers = axum::http::HeaderMap::new();
        for cookie in [
            "tessera_access=chosen-by-the-fragment; Path=/",
            "__Host-tessera_refresh=chosen; Path=/; Secure",
            "TESSERA_ACCESS=x; Path=/",
            "tessera_catalog_view=grid; Path=/catalog",
            "tessera_cart=stolen-guest-cart; Path=/",
        ] {
            headers.append("set-cookie", cookie.parse().unwrap());
        }
        (headers, "ok")
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{stub}"), None), ..Options::default() }).await;
    let cookie = app.login_as(SHOPPER, PASSWORD).await;
    for path in ["/catalog/api/x", "/catalog"] {
        let response = app.get(path, Some(&cookie)).await;
        let set: Vec<String> = response.headers().get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
        assert!(!set.iter().any(|cookie| cookie.contains("chosen") || cookie.starts_with("TESSERA_ACCESS")), "{path}: {set:?}");
        assert!(!set.iter().any(|cookie| cookie.contains("stolen")), "{path}: nor another fragment's cookie: {set:?}");
        assert!(set.iter().any(|cookie| cookie.starts_with("tessera_catalog_view=grid")), "{path}: the fragment's own cookie goes through: {set:?}");
    }
}

/// The claims of a JWT, unverified (what a fragment that records its requests reads).
fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_fragment_gets_a_token_of_its_own_for_each_request_and_it_opens_nothing_else() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let recorded = seen.clone();
    let stub = spawn_stub(Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        // What the shell forwards (its health checks and description reads are not the visitor's).
        if uri.path().starts_with("/catalog") {
            let cookie = headers.get("cookie").map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
            recorded.lock().unwrap().push((uri.path().to_owned(), cookie));
        }
        async { axum::response::Html("<html><head></head><body><main>recorded</main></body></html>") }
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{stub}"), None), ..Options::default() }).await;
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    // The browser also holds the cart's guest cookie and a cookie of the catalog's own.
    let browser = format!("{}; tessera_cart=guest-cart-key; tessera_catalog_view=grid", ada.both());
    for path in ["/catalog", "/catalog/api/x", "/"] {
        assert!(app.get(path, Some(&browser)).await.status().is_success(), "{path}");
    }
    let recorded = seen.clone();
    let seen = recorded.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(path, _)| path.as_str()).collect();
    assert!(paths.contains(&"/catalog") && paths.contains(&"/catalog/api/x") && paths.contains(&"/catalog/widget"), "{paths:?}");
    let mut tokens = Vec::new();
    for (path, cookie) in &seen {
        let pairs: Vec<&str> = cookie.split("; ").collect();
        assert!(pairs.contains(&"tessera_catalog_view=grid"), "{path}: its own cookie: {cookie}");
        assert!(!cookie.contains("tessera_refresh") && !cookie.contains("guest-cart-key"), "{path}: nothing of the shell's or the cart's: {cookie}");
        let token = pairs.iter().find_map(|pair| pair.strip_prefix("tessera_access=")).expect("a token for the catalog");
        assert!(!ada.access.contains(token), "{path}: never the site's token");
        let claims = claims_of(token);
        assert_eq!(claims["aud"], "tessera:catalog", "{path}");
        assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 60, "{path}: a minute at most: {claims}");
        assert!(claims["roles"].as_array().unwrap().iter().any(|role| role == "admin"), "{path}: the same user and roles");
        tokens.push(token.to_owned());
    }
    // What the catalog recorded, replayed anywhere else, is a guest's.
    let stolen = format!("tessera_access={}", tokens[0]);
    let account = app.get("/account", Some(&stolen)).await;
    assert_eq!(account.headers().get("location").map(|to| to.to_str().unwrap()), Some("/login?next=/account"), "the shell's own pages do not take it");
    assert_eq!(support::signed_in_as(&app, "/cart", &stolen).await, None, "nor does another fragment");
    let grant = app.post_form_from_site("/admin/users/roles", "user_id=anyone&admin=on", &stolen, &app.settings.host.login.public_url).await;
    assert!(
        grant.status().is_client_error() || grant.headers().get("location").is_some_and(|to| to.to_str().unwrap().starts_with("/login")),
        "{}",
        grant.status()
    );
    // A guest's requests carry no token at all.
    let before = seen.len();
    app.get("/catalog", Some("tessera_catalog_view=list")).await;
    let after = recorded.lock().unwrap().clone();
    assert_eq!(after[before..].iter().map(|(_, cookie)| cookie.as_str()).collect::<Vec<_>>(), ["tessera_catalog_view=list"]);
}

#[tokio::test]
async fn a_stopped_fragment_gets_the_fallback_page() {
    let addr = closed_port().await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{addr}"), None), ..Options::default() }).await;
    assert_catalog_falls_back_while_the_rest_works(&app).await;
}

#[tokio::test]
async fn a_slow_fragment_times_out_into_the_fallback_page() {
    let slow = spawn_stub(Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        "too late"
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{slow}"), Some(300)), ..Options::default() }).await;
    assert_catalog_falls_back_while_the_rest_works(&app).await;
}

#[tokio::test]
async fn a_fragment_answering_5xx_gets_the_fallback_page() {
    let failing = spawn_stub(
        Router::new()
            .fallback(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(serde_json::json!({"kind": "unavailable", "message": "x"}))) }),
    )
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{failing}"), None), ..Options::default() }).await;
    let cookie = app.login_as(SHOPPER, PASSWORD).await;
    let (status, html) = app.text("/catalog", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(html.contains("data-testid=\"fragment-fallback\"") && html.contains("Sam Shopper"));
    let (status, _) = app.text("/cart", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
}

each_backend!(a_fragment_in_its_own_process_verifies_the_login_with_the_shells_jwks);
async fn a_fragment_in_its_own_process_verifies_the_login_with_the_shells_jwks(backend: Backend) {
    // The shell first (its JWKS is what the catalog verifies with), then the catalog alone, then a
    // second shell that reaches that catalog over HTTP.
    let site = spawn_shell(backend).await;
    let cookie = site.login_as(ADMIN, PASSWORD).await;
    // Behind the shell only, a fragment takes the tokens the shell mints for it, never the site's own.
    let behind = spawn_fragment_alone(&support::probe::CATALOG, &site).await;
    assert_eq!(behind.user(&cookie).await, None, "{backend:?}: the site's token is the shell's");
    // On a subdomain of the site (`TESSERA_COOKIE_DOMAIN`) the browser hands every sibling host the site's
    // cookie, so there the fragment's own page, without chrome, knows the user by it.
    let catalog = spawn_fragment_alone_with(&support::probe::CATALOG, &site, |settings| settings.login.cookie_domain = Some("shop.test".into())).await;
    let (status, html) = catalog.text("/catalog", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}");
    assert!(html.contains("Signed in as <strong>Ada Admin</strong>"));
    assert!(html.contains("<header id=\"tessera-chrome\"></header>"), "served alone, the slot stays empty");
    // A token signed by another key is refused by the standalone fragment too.
    let other_site = spawn_shell(backend).await;
    let foreign = other_site.login_as(ADMIN, PASSWORD).await;
    let (_, html) = catalog.text("/catalog", Some(&foreign)).await;
    assert!(html.contains("Browsing as a guest"), "{backend:?}: a key the shell never published");

    // Composed through the shell over HTTP.
    let mut fragments = BTreeMap::new();
    fragments.insert(ServiceName::parse("catalog").unwrap(), FragmentSettings { upstream: Some(catalog.url.clone()), ..FragmentSettings::default() });
    let shell = spawn_with(backend, Options { fragments, ..Options::default() }).await;
    // This second shell signs with its own key (the browser tests cover a signed-in user composed over
    // HTTP); here: the page arrives through the shell with the chrome in its slot.
    let (status, html) = shell.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("data-testid=\"login-link\"").count(), 1, "chrome composed over HTTP");
    assert!(html.contains("Browsing as a guest"));
}

each_backend!(the_home_page_gathers_one_widget_per_fragment_for_the_user);
async fn the_home_page_gathers_one_widget_per_fragment_for_the_user(backend: Backend) {
    let app = spawn_shell(backend).await;
    let (status, html) = app.text("/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-widget=\"catalog\"") && html.contains("data-widget=\"cart\""), "a widget from each fragment: {html}");
    assert_eq!(html.matches("Browsing as a guest").count(), 2, "each widget rendered for the visitor");
    assert!(!html.contains("data-widget=\"inventory\""), "a widget its fragment refuses (401, 403) is left out");

    let ada = app.login_as(ADMIN, PASSWORD).await;
    let (_, html) = app.text("/", Some(&ada)).await;
    assert!(html.contains("data-widget=\"inventory\""), "{backend:?}: the inventory's widget for its staff");
    assert_eq!(html.matches("Signed in as <strong>Ada Admin</strong>").count(), 3, "each widget rendered for the user");
}

#[tokio::test]
async fn unknown_paths_get_the_shells_404_page_with_chrome() {
    let app = spawn_shell(Backend::Sqlite).await;
    for path in ["/nope", "/catalogue", "/catalog/nope", "/cart/nope/deeper"] {
        let (status, html) = app.text(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(html.contains("id=\"tessera-chrome\"><div class=\"chrome\""), "{path}: {html}");
    }
}

/// The `nonce` of every executable inline `<script>` in `html` (a data block such as JSON-LD needs none).
fn inline_script_nonces(html: &str) -> Vec<Option<String>> {
    html.match_indices("<script")
        .map(|(at, _)| &html[at..at + html[at..].find('>').unwrap()])
        .filter(|tag| !tag.contains(" src=") && !tag.contains("application/ld+json"))
        .map(|tag| tag.split("nonce=\"").nth(1).map(|rest| rest[..rest.find('"').unwrap()].to_owned()))
        .collect()
}

fn nonce_of(policy: &str) -> String {
    let start = policy.find("'nonce-").expect("a nonce in the policy") + "'nonce-".len();
    policy[start..start + policy[start..].find('\'').unwrap()].to_owned()
}

#[tokio::test]
async fn every_response_has_the_security_headers_and_inline_scripts_carry_the_responses_nonce() {
    let app = spawn_shell(Backend::Sqlite).await;
    let mut seen = std::collections::HashSet::new();
    for path in ["/catalog", "/cart", "/catalog"] {
        // A nonce a client sends is never the one used.
        let response = app.client.get(format!("{}{path}", app.url)).header("x-tessera-csp-nonce", "chosen-by-the-client-0123").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("script-src 'self' 'nonce-") && policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(!response.headers().contains_key("strict-transport-security"), "not over plain http");
        assert!(!response.headers().contains_key("x-tessera-csp-nonce"));
        let nonce = nonce_of(&policy);
        assert!(seen.insert(nonce.clone()), "a fresh nonce for every response");
        let html = response.text().await.unwrap();
        let scripts = inline_script_nonces(&html);
        assert!(!scripts.is_empty(), "{path}: the page streams inline scripts");
        assert!(scripts.iter().all(|script| script.as_deref() == Some(nonce.as_str())), "{path}: {scripts:?}");
        assert!(!html.contains("chosen-by-the-client"));
    }
    // The shell's own pages, its JSON, a 404 and a refused cross-site POST have them too.
    for response in [
        app.get("/login", None).await,
        app.get("/.well-known/jwks.json", None).await,
        app.get("/no-such-page", None).await,
        app.client.post(format!("{}/login", app.url)).header("origin", "https://evil.example").send().await.unwrap(),
    ] {
        assert!(response.headers().contains_key("content-security-policy"), "{}", response.url());
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(inline_script_nonces(&response.text().await.unwrap()).is_empty(), "the shell's pages have no inline script");
    }
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.host.login.public_url = "https://shop.example".into()), ..Options::default() }).await;
    assert_eq!(app.get("/login", None).await.headers()["strict-transport-security"], "max-age=31536000");
}

#[tokio::test]
async fn a_fragment_cannot_weaken_the_security_headers() {
    let lax = spawn_stub(Router::new().fallback(|| async {
        (
            [
                ("content-type", "text/html; charset=utf-8"),
                ("content-security-policy", "script-src * 'unsafe-inline' 'unsafe-eval'"),
                ("x-frame-options", "ALLOWALL"),
                ("x-content-type-options", "sniff-away"),
                ("referrer-policy", "unsafe-url"),
            ],
            "<!DOCTYPE html><html><head></head><body><header id=\"tessera-chrome\"></header><main>lax</main><script>alert(1)</script></body></html>",
        )
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{lax}"), None), ..Options::default() }).await;
    let response = app.get("/catalog", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let policies: Vec<&str> = headers.get_all("content-security-policy").iter().map(|value| value.to_str().unwrap()).collect();
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert!(policies[0].starts_with("default-src 'self'; script-src 'self' 'nonce-") && !policies[0].contains("unsafe-inline"), "{policies:?}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin");
    // Its script without the nonce is served, but no browser will run it.
    assert_eq!(inline_script_nonces(&response.text().await.unwrap()), vec![None]);
}

/// Reads a compressed stream into `received` until `marker` decodes or `wait` passes; returns what the
/// bytes received so far decode to.
async fn decode_until(response: &mut reqwest::Response, received: &mut Vec<u8>, encoding: &str, marker: &str, wait: std::time::Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(chunk) => chunk.unwrap(),
            Err(_) => break,
        };
        let Some(chunk) = chunk else { break };
        received.extend_from_slice(&chunk);
        let text = decompress_prefix(encoding, received);
        if text.contains(marker) {
            return text;
        }
    }
    decompress_prefix(encoding, received)
}

/// What a compressed prefix of a stream decodes to, ignoring that the stream has not ended.
fn decompress_prefix(encoding: &str, bytes: &[u8]) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut reader: Box<dyn Read> = match encoding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        _ => Box::new(brotli::Decompressor::new(bytes, 4096)),
    };
    // A prefix ends in an unexpected EOF; everything before it was already produced.
    while let Ok(read) = reader.read(&mut buffer) {
        if read == 0 {
            break;
        }
        out.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn composed_pages_are_compressed_without_losing_their_streaming_and_so_is_json() {
    use futures::StreamExt;
    // A catalog whose page sends its head and first part, then waits until the test lets it finish (only
    // the page: the shell's health checks must not take the gate's permits).
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let upstream_gate = gate.clone();
    let stub = spawn_stub(Router::new().route(
        "/catalog",
        axum::routing::get(move || {
            let gate = upstream_gate.clone();
            async move {
                let first = format!(
                    "<!DOCTYPE html><html><head><title>Catalog</title></head><body><header id=\"{}\"></header><main><p>first part {}</p>",
                    tessera_contracts::CHROME_SLOT_ID,
                    "of the page ".repeat(200)
                );
                let rest = async move {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(b"<p>the rest arrived</p></main></body></html>"))
                };
                let body =
                    futures::stream::once(async move { Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(first)) }).chain(futures::stream::once(rest));
                ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], axum::body::Body::from_stream(body))
            }
        }),
    ))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{stub}"), Some(10_000)), ..Options::default() }).await;

    for encoding in ["br", "gzip"] {
        let mut response = app.client.get(format!("{}/catalog", app.url)).header("accept-encoding", encoding).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-encoding"], encoding);
        let vary = response.headers().get_all("vary").iter().map(|value| value.to_str().unwrap().to_ascii_lowercase()).collect::<Vec<_>>();
        assert!(vary.iter().any(|value| value.contains("accept-encoding")), "{vary:?}");
        // The first part, composed with the chrome, decodes while the fragment still holds the rest.
        let mut received = Vec::new();
        let early = decode_until(&mut response, &mut received, encoding, "first part", std::time::Duration::from_secs(5)).await;
        assert!(early.contains("first part") && early.contains("tessera.css"), "{encoding}: nothing decodable before the fragment finished: {early:?}");
        assert!(!early.contains("the rest arrived"));
        gate.add_permits(1);
        let all = decode_until(&mut response, &mut received, encoding, "</html>", std::time::Duration::from_secs(5)).await;
        assert!(all.contains("first part") && all.contains("the rest arrived") && all.ends_with("</html>"), "{encoding}: {all:?}");
    }

    // Asked for nothing, the page comes plain.
    gate.add_permits(1);
    let response = app.client.get(format!("{}/catalog", app.url)).send().await.unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert!(response.text().await.unwrap().contains("the rest arrived"));

    // JSON through the shell is compressed too (a fragment's API answer, in this process).
    let cookie = app.login_as(ADMIN, PASSWORD).await;
    let response = app
        .client
        .post(format!("{}/admin/inventory/api/big", app.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "br");
    let body = response.bytes().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&decompress_prefix("br", &body)).unwrap();
    assert!(json.as_array().is_some_and(|rows| rows.len() == 100), "{json}");
}

/// The entries of a `Server-Timing` header: name → duration in ms.
fn server_timing(response: &reqwest::Response) -> BTreeMap<String, f64> {
    let values: Vec<&str> = response.headers().get_all("server-timing").iter().map(|value| value.to_str().unwrap()).collect();
    assert_eq!(values.len(), 1, "one Server-Timing header: {values:?}");
    values[0]
        .split(", ")
        .map(|entry| {
            let mut parts = entry.split(';');
            let name = parts.next().unwrap().to_owned();
            let dur = parts.find_map(|part| part.strip_prefix("dur=")).unwrap_or_else(|| panic!("no duration in {entry:?}"));
            (name, dur.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn pages_and_api_answers_say_where_their_time_went_and_only_to_their_own_origin() {
    let app = spawn_shell(Backend::Sqlite).await;
    let cookie = app.login_as(SHOPPER, PASSWORD).await;
    for path in ["/catalog", "/catalog/staff", "/cart", "/admin/inventory"] {
        let response = app.get(path, Some(&cookie)).await;
        let fragment = path.trim_start_matches('/').split('/').next().unwrap().replace("admin", "inventory");
        let status = response.status();
        let timings = server_timing(&response);
        for phase in ["session", "upstream", "badge", "compose", "total"] {
            assert!(timings.contains_key(phase), "{path} ({status}): no {phase} in {timings:?}");
        }
        for phase in ["data", "render"] {
            assert!(timings.contains_key(&format!("{fragment}-{phase}")), "{path}: no {fragment}-{phase} in {timings:?}");
        }
        // The shell's total holds the fragment's time: the upstream wait is part of it.
        assert!(timings["total"] >= timings["upstream"] && timings["upstream"] > 0.0, "{path}: {timings:?}");
        assert!(response.headers().get("timing-allow-origin").is_none(), "{path}: readable from other origins");
    }
    // A page that waits for its data says so (the probe's page waits a little, as a query would).
    let listing = server_timing(&app.get("/catalog", Some(&cookie)).await);
    assert!(listing["catalog-data"] > 0.0, "{listing:?}");
    // API answers are timed the same way, and the shell's own pages carry the shell's phases.
    let api = server_timing(&app.post_form("/catalog/api/whoami", "", Some(&cookie)).await);
    assert!(api.contains_key("upstream") && api["catalog-data"] > 0.0, "{api:?}");
    let home = server_timing(&app.get("/", Some(&cookie)).await);
    assert!(home.contains_key("session") && home.contains_key("total") && !home.keys().any(|name| name.contains('-')), "{home:?}");
}

#[tokio::test]
async fn a_fragment_cannot_forge_or_open_up_the_timings() {
    let forging = spawn_stub(Router::new().fallback(|| async {
        (
            [
                ("content-type", "text/html; charset=utf-8"),
                ("server-timing", "db;dur=4.5, total;dur=0;desc=\"</script>\", evil name;dur=1, broken;dur=NaN"),
                ("timing-allow-origin", "*"),
            ],
            "<!DOCTYPE html><html><head></head><body><header id=\"tessera-chrome\"></header><main>stub</main></body></html>",
        )
    }))
    .await;
    let app = spawn_with(Backend::Sqlite, Options { fragments: catalog_upstream(format!("http://{forging}"), None), ..Options::default() }).await;
    let response = app.get("/catalog", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("timing-allow-origin").is_none());
    let timings = server_timing(&response);
    assert_eq!(timings.get("catalog-db"), Some(&4.5), "{timings:?}");
    // Its "total" is its own, under its name; the shell's total is the shell's.
    assert_eq!(timings.get("catalog-total"), Some(&0.0), "{timings:?}");
    assert!(timings["total"] > 0.0, "{timings:?}");
    assert!(!timings.keys().any(|name| name.contains("evil") || name.contains("broken")), "{timings:?}");
    let raw = response.headers()["server-timing"].to_str().unwrap().to_owned();
    assert!(!raw.contains("</script>"), "{raw}");
}
