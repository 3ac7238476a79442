//! Events between real services (inventory producing, the catalog consuming) through the outbox, relay,
//! transport and inbox: nothing lost, nothing doubled, order kept per aggregate, dead letters replayed,
//! late subscribers backfilled. (A consumer's refusal of forged or malformed events is the catalog's own
//! test; an outbox write in a rolled-back transaction, inventory's.)

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use sqlx::AnyPool;
use support::{count, database, each_backend, eventually, spawn_app, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::{Envelope, StockChanged};
use tessera_fragment::outbox::Outbox;
use tessera_fragment::peers::SendError;
use tessera_host::pool::Remote;
use tessera_host::relay::DeliveryError;
use tessera_host::relay::{HttpTransport, Relay, RelaySettings, Transport};
use tessera_site::Mode;

/// Where a process finds `service` (its upstream): a consumer learns a producer's signing keys there.
fn upstream(service: &str, url: &str) -> std::collections::BTreeMap<ServiceName, tessera_host::settings::FragmentSettings> {
    let settings = tessera_host::settings::FragmentSettings { upstreams: Some(url.to_owned()), ..Default::default() };
    [(ServiceName::parse(service).unwrap(), settings)].into()
}

/// What the catalog's product page says is available of a demo SKU (a classic demo product's id is its
/// SKU in lower case).
async fn availability(app: &TestApp, sku: &str) -> Option<i64> {
    let id = sku.to_ascii_lowercase();
    let detail: serde_json::Value = app.post_form("/catalog/api/product_detail", &format!("id={id}"), None).await.json().await.unwrap();
    let variants = detail["variants"].as_array().unwrap_or_else(|| panic!("{id}: {detail}"));
    variants.iter().find(|v| v["sku"] == sku).unwrap_or_else(|| panic!("{sku} in {detail}"))["available"].as_i64()
}

each_backend!(stock_changes_reach_the_catalog_which_keeps_working_without_inventory);
async fn stock_changes_reach_the_catalog_which_keeps_working_without_inventory(backend: Backend) {
    let app = spawn_app(backend).await;
    // The demo seed announced every stock level; the catalog's projection fills in.
    eventually("the seeded availability of every product", || async {
        let mut all = true;
        for product in tessera_contracts::demo::PRODUCTS {
            all &= availability(&app, product.sku).await == Some(product.stock);
        }
        all
    })
    .await;
    let (_, html) = app.text("/catalog", None).await;
    assert!(html.contains("Out of stock") && html.contains("Only a few left") && html.contains("In stock"), "{backend:?}");

    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let response = app.post_form("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=-4", Some(&ada.both())).await;
    assert_eq!(response.status(), StatusCode::OK);
    eventually("the adjustment", || async { availability(&app, "PEN-GEL-BK").await == Some(0) }).await;

    // The catalog answers from its own projection: a broken inventory database does not matter to it.
    let inventory = database(&app, "inventory").await;
    sqlx::query("DROP TABLE stock_levels").execute(&inventory).await.unwrap();
    let (status, html) = app.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Out of stock"));
}

/// An inventory database with its own outbox, and a catalog running alone as the subscriber.
struct Setup {
    inventory: TestApp,
    catalog: TestApp,
    db: AnyPool,
    outbox: Outbox,
}

async fn setup(backend: Backend) -> Setup {
    let mut inventory = spawn_with(backend, Options { demo: Some(false), mode: Some(Mode::Fragment("inventory".into())), ..Options::default() }).await;
    // Its own relay is stopped (it "died"): the tests drive the relay on its outbox step by step.
    inventory.served.stop_background();
    // The catalog knows where inventory runs, so it learns the key inventory signs with.
    let fragments = upstream("inventory", &inventory.url);
    let catalog = spawn_with(backend, Options { demo: Some(true), mode: Some(Mode::Fragment("catalog".into())), fragments, ..Options::default() }).await;
    let db = database(&inventory, "inventory").await;
    let outbox = Outbox::new(ServiceName::INVENTORY);
    outbox.subscribe(&db, <StockChanged as tessera_contracts::events::Event>::TYPE, &ServiceName::CATALOG).await.unwrap();
    Setup { inventory, catalog, db, outbox }
}

/// Inventory's events, signed with its key, to a catalog at `catalog_url`.
fn transport_to(setup: &Setup, catalog_url: &str) -> HttpTransport {
    let peers = Arc::new(tessera_fragment::peers::Peers::default());
    peers.set(ServiceName::CATALOG, Remote::at("/catalog", vec![catalog_url.to_owned()]));
    HttpTransport::new(support::signer_of(&setup.inventory, ServiceName::INVENTORY), peers)
}

fn relay(setup: &Setup, transport: Arc<dyn Transport>, max_attempts: i64) -> Relay {
    Relay::new(setup.db.clone(), &setup.outbox, transport, RelaySettings { max_attempts, base_backoff_ms: 0, ..RelaySettings::default() })
}

async fn announce(setup: &Setup, sku: &str, on_hand: i64) {
    let mut tx = setup.db.begin().await.unwrap();
    setup.outbox.enqueue(&mut tx, &StockChanged { sku: sku.parse().unwrap(), on_hand, available: on_hand }).await.unwrap();
    tx.commit().await.unwrap();
}

each_backend!(a_relay_that_died_between_commit_and_publish_delivers_after_restart);
async fn a_relay_that_died_between_commit_and_publish_delivers_after_restart(backend: Backend) {
    let setup = setup(backend).await;
    // Committed while no relay ran (it had died); nothing reached the catalog.
    announce(&setup, "MUG-STN-01", 7).await;
    assert_eq!(availability(&setup.catalog, "MUG-STN-01").await, None);
    // The restarted relay finds the row and delivers it.
    let relay = relay(&setup, Arc::new(transport_to(&setup, &setup.catalog.url)), 5);
    assert_eq!(relay.run_once().await.unwrap(), 1);
    assert_eq!(availability(&setup.catalog, "MUG-STN-01").await, Some(7), "{backend:?}");
    assert_eq!(count(&setup.db, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'delivered'").await, 1);
    drop(setup.inventory);
}

each_backend!(a_pass_sends_each_subscribers_due_events_as_one_batch_and_a_refused_one_holds_back_only_its_aggregate);
async fn a_pass_sends_each_subscribers_due_events_as_one_batch_and_a_refused_one_holds_back_only_its_aggregate(backend: Backend) {
    let setup = setup(backend).await;
    // Two events of the mug, one of the pen, and two of the tee whose first the catalog refuses.
    announce(&setup, "MUG-STN-01", 7).await;
    announce(&setup, "TEE-BLU-M", -3).await; // stock below zero: the catalog refuses it
    announce(&setup, "PEN-GEL-BK", 2).await;
    announce(&setup, "MUG-STN-01", 6).await;
    announce(&setup, "TEE-BLU-M", 5).await;
    let relay = relay(&setup, Arc::new(transport_to(&setup, &setup.catalog.url)), 5);
    assert_eq!(relay.run_once().await.unwrap(), 5, "{backend:?}: every due event in one pass");
    assert_eq!(availability(&setup.catalog, "MUG-STN-01").await, Some(6), "{backend:?}: the mug's two, in order");
    assert_eq!(availability(&setup.catalog, "PEN-GEL-BK").await, Some(2), "{backend:?}");
    assert_eq!(availability(&setup.catalog, "TEE-BLU-M").await, None, "{backend:?}: the tee's second waits for its first");
    let tee: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT d.status, d.attempts, d.last_error FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE o.aggregate_id = 'TEE-BLU-M' ORDER BY d.seq",
    )
    .fetch_all(&setup.db)
    .await
    .unwrap();
    assert_eq!((tee[0].0.as_str(), tee[0].1), ("pending", 1), "{backend:?}: refused alone, to be retried");
    assert!(tee[0].2.as_deref().unwrap_or_default().contains("422"), "{tee:?}");
    assert_eq!((tee[1].0.as_str(), tee[1].1), ("pending", 0), "{backend:?}: held back, not counted as an attempt");
    // The next pass tries the refused one again; the one behind it still waits.
    assert_eq!(relay.run_once().await.unwrap(), 2, "{backend:?}");
    assert_eq!(availability(&setup.catalog, "TEE-BLU-M").await, None, "{backend:?}");
    assert_eq!(count(&setup.db, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'delivered'").await, 3);
    let catalog = database(&setup.catalog, "catalog").await;
    assert_eq!(count(&catalog, "SELECT COUNT(*) FROM inbox").await, 3, "{backend:?}: each applied once");
}

/// Delivers for real, then fails once as if the relay died before marking the delivery.
struct DiesAfterFirstDelivery {
    inner: HttpTransport,
    died: AtomicBool,
}

impl Transport for DiesAfterFirstDelivery {
    fn deliver<'a>(
        &'a self,
        subscriber: &'a ServiceName,
        envelope: &'a Envelope,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            self.inner.deliver(subscriber, envelope).await?;
            if !self.died.swap(true, Ordering::SeqCst) {
                return Err(DeliveryError::Unreachable(SendError("relay died after delivery, before marking".into())));
            }
            Ok(())
        })
    }
}

each_backend!(a_relay_that_died_after_delivery_delivers_a_duplicate_that_the_consumer_applies_once);
async fn a_relay_that_died_after_delivery_delivers_a_duplicate_that_the_consumer_applies_once(backend: Backend) {
    let setup = setup(backend).await;
    announce(&setup, "MUG-STN-01", 9).await;
    let transport = Arc::new(DiesAfterFirstDelivery { inner: transport_to(&setup, &setup.catalog.url), died: AtomicBool::new(false) });
    let relay = relay(&setup, transport, 5);
    relay.run_once().await.unwrap();
    assert_eq!(count(&setup.db, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'pending'").await, 1, "not marked");
    relay.run_once().await.unwrap();
    assert_eq!(count(&setup.db, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'delivered'").await, 1);
    let catalog_db = database(&setup.catalog, "catalog").await;
    assert_eq!(count(&catalog_db, "SELECT COUNT(*) FROM inbox").await, 1, "{backend:?}: delivered twice, applied once");
    assert_eq!(availability(&setup.catalog, "MUG-STN-01").await, Some(9));
}

each_backend!(a_subscriber_that_is_down_gets_retries_then_a_dead_letter_then_a_replay_delivers);
async fn a_subscriber_that_is_down_gets_retries_then_a_dead_letter_then_a_replay_delivers(backend: Backend) {
    let setup = setup(backend).await;
    announce(&setup, "MUG-STN-01", 4).await;
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let relay_down = relay(&setup, Arc::new(transport_to(&setup, &format!("http://{down}"))), 3);
    for attempt in 1..=3 {
        relay_down.run_once().await.unwrap();
        let (attempts, status): (i64, String) = sqlx::query_as("SELECT attempts, status FROM outbox_deliveries").fetch_one(&setup.db).await.unwrap();
        assert_eq!(attempts, attempt);
        assert_eq!(status, if attempt < 3 { "pending" } else { "dead" }, "{backend:?}");
        if attempt == 1 {
            // The catalog's subscription is behind by the age of its waiting event: past a bound of 0 ms,
            // not past an hour.
            let inventory = ServiceName::INVENTORY;
            let status = |bound| tessera_fragment::event_admin::status(&setup.db, &inventory, bound);
            let strict = status(0).await.unwrap().subscriptions;
            assert_eq!((strict.len(), strict[0].subscriber.as_str(), strict[0].pending, strict[0].behind), (1, "catalog", 1, true), "{strict:?}");
            assert!(!status(3_600_000).await.unwrap().subscriptions[0].behind);
        }
    }
    // The dead letter is visible and stays put.
    let status = tessera_fragment::event_admin::status(&setup.db, &ServiceName::INVENTORY, 10_000).await.unwrap();
    assert!(status.subscriptions.is_empty(), "a dead letter is not a waiting delivery: {:?}", status.subscriptions);
    assert_eq!(status.dead_letters.len(), 1);
    let dead = &status.dead_letters[0];
    assert_eq!((dead.subscriber.as_str(), dead.aggregate_id.as_str(), dead.attempts), ("catalog", "MUG-STN-01", 3), "{backend:?}");
    // The reason names the subscriber's address that could not be reached, for the person replaying it.
    assert!(dead.last_error.contains(&format!("http://{down}/catalog/")), "{backend:?}: {}", dead.last_error);
    assert_eq!(relay_down.run_once().await.unwrap(), 0, "dead letters are not retried by themselves");
    // Replayed once the subscriber is back (a relay that knows its address).
    assert_eq!(tessera_fragment::event_admin::replay_dead_letters(&setup.db, &setup.outbox, None).await.unwrap(), 1);
    relay(&setup, Arc::new(transport_to(&setup, &setup.catalog.url)), 3).run_once().await.unwrap();
    assert_eq!(availability(&setup.catalog, "MUG-STN-01").await, Some(4));
}

#[tokio::test]
async fn a_failed_event_holds_back_later_events_of_its_aggregate_only() {
    let setup = setup(Backend::Sqlite).await;
    announce(&setup, "MUG-STN-01", 1).await;
    announce(&setup, "MUG-STN-01", 2).await;
    announce(&setup, "TEE-BLU-M", 5).await;
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    relay(&setup, Arc::new(transport_to(&setup, &format!("http://{down}"))), 10).run_once().await.unwrap();
    // Deliver everything except the first MUG event: make it fail on its own by pointing it nowhere.
    let (attempts,): (i64,) = sqlx::query_as("SELECT MAX(attempts) FROM outbox_deliveries").fetch_one(&setup.db).await.unwrap();
    assert_eq!(attempts, 1);
    let attempted: Vec<(i64, i64)> = sqlx::query_as("SELECT seq, attempts FROM outbox_deliveries ORDER BY seq").fetch_all(&setup.db).await.unwrap();
    assert_eq!(attempted, vec![(1, 1), (2, 0), (3, 1)], "MUG #2 waits behind MUG #1; TEE is independent");
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    events_of_one_aggregate_arrive_in_order_under_concurrent_producers
);
async fn events_of_one_aggregate_arrive_in_order_under_concurrent_producers(backend: Backend) {
    let app = spawn_app(backend).await;
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    eventually("the seeded availability", || async { availability(&app, "STK-RST-10").await == Some(100) }).await;
    let calls = (0..30).map(|n| {
        let sku = if n % 2 == 0 { "STK-RST-10" } else { "BAG-CNV-01" };
        let body = format!("sku={sku}&delta={}", if n % 3 == 0 { -1 } else { 1 });
        let cookie = ada.both();
        let app = &app;
        async move { app.post_form("/admin/inventory/api/adjust_stock", body, Some(&cookie)).await.status() }
    });
    for status in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    let inventory = database(&app, "inventory").await;
    eventually("every delivery", || async { count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status <> 'delivered'").await == 0 }).await;
    let catalog = database(&app, "catalog").await;
    for sku in ["STK-RST-10", "BAG-CNV-01"] {
        let arrived: Vec<(i64,)> =
            sqlx::query_as("SELECT sequence FROM inbox WHERE aggregate_id = $1 ORDER BY position").bind(sku).fetch_all(&catalog).await.unwrap();
        assert!(arrived.len() >= 16, "{sku}: {}", arrived.len());
        assert!(arrived.windows(2).all(|pair| pair[0].0 < pair[1].0), "{backend:?} {sku} arrived out of order: {arrived:?}");
        let (on_hand,): (i64,) = sqlx::query_as("SELECT on_hand FROM stock_levels WHERE sku = $1").bind(sku).fetch_one(&inventory).await.unwrap();
        assert_eq!(availability(&app, sku).await, Some(on_hand), "the projection ends where inventory is");
    }
}

#[tokio::test]
async fn admins_see_outbox_depth_oldest_undelivered_and_dead_letters_per_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let sam = app.sign_in(support::SHOPPER, PASSWORD).await;
    let response = app.get("/admin/inventory/events/status", Some(&sam.both())).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let inventory = database(&app, "inventory").await;
    eventually("delivered", || async { count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status <> 'delivered'").await == 0 }).await;
    let status: serde_json::Value = app.get("/admin/inventory/events/status", Some(&ada.both())).await.json().await.unwrap();
    assert_eq!(status["outbox_depth"], 0);
    assert!(status["oldest_undelivered_age_ms"].is_null());
    let catalog_status: serde_json::Value = app.get("/catalog/events/status", Some(&ada.both())).await.json().await.unwrap();
    assert_eq!(catalog_status["received"].as_i64(), Some(tessera_contracts::demo::PRODUCTS.len() as i64));
    // A dead letter shows up on the admin page, and the replay button brings it back in line.
    sqlx::query("UPDATE outbox_deliveries SET status = 'dead', attempts = 8, last_error = 'catalog answered 503' WHERE seq = 1 AND subscriber = 'catalog'")
        .execute(&inventory)
        .await
        .unwrap();
    let (status, html) = app.text("/admin/events", Some(&ada.both())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("catalog answered 503") && html.contains("Replay dead letters"), "{html}");
    // A delivery waiting for a minute-old event: the subscription is behind, and the page says so.
    let now = tessera_fragment::db::now_ms();
    sqlx::query("UPDATE outbox SET occurred_at_ms = $1 WHERE seq = 2").bind(now - 60_000).execute(&inventory).await.unwrap();
    sqlx::query("UPDATE outbox_deliveries SET status = 'pending', next_attempt_at_ms = $1 WHERE seq = 2 AND subscriber = 'catalog'")
        .bind(now + 3_600_000)
        .execute(&inventory)
        .await
        .unwrap();
    let (_, html) = app.text("/admin/events", Some(&ada.both())).await;
    assert!(html.contains("→ catalog: 1 waiting, 60.") && html.contains("data-behind=\"true\""), "{html}");
    // Readiness says so too (read every few seconds), and stays 200: the instance still serves.
    let readiness = || async {
        let response = app.get("/readyz", None).await;
        let behind = response.headers().get(tessera_host::serve::EVENTS_BEHIND_HEADER).map(|value| value.to_str().unwrap().to_owned());
        (response.status(), behind, response.text().await.unwrap())
    };
    eventually("readiness names the lagging subscription", || async { readiness().await.1.is_some() }).await;
    let (status, behind, body) = readiness().await;
    assert_eq!((status, behind.as_deref()), (StatusCode::OK, Some("catalog")), "{body}");
    assert!(body.contains("inventory → catalog: 1 waiting, oldest 60."), "{body}");
    sqlx::query("UPDATE outbox_deliveries SET next_attempt_at_ms = 0 WHERE seq = 2").execute(&inventory).await.unwrap();
    let (status, _) = app.text("/admin/events", Some(&sam.both())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = app.post_form("/admin/inventory/events/replay", "", Some(&sam.both())).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app.get("/admin/inventory/events/status", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.post_form("/admin/inventory/events/replay", "seq=abc", Some(&ada.both())).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'dead'").await, 1, "bad requests replayed nothing");
    let response = app.post_form("/admin/inventory/events/replay", "", Some(&ada.both())).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    eventually("the replayed delivery", || async { count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status <> 'delivered'").await == 0 }).await;
    eventually("readiness with nothing behind", || async { readiness().await == (StatusCode::OK, None, "ready".to_owned()) }).await;
}

fn with_fast_retries(settings: &mut tessera_site::ShellSettings) {
    settings.host.events.events_base_backoff_ms = 50;
}

each_backend!(a_consumer_that_comes_up_after_the_producer_published_gets_every_event_it_subscribes_to);
async fn a_consumer_that_comes_up_after_the_producer_published_gets_every_event_it_subscribes_to(backend: Backend) {
    // Inventory runs alone, told where the catalog will be, and seeds its stock (announcing every SKU)
    // while nothing listens there: the catalog has not described itself, so nobody has subscribed yet.
    let catalog_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut fragments = std::collections::BTreeMap::new();
    fragments.insert(
        ServiceName::parse("catalog").unwrap(),
        tessera_host::settings::FragmentSettings { upstreams: Some(format!("http://{catalog_addr}")), ..Default::default() },
    );
    let inventory =
        spawn_with(backend, Options { mode: Some(Mode::Fragment("inventory".into())), fragments, configure: Some(with_fast_retries), ..Options::default() })
            .await;
    let inventory_db = database(&inventory, "inventory").await;
    assert!(
        count(&inventory_db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.stock_changed'").await >= 8,
        "{backend:?}: the seed announced its stock"
    );
    assert_eq!(count(&inventory_db, "SELECT COUNT(*) FROM subscriptions").await, 0, "{backend:?}: no subscriber yet");

    // The catalog comes up on its address: inventory reads its description, records the subscription
    // and addresses every stock event already in its outbox to it.
    let catalog = spawn_with(
        backend,
        Options {
            mode: Some(Mode::Fragment("catalog".into())),
            addr: Some(catalog_addr),
            fragments: upstream("inventory", &inventory.url),
            ..Options::default()
        },
    )
    .await;
    eventually("every seeded stock level in the late catalog", || async {
        let mut all = true;
        for product in tessera_contracts::demo::PRODUCTS {
            all &= availability(&catalog, product.sku).await == Some(product.stock);
        }
        all
    })
    .await;
    assert_eq!(
        count(&inventory_db, "SELECT COUNT(*) FROM subscriptions WHERE subscriber = 'catalog' AND event_type = 'inventory.stock_changed'").await,
        1,
        "{backend:?}: the subscription is recorded"
    );
    // Recorded means a restarted inventory addresses new events to the catalog before it answers again.
    let outbox = Outbox::new(ServiceName::INVENTORY);
    outbox.load_subscriptions(&inventory_db).await.unwrap();
    assert_eq!(outbox.subscribers("inventory.stock_changed"), [ServiceName::CATALOG]);
}

/// The relay's pending-row query on an outbox of a busy fortnight (50,000 delivered events, a few
/// waiting) is served by indexes: its plan (printed, for the record) scans neither table.
#[tokio::test]
async fn on_a_large_outbox_the_relays_due_query_uses_indexes_not_scans() {
    if !support::postgres_configured() {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let inventory = database(&app, "inventory").await;
    eventually("the seed delivered", || async { count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status <> 'delivered'").await == 0 }).await;
    let now = tessera_fragment::db::now_ms();
    sqlx::query(
        "INSERT INTO outbox (id, event_type, version, aggregate_type, aggregate_id, payload, occurred_at_ms) \
         SELECT 'bulk-' || n, 'inventory.stock_changed', 1, 'sku', 'SKU-' || (n % 500), '{}', $1 FROM generate_series(1, 50000) AS n",
    )
    .bind(now)
    .execute(&inventory)
    .await
    .unwrap();
    // Delivered, except the last few, which wait for a retry in an hour (so the running relay leaves them).
    sqlx::query(
        "INSERT INTO outbox_deliveries (seq, subscriber, aggregate_key, status, attempts, next_attempt_at_ms, delivered_at_ms) \
         SELECT seq, 'catalog', 'sku:' || aggregate_id, CASE WHEN seq % 10000 = 0 THEN 'pending' ELSE 'delivered' END, 1, $1, $2 \
         FROM outbox WHERE id LIKE 'bulk-%'",
    )
    .bind(now + 3_600_000)
    .bind(now)
    .execute(&inventory)
    .await
    .unwrap();
    for table in ["outbox", "outbox_deliveries"] {
        sqlx::query(&format!("ANALYZE {table}")).execute(&inventory).await.unwrap();
    }
    let plan: Vec<(String,)> =
        sqlx::query_as(&format!("EXPLAIN {}", tessera_host::relay::DUE_QUERY)).bind(now).bind(200_i64).bind("pending").fetch_all(&inventory).await.unwrap();
    let plan: String = plan.into_iter().map(|(line,)| line + "\n").collect();
    eprintln!("the relay's due query on 50,000 delivered events:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("outbox_deliveries_due") || plan.contains("outbox_deliveries_order"), "{plan}");
}
