//! The inventory service alone, as its team ships it: its own database (SQLite, and PostgreSQL when
//! configured), staff and shoppers signed in by a key of the test's own, and the cart met only at the
//! contract boundary — its signed calls to the reservation API and the signed order events it sends.
//! Concurrent buyers of the last units, reservations (signed, idempotent, all or nothing, replacing
//! others), order events, refusals of browsers, forgers, shoppers, tampered tokens and bad input, staff
//! movements and pages, the home page's widget. `tessera inventory verify` (the all-in-one binary's
//! command) is tested with the whole site in `site/tests/`.

use reqwest::StatusCode;
use serde_json::{json, Value};
use shared_auth::Role;
use sqlx::AnyPool;
use tessera_contracts::domain::{OrderId, Quantity, ReservationId, ServiceName};
use tessera_contracts::events::{Envelope, Event, OrderCancelled, OrderPaid, StockChanged};
use tessera_contracts::inventory::{reservation_path, ExtendRequest, Line, Reservation, ReservationStatus, ReserveRequest, RESERVATIONS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::outbox::Outbox;
use tessera_fragment::{service::CallError, signature::CallSigner};
use tessera_testing::each_backend;
use tessera_testing::{Alone, Backend, Options};

async fn start(backend: Backend) -> Alone {
    Alone::start(&tessera_inventory::server::Inventory, backend, Options { demo: Some(0), ..Options::default() }).await
}

/// The cart's client of the reservation API.
fn cart(app: &Alone) -> tessera_fragment::service::ServiceClient {
    app.service_client(ServiceName::CART)
}

/// A signed event from the cart, delivered as its relay would.
async fn send_event<E: Event>(app: &Alone, event: &E) -> Result<(), String> {
    app.deliver(ServiceName::CART, event, 1).await.map_err(|error| error.to_string())
}

/// Order `n` (an order id is a UUID's text: hex digits).
fn order(n: u32) -> OrderId {
    format!("{n:08x}").parse().unwrap()
}

async fn count(db: &AnyPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

fn request(key: &str, lines: &[(&str, i64)]) -> ReserveRequest {
    ReserveRequest::new(key, "user-1", lines.iter().map(|(sku, quantity)| Line::of(sku, *quantity).unwrap()).collect())
}

/// A reservation request as JSON, with whatever SKUs and quantities a caller might send.
fn raw_request(key: &str, lines: &[(&str, i64)]) -> Value {
    let lines: Vec<Value> = lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect();
    json!({"idempotency_key": key, "owner": "user-1", "lines": lines, "ttl_seconds": 600})
}

/// Calls an admin server function as `cookie`; returns status and JSON.
async fn admin(app: &Alone, endpoint: &str, body: &str, cookie: &str) -> (StatusCode, Value) {
    app.api(&format!("/admin/inventory/api/{endpoint}"), body, Some(cookie)).await
}

/// Receives `quantity` of a SKU the inventory does not stock yet.
async fn stock_new(app: &Alone, cookie: &str, sku: &str, quantity: i64) {
    let body = format!("sku={sku}&movement=receive&quantity={quantity}&new_sku=true");
    let (status, json) = admin(app, "record_movement", &body, cookie).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

/// (on_hand, soft, hard, unavailable, safety, incoming) of a SKU at the main location.
async fn counters(db: &AnyPool, sku: &str) -> (i64, i64, i64, i64, i64, i64) {
    sqlx::query_as("SELECT on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming FROM stock_levels WHERE sku = $1 AND location = 'main'")
        .bind(sku)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn assert_invariants(db: &AnyPool, context: &str) {
    let report = tessera_inventory::verify::verify(db).await.unwrap();
    assert!(report.violations.is_empty(), "{context}: {:?}", report.violations);
}

each_backend!(five_hundred_buyers_of_the_last_units_never_oversell);
async fn five_hundred_buyers_of_the_last_units_never_oversell(backend: Backend) {
    const UNITS: i64 = 7;
    const BUYERS: usize = 500;
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "HOT-1", UNITS).await;
    let client = cart(&app);
    let attempts = (0..BUYERS).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.post::<_, Reservation>(RESERVATIONS_PATH, &request(&format!("buyer-{i}"), &[("HOT-1", 1)])).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won as i64, UNITS, "{backend:?}: exactly the units on hand were reserved");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        match result {
            CallError::InsufficientStock(short) => {
                assert_eq!(short.shortages[0].sku.as_str(), "HOT-1");
                assert_eq!(short.shortages[0].available, 0);
                assert!(short.message.contains("HOT-1 has 0 available, 1 requested"), "{}", short.message);
            }
            other => panic!("{backend:?}: a losing buyer got {other:?}"),
        }
    }
    let db = app.runtime.db.clone();
    assert_eq!(counters(&db, "HOT-1").await, (UNITS, UNITS, 0, 0, 0, 0));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reservations WHERE status = 'soft'").await, UNITS);
    assert_invariants(&db, "after the rush").await;
}

each_backend!(reservations_are_all_or_nothing_idempotent_and_end_once);
async fn reservations_are_all_or_nothing_idempotent_and_end_once(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "RES-A", 5).await;
    stock_new(&app, &ada, "RES-B", 2).await;
    let client = cart(&app);
    let db = app.runtime.db.clone();

    // All or nothing: B is short, so A is not held either, and the error names B and what is left.
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &request("k1", &[("RES-A", 1), ("RES-B", 3)])).await.unwrap_err();
    let CallError::InsufficientStock(short) = error else { panic!("{backend:?}: {error:?}") };
    assert_eq!(short.shortages.len(), 1);
    assert_eq!((short.shortages[0].sku.as_str(), short.shortages[0].requested, short.shortages[0].available), ("RES-B", 3, 2));
    assert_eq!(counters(&db, "RES-A").await.1, 0, "{backend:?}: nothing held after a refusal");

    // Created once; the same key and body replays the same reservation; another body is a conflict.
    let first: Reservation = client.post(RESERVATIONS_PATH, &request("k2", &[("RES-A", 2), ("RES-B", 2)])).await.unwrap();
    assert_eq!((first.status, first.replayed), (ReservationStatus::Soft, false));
    let again: Reservation = client.post(RESERVATIONS_PATH, &request("k2", &[("RES-B", 2), ("RES-A", 2)])).await.unwrap();
    assert_eq!((again.id.as_str(), again.replayed), (first.id.as_str(), true));
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &request("k2", &[("RES-A", 1)])).await.unwrap_err();
    assert!(matches!(&error, CallError::Api(ApiError::Conflict(m)) if m.contains("already used")), "{error:?}");
    assert_eq!(counters(&db, "RES-A").await, (5, 2, 0, 0, 0, 0));

    // Another service cannot see or touch the cart's reservation: the API is the cart's alone.
    let other = app.service_client(ServiceName::CATALOG);
    let error = other.post::<_, Reservation>(&reservation_path(&first.id, Some("release")), &json!({})).await.unwrap_err();
    assert!(matches!(&error, CallError::Api(ApiError::Forbidden(m)) if m.contains("not catalog")), "{error:?}");

    // Extend, read back, release twice (the second changes nothing), then extending is refused.
    let extended: Reservation = client.post(&reservation_path(&first.id, Some("extend")), &ExtendRequest { ttl_seconds: 1200 }).await.unwrap();
    assert!(extended.expires_at_ms > first.expires_at_ms);
    let shown: Reservation = client.get(&reservation_path(&first.id, None)).await.unwrap();
    assert_eq!(shown.expires_at_ms, extended.expires_at_ms);
    for _ in 0..2 {
        let released: Reservation = client.post(&reservation_path(&first.id, Some("release")), &json!({})).await.unwrap();
        assert_eq!(released.status, ReservationStatus::Released);
    }
    let error = client.post::<_, Reservation>(&reservation_path(&first.id, Some("extend")), &ExtendRequest { ttl_seconds: 60 }).await.unwrap_err();
    assert!(matches!(&error, CallError::Api(ApiError::Conflict(m)) if m.contains("released")), "{error:?}");
    assert_eq!(counters(&db, "RES-A").await, (5, 0, 0, 0, 0, 0));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM ledger WHERE kind = 'CANCELLED'").await, 2, "{backend:?}: one ending per line");

    // Expiry: a lapsed hold is ignored when stock runs short and the sweeper frees the rest.
    let hold: Reservation = client.post(RESERVATIONS_PATH, &request("k3", &[("RES-B", 2)])).await.unwrap();
    let outbox = Outbox::new(ServiceName::INVENTORY);
    outbox.subscribe(&db, StockChanged::TYPE, &ServiceName::CATALOG).await.unwrap();
    let later = hold.expires_at_ms + 1;
    let swept = tessera_inventory::reservations::sweep(&db, &outbox, later, 100).await.unwrap();
    assert_eq!(swept, 1);
    assert_eq!(tessera_inventory::reservations::sweep(&db, &outbox, later, 100).await.unwrap(), 0, "expired once");
    let shown: Reservation = client.get(&reservation_path(&hold.id, None)).await.unwrap();
    assert_eq!(shown.status, ReservationStatus::Expired);
    assert_eq!(counters(&db, "RES-B").await.1, 0);
    assert_invariants(&db, "after the lifecycle").await;
}

