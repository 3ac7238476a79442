//! The shell as several replicas and behind a proxy: one key ring shared through the database (and one an
//! earlier release kept in files, imported), rotation reaching every replica, the client's address from
//! trusted proxies only, and what the shell keeps of ended sessions.

mod support;

use reqwest::StatusCode;
use support::{count, each_backend, eventually, set_cookie, spawn_shell, spawn_with, Backend, Options, TestShell, PASSWORD, SHOPPER};
use tessera_shell::settings::ShellSettings;

const DAY: i64 = 24 * 3600;

fn strict_address_limit(settings: &mut ShellSettings) {
    settings.throttle.max_failures_per_address = 3;
    settings.throttle.max_failures_per_account = 100;
}

fn behind_local_proxy(settings: &mut ShellSettings) {
    strict_address_limit(settings);
    settings.host.server.trusted_proxies = Some("127.0.0.0/8, ::1".into());
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_address_and_none_can_choose_it() {
    let backend = Backend::Sqlite;
    // Behind the proxy: one client's failures throttle that client, not the next one.
    let app = spawn_with(backend, Options { configure: Some(behind_local_proxy), ..Options::default() }).await;
    for n in 0..3 {
        assert_eq!(app.sign_in_from("203.0.113.9", &format!("nobody{n}@example.com"), "wrong-password").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.sign_in_from("203.0.113.9", SHOPPER, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.sign_in_from("198.51.100.2", SHOPPER, PASSWORD).await, StatusCode::SEE_OTHER);
    // The leftmost entry (6.6.6.6) is what the client wrote: never its address.
    let shell = app.database().await;
    let recorded = count(&shell, "SELECT COUNT(*) FROM login_failures WHERE throttle_key = 'address:203.0.113.9'").await;
    assert_eq!(recorded, 3);
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM login_failures WHERE throttle_key = 'address:6.6.6.6'").await, 0);

    // Without trusted proxies the header is ignored: a client cannot dodge the limit by inventing one.
    let app = spawn_with(backend, Options { configure: Some(strict_address_limit), ..Options::default() }).await;
    for n in 0..3 {
        assert_eq!(app.sign_in_from(&format!("203.0.113.{n}"), &format!("nobody{n}@example.com"), "wrong-password").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.sign_in_from("198.51.100.2", SHOPPER, PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
}

async fn published_kids(app: &TestShell) -> Vec<String> {
    let json: serde_json::Value = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    json["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().to_owned()).collect()
}

fn kid_of(cookie: &str) -> String {
    use base64::Engine;
    let token = cookie.split_once('=').unwrap().1;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
    serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"].as_str().unwrap().to_owned()
}

each_backend!(shell_replicas_share_one_key_ring_and_a_rotation_reaches_every_one);
async fn shell_replicas_share_one_key_ring_and_a_rotation_reaches_every_one(backend: Backend) {
    let first = spawn_with(backend, Options::default()).await;
    let second = spawn_with(backend, Options { replica_of: Some(first.data()), ..Options::default() }).await;
    let kids = published_kids(&first).await;
    assert_eq!(kids.len(), 1, "{backend:?}");
    assert_eq!(published_kids(&second).await, kids);
    // A login at one replica is a login at the other.
    let session = first.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(second.catalog_user(&session.access).await.as_deref(), Some("Sam Shopper"));
    // `keys rotate` (immediate) reaches both replicas; each signs with the new key and accepts the other's tokens.
    let entry = tessera_shell::site::rotate_keys(&first.settings.host, 0).await.unwrap();
    for app in [&first, &second] {
        eventually("the new key published by every replica", || async { published_kids(app).await.contains(&entry.kid) }).await;
    }
    let later = second.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&later.access), entry.kid, "{backend:?}");
    // The shells sign the fragments' tokens with the new key at once; a fragment that fetched the keys
    // moments ago takes it after its refetch cooldown (10 s). An emergency rotation costs that much.
    eventually("the fragments take tokens of the new key", || async { first.catalog_user(&later.access).await.as_deref() == Some("Sam Shopper") }).await;
    eventually("the old key's site tokens keep working", || async { second.catalog_user(&session.access).await.as_deref() == Some("Sam Shopper") }).await;
}

#[tokio::test]
async fn a_key_ring_an_earlier_release_kept_in_files_is_imported_so_its_sessions_stay_valid() {
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = shared_auth::keys::StoredKey::generate(0).unwrap();
    std::fs::write(keys.join(format!("{}.p8", key.entry.kid)), &key.pkcs8).unwrap();
    std::fs::write(keys.join(shared_auth::keys::KEYRING_FILE), serde_json::json!({ "keys": [key.entry] }).to_string()).unwrap();
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let app = spawn_with(Backend::Sqlite, Options { replica_of: Some((data.path().to_path_buf(), prefix)), ..Options::default() }).await;
    assert_eq!(published_kids(&app).await, vec![key.entry.kid.clone()]);
    let session = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(kid_of(&session.access), key.entry.kid);
}

each_backend!(ended_sessions_and_old_used_tokens_go_while_live_sessions_keep_working);
async fn ended_sessions_and_old_used_tokens_go_while_live_sessions_keep_working(backend: Backend) {
    let app = spawn_shell(backend).await;
    let shell = app.database().await;
    let gone = app.sign_in(SHOPPER, PASSWORD).await;
    assert_eq!(app.post_form("/logout", "", Some(&gone.both())).await.status(), StatusCode::SEE_OTHER);
    let live = app.sign_in(SHOPPER, PASSWORD).await;
    // The live session refreshes once: its first refresh token is now used.
    let response = app.get("/catalog", Some(&live.refresh)).await;
    let refresh = set_cookie(&response, "tessera_refresh").expect("rotated");
    let access = set_cookie(&response, "tessera_access").expect("refreshed");
    let now = shared_auth::keys::now_seconds();
    // Eight days pass for the ended session and the used token.
    sqlx::query("UPDATE sessions SET revoked_at = revoked_at - $1 WHERE revoked_at IS NOT NULL").bind(8 * DAY).execute(&shell).await.unwrap();
    sqlx::query("UPDATE refresh_tokens SET used_at = used_at - $1 WHERE used_at IS NOT NULL").bind(2 * DAY).execute(&shell).await.unwrap();
    let sessions = count(&shell, "SELECT COUNT(*) FROM sessions").await;

    let pruned = tessera_shell::session_store::prune(&shell, now, 7 * DAY, 900).await.unwrap();
    assert_eq!(pruned.sessions, 1, "{backend:?}");
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM sessions").await, sessions - 1);
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM refresh_tokens WHERE used_at IS NOT NULL").await, 0);
    assert_eq!(count(&shell, "SELECT COUNT(*) FROM refresh_tokens r WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = r.session_id)").await, 0);
    // The live session goes on, by its access token and by its current refresh token.
    assert_eq!(app.catalog_user(&access).await.as_deref(), Some("Sam Shopper"));
    let response = app.get("/catalog", Some(&refresh)).await;
    assert!(set_cookie(&response, "tessera_access").is_some(), "{backend:?}: the current refresh token still refreshes");
}
