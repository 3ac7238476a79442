//! Sessions through the real server: transparent refresh, rotation and replay, revocation (logout,
//! password change, admin), roles, throttling, cookie shapes, CSRF and key rotation.

mod support;

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use support::{backends, set_cookie, spawn_app, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD, SHOPPER};
use tessera_server::Mode;

/// A server function only a signed-in user may call (guests may fill a cart, but have no orders).
async fn my_orders(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.post_form("/cart/api/my_orders", "", Some(cookie)).await
}

#[tokio::test]
async fn without_an_access_token_the_refresh_cookie_signs_in_transparently_pages_and_server_functions_alike() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let session = app.sign_in(SHOPPER, PASSWORD).await;
        // The browser dropped the expired access cookie; only the refresh cookie is left.
        let response = app.get("/catalog", Some(&session.refresh)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let new_access = set_cookie(&response, "tessera_access").expect("a new access cookie");
        let new_refresh = set_cookie(&response, "tessera_refresh").expect("the next refresh token");
        assert_ne!(new_refresh, session.refresh, "{backend:?}: rotated");
        assert!(response.text().await.unwrap().contains("Signed in as <strong>Sam Shopper</strong>"));
        assert_eq!(app.catalog_user(&new_access).await.as_deref(), Some("Sam Shopper"));

        // A server-function call from a hydrated page with an unusable access token.
        let response = my_orders(&app, &format!("tessera_access=expired.or.garbage; {new_refresh}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{backend:?}");
        assert!(set_cookie(&response, "tessera_access").is_some());
        assert_eq!(response.text().await.unwrap(), "[]", "answered as the signed-in user (no orders yet)");
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_after_the_grace_period_revokes_the_session() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.refresh_reuse_grace_seconds = 0), ..Options::default() }).await;
    let first = app.sign_in(SHOPPER, PASSWORD).await;
    let response = app.get("/", Some(&first.refresh)).await;
    let second = set_cookie(&response, "tessera_refresh").unwrap();
    let access = set_cookie(&response, "tessera_access").unwrap();
    assert_eq!(app.catalog_user(&access).await.as_deref(), Some("Sam Shopper"));

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The first token again: a replay. The whole session ends.
    let response = app.get("/catalog", Some(&first.refresh)).await;
    let cleared: Vec<&str> = response.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(cleared.iter().any(|c| c.starts_with("tessera_refresh=;")), "{cleared:?}");
    assert!(response.text().await.unwrap().contains("Browsing as a guest"));
    let response = app.get("/catalog", Some(&second)).await;
    assert!(set_cookie(&response, "tessera_access").is_none(), "the family is revoked");
    assert_eq!(app.catalog_user(&access).await, None, "its access tokens stop at the shell at once");
}

#[tokio::test]
async fn concurrent_requests_with_one_refresh_token_all_succeed_within_the_grace_period() {
    let app = spawn_app(Backend::Sqlite).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    let requests = (0..4).map(|_| app.get("/catalog", Some(&session.refresh)));
    let responses = futures::future::join_all(requests).await;
    let mut rotated = 0;
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(set_cookie(&response, "tessera_access").is_some(), "every racing request is signed in");
        rotated += usize::from(set_cookie(&response, "tessera_refresh").is_some());
        assert!(response.text().await.unwrap().contains("Sam Shopper"));
    }
    assert_eq!(rotated, 1, "exactly one request rotates the token");
}

#[tokio::test]
async fn logout_ends_the_session_at_once_through_the_shell_and_within_the_token_lifetime_directly() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let catalog = spawn_with(
            backend,
            Options { mode: Some(Mode::Fragment("catalog".into())), jwks_url: Some(format!("{}/.well-known/jwks.json", app.url)), ..Options::default() },
        )
        .await;
        let session = app.sign_in(SHOPPER, PASSWORD).await;
        assert_eq!(app.catalog_user(&session.access).await.as_deref(), Some("Sam Shopper"));
        let response = app.post_form("/logout", "", Some(&session.both())).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);

        // Through the shell: at once, for the access token and the refresh token.
        assert_eq!(app.catalog_user(&session.access).await, None, "{backend:?}");
        assert_eq!(app.catalog_user(&session.both()).await, None);
        let response = my_orders(&app, &session.both()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // A fragment reached directly cannot ask the shell's database: the access token works there until
        // it expires (access_ttl_seconds, 5 minutes by default). This is the documented trade-off.
        assert_eq!(catalog.catalog_user(&session.access).await.as_deref(), Some("Sam Shopper"));
    }
}