each_backend!(a_reservation_can_replace_others_atomically);
async fn a_reservation_can_replace_others_atomically(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "REP-A", 4).await;
    let client = cart(&app);
    let db = app.runtime.db.clone();
    let replacing = |key: &str, quantity: i64, replaces: Vec<ReservationId>| ReserveRequest { replaces, ..request(key, &[("REP-A", quantity)]) };

    // A cart line of 3 grows to 4: its own 3 count towards the new hold (only 1 is free).
    let line: Reservation = client.post(RESERVATIONS_PATH, &request("line-1", &[("REP-A", 3)])).await.unwrap();
    let grown: Reservation = client.post(RESERVATIONS_PATH, &replacing("line-2", 4, vec![line.id.clone()])).await.unwrap();
    assert_eq!(counters(&db, "REP-A").await.1, 4, "{backend:?}: replaced, not added");
    let old: Reservation = client.get(&reservation_path(&line.id, None)).await.unwrap();
    assert_eq!(old.status, ReservationStatus::Released);

    // Refused (5 > 4): the replaced hold stays as it was.
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &replacing("line-3", 5, vec![grown.id.clone()])).await.unwrap_err();
    assert!(matches!(error, CallError::InsufficientStock(_)), "{error:?}");
    let kept: Reservation = client.get(&reservation_path(&grown.id, None)).await.unwrap();
    assert_eq!(kept.status, ReservationStatus::Soft);

    // Only the caller's own reservations, only ids, only a bounded number; nothing changes otherwise.
    let other = app.service_client(ServiceName::CATALOG);
    let error = other.post::<_, Reservation>(RESERVATIONS_PATH, &replacing("steal", 1, vec![grown.id.clone()])).await.unwrap_err();
    assert!(matches!(error, CallError::Api(ApiError::Forbidden(_))), "{error:?}");
    let mut bad_id = serde_json::to_value(replacing("bad-id", 1, Vec::new())).unwrap();
    bad_id["replaces"] = json!(["'; DROP TABLE x"]);
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &bad_id).await.unwrap_err();
    assert!(matches!(error, CallError::Api(ApiError::BadRequest(_))), "{error:?}");
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &replacing("too-many", 1, vec![grown.id.clone(); 51])).await.unwrap_err();
    assert!(matches!(error, CallError::Api(ApiError::BadRequest(_))), "{error:?}");
    assert_eq!(counters(&db, "REP-A").await.1, 4);
    assert_invariants(&db, "after replacing").await;
}

