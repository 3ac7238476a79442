//! The cart alone, as its team ships it: its own database (SQLite, and PostgreSQL when configured),
//! shoppers signed in by a key of the test's own, and the rest of the site met only at the contract
//! boundary — the catalog and inventory as the signed events they send (`catalog.product_changed`,
//! `inventory.stock_changed`), and inventory's reservation API as a test double of that contract
//! ([`Inventory`]). Checkout, payment and orders cross fragments and are tested in `site/tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode as Http};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use shared_auth::Role;
use tessera_contracts::events::{ProductChanged, StockChanged};
use tessera_contracts::inventory::{InsufficientStock, Reservation, ReservationStatus, ReserveRequest, Shortage, RESERVATIONS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::{service::verify_caller, signature::CallSigner};
use tessera_testing::each_backend;
use tessera_testing::{Alone, Backend, Double, Options, StatusCode, EVENTS_SECRET, SERVICE_SECRET};

/// Inventory's reservation contract, kept in memory: signed calls only, all-or-nothing holds against
/// the units on hand, replacements released in the same step, replays by idempotency key.
#[derive(Default)]
struct Inventory {
    on_hand: Mutex<HashMap<String, i64>>,
    reservations: Mutex<Vec<(String, Reservation)>>,
    /// Every caller whose signature checked out, in order.
    callers: Mutex<Vec<String>>,
    down: AtomicBool,
}

impl Inventory {
    fn with_stock(stock: &[(&str, i64)]) -> Arc<Inventory> {
        let inventory = Inventory::default();
        inventory.on_hand.lock().unwrap().extend(stock.iter().map(|(sku, units)| (sku.to_string(), *units)));
        Arc::new(inventory)
    }

    /// The live (soft) reservations, as (sku, quantity) lines.
    fn held(&self) -> Vec<(String, i64)> {
        let reservations = self.reservations.lock().unwrap();
        let live = reservations.iter().filter(|(_, r)| r.status == ReservationStatus::Soft);
        let mut lines: Vec<(String, i64)> = live.flat_map(|(_, r)| r.lines.iter().map(|l| (l.sku.clone(), l.quantity))).collect();
        lines.sort();
        lines
    }

    fn double(self: &Arc<Inventory>) -> Double {
        let router = Router::new()
            .route(RESERVATIONS_PATH, post(reserve))
            .route(&format!("{RESERVATIONS_PATH}/{{id}}/release"), post(release))
            .route(&format!("{RESERVATIONS_PATH}/{{id}}/extend"), post(extend))
            .with_state(self.clone());
        Double { name: "inventory", prefix: "/admin/inventory", router }
    }

    /// Why a call is refused: inventory is down, or the call is not the cart's signed call.
    fn refusal(&self, headers: &HeaderMap, path: &str, body: &[u8]) -> Option<Response> {
        if self.down.load(Ordering::SeqCst) {
            return Some((Http::SERVICE_UNAVAILABLE, Json(ApiError::Unavailable("inventory is restarting".into()))).into_response());
        }
        let signer = CallSigner::new(&[SERVICE_SECRET.as_bytes().to_vec()]);
        match verify_caller(&signer, headers, &Method::POST, path, body) {
            Ok(caller) => {
                self.callers.lock().unwrap().push(caller);
                None
            }
            Err(error) => Some((Http::FORBIDDEN, Json(error)).into_response()),
        }
    }
}

async fn reserve(State(inventory): State<Arc<Inventory>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = inventory.refusal(&headers, RESERVATIONS_PATH, &body) {
        return refusal;
    }
    let Ok(request) = serde_json::from_slice::<ReserveRequest>(&body) else {
        return (Http::BAD_REQUEST, Json(ApiError::BadRequest("not a reservation request".into()))).into_response();
    };
    let mut reservations = inventory.reservations.lock().unwrap();
    if let Some((_, made)) = reservations.iter().find(|(key, _)| *key == request.idempotency_key) {
        return Json(Reservation { replayed: true, ..made.clone() }).into_response();
    }
    let held_elsewhere = |sku: &str| -> i64 {
        let live = reservations.iter().filter(|(_, r)| r.status == ReservationStatus::Soft && !request.replaces.contains(&r.id));
        live.flat_map(|(_, r)| &r.lines).filter(|l| l.sku == sku).map(|l| l.quantity).sum()
    };
    let on_hand = inventory.on_hand.lock().unwrap();
    let shortages: Vec<Shortage> = request
        .lines
        .iter()
        .filter_map(|line| {
            let available = on_hand.get(&line.sku).copied().unwrap_or(0) - held_elsewhere(&line.sku);
            (line.quantity > available).then(|| Shortage { sku: line.sku.clone(), requested: line.quantity, available: available.max(0) })
        })
        .collect();
    if !shortages.is_empty() {
        return (Http::CONFLICT, Json(InsufficientStock::new(shortages))).into_response();
    }
    for (_, replaced) in reservations.iter_mut().filter(|(_, r)| request.replaces.contains(&r.id)) {
        replaced.status = ReservationStatus::Released;
    }
    let reservation = Reservation {
        id: uuid::Uuid::new_v4().to_string(),
        status: ReservationStatus::Soft,
        owner: request.owner.clone(),
        order_id: None,
        lines: request.lines.clone(),
        created_at_ms: tessera_fragment::db::now_ms(),
        expires_at_ms: tessera_fragment::db::now_ms() + request.ttl_seconds * 1000,
        replayed: false,
    };
    reservations.push((request.idempotency_key, reservation.clone()));
    Json(reservation).into_response()
}

async fn release(State(inventory): State<Arc<Inventory>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = inventory.refusal(&headers, &format!("{RESERVATIONS_PATH}/{id}/release"), &body) {
        return refusal;
    }
    let mut reservations = inventory.reservations.lock().unwrap();
    match reservations.iter_mut().find(|(_, r)| r.id == id) {
        Some((_, reservation)) => {
            reservation.status = ReservationStatus::Released;
            Json(reservation.clone()).into_response()
        }
        None => (Http::NOT_FOUND, Json(ApiError::NotFound(format!("there is no reservation {id}")))).into_response(),
    }
}

async fn extend(State(inventory): State<Arc<Inventory>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = inventory.refusal(&headers, &format!("{RESERVATIONS_PATH}/{id}/extend"), &body) {
        return refusal;
    }
    let mut reservations = inventory.reservations.lock().unwrap();
    match reservations.iter_mut().find(|(_, r)| r.id == id && r.status == ReservationStatus::Soft) {
        Some((_, reservation)) => {
            reservation.expires_at_ms = tessera_fragment::db::now_ms() + 900_000;
            Json(reservation.clone()).into_response()
        }
        None => (Http::CONFLICT, Json(ApiError::Conflict(format!("reservation {id} has ended")))).into_response(),
    }
}

/// The cart alone with its demo prices, reaching `inventory`.
async fn start(backend: Backend, inventory: &Arc<Inventory>) -> Alone {
    Alone::start(&tessera_cart::server::Cart, backend, Options { demo: Some(0), doubles: vec![inventory.double()], ..Options::default() }).await
}

async fn add(cart: &Alone, cookie: Option<&str>, sku: &str, quantity: i64) -> (StatusCode, Value) {
    cart.call("/cart/api/add_item", &format!("sku={sku}&quantity={quantity}"), cookie).await
}

async fn my_cart(cart: &Alone, cookie: Option<&str>) -> Value {
    let (status, json) = cart.call("/cart/api/my_cart", "", cookie).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

fn line<'a>(cart: &'a Value, sku: &str) -> &'a Value {
    cart["lines"].as_array().unwrap().iter().find(|line| line["sku"] == sku).unwrap_or_else(|| panic!("{sku} in {cart}"))
}

