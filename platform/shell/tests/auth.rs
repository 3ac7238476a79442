//! The shared login at the shell: JWKS, login, register, logout, account, bad input.

mod support;

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use support::{access_cookie, each_backend, spawn_shell, urlencode, Backend, ADMIN, PASSWORD, SHOPPER};

each_backend!(jwks_publishes_one_ed25519_public_key);
async fn jwks_publishes_one_ed25519_public_key(backend: Backend) {
    let app = spawn_shell(backend).await;
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let jwks: serde_json::Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    assert!(key.get("d").is_none(), "{backend:?}: the private key must not be published");
}

each_backend!(login_sets_an_http_only_lax_cookie_and_redirects_to_a_local_next);
async fn login_sets_an_http_only_lax_cookie_and_redirects_to_a_local_next(backend: Backend) {
    let app = spawn_shell(backend).await;
    let body = format!("email={}&password={PASSWORD}&next=%2Fcart", urlencode(SHOPPER));
    let response = app.post_form("/login", body, None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/cart");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http in tests: no Secure");

    // An absolute `next` is not followed.
    let body = format!("email={}&password={PASSWORD}&next=https%3A%2F%2Fevil.test%2F", urlencode(SHOPPER));
    let response = app.post_form("/login", body, None).await;
    assert_eq!(response.headers()[LOCATION], "/");
}

each_backend!(a_failed_login_says_the_same_thing_for_unknown_users_and_wrong_passwords);
async fn a_failed_login_says_the_same_thing_for_unknown_users_and_wrong_passwords(backend: Backend) {
    let app = spawn_shell(backend).await;
    let wrong_password = app.post_form("/login", format!("email={}&password=nope-nope", urlencode(SHOPPER)), None).await;
    let unknown_user = app.post_form("/login", "email=nobody%40example.com&password=nope-nope", None).await;
    for response in [wrong_password, unknown_user] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(access_cookie(&response).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("Email or password is incorrect."), "{backend:?}: {html}");
    }
}

each_backend!(malformed_login_and_registration_requests_get_clear_4xx_answers);
async fn malformed_login_and_registration_requests_get_clear_4xx_answers(backend: Backend) {
    let app = spawn_shell(backend).await;
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("/login", "".into(), StatusCode::BAD_REQUEST),
        ("/login", "email=a%40b.c".into(), StatusCode::BAD_REQUEST),
        ("/login", "password=x".into(), StatusCode::BAD_REQUEST),
        ("/login", format!("email=a%40b.c&password={}", "x".repeat(20_000)), StatusCode::PAYLOAD_TOO_LARGE),
        ("/register", "email=a%40b.c&name=A".into(), StatusCode::BAD_REQUEST),
        ("/register", format!("email=a%40b.c&name=A&password={}", "x".repeat(20_000)), StatusCode::PAYLOAD_TOO_LARGE),
        ("/register", "email=not-an-email&name=A&password=long-enough".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("/register", "email=new%40example.com&name=&password=long-enough".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("/register", "email=new%40example.com&name=New&password=short".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("/register", format!("email=new%40example.com&name=New&password={}", "p".repeat(129)), StatusCode::UNPROCESSABLE_ENTITY),
        ("/register", format!("email={}&name=Again&password=long-enough", urlencode(SHOPPER)), StatusCode::CONFLICT),
    ];
    for (path, body, expected) in cases {
        let response = app.post_form(path, body.clone(), None).await;
        assert_eq!(response.status(), expected, "{backend:?} {path} {}", &body[..body.len().min(60)]);
        assert!(access_cookie(&response).is_none(), "{path}: no session from bad input");
        let html = response.text().await.unwrap();
        assert!(html.contains("role=\"alert\""), "{path}: the page explains what is wrong: {html}");
    }
    // Wrong content type.
    let response = app.client.post(format!("{}/login", app.url)).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was created: the rejected address still cannot log in or be registered twice.
    let response = app.post_form("/login", "email=new%40example.com&password=long-enough", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // And the existing shopper still logs in with the original password.
    app.login_as(SHOPPER, PASSWORD).await;
}

each_backend!(registering_signs_in_as_a_shopper_and_the_account_page_shows_it);
async fn registering_signs_in_as_a_shopper_and_the_account_page_shows_it(backend: Backend) {
    let app = spawn_shell(backend).await;
    let cookie = app.register(" New.Person@Example.com ", "New Person", "a good password").await;
    let (status, html) = app.text("/account", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("new.person@example.com"), "email is normalised");
    assert!(html.contains("New Person"));
    assert!(html.contains("Shopper") && !html.contains("Inventory admin"));
    // The new account logs in with its password.
    app.login_as("new.person@example.com", "a good password").await;
}

each_backend!(the_account_page_needs_a_login_and_logout_clears_the_cookie);
async fn the_account_page_needs_a_login_and_logout_clears_the_cookie(backend: Backend) {
    let app = spawn_shell(backend).await;
    let response = app.get("/account", None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login?next=/account");

    let cookie = app.login_as(ADMIN, PASSWORD).await;
    let (_, html) = app.text("/account", Some(&cookie)).await;
    assert!(html.contains("Inventory admin") && html.contains("Catalog editor"));

    let response = app.post_form("/logout", "", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cleared = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("tessera_access=;") && cleared.contains("Max-Age=0"), "{cleared}");
    // Logging out is a POST: a GET only shows a confirmation form.
    let (status, html) = app.text("/logout", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("method=\"post\""));
}