/// The PostgreSQL database of the lock-order test alone, so that its deadlock count is its own.
const LOCK_ORDER_DATABASE: &str = "tessera_lock_order";

/// How many deadlocks PostgreSQL has counted in `database` (`None` on SQLite).
async fn deadlocks(database: &str) -> Option<i64> {
    let url = tessera_testing::postgres_url()?;
    let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT CAST(COALESCE(MAX(deadlocks), 0) AS BIGINT) FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    Some(count)
}

each_backend!(carts_and_event_batches_taking_skus_in_opposite_orders_wait_instead_of_deadlocking);
async fn carts_and_event_batches_taking_skus_in_opposite_orders_wait_instead_of_deadlocking(backend: Backend) {
    const CARTS: usize = 8;
    const ROUNDS: usize = 12;
    sqlx::any::install_default_drivers();
    let before = if backend == Backend::Postgres {
        let url = tessera_testing::postgres_url().unwrap();
        let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
        // Another test binary may create it at the same moment: "already exists" either way.
        let _ = sqlx::query(&format!("CREATE DATABASE {LOCK_ORDER_DATABASE}")).execute(&mut connection).await;
        deadlocks(LOCK_ORDER_DATABASE).await
    } else {
        None
    };
    let options = Options {
        demo: Some(0),
        configure: Some(|settings| {
            if let Some(url) = settings.store.postgres_url.take() {
                let (server, _) = url.rsplit_once('/').expect("a database URL");
                settings.store.postgres_url = Some(format!("{server}/{LOCK_ORDER_DATABASE}"));
            }
        }),
        ..Options::default()
    };
    let app = Alone::start(&tessera_inventory::server::Inventory, backend, options).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "ORD-A", 1_000).await;
    stock_new(&app, &ada, "ORD-B", 1_000).await;
    let client = cart(&app);
    // Each cart swaps between holding B alone and holding A and B, replacing its previous hold: growing
    // releases B before it holds A, shrinking releases A before B. Unordered, two carts deadlock.
    let carts = (0..CARTS).map(|cart| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut held: Option<ReservationId> = None;
            for round in 0..ROUNDS * 2 {
                let lines: &[(&str, i64)] = if (round + cart) % 2 == 0 { &[("ORD-B", 1)] } else { &[("ORD-A", 1), ("ORD-B", 1)] };
                let next = ReserveRequest { replaces: held.iter().cloned().collect(), ..request(&format!("cart-{cart}-{round}"), lines) };
                let reservation: Reservation =
                    client.post(RESERVATIONS_PATH, &next).await.unwrap_or_else(|error| panic!("cart {cart} round {round}: {error:?}"));
                held = Some(reservation.id);
            }
        })
    });
    for cart in futures::future::join_all(carts).await {
        cart.unwrap();
    }
    let db = app.runtime.db.clone();
    // Every cart ends holding A and B (its last round is odd-even mixed: count what is live).
    let live =
        count(&db, "SELECT COUNT(*) FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id WHERE r.status = 'soft' AND l.sku = 'ORD-A'").await;
    assert_eq!(counters(&db, "ORD-A").await.1, live, "{backend:?}: A's soft count is its live holds");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reservations WHERE status = 'soft'").await, CARTS as i64, "{backend:?}: one live hold per cart");
    assert_invariants(&db, "after the carts").await;

    // A batch of paid orders applied in one transaction (as a broker consumer or the batch endpoint does),
    // its orders' SKUs in the opposite order of carts reserving both at the same moment.
    let paid = |order: OrderId, held: &Reservation| {
        let event = OrderPaid { order_id: order, reservation_id: held.id.clone(), lines: held.lines.clone() };
        Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: OrderPaid::TYPE.into(),
            version: OrderPaid::VERSION,
            aggregate_type: OrderPaid::AGGREGATE.into(),
            aggregate_id: event.aggregate_id(),
            sequence: 1,
            occurred_at_ms: tessera_fragment::db::now_ms(),
            producer: ServiceName::CART,
            payload: serde_json::to_value(&event).unwrap(),
        }
    };
    let subscription = app.runtime.events.subscriptions.get(OrderPaid::TYPE).unwrap();
    for round in 0..ROUNDS as u32 {
        let on_b: Reservation = client.post(RESERVATIONS_PATH, &request(&format!("paid-b-{round}"), &[("ORD-B", 1)])).await.unwrap();
        let on_a: Reservation = client.post(RESERVATIONS_PATH, &request(&format!("paid-a-{round}"), &[("ORD-A", 1)])).await.unwrap();
        let batch = [paid(order(1000 + 2 * round), &on_b), paid(order(1001 + 2 * round), &on_a)];
        let carts = (0..4).map(|cart| {
            let client = client.clone();
            tokio::spawn(async move {
                client.post::<_, Reservation>(RESERVATIONS_PATH, &request(&format!("both-{round}-{cart}"), &[("ORD-A", 1), ("ORD-B", 1)])).await
            })
        });
        let pairs = [(subscription, &batch[0]), (subscription, &batch[1])];
        let applying = tessera_fragment::inbox::apply_batch(&app.runtime, &pairs, &[]);
        let (applied, carts) = tokio::join!(applying, futures::future::join_all(carts));
        for outcome in applied.unwrap() {
            assert!(matches!(outcome, tessera_fragment::inbox::Applied::Done(true)), "{backend:?} round {round}: {outcome:?}");
        }
        for cart in carts {
            cart.unwrap().unwrap();
        }
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reservations WHERE status = 'hard'").await, 2 * ROUNDS as i64, "{backend:?}: every order held hard");
    assert_invariants(&db, "after the batches").await;
    drop(app);
    // A PostgreSQL backend reports its counts when it ends: close the pool, then give them a moment.
    db.close().await;
    if let Some(before) = before {
        let mut after = before;
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            after = deadlocks(LOCK_ORDER_DATABASE).await.unwrap();
        }
        assert_eq!(after - before, 0, "PostgreSQL broke {} deadlocks between the carts and the batches", after - before);
    }
}