each_backend!(a_shoppers_line_is_held_by_a_signed_call_and_a_change_replaces_its_hold);
async fn a_shoppers_line_is_held_by_a_signed_call_and_a_change_replaces_its_hold(backend: Backend) {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 10)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let (status, json) = add(&cart, Some(&sam), "MUG-STN-01", 2).await;
    assert_eq!((status, &json["item_count"]), (StatusCode::OK, &Value::from(2)), "{backend:?}: {json}");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 2)], "{backend:?}");
    assert!(inventory.callers.lock().unwrap().iter().all(|caller| caller == "cart"), "every call is signed as the cart");

    // A change holds the new quantity in place of the old: the line's own units count towards it.
    let (status, json) = cart.call("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=10", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {json}");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 10)], "{backend:?}: one hold, replaced");
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!((line(&view, "MUG-STN-01")["hold"].as_str(), view["item_count"].as_i64()), (Some("Held"), Some(10)), "{view}");
    assert!(line(&view, "MUG-STN-01")["hold_text"].as_str().unwrap().starts_with("Held for you until"), "{view}");

    // Removing the line lets its stock go.
    let (status, _) = cart.call("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=0", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inventory.held(), [], "{backend:?}: released");
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 0);
}

each_backend!(a_shortage_is_a_clear_conflict_and_the_cart_keeps_what_it_had);
async fn a_shortage_is_a_clear_conflict_and_the_cart_keeps_what_it_had(backend: Backend) {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 3)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    assert_eq!(add(&cart, Some(&sam), "MUG-STN-01", 2).await.0, StatusCode::OK);
    let (status, json) = add(&cart, Some(&sam), "MUG-STN-01", 2).await;
    assert_eq!(status, StatusCode::CONFLICT, "{backend:?}: {json}");
    assert_eq!(json["message"], "Only 3 of Stoneware mug are available. You have 2 in your cart.", "{backend:?}");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 2)], "{backend:?}: the old hold stands");
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 2, "{backend:?}: the line is as it was");

    // Bad input changes nothing either, and says why.
    for (body, expected) in [
        ("sku=NOT-SOLD-1&quantity=1", StatusCode::NOT_FOUND),
        ("sku=bad%20sku&quantity=1", StatusCode::BAD_REQUEST),
        ("sku=MUG-STN-01&quantity=0", StatusCode::BAD_REQUEST),
        ("sku=MUG-STN-01&quantity=100", StatusCode::BAD_REQUEST),
        ("sku=MUG-STN-01", StatusCode::BAD_REQUEST),
    ] {
        let (status, json) = cart.call("/cart/api/add_item", body, Some(&sam)).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
        assert!(!json["message"].as_str().unwrap_or_default().is_empty(), "{body}: a message a person reads: {json}");
    }
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 2)], "{backend:?}");
}

