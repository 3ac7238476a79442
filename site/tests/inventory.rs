//! The all-in-one binary's `tessera inventory verify`, on the live database of a running site. The
//! service's own behaviour — concurrent buyers, reservations, order events, staff movements and pages,
//! access, bad input, its widget — is tested with inventory alone, in `fragments/inventory/tests/alone.rs`.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{database, each_backend, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::inventory::{Line, Reservation, ReserveRequest, RESERVATIONS_PATH};
use tessera_fragment::peers::Target;
use tessera_fragment::service::ServiceClient;
use tessera_fragment::signature::CallSigner;
use tessera_host::pool::Remote;

async fn start(backend: Backend) -> TestApp {
    spawn_with(backend, Options::default()).await
}

fn target(app: &TestApp) -> Target {
    Remote::at("/admin/inventory", vec![app.url.clone()])
}

/// The cart's client of the reservation API.
fn cart(app: &TestApp) -> ServiceClient {
    ServiceClient::new(ServiceName::INVENTORY, CallSigner::keyed(support::signer_of(app, ServiceName::CART)), target(app), Duration::from_secs(60))
}

fn request(key: &str, lines: &[(&str, i64)]) -> ReserveRequest {
    ReserveRequest::new(key, "user-1", lines.iter().map(|(sku, quantity)| Line::of(sku, *quantity).unwrap()).collect())
}

/// Calls an admin server function as `cookie`; returns status and JSON.
async fn admin(app: &TestApp, endpoint: &str, body: &str, cookie: &str) -> (StatusCode, Value) {
    let response = app.post_form(&format!("/admin/inventory/api/{endpoint}"), body.to_owned(), Some(cookie)).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Receives `quantity` of a SKU the inventory does not stock yet.
async fn stock_new(app: &TestApp, cookie: &str, sku: &str, quantity: i64) {
    let body = format!("sku={sku}&movement=receive&quantity={quantity}&new_sku=true");
    let (status, json) = admin(app, "record_movement", &body, cookie).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

each_backend!(inventory_verify_checks_the_live_database_and_names_what_is_broken);
async fn inventory_verify_checks_the_live_database_and_names_what_is_broken(backend: Backend) {
    let app = start(backend).await;
    let ada = app.login_as(ADMIN, PASSWORD).await;
    stock_new(&app, &ada, "VER-1", 4).await;
    let client = cart(&app);
    let _held: Reservation = client.post(RESERVATIONS_PATH, &request("v1", &[("VER-1", 2)])).await.unwrap();
    let verify = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
        command.args(["inventory", "verify"]).env("TESSERA_DATA_DIR", &app.settings.host.store.data_dir).env("TESSERA_LOG", "error");
        match &app.settings.host.store.postgres_url {
            Some(url) => command.env("TESSERA_POSTGRES_URL", url).env("TESSERA_SCHEMA_PREFIX", &app.settings.host.store.schema_prefix),
            None => command.env_remove("TESSERA_POSTGRES_URL"),
        };
        command.output().unwrap()
    };
    let output = verify();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{backend:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(": 0 violations"), "{stdout}");

    // Someone edits a counter by hand: the schema allows it, the ledger no longer replays to it.
    let db = database(&app, "inventory").await;
    sqlx::query("UPDATE stock_levels SET on_hand = on_hand + 5 WHERE sku = 'VER-1'").execute(&db).await.unwrap();
    let output = verify();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{backend:?}: {stdout}");
    assert!(stdout.contains("VER-1 at main: on_hand is 9 but the ledger replays to 4"), "{stdout}");

    // And what the schema refuses outright.
    for sql in [
        "UPDATE stock_levels SET soft_reserved = 50 WHERE sku = 'VER-1'",
        "UPDATE stock_levels SET incoming = -1 WHERE sku = 'VER-1'",
        "UPDATE ledger SET quantity = 1",
        "DELETE FROM ledger",
        "UPDATE reservations SET status = 'fulfilled'",
        "DELETE FROM reservation_lines",
    ] {
        assert!(sqlx::query(sql).execute(&db).await.is_err(), "{backend:?}: the schema refuses {sql}");
    }
    sqlx::query("UPDATE reservations SET status = 'released'").execute(&db).await.unwrap();
    assert!(sqlx::query("UPDATE reservations SET status = 'soft'").execute(&db).await.is_err(), "{backend:?}: terminal states are final");
}