each_backend!(an_order_is_held_hard_when_paid_released_when_cancelled_and_consumed_when_fulfilled);
async fn an_order_is_held_hard_when_paid_released_when_cancelled_and_consumed_when_fulfilled(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "ORD-1", 10).await;
    let client = cart(&app);
    let db = app.runtime.db.clone();

    let paid: Reservation = client.post(RESERVATIONS_PATH, &request("o1", &[("ORD-1", 3)])).await.unwrap();
    let event = OrderPaid { order_id: order(1), reservation_id: paid.id.clone(), lines: paid.lines.clone() };
    send_event(&app, &event).await.unwrap();
    send_event(&app, &event).await.unwrap(); // a second delivery (new id) finds the order reserved
    assert_eq!(counters(&db, "ORD-1").await, (10, 0, 3, 0, 0, 0), "{backend:?}: soft became hard");

    let cancelled: Reservation = client.post(RESERVATIONS_PATH, &request("o2", &[("ORD-1", 4)])).await.unwrap();
    send_event(&app, &OrderPaid { order_id: order(2), reservation_id: cancelled.id.clone(), lines: cancelled.lines.clone() }).await.unwrap();
    send_event(&app, &OrderCancelled { order_id: order(2), reservation_id: cancelled.id.clone() }).await.unwrap();
    assert_eq!(counters(&db, "ORD-1").await, (10, 0, 3, 0, 0, 0), "{backend:?}: the cancelled order's units are back");

    // A paid order whose hold lapsed is reserved again, hard, while the stock is there.
    let lapsed_id: ReservationId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    let two = Quantity::parse(2).unwrap();
    send_event(&app, &OrderPaid { order_id: order(3), reservation_id: lapsed_id, lines: vec![Line { sku: "ORD-1".parse().unwrap(), quantity: two }] })
        .await
        .unwrap();
    assert_eq!(counters(&db, "ORD-1").await.2, 5);
    // …and when it is not, the order is reported short and nothing changes.
    let (gone, nine) = ("dead-beef".parse().unwrap(), Quantity::parse(9).unwrap());
    send_event(&app, &OrderPaid { order_id: order(4), reservation_id: gone, lines: vec![Line { sku: "ORD-1".parse().unwrap(), quantity: nine }] })
        .await
        .unwrap();
    assert_eq!(counters(&db, "ORD-1").await.2, 5);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.order_short'").await, 1);

    // Staff fulfil the paid order: the units leave on-hand and the hold; a second click is a conflict.
    let (status, json) = admin(&app, "fulfil_order", &format!("reservation_id={}", paid.id), &ada).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(counters(&db, "ORD-1").await, (7, 0, 2, 0, 0, 0));
    let (status, json) = admin(&app, "fulfil_order", &format!("reservation_id={}", paid.id), &ada).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'inventory.order_fulfilled'").await, 1);
    // A cancellation after shipping is refused loudly (it would dead-letter), not half-applied.
    let refused = send_event(&app, &OrderCancelled { order_id: order(1), reservation_id: paid.id.clone() }).await.unwrap_err();
    assert!(refused.contains("422") && refused.contains("already fulfilled"), "{refused}");
    assert_eq!(counters(&db, "ORD-1").await, (7, 0, 2, 0, 0, 0));
    assert_invariants(&db, "after orders").await;
}