each_backend!(with_inventory_down_the_line_is_kept_and_held_once_it_is_back);
async fn with_inventory_down_the_line_is_kept_and_held_once_it_is_back(backend: Backend) {
    let inventory = Inventory::with_stock(&[("NTB-A5-DOT", 5)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    inventory.down.store(true, Ordering::SeqCst);
    let (status, json) = add(&cart, Some(&sam), "NTB-A5-DOT", 1).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {json}");
    assert_eq!(json["message"], tessera_cart::holds::PENDING_NOTE, "{backend:?}: the shopper is told");
    assert_eq!(line(&my_cart(&cart, Some(&sam)).await, "NTB-A5-DOT")["hold"], "Pending");

    inventory.down.store(false, Ordering::SeqCst);
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!(line(&view, "NTB-A5-DOT")["hold"], "Held", "{backend:?}: the next visit holds it: {view}");
    assert_eq!(inventory.held(), [("NTB-A5-DOT".to_owned(), 1)], "{backend:?}: once");
}

each_backend!(guests_hold_nothing_and_are_checked_against_what_inventory_announced);
async fn guests_hold_nothing_and_are_checked_against_what_inventory_announced(backend: Backend) {
    let inventory = Inventory::with_stock(&[("BAG-CNV-01", 50)]);
    let cart = start(backend, &inventory).await;
    cart.deliver("inventory", &StockChanged { sku: "BAG-CNV-01".into(), on_hand: 2, available: 2 }, 1, EVENTS_SECRET).await.unwrap();

    let response = cart.post("/cart/api/add_item", "sku=BAG-CNV-01&quantity=3", None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "{backend:?}: more than inventory announced");
    let response = cart.post("/cart/api/add_item", "sku=BAG-CNV-01&quantity=2", None).await;
    assert_eq!(response.status(), StatusCode::OK, "{backend:?}");
    let guest = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(guest.starts_with("tessera_cart="), "{guest}");
    let view = my_cart(&cart, Some(&guest)).await;
    assert_eq!((line(&view, "BAG-CNV-01")["hold"].as_str(), view["item_count"].as_i64()), (Some("Pending"), Some(2)), "{view}");
    assert_eq!(line(&view, "BAG-CNV-01")["hold_text"], tessera_cart::holds::GUEST_NOTE);
    assert_eq!(inventory.held(), [], "{backend:?}: no guest takes stock off sale");
    assert!(inventory.callers.lock().unwrap().is_empty(), "{backend:?}: inventory was not even asked");

    // A forged announcement changes nothing.
    let forged = StockChanged { sku: "BAG-CNV-01".into(), on_hand: 500, available: 500 };
    assert!(cart.deliver("inventory", &forged, 2, "a-secret-the-deployment-does-not-have-0123").await.is_err());
    assert_eq!(cart.call("/cart/api/set_quantity", "sku=BAG-CNV-01&quantity=3", Some(&guest)).await.0, StatusCode::CONFLICT, "{backend:?}");
}

each_backend!(a_price_the_catalog_changes_reaches_the_line_with_a_note);
async fn a_price_the_catalog_changes_reaches_the_line_with_a_note(backend: Backend) {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 10)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    assert_eq!(add(&cart, Some(&sam), "MUG-STN-01", 2).await.0, StatusCode::OK);
    let dearer = ProductChanged {
        product_id: "mug-stn-01".into(),
        name: "Stoneware mug".into(),
        price_minor: 1650,
        currency: "EUR".into(),
        skus: vec!["MUG-STN-01".into()],
    };
    cart.deliver("catalog", &dearer, 1, EVENTS_SECRET).await.unwrap();
    let view = my_cart(&cart, Some(&sam)).await;
    let mug = line(&view, "MUG-STN-01");
    assert_eq!((mug["unit_price"]["minor"].as_i64(), view["subtotal"]["minor"].as_i64()), (Some(1650), Some(3300)), "{backend:?}: {view}");
    assert_eq!(mug["price_note"], "The price changed from EUR 14.50 to EUR 16.50 since you added it.", "{backend:?}");
}
