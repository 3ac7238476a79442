//! Several instances of the real services on one database each: they start together, their relays share
//! one outbox, one cart changes one request at a time whichever instance serves it and reserves in the
//! real inventory, events travel over NATS JetStream and PostgreSQL's replication stream between
//! inventory, the catalog and the cart, and every process serves its metrics where the public cannot
//! reach them. (Leases alone are tested in `platform/fragment/tests/lease.rs`; the shell's replicas in
//! `platform/shell/tests/replicas.rs`.)

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use support::{count, database, each_backend, eventually, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD, SHOPPER};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::{Envelope, StockChanged};
use tessera_fragment::outbox::Outbox;
use tessera_host::relay::DeliveryError;
use tessera_host::relay::{Relay, RelaySettings, Transport};
use tessera_site::Mode;

/// Another instance of `app`: the same data (SQLite files or PostgreSQL schemas), its own process state.
async fn instance_of(app: &TestApp, mode: Option<Mode>) -> TestApp {
    spawn_with(
        app.backend,
        Options { mode, instance_of: Some((app.settings.host.store.data_dir.clone(), app.settings.host.store.schema_prefix.clone())), ..Options::default() },
    )
    .await
}

#[tokio::test]
async fn instances_starting_at_the_same_moment_migrate_and_seed_once() {
    if !support::postgres_configured() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let start = |fragment: &str| {
        let options =
            Options { mode: Some(Mode::Fragment(fragment.to_owned())), instance_of: Some((data.path().to_path_buf(), prefix.clone())), ..Options::default() };
        spawn_with(Backend::Postgres, options)
    };
    // Three of each, all at once, on schemas that do not exist yet.
    let apps = futures::future::join_all(["catalog", "inventory", "catalog", "inventory", "catalog", "inventory"].map(start)).await;
    let catalog = database(&apps[0], "catalog").await;
    let inventory = database(&apps[1], "inventory").await;
    assert_eq!(count(&catalog, "SELECT COUNT(*) FROM categories").await, tessera_contracts::demo::CATEGORIES.len() as i64);
    let products = tessera_contracts::demo::PRODUCTS.len() as i64;
    assert_eq!(count(&catalog, "SELECT COUNT(*) FROM products").await, products);
    // One receipt per SKU in stock: the stock was seeded once, not three times.
    let in_stock = tessera_contracts::demo::PRODUCTS.iter().filter(|product| product.stock > 0).count() as i64;
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM ledger WHERE kind = 'RECEIVED'").await, in_stock);
    for app in &apps {
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    }
}

/// Records every delivery; refuses (and records) an event delivered while an earlier one of its
/// aggregate is still in flight or after a later one.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<(String, i64)>>,
    in_flight: Mutex<HashSet<String>>,
    violations: Mutex<Vec<String>>,
}

struct Recording(Arc<Recorder>);