each_backend!(the_reservation_api_is_closed_to_browsers_and_forgers);
async fn the_reservation_api_is_closed_to_browsers_and_forgers(backend: Backend) {
    let app = start(backend).await;
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let body = serde_json::to_vec(&request("mine", &[("MUG-STN-01", 1)])).unwrap();
    let post = |headers: Vec<(&'static str, String)>, cookie: Option<&str>, path: &str| {
        let mut builder = app.client.post(format!("{}{path}", app.url)).header("content-type", "application/json").body(body.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Some(cookie) = cookie {
            builder = builder.header("cookie", cookie);
        }
        builder.send()
    };
    let now = tessera_fragment::db::now_seconds();
    let renamed = |mut headers: [(&'static str, String); 3], caller: &str| {
        headers[0].1 = caller.to_owned();
        headers.to_vec()
    };
    let right = CallSigner::keyed(app.signer_of(ServiceName::CART));
    let catalog = CallSigner::keyed(app.signer_of(ServiceName::CATALOG));
    // A secret shared with a third party (the payment API's scheme) is no key of the cart's.
    let shared = CallSigner::shared(ServiceName::CART, &[b"a-payment-api-secret-0123456789abcdef".to_vec()]);
    let event_signer = app.signer_of(ServiceName::CART);
    type Case<'a> = (&'a str, Vec<(&'static str, String)>, Option<&'a str>, &'a str);
    let with_query = format!("{RESERVATIONS_PATH}?owner=someone-else");
    let cases: Vec<Case> = vec![
        ("a signed call sent again with a query", right.sign("POST", RESERVATIONS_PATH, &body, now).to_vec(), None, &with_query),
        ("another service, signing as itself", catalog.sign("POST", RESERVATIONS_PATH, &body, now).to_vec(), None, RESERVATIONS_PATH),
        ("another service, naming the cart", renamed(catalog.sign("POST", RESERVATIONS_PATH, &body, now), "cart"), None, RESERVATIONS_PATH),
        ("a signed-in shopper", vec![], Some(&sam), RESERVATIONS_PATH),
        ("anonymous", vec![], None, RESERVATIONS_PATH),
        ("signed with a shared secret", shared.sign("POST", RESERVATIONS_PATH, &body, now).to_vec(), None, RESERVATIONS_PATH),
        ("signed for another path", right.sign("POST", "/admin/inventory/service/other", &body, now).to_vec(), None, RESERVATIONS_PATH),
        ("an old captured call", right.sign("POST", RESERVATIONS_PATH, &body, now - 3600).to_vec(), None, RESERVATIONS_PATH),
        ("an event signature", event_signer.sign(&body, now).to_vec(), None, RESERVATIONS_PATH),
    ];
    for (what, headers, cookie, path) in cases {
        let response = post(headers, cookie, path).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{backend:?}: {what}");
        let error: ApiError = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(error.to_string().contains("for Tessera services only"), "{what}: {error}");
    }
    // A key nobody published for the cart: the callee cannot tell a forger from a new instance of the
    // cart, so it answers "not yet" (and looks again); never a reservation.
    let stranger = CallSigner::keyed(Alone::stranger(ServiceName::CART));
    let response = post(stranger.sign("POST", RESERVATIONS_PATH, &body, now).to_vec(), None, RESERVATIONS_PATH).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{backend:?}: an unknown key");
    let answer = response.text().await.unwrap();
    assert!(answer.contains(tessera_fragment::signature::UNKNOWN_KEY_REFUSAL), "{answer}");
    let db = app.runtime.db.clone();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reservations").await, 0, "{backend:?}: nothing was reserved");
}

each_backend!(events_are_taken_only_from_the_producer_that_owns_their_type);
async fn events_are_taken_only_from_the_producer_that_owns_their_type(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    stock_new(&app, &ada, "OWN-1", 10).await;
    let held: Reservation = cart(&app).post(RESERVATIONS_PATH, &request("own-1", &[("OWN-1", 3)])).await.unwrap();
    // The catalog signs with its own key, which inventory trusts, but `cart.order_paid` is the cart's to publish.
    let forged = OrderPaid { order_id: order(9), reservation_id: held.id.clone(), lines: held.lines.clone() };
    let refused = app.deliver(ServiceName::CATALOG, &forged, 1).await.unwrap_err().to_string();
    assert!(refused.contains("403") && refused.contains("catalog may not publish"), "{backend:?}: {refused}");
    let db = app.runtime.db.clone();
    assert_eq!(counters(&db, "OWN-1").await, (10, 3, 0, 0, 0, 0), "{backend:?}: still a soft hold");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 0);
    // From the cart, the same event is applied.
    send_event(&app, &forged).await.unwrap();
    assert_eq!(counters(&db, "OWN-1").await, (10, 0, 3, 0, 0, 0), "{backend:?}: now hard");
}

each_backend!(bad_reservation_requests_get_a_clear_4xx_and_change_nothing);
async fn bad_reservation_requests_get_a_clear_4xx_and_change_nothing(backend: Backend) {
    let app = start(backend).await;
    let client = cart(&app);
    let db = app.runtime.db.clone();
    let before = (count(&db, "SELECT COUNT(*) FROM ledger").await, counters(&db, "MUG-STN-01").await);
    let many: Vec<(String, i64)> = (0..51).map(|i| (format!("SKU-{i}"), 1)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("zero", raw_request("b1", &[("MUG-STN-01", 0)]), "between 1 and 99"),
        ("negative", raw_request("b2", &[("MUG-STN-01", -3)]), "between 1 and 99"),
        ("huge", raw_request("b3", &[("MUG-STN-01", 1_000_000_000_000)]), "between 1 and 99"),
        ("beyond i64", json!({"idempotency_key": "b4", "owner": "u", "lines": [{"sku": "MUG-STN-01", "quantity": 1e30}]}), "invalid request body"),
        ("no lines", raw_request("b5", &[]), "1 to 50 lines"),
        ("too many lines", raw_request("b6", &many), "1 to 50 lines"),
        ("the same SKU twice", raw_request("b7", &[("MUG-STN-01", 1), ("MUG-STN-01", 2)]), "two lines"),
        ("a malformed SKU", raw_request("b8", &[("mug; drop", 1)]), "not a SKU"),
        ("no key", raw_request("", &[("MUG-STN-01", 1)]), "idempotency_key"),
        ("a huge key", raw_request(&"k".repeat(129), &[("MUG-STN-01", 1)]), "idempotency_key"),
        ("a short hold", json!({"idempotency_key": "b9", "owner": "u", "lines": [{"sku": "MUG-STN-01", "quantity": 1}], "ttl_seconds": 1}), "ttl_seconds"),
        (
            "a week-long hold",
            json!({"idempotency_key": "b10", "owner": "u", "lines": [{"sku": "MUG-STN-01", "quantity": 1}], "ttl_seconds": 604800}),
            "ttl_seconds",
        ),
        ("not JSON", json!("lines"), "invalid request body"),
    ];
    for (what, body, needle) in cases {
        let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &body).await.unwrap_err();
        assert!(matches!(&error, CallError::Api(ApiError::BadRequest(m)) if m.contains(needle)), "{backend:?} {what}: {error:?}");
    }
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &request("b11", &[("NOPE-1", 1)])).await.unwrap_err();
    assert!(matches!(&error, CallError::Api(ApiError::NotFound(m)) if m.contains("NOPE-1")), "{error:?}");
    let error = client.post::<_, Reservation>(RESERVATIONS_PATH, &json!({"idempotency_key": "x".repeat(20_000)})).await.unwrap_err();
    assert!(matches!(&error, CallError::Unavailable { message, .. } if message.contains("413")), "oversized: {error:?}");
    let error = client.get::<Reservation>(&format!("{RESERVATIONS_PATH}/not-a-reservation")).await.unwrap_err();
    assert!(matches!(error, CallError::Api(ApiError::NotFound(_))), "{error:?}");
    let error = client.post::<_, Reservation>(&format!("{RESERVATIONS_PATH}/{}/release", "a".repeat(200)), &json!({})).await.unwrap_err();
    assert!(matches!(error, CallError::Api(ApiError::NotFound(_))), "{error:?}");
    let after = (count(&db, "SELECT COUNT(*) FROM ledger").await, counters(&db, "MUG-STN-01").await);
    assert_eq!(before, after, "{backend:?}: nothing changed");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reservations").await, 0);
}

