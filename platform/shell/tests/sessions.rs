//! Sessions at the shell: transparent refresh, rotation and replay, revocation (logout, password change,
//! admin), roles, throttling, cookie shapes, CSRF and key rotation, seen through probe fragments.

mod support;

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use support::probe::guest_cookie_of;
use support::{count, each_backend, set_cookie, spawn_fragment_alone_with, spawn_shell, spawn_with, Backend, Options, TestShell, ADMIN, PASSWORD, SHOPPER};
use tessera_shell::settings::ShellSettings;

/// A fragment's API only a signed-in user may call.
async fn whoami(app: &TestShell, cookie: &str) -> reqwest::Response {
    app.post_form("/cart/api/whoami", "", Some(cookie)).await
}

each_backend!(without_an_access_token_the_refresh_cookie_signs_in_transparently_pages_and_server_functions_alike);
async fn without_an_access_token_the_refresh_cookie_signs_in_transparently_pages_and_server_functions_alike(backend: Backend) {
    let app = spawn_shell(backend).await;
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
    let response = whoami(&app, &format!("tessera_access=expired.or.garbage; {new_refresh}")).await;
    assert_eq!(response.status(), StatusCode::OK, "{backend:?}");
    assert!(set_cookie(&response, "tessera_access").is_some());
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["name"], "Sam Shopper", "answered as the signed-in user");
}

#[tokio::test]
async fn a_refresh_on_a_response_that_sets_its_own_cookie_still_rotates_the_session_cookies() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.sessions.reuse_grace_seconds = 0), ..Options::default() }).await;
    // A guest does something a fragment remembers by a cookie of its own, then signs in.
    let counted = app.post_form("/cart/api/count", "", None).await;
    assert_eq!(counted.status(), StatusCode::OK);
    let guest_name = guest_cookie_of("cart");
    let guest = set_cookie(&counted, &guest_name).expect("the fragment's guest cookie");
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    // Later, the access token gone, the page asks the fragment, which clears its cookie while the shell
    // refreshes the session. The response carries both: the fragment's cookie and the rotated session
    // cookies.
    let response = app.post_form("/cart/api/forget", "", Some(&format!("{}; {guest}", session.refresh))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookies: Vec<&str> = response.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(cookies.iter().any(|cookie| cookie.starts_with(&format!("{guest_name}=;"))), "the fragment's cookie is cleared: {cookies:?}");
    let access = set_cookie(&response, "tessera_access").expect("the refreshed access cookie");
    let refresh = set_cookie(&response, "tessera_refresh").expect("the rotated refresh cookie");
    // Browsing on with what the browser now holds keeps the session (the used token is never sent again).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = app.get("/catalog", Some(&refresh)).await;
    assert!(set_cookie(&response, "tessera_refresh").is_some(), "rotated again, not revoked");
    assert_eq!(app.catalog_user(&access).await.as_deref(), Some("Sam Shopper"));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_after_the_grace_period_revokes_the_session() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.sessions.reuse_grace_seconds = 0), ..Options::default() }).await;
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
    let app = spawn_shell(Backend::Sqlite).await;
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