async fn account_form(app: &TestApp, cookie: &str, path: &str, body: String) -> reqwest::Response {
    app.post_form(path, body, Some(cookie)).await
}

#[tokio::test]
async fn changing_the_password_signs_out_every_session_and_keeps_this_browser_signed_in() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let here = app.sign_in(SHOPPER, PASSWORD).await;
        let elsewhere = app.sign_in(SHOPPER, PASSWORD).await;

        let bad = [
            ("current_password=wrong-one&new_password=a-new-password", StatusCode::UNPROCESSABLE_ENTITY),
            ("current_password=tessera-demo&new_password=short", StatusCode::UNPROCESSABLE_ENTITY),
            ("current_password=tessera-demo", StatusCode::BAD_REQUEST),
        ];
        for (body, expected) in bad {
            let response = account_form(&app, &here.both(), "/account/password", body.into()).await;
            assert_eq!(response.status(), expected, "{backend:?} {body}");
        }
        assert_eq!(app.catalog_user(&elsewhere.access).await.as_deref(), Some("Sam Shopper"), "nothing changed yet");

        let response = account_form(&app, &here.both(), "/account/password", "current_password=tessera-demo&new_password=a-new-password".into()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let renewed = set_cookie(&response, "tessera_access").unwrap();
        assert_eq!(app.catalog_user(&renewed).await.as_deref(), Some("Sam Shopper"), "this browser stays signed in");
        assert_eq!(app.catalog_user(&elsewhere.both()).await, None, "{backend:?}: the other session ended");
        assert_eq!(app.catalog_user(&here.both()).await, None, "the old session of this browser ended too");
        let old = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
        assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
        app.sign_in(SHOPPER, "a-new-password").await;
    }
}