each_backend!(staff_movements_are_checked_recorded_and_shown);
async fn staff_movements_are_checked_recorded_and_shown(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let db = app.runtime.db.clone();
    stock_new(&app, &ada, "MOVE-1", 20).await;
    let record = |body: String| {
        let (app, ada) = (&app, ada.clone());
        async move { admin(app, "record_movement", &format!("sku=MOVE-1&{body}"), &ada).await }
    };
    for (body, expected) in [
        ("movement=order&quantity=30&reason=PO-7", (20, 0, 0, 0, 0, 30)),
        ("movement=receive&quantity=12", (32, 0, 0, 0, 0, 18)),
        ("movement=shrinkage&quantity=2&reason=broken%20in%20transit", (30, 0, 0, 0, 0, 18)),
        ("movement=return&quantity=3&damaged=true&reason=order-9", (33, 0, 0, 3, 0, 18)),
        ("movement=shrinkage&quantity=1&damaged=true&reason=binned", (32, 0, 0, 2, 0, 18)),
        ("movement=return&quantity=1&reason=order-10", (33, 0, 0, 2, 0, 18)),
        ("movement=adjust&counter=safety_stock&quantity=5&reason=buffer", (33, 0, 0, 2, 5, 18)),
        ("movement=adjust&counter=on_hand&quantity=-3&reason=count", (30, 0, 0, 2, 5, 18)),
    ] {
        let (status, json) = record(body.to_owned()).await;
        assert_eq!(status, StatusCode::OK, "{backend:?} {body}: {json}");
        assert_eq!(counters(&db, "MOVE-1").await, expected, "{backend:?} after {body}");
    }
    let ledger_rows = count(&db, "SELECT COUNT(*) FROM ledger").await;
    for (body, expected, needle) in [
        ("movement=receive&quantity=0", StatusCode::BAD_REQUEST, "between 1 and 10000"),
        ("movement=receive&quantity=-4", StatusCode::BAD_REQUEST, "between 1 and 10000"),
        ("movement=receive&quantity=99999999999", StatusCode::BAD_REQUEST, "between 1 and 10000"),
        ("movement=receive&quantity=lots", StatusCode::BAD_REQUEST, "invalid request"),
        ("movement=shrinkage&quantity=1", StatusCode::BAD_REQUEST, "reason"),
        ("movement=shrinkage&quantity=29&reason=x", StatusCode::CONFLICT, "only 28 unreserved units"),
        ("movement=shrinkage&quantity=3&damaged=true&reason=x", StatusCode::CONFLICT, "only 2 damaged units"),
        ("movement=adjust&counter=safety_stock&quantity=-6&reason=x", StatusCode::CONFLICT, "safety stock"),
        ("movement=adjust&counter=bogus&quantity=1&reason=x", StatusCode::BAD_REQUEST, "not a counter"),
        ("movement=adjust&quantity=0&reason=x", StatusCode::BAD_REQUEST, "adjustment"),
        ("movement=teleport&quantity=1", StatusCode::BAD_REQUEST, "not a movement"),
        ("movement=receive&quantity=1&location=Main%20Hall", StatusCode::BAD_REQUEST, "not a location"),
        ("movement=receive&quantity=1&location=annex", StatusCode::NOT_FOUND, "not stocked at annex"),
    ] {
        let (status, json) = record(body.to_owned()).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
        assert!(json.to_string().contains(needle), "{backend:?} {body}: {json}");
    }
    let long_reason = format!("movement=adjust&quantity=1&reason={}", "x".repeat(201));
    assert_eq!(record(long_reason).await.0, StatusCode::BAD_REQUEST);
    let (status, _) = admin(&app, "record_movement", "sku=NOPE-9&movement=receive&quantity=1", &ada).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a typo does not create stock");
    let (status, _) = admin(&app, "record_movement", "sku=MOVE-1&movement=receive&quantity=1", &sam).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "shoppers cannot move stock");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM ledger").await, ledger_rows, "{backend:?}: refusals recorded nothing");
    assert_eq!(counters(&db, "MOVE-1").await, (30, 0, 0, 2, 5, 18));

    // The SKU page shows the counters, the chart and every movement with its cause.
    let (status, html) = app.text("/admin/inventory/sku/MOVE-1", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"stock-chart\"") && html.contains("<polyline"), "chart");
    for kind in ["RECEIVED", "ORDERED", "SHRINKAGE", "RETURNED", "ADJUSTMENT"] {
        assert!(html.contains(&format!("data-kind=\"{kind}\"")), "{backend:?}: {kind} in the ledger");
    }
    assert!(html.contains("broken in transit") && html.contains("PO-7"));
    let (status, _) = app.text("/admin/inventory/sku/NOPE-9", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "the page renders and says the SKU is not stocked");
    let (status, _) = app.text("/admin/inventory/sku/MOVE-1", Some(&sam)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_invariants(&db, "after movements").await;
}