each_backend!(logout_ends_the_session_at_once_through_the_shell_and_within_the_token_lifetime_directly);
async fn logout_ends_the_session_at_once_through_the_shell_and_within_the_token_lifetime_directly(backend: Backend) {
    let app = spawn_shell(backend).await;
    // A fragment on a subdomain of the site, which the browser sends the site's cookie.
    let catalog = spawn_fragment_alone_with(&support::probe::CATALOG, &app, |settings| settings.login.cookie_domain = Some("shop.test".into())).await;
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(app.catalog_user(&session.access).await.as_deref(), Some("Sam Shopper"));
    let response = app.post_form("/logout", "", Some(&session.both())).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Through the shell: at once, for the access token and the refresh token.
    assert_eq!(app.catalog_user(&session.access).await, None, "{backend:?}");
    assert_eq!(app.catalog_user(&session.both()).await, None);
    let response = whoami(&app, &session.both()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A fragment reached directly cannot ask the shell's database: the access token works there until
    // it expires (access_ttl_seconds, 5 minutes by default). This is the documented trade-off.
    assert_eq!(catalog.user(&session.access).await.as_deref(), Some("Sam Shopper"));
}

/// A form of the shell's own account and admin pages, posted as a browser on them does (it says where it
/// comes from).
async fn account_form(app: &TestShell, cookie: &str, path: &str, body: String) -> reqwest::Response {
    let request = app.client.post(format!("{}{path}", app.url)).header("content-type", "application/x-www-form-urlencoded");
    request.header("cookie", cookie).header("sec-fetch-site", "same-origin").body(body).send().await.unwrap()
}

each_backend!(changing_the_password_signs_out_every_session_and_keeps_this_browser_signed_in);
async fn changing_the_password_signs_out_every_session_and_keeps_this_browser_signed_in(backend: Backend) {
    let app = spawn_shell(backend).await;
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

#[tokio::test]
async fn wrong_current_passwords_are_throttled_like_sign_ins_and_change_nothing() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.throttle.max_failures_per_account = 3), ..Options::default() }).await;
    let here = app.sign_in(SHOPPER, PASSWORD).await;
    for _ in 0..3 {
        let response = account_form(&app, &here.both(), "/account/password", "current_password=guess&new_password=a-new-password".into()).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let body = format!("current_password={PASSWORD}&new_password=a-new-password");
    let response = account_form(&app, &here.both(), "/account/password", body).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "even the right current password waits");
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.text().await.unwrap().contains("Too many wrong current passwords"));
    app.sign_in(SHOPPER, PASSWORD).await;
}

#[tokio::test]
async fn one_account_signing_in_again_and_again_is_throttled_even_with_the_right_password() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.throttle.max_sign_ins_per_account = 3), ..Options::default() }).await;
    for _ in 0..3 {
        app.sign_in(SHOPPER, PASSWORD).await;
    }
    let looped = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
    assert_eq!(looped.status(), StatusCode::TOO_MANY_REQUESTS, "each correct sign-in costs a password hash");
    assert!(looped.headers().contains_key("retry-after"));
    assert!(set_cookie(&looped, "tessera_access").is_none(), "and signs nobody in");
    // Another account is not held back by it.
    app.sign_in(ADMIN, PASSWORD).await;
}