impl Transport for Recording {
    fn deliver<'a>(
        &'a self,
        _subscriber: &'a ServiceName,
        envelope: &'a Envelope,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let recorder = &self.0;
            if !recorder.in_flight.lock().unwrap().insert(envelope.aggregate_id.clone()) {
                recorder
                    .violations
                    .lock()
                    .unwrap()
                    .push(format!("{} sent while an earlier event of {} was in flight", envelope.sequence, envelope.aggregate_id));
            }
            // Long enough for the other relays to try the same rows.
            tokio::time::sleep(Duration::from_millis(1 + (envelope.sequence % 3) as u64)).await;
            {
                let mut delivered = recorder.delivered.lock().unwrap();
                if let Some((_, last)) = delivered.iter().rev().find(|(aggregate, _)| *aggregate == envelope.aggregate_id) {
                    if *last > envelope.sequence {
                        recorder.violations.lock().unwrap().push(format!("{} of {} after {last}", envelope.sequence, envelope.aggregate_id));
                    }
                }
                delivered.push((envelope.aggregate_id.clone(), envelope.sequence));
            }
            recorder.in_flight.lock().unwrap().remove(&envelope.aggregate_id);
            Ok(())
        })
    }
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    three_relays_on_one_outbox_send_each_event_once_in_order_per_aggregate
);
async fn three_relays_on_one_outbox_send_each_event_once_in_order_per_aggregate(backend: Backend) {
    let mut app = spawn_with(backend, Options { demo: Some(false), mode: Some(Mode::Fragment("inventory".into())), ..Options::default() }).await;
    // Only the three relays below work on this outbox.
    app.served.stop_background();
    let db = database(&app, "inventory").await;
    let outbox = Outbox::new(ServiceName::INVENTORY);
    outbox.subscribe(&db, <StockChanged as tessera_contracts::events::Event>::TYPE, &ServiceName::CATALOG).await.unwrap();
    const EVENTS: i64 = 240;
    for n in 0..EVENTS {
        let mut tx = db.begin().await.unwrap();
        let event = StockChanged { sku: format!("SKU-{:02}", n % 8).parse().unwrap(), on_hand: n, available: n };
        outbox.enqueue(&mut tx, &event).await.unwrap();
        tx.commit().await.unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    // Three instances' relays, each with its own pool (as separate processes have).
    let mut relays = Vec::new();
    for _ in 0..3 {
        let pool = database(&app, "inventory").await;
        let settings = RelaySettings { batch: 20, idle_poll_ms: 10, ..RelaySettings::default() };
        relays.push(Relay::new(pool, &outbox, Arc::new(Recording(recorder.clone())), settings).spawn());
    }
    eventually("every event delivered", || async { count(&db, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'delivered'").await == EVENTS }).await;
    for relay in relays {
        relay.abort();
    }
    let delivered = recorder.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len() as i64, EVENTS, "{backend:?}: each event sent once");
    let mut per_aggregate: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (aggregate, seq) in &delivered {
        per_aggregate.entry(aggregate).or_default().push(*seq);
    }
    assert_eq!(per_aggregate.len(), 8);
    for (aggregate, seqs) in per_aggregate {
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{backend:?}: {aggregate} out of order: {seqs:?}");
    }
    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new(), "{backend:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_deliveries WHERE claimed_by IS NOT NULL").await, 0);
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    one_cart_changed_through_two_instances_at_once_keeps_every_unit_and_one_hold
);
async fn one_cart_changed_through_two_instances_at_once_keeps_every_unit_and_one_hold(backend: Backend) {
    let first = spawn_with(backend, Options::default()).await;
    let second = instance_of(&first, None).await;
    let shopper = first.sign_in(SHOPPER, PASSWORD).await.both();
    // Eight additions of one mug, half through each instance, all at once.
    let adds = (0..8).map(|n| {
        let (app, cookie) = (if n % 2 == 0 { &first } else { &second }, shopper.clone());
        async move { app.post_form("/cart/api/add_item", "sku=MUG-STN-01&quantity=1", Some(&cookie)).await.status() }
    });
    let statuses = futures::future::join_all(adds).await;
    assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{backend:?}: {statuses:?}");
    let cart = database(&first, "cart").await;
    let inventory = database(&first, "inventory").await;
    assert_eq!(count(&cart, "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM cart_items WHERE sku = 'MUG-STN-01'").await, 8, "{backend:?}");
    // Exactly one active hold for the line, of all eight units: no reservation was left behind.
    let held = "SELECT CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id \
                WHERE r.status = 'soft' AND l.sku = 'MUG-STN-01'";
    assert_eq!(count(&inventory, held).await, 8, "{backend:?}");
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM reservations WHERE status = 'soft'").await, 1, "{backend:?}");
    let (reservation,): (Option<String>,) = sqlx::query_as("SELECT reservation_id FROM cart_items WHERE sku = 'MUG-STN-01'").fetch_one(&cart).await.unwrap();
    let (status,): (String,) = sqlx::query_as("SELECT status FROM reservations WHERE id = $1").bind(reservation).fetch_one(&inventory).await.unwrap();
    assert_eq!(status, "soft");
}

fn metrics_on_own_port(settings: &mut tessera_site::ShellSettings) {
    settings.host.server.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
}

/// One sample of a metric line in the Prometheus text format (`name{labels} value`), by name and labels.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn every_process_serves_metrics_where_the_public_cannot_reach_them() {
    let backend = Backend::Sqlite;
    // The whole site (public): nothing on its own routes, everything on the metrics listener.
    let site = spawn_with(backend, Options { configure: Some(metrics_on_own_port), ..Options::default() }).await;
    assert_eq!(site.get("/metrics", None).await.status(), StatusCode::NOT_FOUND);
    let shopper = site.sign_in(SHOPPER, PASSWORD).await.both();
    assert_eq!(site.post_form("/cart/api/add_item", "sku=MUG-STN-01&quantity=1", Some(&shopper)).await.status(), StatusCode::OK);
    assert_eq!(site.post_form("/cart/api/add_item", "sku=CAP-BLK-01&quantity=1", Some(&shopper)).await.status(), StatusCode::CONFLICT);
    assert_eq!(site.get("/catalog", None).await.status(), StatusCode::OK);
    let metrics_url = format!("http://{}/metrics", site.metrics_addr.expect("a metrics listener"));
    let response = site.client.get(&metrics_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(sample(&text, "http_requests_total", &["route=\"/login\"", "status=\"303\""]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "http_request_duration_seconds_count", &["route=\"/cart/api/*\""]).unwrap_or(0.0) >= 2.0, "{text}");
    assert!(sample(&text, "http_requests_total", &["route=\"/catalog (page)\"", "status=\"200\""]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "tessera_reservations_total", &["outcome=\"held\""]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "tessera_reservations_total", &["outcome=\"short\""]).unwrap_or(0.0) >= 1.0, "{text}");
    for producer in ["catalog", "cart", "inventory"] {
        assert!(sample(&text, "tessera_outbox_depth", &[&format!("producer=\"{producer}\"")]).is_some(), "{producer}: {text}");
        assert!(sample(&text, "tessera_dead_letters", &[&format!("producer=\"{producer}\"")]).is_some(), "{producer}: {text}");
    }
    // The demo seed's stock events were delivered: their lag was measured.
    assert!(sample(&text, "tessera_event_delivery_lag_seconds_count", &["producer=\"inventory\""]).unwrap_or(0.0) >= 1.0, "{text}");
    // And the catalog measured how old each was when it applied it, by producer and type.
    let applied = ["producer=\"inventory\"", "event_type=\"inventory.stock_changed\""];
    assert!(sample(&text, "tessera_event_applied_lag_seconds_count", &applied).unwrap_or(0.0) >= 1.0, "{text}");

    // A fragment alone serves them on its metrics listener (loopback by default), never on its main one:
    // a fragment reached directly (its own domain, a subdomain, its port) does not show them.
    let catalog = spawn_with(backend, Options { mode: Some(Mode::Fragment("catalog".into())), ..Options::default() }).await;
    assert_eq!(catalog.get("/metrics", None).await.status(), StatusCode::NOT_FOUND);
    let metrics_addr = catalog.metrics_addr.expect("a metrics listener by default");
    assert!(metrics_addr.ip().is_loopback(), "{metrics_addr}");
    let text = catalog.client.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(sample(&text, "tessera_outbox_depth", &["producer=\"catalog\""]).is_some(), "{text}");
    // Through the shell, /catalog/metrics is the catalog's own 404 page, not its metrics.
    let (status, html) = site.text("/catalog/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!html.contains("http_requests_total"));
}

fn over_nats_strict(settings: &mut tessera_site::ShellSettings) {
    support::over_nats(settings);
    settings.host.events.events_max_attempts = 3;
    settings.host.events.events_base_backoff_ms = 20;
}

async fn availability_of(app: &TestApp, sku: &str) -> Option<i64> {
    let catalog = database(app, "catalog").await;
    let row: Option<(i64,)> = sqlx::query_as("SELECT available FROM availability WHERE sku = $1").bind(sku).fetch_optional(&catalog).await.unwrap();
    row.map(|(available,)| available)
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    over_jetstream_each_event_is_stored_once_and_applied_once_by_each_consumer
);
async fn over_jetstream_each_event_is_stored_once_and_applied_once_by_each_consumer(backend: Backend) {
    if support::nats_url().is_none() {
        eprintln!("TESSERA_TEST_NATS_URL is not set: skipped");
        return;
    }
    let app = spawn_with(backend, Options { configure: Some(support::over_nats), ..Options::default() }).await;
    // The demo seed's stock levels reach the catalog through JetStream.
    for product in tessera_contracts::demo::PRODUCTS {
        eventually("seeded availability over NATS", || async { availability_of(&app, product.sku).await == Some(product.stock) }).await;
    }
    let inventory = database(&app, "inventory").await;
    let events = count(&inventory, "SELECT COUNT(*) FROM outbox").await;
    // Addressed once each, to the broker, and delivered.
    assert_eq!(
        count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE subscriber = 'jetstream' AND status = 'delivered'").await,
        events,
        "{backend:?}"
    );
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE subscriber <> 'jetstream'").await, 0);

    // The stream holds each event once, even when the relay publishes one again.
    let broker = tessera_host::broker::Broker::connect(&support::nats_url().unwrap(), &app.settings.host.events.nats_prefix, None).await.unwrap();
    let mut stream = broker.stream(&ServiceName::INVENTORY).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages as i64, events, "{backend:?}");
    let (id, payload): (String, String) = sqlx::query_as("SELECT id, payload FROM outbox ORDER BY seq LIMIT 1").fetch_one(&inventory).await.unwrap();
    let again = tessera_contracts::events::Envelope {
        id,
        event_type: "inventory.stock_changed".into(),
        version: 1,
        aggregate_type: "sku".into(),
        aggregate_id: "again".into(),
        sequence: 1,
        occurred_at_ms: 0,
        producer: ServiceName::INVENTORY,
        payload: serde_json::from_str(&payload).unwrap(),
    };
    let signer = support::signer_of(&app, ServiceName::INVENTORY);
    let transport = tessera_host::broker::BrokerTransport::new(broker.clone(), ServiceName::INVENTORY, signer);
    transport.deliver(&ServiceName::CATALOG, &again).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages as i64, events, "a republished event is dropped as a duplicate");

    // The catalog applied every stock event once.
    let catalog = database(&app, "catalog").await;
    let stock_events = count(&inventory, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.stock_changed'").await;
    eventually("every stock event applied once", || async {
        count(&catalog, "SELECT COUNT(*) FROM inbox WHERE event_type = 'inventory.stock_changed'").await == stock_events
    })
    .await;
    assert_eq!(count(&catalog, "SELECT COUNT(DISTINCT event_id) FROM inbox").await, count(&catalog, "SELECT COUNT(*) FROM inbox").await);
    let consumers: Vec<String> = {
        let mut names = Vec::new();
        let mut list = stream.consumer_names();
        use futures::StreamExt;
        while let Some(name) = list.next().await {
            names.push(name.unwrap());
        }
        names.sort();
        names
    };
    assert_eq!(consumers, vec!["cart".to_owned(), "catalog".to_owned()], "{backend:?}: each consumer of inventory owns its durable consumer");
    for name in ["INVENTORY", "CART", "CATALOG"] {
        let _ = broker.jetstream().delete_stream(format!("{}_{name}", app.settings.host.events.nats_prefix.to_ascii_uppercase())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_jetstream_an_event_that_keeps_failing_becomes_a_dead_letter_that_can_be_replayed() {
    if support::nats_url().is_none() {
        eprintln!("TESSERA_TEST_NATS_URL is not set: skipped");
        return;
    }
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(over_nats_strict), ..Options::default() }).await;
    eventually("seeded availability", || async { availability_of(&app, "PEN-GEL-BK").await == Some(4) }).await;
    let catalog = database(&app, "catalog").await;
    // The catalog's projection is gone (a bad deploy): applying a stock change fails every time.
    sqlx::query("ALTER TABLE availability RENAME TO availability_away").execute(&catalog).await.unwrap();
    let admin = app.sign_in(support::ADMIN, PASSWORD).await.both();
    let response = app.post_form("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=-1", Some(&admin)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let status = || async {
        let response = app.get("/catalog/events/status", Some(&admin)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<serde_json::Value>().await.unwrap()
    };
    eventually("a dead letter after three deliveries", || async { !status().await["dead_letters"].as_array().unwrap().is_empty() }).await;
    let letter = status().await["dead_letters"][0].clone();
    assert_eq!(letter["event_type"], "inventory.stock_changed");
    assert_eq!(letter["attempts"], 3);
    assert!(letter["last_error"].as_str().unwrap().contains("availability"), "{letter}");
    // The admin page shows it.
    let (_, html) = app.text("/admin/events", Some(&admin)).await;
    assert!(html.contains("inventory.stock_changed"), "{html}");
    // A forged message (anyone who can publish to the broker): unsigned, a dead letter at once.
    let broker = tessera_host::broker::Broker::connect(&support::nats_url().unwrap(), &app.settings.host.events.nats_prefix, None).await.unwrap();
    let forged = serde_json::json!({
        "id": "forged-1", "type": "inventory.stock_changed", "version": 1, "aggregate_type": "sku", "aggregate_id": "PEN-GEL-BK",
        "sequence": 999_999, "occurred_at_ms": 0, "producer": "inventory", "payload": { "sku": "PEN-GEL-BK", "on_hand": 999, "available": 999 }
    });
    let subject = broker.subject(&ServiceName::INVENTORY, "inventory.stock_changed");
    broker.jetstream().publish(subject, forged.to_string().into()).await.unwrap().await.unwrap();
    eventually("the forged message dead-lettered", || async {
        status().await["dead_letters"].as_array().unwrap().iter().any(|letter| letter["event_type"] == "(invalid)")
    })
    .await;
    // Fixed, then replayed: applied once, and gone from the list; the forged one is never applied.
    sqlx::query("ALTER TABLE availability_away RENAME TO availability").execute(&catalog).await.unwrap();
    let response = app.post_form("/catalog/events/replay", "", Some(&admin)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(availability_of(&app, "PEN-GEL-BK").await, Some(3));
    let left = status().await["dead_letters"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["event_type"], "(invalid)");
    assert!(left[0]["last_error"].as_str().unwrap().contains("not signed"), "{left:?}");
    for name in ["INVENTORY", "CART", "CATALOG"] {
        let _ = broker.jetstream().delete_stream(format!("{}_{name}", app.settings.host.events.nats_prefix.to_ascii_uppercase())).await;
    }
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    over_jetstream_a_consumer_applies_batches_and_a_failing_event_holds_back_only_its_aggregate
);
async fn over_jetstream_a_consumer_applies_batches_and_a_failing_event_holds_back_only_its_aggregate(backend: Backend) {
    if support::nats_url().is_none() {
        eprintln!("TESSERA_TEST_NATS_URL is not set: skipped");
        return;
    }
    let app = spawn_with(backend, Options { configure: Some(over_nats_strict), ..Options::default() }).await;
    for product in tessera_contracts::demo::PRODUCTS {
        eventually("seeded availability over NATS", || async { availability_of(&app, product.sku).await == Some(product.stock) }).await;
    }
    let broker = tessera_host::broker::Broker::connect(&support::nats_url().unwrap(), &app.settings.host.events.nats_prefix, None).await.unwrap();
    let transport = tessera_host::broker::BrokerTransport::new(broker.clone(), ServiceName::INVENTORY, support::signer_of(&app, ServiceName::INVENTORY));
    // Published back to back, so the consumer finds several at once: two changes of the mug, one of the
    // pen, and two of the tee whose first the catalog refuses (stock below zero) every time.
    let changes = [("MUG-STN-01", 7), ("TEE-BLU-M", -3), ("PEN-GEL-BK", 2), ("MUG-STN-01", 6), ("TEE-BLU-M", 5)];
    let mut ids = Vec::new();
    for (n, (sku, on_hand)) in changes.into_iter().enumerate() {
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: "inventory.stock_changed".into(),
            version: 1,
            aggregate_type: "sku".into(),
            aggregate_id: sku.into(),
            sequence: 1_000_000 + n as i64,
            occurred_at_ms: tessera_fragment::db::now_ms(),
            producer: ServiceName::INVENTORY,
            payload: serde_json::to_value(StockChanged { sku: sku.parse().unwrap(), on_hand, available: on_hand }).unwrap(),
        };
        transport.deliver(&ServiceName::CATALOG, &envelope).await.unwrap();
        ids.push(envelope.id);
    }
    let catalog = database(&app, "catalog").await;
    // The refused one becomes a dead letter after its three attempts (waiting never counted as one), and
    // only then does the tee's next change apply; the others did not wait for it.
    eventually("the tee's second change applied after the first was dead-lettered", || async { availability_of(&app, "TEE-BLU-M").await == Some(5) }).await;
    assert_eq!(availability_of(&app, "MUG-STN-01").await, Some(6), "{backend:?}: the mug's two, in order");
    assert_eq!(availability_of(&app, "PEN-GEL-BK").await, Some(2), "{backend:?}");
    let dead: Vec<(String, i64)> = sqlx::query_as("SELECT event_id, attempts FROM dead_letters").fetch_all(&catalog).await.unwrap();
    assert_eq!(dead, vec![(ids[1].clone(), 3)], "{backend:?}");
    let applied: Vec<(String,)> = sqlx::query_as("SELECT event_id FROM inbox WHERE sequence >= 1000000 ORDER BY position").fetch_all(&catalog).await.unwrap();
    let applied: Vec<&str> = applied.iter().map(|(id,)| id.as_str()).collect();
    assert_eq!(applied.len(), 4, "{backend:?}: each applied once, the refused one never: {applied:?}");
    let at = |id: &str| applied.iter().position(|applied| *applied == id).unwrap();
    assert!(at(&ids[0]) < at(&ids[3]), "{backend:?}: the mug's changes in order");
    // One instance consumes, many events per acknowledgement round: the consumer allows a batch in flight.
    let stream = broker.stream(&ServiceName::INVENTORY).await.unwrap();
    let info = stream.consumer_info("catalog").await.unwrap();
    assert!(info.config.max_ack_pending > 1, "{:?}", info.config.max_ack_pending);
    for name in ["INVENTORY", "CART", "CATALOG"] {
        let _ = broker.jetstream().delete_stream(format!("{}_{name}", app.settings.host.events.nats_prefix.to_ascii_uppercase())).await;
    }
}

/// The streaming relay (`TESSERA_OUTBOX_RELAY=cdc`), quick to dead-letter.
fn streamed_strict(settings: &mut tessera_site::ShellSettings) {
    settings.host.events.outbox_relay = tessera_host::relay::OutboxRelay::Cdc;
    settings.host.events.events_max_attempts = 2;
    settings.host.events.events_base_backoff_ms = 20;
}

/// Whether the test PostgreSQL can stream logical changes (`wal_level = logical`; `.ci/run` sets it). A
/// failure with `CI=true`, a skip otherwise.
async fn logical_decoding() -> bool {
    if !support::postgres_configured() {
        return false;
    }
    let app_less = sqlx::any::AnyPoolOptions::new().max_connections(1);
    sqlx::any::install_default_drivers();
    let pool = app_less.connect(&std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap()).await.unwrap();
    let (level,): (String,) = sqlx::query_as("SELECT setting FROM pg_settings WHERE name = 'wal_level'").fetch_one(&pool).await.unwrap();
    pool.close().await;
    if level == "logical" {
        return true;
    }
    let how = "ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "the test PostgreSQL has wal_level = {level}: {how}");
    eprintln!("the test PostgreSQL has wal_level = {level} ({how}): skipped");
    false
}

/// The backend pid holding the temporary slot of `app`'s inventory relay (`None`: nobody leads).
async fn relay_leader(app: &TestApp) -> Option<i64> {
    let inventory = database(app, "inventory").await;
    let slot = format!("tessera_relay_{}inventory", app.settings.host.store.schema_prefix);
    let leaders: Vec<(Option<i32>,)> = sqlx::query_as("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND temporary AND active")
        .bind(&slot)
        .fetch_all(&inventory)
        .await
        .unwrap();
    assert!(leaders.len() <= 1);
    leaders.first().and_then(|(pid,)| pid.map(i64::from))
}

/// Every stock event inventory committed reached the catalog once, in each SKU's order, and nothing waits.
async fn assert_stock_events_applied_once_in_order(app: &TestApp) {
    let inventory = database(app, "inventory").await;
    let catalog = database(app, "catalog").await;
    let stock_events = count(&inventory, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.stock_changed'").await;
    eventually("every stock event applied by the catalog", || async {
        count(&catalog, "SELECT COUNT(*) FROM inbox WHERE event_type = 'inventory.stock_changed'").await == stock_events
            && count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'pending'").await == 0
    })
    .await;
    let applied: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM inbox WHERE producer = 'inventory' ORDER BY position").fetch_all(&catalog).await.unwrap();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, sequence) in applied {
        let previous = last.insert(sku.clone(), sequence);
        assert!(previous.is_none_or(|previous| previous < sequence), "{sku}: event {sequence} applied after {previous:?}");
    }
    // The catalog shows what the last event of each SKU said.
    let events: Vec<(String, String)> = sqlx::query_as("SELECT aggregate_id, payload FROM outbox WHERE event_type = 'inventory.stock_changed' ORDER BY seq")
        .fetch_all(&inventory)
        .await
        .unwrap();
    let mut latest = BTreeMap::new();
    for (sku, payload) in events {
        latest.insert(sku, serde_json::from_str::<serde_json::Value>(&payload).unwrap()["available"].as_i64());
    }
    for (sku, available) in latest {
        assert_eq!(availability_of(app, &sku).await, available, "{sku}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_relay_has_one_leader_sends_each_event_once_in_order_and_hands_over_when_it_stops() {
    if !logical_decoding().await {
        return;
    }
    let mut first = spawn_with(Backend::Postgres, Options { configure: Some(streamed_strict), ..Options::default() }).await;
    eventually("the first instance leads", || async { relay_leader(&first).await.is_some() }).await;
    let leader = relay_leader(&first).await;
    let second = spawn_with(
        Backend::Postgres,
        Options {
            configure: Some(streamed_strict),
            instance_of: Some((first.settings.host.store.data_dir.clone(), first.settings.host.store.schema_prefix.clone())),
            ..Options::default()
        },
    )
    .await;
    // Changes through both instances, several per SKU: one relay sends them all, in order.
    let admin = first.login_as(ADMIN, PASSWORD).await;
    let skus = ["TEE-BLU-M", "MUG-STN-01", "PEN-GEL-BK"];
    for n in 0..24 {
        let app = if n % 2 == 0 { &first } else { &second };
        let (status, json) = app.api("/admin/inventory/api/adjust_stock", &format!("sku={}&delta=1", skus[n % skus.len()]), Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    assert_stock_events_applied_once_in_order(&first).await;
    assert_eq!(relay_leader(&first).await, leader, "the second instance waits while the first leads");
    let inventory = database(&first, "inventory").await;
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE attempts <> 1").await, 0, "each delivery sent once");

    // A consumer that keeps failing: retried from the table, then a dead letter; replayed once fixed,
    // at once (the replay wakes the leader through the WAL; its backstop sweep is far later).
    let catalog = database(&first, "catalog").await;
    sqlx::query("ALTER TABLE availability RENAME TO availability_away").execute(&catalog).await.unwrap();
    let (status, _) = second.api("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=5", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    eventually("the failing delivery dead-lettered after its retries", || async {
        count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'dead' AND attempts = 2").await == 1
    })
    .await;
    sqlx::query("ALTER TABLE availability_away RENAME TO availability").execute(&catalog).await.unwrap();
    let response = second.post_form("/admin/inventory/events/replay", "", Some(&admin)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_stock_events_applied_once_in_order(&second).await;

    // The leader's relay stops (as with its process): its slot goes with its session, and the other
    // instance takes over.
    first.served.stop_background();
    eventually("the second instance leads", || async { relay_leader(&second).await.is_some_and(|pid| Some(pid) != leader) }).await;
    for sku in skus {
        let (status, _) = second.api("/admin/inventory/api/adjust_stock", &format!("sku={sku}&delta=-1"), Some(&admin)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_stock_events_applied_once_in_order(&second).await;
}

/// Debian's PostgreSQL certificate: it names `localhost` and signs itself, so it is its own authority.
const DEBIAN_SERVER_CERTIFICATE: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The streaming relay, its pools and its replication connection over TLS verified against the test
/// server's own certificate (`sslmode=verify-full`).
fn streamed_over_verified_tls(settings: &mut tessera_site::ShellSettings) {
    streamed_strict(settings);
    let mut url = url::Url::parse(settings.host.store.postgres_url.as_deref().expect("PostgreSQL")).unwrap();
    url.set_host(Some("localhost")).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "verify-full").append_pair("sslrootcert", DEBIAN_SERVER_CERTIFICATE);
    settings.host.store.postgres_url = Some(url.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_relay_reads_its_stream_over_tls_verified_against_the_servers_authority() {
    if !logical_decoding().await {
        return;
    }
    let admin = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap()).await.unwrap();
    let (ssl, cert_file): (String, String) =
        sqlx::query_as("SELECT (SELECT setting FROM pg_settings WHERE name = 'ssl'), (SELECT setting FROM pg_settings WHERE name = 'ssl_cert_file')")
            .fetch_one(&admin)
            .await
            .unwrap();
    if ssl != "on" || cert_file != DEBIAN_SERVER_CERTIFICATE || std::fs::metadata(&cert_file).is_err() {
        let how = format!("the test PostgreSQL serves no TLS with Debian's certificate (ssl = {ssl}, {cert_file})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{how}");
        eprintln!("{how}: skipped");
        return;
    }
    let app = spawn_with(Backend::Postgres, Options { configure: Some(streamed_over_verified_tls), ..Options::default() }).await;
    eventually("the relay leads", || async { relay_leader(&app).await.is_some() }).await;
    let walsender = relay_leader(&app).await.expect("a leader");
    let (encrypted,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = $1").bind(walsender as i32).fetch_one(&admin).await.unwrap();
    assert!(encrypted, "the replication connection is encrypted");
    admin.close().await;
    let ada = app.login_as(ADMIN, PASSWORD).await;
    for sku in ["TEE-BLU-M", "MUG-STN-01"] {
        let (status, json) = app.api("/admin/inventory/api/adjust_stock", &format!("sku={sku}&delta=2"), Some(&ada)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    assert_stock_events_applied_once_in_order(&app).await;
}

#[tokio::test]
async fn the_streaming_relay_without_postgresql_is_refused_at_start_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let mut settings = tessera_site::ShellSettings::default();
    settings.host.server.addr = "127.0.0.1:0".parse().unwrap();
    settings.host.store.data_dir = data.path().to_path_buf();
    settings.host.events.outbox_relay = tessera_host::relay::OutboxRelay::Cdc;
    let error = tessera_site::spawn(&settings, &tessera_site::Mode::Fragment("inventory".into())).await.err().expect("refused");
    assert!(error.to_string().contains("TESSERA_POSTGRES_URL"), "{error}");
}

/// The cluster of the test below (a `fn` configures the app, so the URL waits here).
static CLUSTER_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Events over the three-node cluster, streams kept by all three, retried long enough to outlast a
/// leader election.
fn over_the_cluster(settings: &mut tessera_site::ShellSettings) {
    settings.host.events.nats_url = CLUSTER_URL.get().cloned();
    settings.host.events.nats_prefix = settings.host.store.schema_prefix.trim_end_matches('_').to_owned();
    settings.host.events.nats_replicas = 3;
    settings.host.events.events_base_backoff_ms = 100;
    settings.host.events.events_max_attempts = 30;
}

/// Stock changes flow from inventory to the catalog through a real three-node JetStream cluster while
/// one node is killed, later restarted, and then another is killed: no event is lost or stored twice,
/// each is applied once and in order per SKU, and the catalog ends showing what inventory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_three_node_jetstream_cluster_losing_nodes_loses_no_event_and_applies_each_once_in_order() {
    let Some(mut cluster) = tessera_testing::NatsCluster::start(3) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "nats-server is not installed (apt-get install nats-server)");
        eprintln!("nats-server is not installed: skipped");
        return;
    };
    CLUSTER_URL.set(cluster.url()).expect("one cluster test");
    // The cluster's JetStream takes a replicated stream once its nodes elected a leader.
    let probe = tessera_host::broker::Broker::connect(&cluster.url(), "probe", None).await.unwrap().with_replicas(3);
    let started = std::time::Instant::now();
    while let Err(error) = probe.stream(&ServiceName::INVENTORY).await {
        assert!(started.elapsed() < Duration::from_secs(60), "the cluster's JetStream never became available: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    probe.jetstream().delete_stream(probe.stream_name(&ServiceName::INVENTORY)).await.unwrap();
    let app = spawn_with(Backend::Sqlite, Options { configure: Some(over_the_cluster), ..Options::default() }).await;
    let admin = app.login_as(ADMIN, PASSWORD).await;
    let skus: Vec<&str> = tessera_contracts::demo::PRODUCTS.iter().map(|product| product.sku).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changers: Vec<_> = (0..6)
        .map(|worker| {
            let (http, admin, skus, stop) = (app.http.clone(), admin.clone(), skus.clone(), stop.clone());
            tokio::spawn(async move {
                let mut made = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let body = format!("sku={}&delta=1", skus[(worker + made) % skus.len()]);
                    let (status, json) = http.api("/admin/inventory/api/adjust_stock", &body, Some(&admin)).await;
                    assert_eq!(status, StatusCode::OK, "{json}");
                    made += 1;
                }
                made
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.kill(1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut made = 0;
    for changer in changers {
        made += changer.await.unwrap();
    }
    assert!(made > 100, "only {made} changes were made");
    // Two nodes of three still hold every stream: the rest arrives.
    let inventory = database(&app, "inventory").await;
    let catalog = database(&app, "catalog").await;
    let stock_events = count(&inventory, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.stock_changed'").await;
    let started = std::time::Instant::now();
    while count(&catalog, "SELECT COUNT(*) FROM inbox WHERE event_type = 'inventory.stock_changed'").await < stock_events
        || count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'pending'").await > 0
    {
        assert!(started.elapsed() < Duration::from_secs(120), "events still missing two minutes after the load");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_stock_events_applied_once_in_order(&app).await;
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'dead'").await, 0, "no publish given up");
    assert_eq!(count(&catalog, "SELECT COUNT(*) FROM dead_letters").await, 0, "no event given up");
    // The stream holds each event once: none lost, none stored twice by a publish retried across a failover.
    let broker = tessera_host::broker::Broker::connect(&cluster.url(), &app.settings.host.events.nats_prefix, None).await.unwrap();
    let mut stream = broker.stream(&ServiceName::INVENTORY).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages as i64, count(&inventory, "SELECT COUNT(*) FROM outbox").await);
    assert_eq!(info.config.num_replicas, 3);
    // How the flow went, second by second (received by the catalog), for whoever reads the log.
    let per_second: Vec<(i64, i64)> =
        sqlx::query_as("SELECT received_at_ms / 1000, COUNT(*) FROM inbox WHERE producer = 'inventory' GROUP BY received_at_ms / 1000 ORDER BY 1")
            .fetch_all(&catalog)
            .await
            .unwrap();
    eprintln!("{made} changes; applied per second: {:?}", per_second.iter().map(|(_, n)| *n).collect::<Vec<_>>());
}