#[tokio::test]
async fn the_stock_table_searches_filters_sorts_and_pages() {
    let app = start(Backend::Sqlite).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    for i in 0..60 {
        stock_new(&app, &ada, &format!("BULK-{i:03}"), 10 + i).await;
    }
    // Text without Leptos's hydration markers.
    let page = |query: &str| {
        let (app, ada) = (&app, ada.clone());
        let query = query.to_owned();
        async move { app.text(&format!("/admin/inventory?{query}"), Some(&ada)).await.1.replace("<!>", "") }
    };
    let html = page("q=bulk").await;
    assert!(html.contains("Page 1 of 2 (60 SKUs)"), "60 matches on two pages");
    assert!(html.contains("BULK-000") && !html.contains("BULK-050"), "sorted by SKU, first page");
    let html = page("q=bulk&page=2").await;
    assert!(html.contains("BULK-059") && !html.contains("BULK-000"));
    let html = page("q=bulk&sort=on_hand&desc=true").await;
    let (first, last) = (html.find("BULK-059").unwrap(), html.find("BULK-020").unwrap());
    assert!(first < last, "highest on-hand first");
    let html = page("low=true").await;
    assert!(html.contains("CAP-BLK-01") && !html.contains("BULK-0"), "only low stock");
    let html = page("q=%25%27;--&page=-5&sort=drop%20table").await;
    assert!(html.contains("data-testid=\"stock-table\""), "odd filters are harmless");
    let (status, json) = admin(&app, "stock_page", "query[q]=BULK-05&query[sort]=available", &ada).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["total"], 10);
    let (status, html) = app.text("/admin/inventory/reservations?filter=all", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"reservations\""));
    let (status, json) = admin(&app, "reservation_page", "filter=bogus&page=1", &ada).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
}