#[tokio::test]
async fn the_account_page_lists_sessions_and_signs_out_only_the_users_own() {
    let app = spawn_app(Backend::Sqlite).await;
    let sam = app.sign_in(SHOPPER, PASSWORD).await;
    let sam_phone = app.sign_in(SHOPPER, PASSWORD).await;
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let (_, html) = app.text("/account", Some(&sam.both())).await;
    assert_eq!(html.matches("data-testid=\"session-row\"").count(), 2);
    assert!(html.contains("(this browser)"));

    let ids: Vec<String> = html.split("name=\"session_id\" value=\"").skip(1).map(|rest| rest[..rest.find('"').unwrap()].to_owned()).collect();
    for body in ["", "other=1"] {
        let response = account_form(&app, &sam.both(), "/account/sessions/revoke", body.into()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
    }
    // Ada cannot sign out Sam's sessions.
    for id in &ids {
        let response = account_form(&app, &ada.both(), "/account/sessions/revoke", format!("session_id={id}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(app.catalog_user(&sam_phone.access).await.as_deref(), Some("Sam Shopper"));
    // Sam signs out the other one from here.
    let (_, html) = app.text("/account", Some(&sam_phone.both())).await;
    let phone_id = html
        .split("<tr data-testid=\"session-row\">")
        .find(|row| row.contains("(this browser)"))
        .and_then(|row| row.split("name=\"session_id\" value=\"").nth(1))
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .unwrap();
    let response = account_form(&app, &sam.both(), "/account/sessions/revoke", format!("session_id={phone_id}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.catalog_user(&sam_phone.both()).await, None);
    assert_eq!(app.catalog_user(&sam.access).await.as_deref(), Some("Sam Shopper"));
}

#[tokio::test]
async fn a_site_admin_manages_roles_and_signs_users_out_everywhere() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let ada = app.sign_in(ADMIN, PASSWORD).await;
        let sam = app.sign_in(SHOPPER, PASSWORD).await;
        let (status, html) = app.text("/admin/users", Some(&sam.both())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!html.contains("admin@example.com"));
        let (status, html) = app.text("/admin/users", Some(&ada.both())).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("href=\"/admin/events\""), "site admins find the admin pages in the chrome");
        let (_, home) = app.text("/", Some(&sam.both())).await;
        assert!(!home.contains("href=\"/admin/users\""), "shoppers do not");
        let user_id = |email: &str| {
            let row = html.split(&format!("<tr data-email=\"{email}\">")).nth(1).unwrap();
            let rest = row.split("name=\"user_id\" value=\"").nth(1).unwrap();
            rest[..rest.find('"').unwrap()].to_owned()
        };
        let (sam_id, ada_id) = (user_id("shopper@example.com"), user_id("admin@example.com"));

        // A shopper cannot grant roles; bad forms change nothing.
        let grant = format!("user_id={sam_id}&shopper=on&inventory_admin=on");
        let response = account_form(&app, &sam.both(), "/admin/users/roles", grant.clone()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        for (body, expected) in [
            (format!("user_id={sam_id}&root=on"), StatusCode::UNPROCESSABLE_ENTITY),
            ("shopper=on".to_owned(), StatusCode::BAD_REQUEST),
            ("user_id=nobody&shopper=on".to_owned(), StatusCode::NOT_FOUND),
            (format!("user_id={ada_id}&shopper=on"), StatusCode::CONFLICT),
        ] {
            let response = account_form(&app, &ada.both(), "/admin/users/roles", body.clone()).await;
            assert_eq!(response.status(), expected, "{backend:?} {body}");
        }
        let (status, _) = app.text("/admin/inventory", Some(&sam.both())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Granted: Sam's next request through the shell carries the new role (his old token is refreshed).
        let response = account_form(&app, &ada.both(), "/admin/users/roles", grant).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let response = app.get("/admin/inventory", Some(&sam.both())).await;
        assert_eq!(response.status(), StatusCode::OK, "{backend:?}: the new role applies");

        // Sign out everywhere.
        let response = account_form(&app, &ada.both(), "/admin/users/sign-out", format!("user_id={sam_id}")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.catalog_user(&sam.both()).await, None);
        assert_eq!(app.catalog_user(&ada.both()).await.as_deref(), Some("Ada Admin"), "only Sam's sessions");
    }
}

#[tokio::test]
async fn sign_in_is_throttled_per_account_with_one_answer_and_lets_the_real_user_in_after_the_window() {
    let app = spawn_with(
        Backend::Sqlite,
        Options {
            configure: Some(|s| {
                s.login_throttle_window_seconds = 2;
                s.login_max_failures_per_account = 3;
            }),
            ..Options::default()
        },
    )
    .await;
    for email in ["shopper%40example.com", "nobody%40example.com"] {
        for _ in 0..3 {
            let response = app.post_form("/login", format!("email={email}&password=guess"), None).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let response = app.post_form("/login", format!("email={email}&password={PASSWORD}"), None).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{email}: even the right password waits");
        assert!(response.headers().contains_key("retry-after"));
        let html = response.text().await.unwrap();
        assert!(html.contains("Too many sign-in attempts"));
        assert!(!html.contains("Email or password is incorrect"), "one answer for known and unknown accounts");
    }
    // Another account from the same address is not locked by these.
    app.sign_in(ADMIN, PASSWORD).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.sign_in(SHOPPER, PASSWORD).await;
}

#[tokio::test]
async fn sign_in_is_throttled_per_client_address() {
    let app = spawn_with(
        Backend::Sqlite,
        Options {
            configure: Some(|s| {
                s.login_max_failures_per_account = 100;
                s.login_max_failures_per_address = 4;
            }),
            ..Options::default()
        },
    )
    .await;
    for n in 0..4 {
        let response = app.post_form("/login", format!("email=user{n}%40example.com&password=guess"), None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn same_origin_https_deploys_use_host_cookies_and_subdomain_deploys_use_a_domain_cookie() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.public_url = "https://shop.example".into()), ..Options::default() }).await;
    let response = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
    let cookies: Vec<String> = response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(cookies.len(), 2);
    for cookie in &cookies {
        assert!(cookie.starts_with("__Host-tessera_"), "{cookie}");
        assert!(cookie.contains("Secure") && cookie.contains("Path=/") && cookie.contains("HttpOnly"), "{cookie}");
        assert!(!cookie.contains("Domain"), "{cookie}");
    }
    let access = set_cookie(&response, "__Host-tessera_access").unwrap();
    assert_eq!(app.catalog_user(&access).await.as_deref(), Some("Sam Shopper"));
    // A cookie planted under the unprefixed name (e.g. by a sibling subdomain) is never read.
    let planted = access.replacen("__Host-tessera_access", "tessera_access", 1);
    assert_eq!(app.catalog_user(&planted).await, None);

    let app = spawn_with(
        Backend::Sqlite,
        Options {
            configure: Some(|s| {
                s.public_url = "https://shop.example".into();
                s.cookie_domain = Some("shop.example".into());
            }),
            ..Options::default()
        },
    )
    .await;
    let response = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
    for cookie in response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()) {
        assert!(cookie.starts_with("__Secure-tessera_") && cookie.contains("Domain=shop.example") && cookie.contains("Secure"), "{cookie}");
    }
}

#[tokio::test]
async fn cross_site_posts_are_refused_everywhere_and_change_nothing() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let sam = app.sign_in(SHOPPER, PASSWORD).await;
        let posts: [(&str, &str); 7] = [
            ("/login", "email=shopper%40example.com&password=tessera-demo"),
            ("/register", "email=new%40example.com&name=New&password=long-enough"),
            ("/logout", ""),
            ("/account/password", "current_password=tessera-demo&new_password=hijacked-password"),
            ("/cart/api/add_item", "sku=MUG-STN-01&quantity=5"),
            ("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=-4"),
            ("/admin/users/sign-out", "user_id=x"),
        ];
        let hostile: [(&str, &str); 4] =
            [("sec-fetch-site", "cross-site"), ("sec-fetch-site", "same-site"), ("origin", "https://evil.example"), ("origin", "null")];
        for (path, body) in posts {
            for (header, value) in hostile {
                let response = app
                    .client
                    .post(format!("{}{path}", app.url))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("cookie", sam.both())
                    .header(header, value)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{backend:?} {path} with {header}: {value}");
                assert!(response.headers().get(SET_COOKIE).is_none(), "{path}: no session change");
            }
        }
        // Nothing changed: still signed in with the old password, the cart is empty, no account was made.
        assert_eq!(app.catalog_user(&sam.both()).await.as_deref(), Some("Sam Shopper"));
        assert_eq!(app.cart_count(Some(&sam.access)).await, 0);
        app.sign_in(SHOPPER, PASSWORD).await;
        let response = app.post_form("/login", "email=new%40example.com&password=long-enough", None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // The same request from the site itself works.
        let response = app
            .client
            .post(format!("{}/cart/api/add_item", app.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", sam.both())
            .header("sec-fetch-site", "same-origin")
            .header("origin", app.settings.public_url.clone())
            .body("sku=MUG-STN-01&quantity=1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_rotated_key_is_published_first_and_old_tokens_keep_working() {
    let app = spawn_app(Backend::Sqlite).await;
    let shell = support::database(&app, "shell").await;
    let before = app.sign_in(SHOPPER, PASSWORD).await;
    let jwks = |app: &TestApp| {
        let url = format!("{}/.well-known/jwks.json", app.url);
        let client = app.client.clone();
        async move {
            let json: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
            json["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    let kid_of = |cookie: &str| {
        use base64::Engine;
        let token = cookie.split('=').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"].as_str().unwrap().to_owned()
    };
    let old_kid = kid_of(&before.access);
    assert_eq!(jwks(&app).await, vec![old_kid.clone()]);

    // Rotation with a publication delay: published within moments, not yet signing.
    let pending = tessera_shell::keys::rotate(&shell, 3600).await.unwrap();
    let published = vec![old_kid.clone(), pending.kid.clone()];
    support::eventually("the new key published", || async { jwks(&app).await == published }).await;
    let during = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&during.access), old_kid, "the new key does not sign before its time");

    // An immediate rotation (emergency): the newest key whose time has come signs.
    let now_key = tessera_shell::keys::rotate(&shell, 0).await.unwrap();
    support::eventually("the emergency key published", || async { jwks(&app).await.contains(&now_key.kid) }).await;
    let after = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&after.access), now_key.kid);
    assert!(jwks(&app).await.contains(&old_kid), "the old key stays until its tokens expire");
    assert_eq!(app.catalog_user(&before.access).await.as_deref(), Some("Sam Shopper"), "old tokens keep working");
    assert_eq!(app.catalog_user(&after.access).await.as_deref(), Some("Sam Shopper"));
}