#[tokio::test]
async fn registrations_are_bounded_per_address_and_a_refused_one_creates_nothing() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.throttle.max_registrations_per_address = 3), ..Options::default() }).await;
    app.register("one@example.com", "One", "password-one").await;
    // A taken email counts too: it is what would make the form an oracle for email lists.
    let taken = app.post_form("/register", "email=shopper%40example.com&name=Sam&password=whatever-long", None).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    app.register("two@example.com", "Two", "password-two").await;
    let refused = app.post_form("/register", "email=three%40example.com&name=Three&password=password-three", None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let shell = app.database().await;
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM users WHERE email = 'three@example.com'").await, 0);
    // A form that does not validate hashes nothing and counts nothing: it still gets its own answer.
    let invalid = app.post_form("/register", "email=nope&name=X&password=short", None).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_and_a_request_without_a_turn_is_asked_to_come_back() {
    fn one_hash_at_a_time(settings: &mut ShellSettings) {
        settings.throttle.password_hashes_at_once = 1;
        settings.throttle.max_registrations_per_address = 1000;
    }
    let app = std::sync::Arc::new(spawn_with(Backend::Sqlite, Options { configure: Some(one_hash_at_a_time), ..Options::default() }).await);
    let registrations = (0..200).map(|n| {
        let app = app.clone();
        async move {
            let body = format!("email=burst{n}%40example.com&name=Burst&password=burst-password-{n}");
            let response = app.post_form("/register", body, None).await;
            (response.status(), response.headers().get("retry-after").cloned())
        }
    });
    let answers = futures::future::join_all(registrations).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::SEE_OTHER).count();
    let busy: Vec<_> = answers.iter().filter(|(status, _)| *status == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert_eq!(created + busy.len(), answers.len(), "{answers:?}");
    assert!(!busy.is_empty(), "200 hashes one at a time (tens of ms each) cannot all get a turn within the 2 s wait");
    assert!(busy.iter().all(|(_, retry)| retry.is_some()), "a busy answer says when to come back");
    let shell = app.database().await;
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM users WHERE email LIKE 'burst%'").await, created as i64, "a busy answer created nothing");
    // Once the burst is over, sign-in works again.
    app.sign_in(SHOPPER, PASSWORD).await;
}

#[tokio::test]
async fn the_account_page_lists_sessions_and_signs_out_only_the_users_own() {
    let app = spawn_shell(Backend::Sqlite).await;
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

each_backend!(a_site_admin_manages_roles_and_signs_users_out_everywhere);
async fn a_site_admin_manages_roles_and_signs_users_out_everywhere(backend: Backend) {
    let app = spawn_shell(backend).await;
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
    let (status, _) = app.text("/admin/inventory/staff", Some(&sam.both())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Granted: Sam's next request through the shell carries the new role (his old token is refreshed).
    let response = account_form(&app, &ada.both(), "/admin/users/roles", grant).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = app.get("/admin/inventory/staff", Some(&sam.both())).await;
    assert_eq!(response.status(), StatusCode::OK, "{backend:?}: the new role applies");

    // Sign out everywhere.
    let response = account_form(&app, &ada.both(), "/admin/users/sign-out", format!("user_id={sam_id}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.catalog_user(&sam.both()).await, None);
    assert_eq!(app.catalog_user(&ada.both()).await.as_deref(), Some("Ada Admin"), "only Sam's sessions");
}

#[tokio::test]
async fn sign_in_is_throttled_per_account_with_one_answer_and_lets_the_real_user_in_after_the_window() {
    let app = spawn_with(
        Backend::Sqlite,
        Options {
            configure: Some(|s| {
                s.throttle.window_seconds = 2;
                s.throttle.max_failures_per_account = 3;
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
                s.throttle.max_failures_per_account = 100;
                s.throttle.max_failures_per_address = 4;
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

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_burst_of_parallel_wrong_passwords_reaches_the_password_check_at_most_the_limit_times
);
async fn a_burst_of_parallel_wrong_passwords_reaches_the_password_check_at_most_the_limit_times(backend: Backend) {
    let app = std::sync::Arc::new(spawn_with(backend, Options { configure: Some(|s| s.throttle.max_failures_per_account = 5), ..Options::default() }).await);
    let attempts = (0..200).map(|_| {
        let app = app.clone();
        async move { app.post_form("/login", "email=shopper%40example.com&password=guess", None).await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|status| **status == StatusCode::UNAUTHORIZED).count();
    let waited = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + waited, 200, "{backend:?}: {statuses:?}");
    // At most the limit's worth (possibly none: attempts that all arrive together all see each other).
    assert!(checked <= 5, "{backend:?}: {checked} attempts reached the password check");
    // Only the checked attempts stay as failures; the refused ones took theirs back, so the rest of the
    // limit is still there, one attempt at a time, and then no more.
    let shell = app.database().await;
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM login_failures WHERE throttle_key = 'account:shopper@example.com'").await, checked as i64, "{backend:?}");
    for _ in checked..5 {
        assert_eq!(app.post_form("/login", "email=shopper%40example.com&password=guess", None).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.post_form("/login", "email=shopper%40example.com&password=guess", None).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

fn neighbours_behind_a_proxy(settings: &mut ShellSettings) {
    settings.host.server.trusted_proxies = Some("127.0.0.0/8, ::1".into());
    settings.throttle.max_failures_per_account = 3;
    settings.throttle.max_failures_per_account_total = 5;
    settings.throttle.max_failures_per_address = 4;
}

#[tokio::test]
async fn guessing_and_spraying_do_not_lock_out_an_account_that_signed_in_from_its_address_before() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(neighbours_behind_a_proxy), ..Options::default() }).await;
    let office = "203.0.113.7";
    // Ada signed in from the office before; a new colleague registered but never signed in from there.
    assert_eq!(app.sign_in_from(office, ADMIN, PASSWORD).await, StatusCode::SEE_OTHER);
    app.register("newcomer@example.com", "New Comer", "newcomer-password").await;

    // Someone in the office guesses Sam's password, then sprays a password over other accounts.
    for _ in 0..3 {
        assert_eq!(app.sign_in_from(office, SHOPPER, "guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.sign_in_from(office, "nobody@example.com", "guess").await, StatusCode::UNAUTHORIZED);
    for n in 0..5 {
        let status = app.sign_in_from(office, &format!("user{n}@example.com"), "guess").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the office's address is over its limit");
    }
    // Sam's account from the office waits, even with the right password; so does anyone new there…
    assert_eq!(app.sign_in_from(office, SHOPPER, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.sign_in_from(office, "newcomer@example.com", "newcomer-password").await, StatusCode::TOO_MANY_REQUESTS);
    // …but Ada, who signs in from there, gets in with her password, and is still limited on her own.
    assert_eq!(app.sign_in_from(office, ADMIN, PASSWORD).await, StatusCode::SEE_OTHER);
    for _ in 0..3 {
        assert_eq!(app.sign_in_from(office, ADMIN, "guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.sign_in_from(office, ADMIN, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    // Sam elsewhere was never limited by the office.
    assert_eq!(app.sign_in_from("198.51.100.20", SHOPPER, PASSWORD).await, StatusCode::SEE_OTHER);

    // Strangers guess at Sam's account from many addresses: past the account-wide limit new places wait,
    // while Sam's usual one (where he just signed in) does not.
    for n in 0..6 {
        let status = app.sign_in_from(&format!("192.0.2.{n}"), SHOPPER, "guess").await;
        assert!(matches!(status, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS), "{status}");
    }
    assert_eq!(app.sign_in_from("192.0.2.200", SHOPPER, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.sign_in_from("198.51.100.20", SHOPPER, PASSWORD).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn same_origin_https_deploys_use_host_cookies_and_subdomain_deploys_use_a_domain_cookie() {
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(|s| s.host.login.public_url = "https://shop.example".into()), ..Options::default() }).await;
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
                s.host.login.public_url = "https://shop.example".into();
                s.host.login.cookie_domain = Some("shop.example".into());
            }),
            ..Options::default()
        },
    )
    .await;
    let response = app.post_form("/login", format!("email=shopper%40example.com&password={PASSWORD}"), None).await;
    let cookies: Vec<&str> = response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
    // The access cookie reaches every subdomain; the 30-day refresh cookie stays on the shell's host.
    let access = cookies.iter().find(|cookie| cookie.starts_with("__Secure-tessera_access=")).expect("an access cookie");
    assert!(access.contains("Domain=shop.example") && access.contains("Secure"), "{access}");
    let refresh = cookies.iter().find(|cookie| cookie.contains("tessera_refresh=")).expect("a refresh cookie");
    assert!(refresh.starts_with("__Host-tessera_refresh=") && !refresh.contains("Domain") && refresh.contains("Secure"), "{refresh}");
}

each_backend!(cross_site_posts_are_refused_everywhere_and_change_nothing);
async fn cross_site_posts_are_refused_everywhere_and_change_nothing(backend: Backend) {
    let app = spawn_shell(backend).await;
    let sam = app.sign_in(SHOPPER, PASSWORD).await;
    let posts: [(&str, &str); 7] = [
        ("/login", "email=shopper%40example.com&password=tessera-demo"),
        ("/register", "email=new%40example.com&name=New&password=long-enough"),
        ("/logout", ""),
        ("/account/password", "current_password=tessera-demo&new_password=hijacked-password"),
        ("/cart/api/count", ""),
        ("/admin/inventory/api/staff", ""),
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
    // Nothing changed: still signed in with the old password, nothing counted, no account was made.
    assert_eq!(app.catalog_user(&sam.both()).await.as_deref(), Some("Sam Shopper"));
    assert_eq!(app.cart_count(Some(&sam.access)).await, 0);
    app.sign_in(SHOPPER, PASSWORD).await;
    let response = app.post_form("/login", "email=new%40example.com&password=long-enough", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The same request from the site itself works.
    let response = app
        .client
        .post(format!("{}/cart/api/count", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", sam.both())
        .header("sec-fetch-site", "same-origin")
        .header("origin", app.settings.host.login.public_url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_key_is_published_first_and_old_tokens_keep_working() {
    let app = spawn_shell(Backend::Sqlite).await;
    let shell = app.database().await;
    let sealing = tessera_shell::keys::Sealing::of(&app.settings.host).unwrap();
    let before = app.sign_in(SHOPPER, PASSWORD).await;
    let jwks = |app: &TestShell| {
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
    let pending = tessera_shell::keys::rotate(&shell, &sealing, 3600).await.unwrap();
    let published = vec![old_kid.clone(), pending.kid.clone()];
    support::eventually("the new key published", || async { jwks(&app).await == published }).await;
    let during = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&during.access), old_kid, "the new key does not sign before its time");

    // An immediate rotation (emergency): the newest key whose time has come signs.
    let now_key = tessera_shell::keys::rotate(&shell, &sealing, 0).await.unwrap();
    support::eventually("the emergency key published", || async { jwks(&app).await.contains(&now_key.kid) }).await;
    let after = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&after.access), now_key.kid);
    assert!(jwks(&app).await.contains(&old_kid), "the old key stays until its tokens expire");
    assert_eq!(app.catalog_user(&before.access).await.as_deref(), Some("Sam Shopper"), "old tokens keep working");
    assert_eq!(app.catalog_user(&after.access).await.as_deref(), Some("Sam Shopper"));
}

#[tokio::test]
async fn pages_for_one_person_are_never_cached_and_shared_files_still_are() {
    let app = spawn_shell(Backend::Sqlite).await;
    let cache_control = |response: &reqwest::Response| response.headers().get("cache-control").map(|value| value.to_str().unwrap().to_owned());
    // Signed out: the catalog's page is the same for everyone (no private marking).
    let public = app.get("/catalog", None).await;
    assert_ne!(cache_control(&public).as_deref(), Some("private, no-store"));
    // Signed in: every page and answer is the user's.
    let cookie = app.login_as(SHOPPER, PASSWORD).await;
    for path in ["/", "/catalog", "/cart", "/account"] {
        let response = app.get(path, Some(&cookie)).await;
        assert_eq!(cache_control(&response).as_deref(), Some("private, no-store"), "{path}");
    }
    let answer = app.post_form("/catalog/api/whoami", "", Some(&cookie)).await;
    assert_eq!(cache_control(&answer).as_deref(), Some("private, no-store"));
    // Staff and account pages, whoever asks.
    let admin = app.get("/admin/users", None).await;
    assert_eq!(cache_control(&admin).as_deref(), Some("private, no-store"));
    // The stylesheet is everyone's: it keeps its year.
    let style = app.get("/style/tessera.css", Some(&cookie)).await;
    assert!(cache_control(&style).unwrap().contains("immutable"));
}

#[tokio::test]
async fn a_sign_in_with_something_that_is_not_an_email_is_refused_before_it_is_counted_or_hashed() {
    let app = spawn_shell(Backend::Sqlite).await;
    let db = app.database().await;
    for email in ["x".repeat(10_000), "not an email".to_owned(), String::new()] {
        let body = support::form(&[("email", &email), ("password", PASSWORD)]);
        let response = app.post_form("/login", body, None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{}", &email[..email.len().min(20)]);
        let html = response.text().await.unwrap();
        assert!(html.contains("email address") && html.len() < 20_000, "it says why, without echoing all of it");
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM login_failures").await, 0, "nothing became a throttle key");
    // A real address still signs in.
    app.login_as(SHOPPER, PASSWORD).await;
}

#[tokio::test]
async fn a_site_token_replayed_server_side_cannot_change_accounts_or_roles() {
    let app = spawn_shell(Backend::Sqlite).await;
    let db = app.database().await;
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let (sam_id,): (String,) = sqlx::query_as("SELECT id FROM users WHERE email = 'shopper@example.com'").fetch_one(&db).await.unwrap();
    // What a fragment that recorded the admin's cookies could send from its own server: no Origin, no
    // Fetch Metadata (a browser always sends one of them with a POST).
    let grant = format!("user_id={sam_id}&admin=on&inventory_admin=on");
    for (path, body) in [
        ("/admin/users/roles", grant.as_str()),
        ("/admin/users/sign-out", &format!("user_id={sam_id}")),
        ("/account/password", "current_password=tessera-demo&new_password=hijacked-password"),
    ] {
        let response = app.post_form(path, body.to_owned(), Some(&ada.both())).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(error["message"].as_str().unwrap().contains("does not say where it comes from"), "{error}");
    }
    let (roles,): (String,) = sqlx::query_as("SELECT roles FROM users WHERE id = $1").bind(&sam_id).fetch_one(&db).await.unwrap();
    assert_eq!(roles, "shopper", "nothing changed");
    app.login_as(ADMIN, PASSWORD).await;
    // The same form from the site's own page goes through.
    let response = account_form(&app, &ada.both(), "/admin/users/roles", grant).await;
    assert!(response.status().is_success() || response.status().is_redirection(), "{}", response.status());
}