each_backend!(inventory_is_for_inventory_admins_only);
async fn inventory_is_for_inventory_admins_only(backend: Backend) {
    let app = start(backend).await;
    let (status, html) = app.text("/admin/inventory", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Please sign in") && html.contains("<header id=\"tessera-chrome\"></header>"), "a page with the chrome's slot");
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let (status, html) = app.text("/admin/inventory", Some(&sam)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Not allowed"), "{html}");
    assert!(!html.contains("PEN-GEL-BK"), "no stock data leaks into the 403 page");

    for (endpoint, body) in [
        ("stock_page", ""),
        ("adjust_stock", "sku=PEN-GEL-BK&delta=5"),
        ("sku_detail", "sku=MUG-STN-01"),
        ("reservation_page", "filter=all&page=1"),
        ("fulfil_order", "reservation_id=x"),
    ] {
        let (status, _) = app.api(&format!("/admin/inventory/api/{endpoint}"), body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{endpoint} anonymous");
        let (status, json) = admin(&app, endpoint, body, &sam).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{endpoint} shopper: {json}");
    }
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    let (status, json) = admin(&app, "stock_page", "", &ada).await;
    assert_eq!(status, StatusCode::OK);
    let pen = json["rows"].as_array().unwrap().iter().find(|level| level["sku"] == "PEN-GEL-BK").unwrap().clone();
    assert_eq!(pen["on_hand"], 4, "the shopper's attempts changed nothing");
}

#[tokio::test]
async fn a_shoppers_token_with_admin_roles_swapped_in_reaches_no_admin_endpoint() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = start(Backend::Sqlite).await;
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let (name, token) = sam.split_once('=').unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["shopper", "inventory_admin", "admin"]);
    let swapped = format!("{name}={}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
    let (status, _) = app.text("/admin/inventory", Some(&swapped)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a signature that does not match is nobody");
    for (endpoint, body) in
        [("adjust_stock", "sku=PEN-GEL-BK&delta=-4"), ("stock_page", ""), ("record_movement", "sku=PEN-GEL-BK&movement=shrinkage&quantity=4&reason=x")]
    {
        let (status, json) = admin(&app, endpoint, body, &swapped).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{endpoint}: {json}");
    }
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    let (_, json) = admin(&app, "stock_page", "", &ada).await;
    let pen = json["rows"].as_array().unwrap().iter().find(|level| level["sku"] == "PEN-GEL-BK").unwrap().clone();
    assert_eq!(pen["on_hand"], 4, "no hostile request changed the stock");
}

each_backend!(stock_adjustments_are_checked_and_never_go_below_zero);
async fn stock_adjustments_are_checked_and_never_go_below_zero(backend: Backend) {
    let app = start(backend).await;
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    let (status, json) = admin(&app, "adjust_stock", "sku=PEN-GEL-BK&delta=3", &ada).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["on_hand"], 7);
    let cases = [
        ("sku=PEN-GEL-BK&delta=-8", StatusCode::CONFLICT),
        ("sku=PEN-GEL-BK&delta=0", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK&delta=10001", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK&delta=-9223372036854775808", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK", StatusCode::BAD_REQUEST),
        ("sku=NOPE-1&delta=1", StatusCode::NOT_FOUND),
        ("sku=bad sku&delta=1", StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        let (status, json) = admin(&app, "adjust_stock", body, &ada).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
    }
    let (_, json) = admin(&app, "adjust_stock", "sku=PEN-GEL-BK&delta=-7", &ada).await;
    assert_eq!(json["on_hand"], 0, "{backend:?}: every refused adjustment changed nothing");
}

#[tokio::test]
async fn the_home_page_widget_lists_low_stock_for_staff_only() {
    let app = start(Backend::Sqlite).await;
    // Refused for guests and shoppers: the shell leaves a refused widget out of the home page.
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    for cookie in [None, Some(sam.as_str())] {
        let (status, html) = app.text("/admin/inventory/widget", cookie).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cookie:?}");
        assert!(!html.contains("CAP-BLK-01"), "no stock data for {cookie:?}");
    }
    let ada = app.cookie_of(&Alone::user("ada", &[Role::InventoryAdmin]));
    let (status, html) = app.text("/admin/inventory/widget", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Low stock") && html.contains("/admin/inventory/sku/CAP-BLK-01"), "the widget links low SKUs: {html}");
}

each_backend!(an_event_enqueued_in_a_rolled_back_transaction_never_exists);
async fn an_event_enqueued_in_a_rolled_back_transaction_never_exists(backend: Backend) {
    let app = Alone::start(&tessera_inventory::server::Inventory, backend, Options::default()).await;
    let db = app.runtime.db.clone();
    let outbox = Outbox::new(ServiceName::INVENTORY);
    outbox.subscribe(&db, <StockChanged as tessera_contracts::events::Event>::TYPE, &ServiceName::CATALOG).await.unwrap();
    let event = StockChanged { sku: "MUG-STN-01".parse().unwrap(), on_hand: 1, available: 1 };
    let mut tx = db.begin().await.unwrap();
    outbox.enqueue(&mut tx, &event).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 0, "{backend:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_deliveries").await, 0);
    let mut tx = db.begin().await.unwrap();
    outbox.enqueue(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_deliveries WHERE subscriber = 'catalog' AND status = 'pending'").await, 1);
}
