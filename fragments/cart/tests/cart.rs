//! The cart alone, as its team ships it: its own database (SQLite, and PostgreSQL when configured),
//! shoppers signed in by a key of the test's own, and the rest of the site met only at the contract
//! boundary — the catalog and inventory as the signed events they send (`catalog.product_changed`,
//! `inventory.stock_changed`), and inventory's reservation API as a test double of that contract
//! ([`Inventory`]). Lines and who owns them, holds, bad input, inventory or the payment provider down at
//! checkout. The whole checkout with payment and orders crosses fragments and is tested in `site/tests/`.

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
use tessera_contracts::domain::{CartId, Quantity, ReservationId, ServiceName, Sku};
use tessera_contracts::events::{ProductChanged, StockChanged};
use tessera_contracts::inventory::{InsufficientStock, Reservation, ReservationStatus, ReserveRequest, Shortage, RESERVATIONS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::{service::verify_caller, signature::CallSigner};
use tessera_testing::each_backend;
use tessera_testing::web::{count, eventually};
use tessera_testing::{Alone, Backend, Double, Options, StatusCode};

/// Inventory's reservation contract, kept in memory: signed calls only, all-or-nothing holds against
/// the units on hand, replacements released in the same step, replays by idempotency key.
#[derive(Default)]
struct Inventory {
    on_hand: Mutex<HashMap<String, i64>>,
    reservations: Mutex<Vec<(String, Reservation)>>,
    /// Every caller whose signature checked out, in order.
    callers: Mutex<Vec<String>>,
    down: AtomicBool,
    /// Verifies calls with the keys the cart's process knows (set once the cart runs: the double lives
    /// in its process, as an in-process inventory would).
    verifier: std::sync::OnceLock<CallSigner>,
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
        let mut lines: Vec<(String, i64)> = live.flat_map(|(_, r)| r.lines.iter().map(|l| (l.sku.to_string(), l.quantity.get()))).collect();
        lines.sort();
        lines
    }

    fn double(self: &Arc<Inventory>) -> Double {
        let router = Router::new()
            .route(RESERVATIONS_PATH, post(reserve))
            .route(&format!("{RESERVATIONS_PATH}/{{id}}/release"), post(release))
            .route(&format!("{RESERVATIONS_PATH}/{{id}}/extend"), post(extend))
            .with_state(self.clone());
        Double { name: ServiceName::INVENTORY, prefix: "/admin/inventory", router }
    }

    /// Why a call is refused: inventory is down, or the call is not the cart's signed call.
    fn refusal(&self, headers: &HeaderMap, path: &str, body: &[u8]) -> Option<Response> {
        if self.down.load(Ordering::SeqCst) {
            return Some((Http::SERVICE_UNAVAILABLE, Json(ApiError::Unavailable("inventory is restarting".into()))).into_response());
        }
        let signer = self.verifier.get().expect("the cart started");
        match verify_caller(signer, headers, &Method::POST, path, body) {
            Ok(caller) => {
                self.callers.lock().unwrap().push(caller.to_string());
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
    let held_elsewhere = |sku: &Sku| -> i64 {
        let live = reservations.iter().filter(|(_, r)| r.status == ReservationStatus::Soft && !request.replaces.contains(&r.id));
        live.flat_map(|(_, r)| &r.lines).filter(|l| &l.sku == sku).map(|l| l.quantity.get()).sum()
    };
    let on_hand = inventory.on_hand.lock().unwrap();
    let shortages: Vec<Shortage> = request
        .lines
        .iter()
        .filter_map(|line| {
            let available = on_hand.get(line.sku.as_str()).copied().unwrap_or(0) - held_elsewhere(&line.sku);
            (line.quantity.get() > available).then(|| Shortage { sku: line.sku.clone(), requested: line.quantity.get(), available: available.max(0) })
        })
        .collect();
    if !shortages.is_empty() {
        return (Http::CONFLICT, Json(InsufficientStock::new(shortages))).into_response();
    }
    for (_, replaced) in reservations.iter_mut().filter(|(_, r)| request.replaces.contains(&r.id)) {
        replaced.status = ReservationStatus::Released;
    }
    let reservation = Reservation {
        id: uuid::Uuid::new_v4().to_string().parse().unwrap(),
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
    match reservations.iter_mut().find(|(_, r)| r.id.as_str() == id) {
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
    match reservations.iter_mut().find(|(_, r)| r.id.as_str() == id && r.status == ReservationStatus::Soft) {
        Some((_, reservation)) => {
            reservation.expires_at_ms = tessera_fragment::db::now_ms() + 900_000;
            Json(reservation.clone()).into_response()
        }
        None => (Http::CONFLICT, Json(ApiError::Conflict(format!("reservation {id} has ended")))).into_response(),
    }
}

/// The cart alone with its demo prices, reaching `inventory`.
async fn start(backend: Backend, inventory: &Arc<Inventory>) -> Alone {
    let cart = Alone::start(&tessera_cart::server::Cart, backend, Options { demo: Some(0), doubles: vec![inventory.double()], ..Options::default() }).await;
    let _ = inventory.verifier.set(cart.runtime.service_calls());
    cart
}

async fn add(cart: &Alone, cookie: Option<&str>, sku: &str, quantity: i64) -> (StatusCode, Value) {
    cart.api("/cart/api/add_item", &format!("sku={sku}&quantity={quantity}"), cookie).await
}

async fn my_cart(cart: &Alone, cookie: Option<&str>) -> Value {
    let (status, json) = cart.api("/cart/api/my_cart", "", cookie).await;
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
    let (status, json) = cart.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=10", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {json}");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 10)], "{backend:?}: one hold, replaced");
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!((line(&view, "MUG-STN-01")["hold"].as_str(), view["item_count"].as_i64()), (Some("Held"), Some(10)), "{view}");
    assert!(line(&view, "MUG-STN-01")["hold_text"].as_str().unwrap().starts_with("Held for you until"), "{view}");

    // Removing the line lets its stock go.
    let (status, _) = cart.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=0", Some(&sam)).await;
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
        let (status, json) = cart.api("/cart/api/add_item", body, Some(&sam)).await;
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
    cart.deliver(ServiceName::INVENTORY, &StockChanged { sku: "BAG-CNV-01".parse().unwrap(), on_hand: 2, available: 2 }, 1).await.unwrap();

    let response = cart.post_form("/cart/api/add_item", "sku=BAG-CNV-01&quantity=3", None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "{backend:?}: more than inventory announced");
    let response = cart.post_form("/cart/api/add_item", "sku=BAG-CNV-01&quantity=2", None).await;
    assert_eq!(response.status(), StatusCode::OK, "{backend:?}");
    let guest = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(guest.starts_with("tessera_cart="), "{guest}");
    let view = my_cart(&cart, Some(&guest)).await;
    assert_eq!((line(&view, "BAG-CNV-01")["hold"].as_str(), view["item_count"].as_i64()), (Some("Pending"), Some(2)), "{view}");
    assert_eq!(line(&view, "BAG-CNV-01")["hold_text"], tessera_cart::holds::GUEST_NOTE);
    assert_eq!(inventory.held(), [], "{backend:?}: no guest takes stock off sale");
    assert!(inventory.callers.lock().unwrap().is_empty(), "{backend:?}: inventory was not even asked");

    // A forged announcement changes nothing.
    let forged = StockChanged { sku: "BAG-CNV-01".parse().unwrap(), on_hand: 500, available: 500 };
    assert!(cart.deliver_signed(&Alone::stranger(ServiceName::INVENTORY), ServiceName::INVENTORY, &forged, 2).await.is_err());
    assert_eq!(cart.api("/cart/api/set_quantity", "sku=BAG-CNV-01&quantity=3", Some(&guest)).await.0, StatusCode::CONFLICT, "{backend:?}");
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
        skus: vec!["MUG-STN-01".parse().unwrap()],
    };
    cart.deliver(ServiceName::CATALOG, &dearer, 1).await.unwrap();
    let view = my_cart(&cart, Some(&sam)).await;
    let mug = line(&view, "MUG-STN-01");
    assert_eq!((mug["unit_price"]["minor"].as_i64(), view["subtotal"]["minor"].as_i64()), (Some(1650), Some(3300)), "{backend:?}: {view}");
    assert_eq!(mug["price_note"], "The price changed from EUR 14.50 to EUR 16.50 since you added it.", "{backend:?}");
}

each_backend!(cart_lines_belong_to_their_user_only);
async fn cart_lines_belong_to_their_user_only(backend: Backend) {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 10)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let ada = cart.cookie_of(&Alone::user("ada", &[Role::Shopper, Role::Admin]));
    let (status, json) = add(&cart, Some(&sam), "MUG-STN-01", 2).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["item_count"], 2);
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 2);
    assert_eq!(my_cart(&cart, Some(&ada)).await["item_count"], 0, "another user's cart is separate");
    assert_eq!(my_cart(&cart, None).await["item_count"], 0);

    // Ada cannot change Sam's line: she has no such line.
    let (status, json) = cart.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=5", Some(&ada)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 2);
    let (_, html) = cart.text("/cart", Some(&sam)).await;
    assert!(html.contains("MUG-STN-01"));
    let (_, html) = cart.text("/cart", Some(&ada)).await;
    assert!(!html.contains("MUG-STN-01"));

    // Sam changes and removes his line; its hold follows.
    let (status, json) = cart.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=3", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["lines"][0]["quantity"], 3);
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 3)], "{backend:?}");
    let (status, json) = cart.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=0", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["lines"].as_array().unwrap().len(), 0);
    assert_eq!(inventory.held(), [], "{backend:?}: a removed line holds nothing");
}

each_backend!(cart_server_functions_refuse_bad_input_and_change_nothing);
async fn cart_server_functions_refuse_bad_input_and_change_nothing(backend: Backend) {
    let inventory = Inventory::with_stock(&[("STK-RST-10", 500), ("PEN-GEL-BK", 4)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    let (status, json) = add(&cart, Some(&sam), "STK-RST-10", 98).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("/cart/api/add_item", "sku=ZZZ-NOPE-01&quantity=1".into(), StatusCode::NOT_FOUND),
        // More than the stock: refused with what is left.
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=5".into(), StatusCode::CONFLICT),
        ("/cart/api/add_item", "".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "quantity=1".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=abc".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=0".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=-3".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=100".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=99999999999999999999999".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=pen%3Bdrop&quantity=1".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", format!("sku={}&quantity=1", "A".repeat(40)), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", format!("sku=PEN-GEL-BK&quantity=1&pad={}", "x".repeat(40_000)), StatusCode::PAYLOAD_TOO_LARGE),
        // 98 + 2 would exceed the line maximum: a conflict, explained.
        ("/cart/api/add_item", "sku=STK-RST-10&quantity=2".into(), StatusCode::CONFLICT),
        ("/cart/api/set_quantity", "sku=STK-RST-10&quantity=100".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/set_quantity", "sku=STK-RST-10&quantity=-1".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/set_quantity", "sku=&quantity=1".into(), StatusCode::BAD_REQUEST),
        ("/cart/api/no_such_function", "".into(), StatusCode::BAD_REQUEST),
    ];
    for (path, body, expected) in cases {
        let (status, json) = cart.api(path, &body, Some(&sam)).await;
        assert_eq!(status, expected, "{backend:?} {path} {}: {json}", &body[..body.len().min(60)]);
        if expected != StatusCode::BAD_REQUEST || path != "/cart/api/no_such_function" {
            assert!(json.get("message").is_some() || json.get("kind").is_some(), "{path}: a readable error: {json}");
        }
    }
    // A server function is not a GET endpoint.
    let response = cart.get("/cart/api/add_item?sku=STK-RST-10&quantity=1", Some(&sam)).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 98, "{backend:?}: nothing changed");
    assert_eq!(inventory.held(), [("STK-RST-10".to_owned(), 98)], "{backend:?}: nor in inventory");
}

const ADDRESS: &str = "name=Sam+Shopper&street=1+Loop+Lane&city=Berlin&postcode=10115&country=DE&shipping=standard";

/// Places the shopper's cart as an order with the checkout page's key.
async fn place(cart: &Alone, cookie: &str) -> (StatusCode, Value) {
    let (status, json) = cart.api("/cart/api/checkout", "", Some(cookie)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let key = json["key"].as_str().unwrap().to_owned();
    cart.api("/cart/api/place_order", &format!("key={key}&{ADDRESS}"), Some(cookie)).await
}

#[tokio::test]
async fn with_inventory_down_checkout_keeps_the_cart_and_the_background_pass_holds_the_line() {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 5)]);
    let cart = start(Backend::Sqlite, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    inventory.down.store(true, Ordering::SeqCst);
    let (status, json) = add(&cart, Some(&sam), "MUG-STN-01", 2).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(json["message"].as_str().unwrap().contains("not answering"), "{json}");
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!((line(&view, "MUG-STN-01")["hold"].as_str(), line(&view, "MUG-STN-01")["quantity"].as_i64()), (Some("Pending"), Some(2)), "the line is kept");
    // Checking out needs the stock: a clear refusal, the cart untouched and open.
    let (status, json) = place(&cart, &sam).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(json["message"].as_str().unwrap().contains("Your cart is kept"), "{json}");
    assert_eq!(my_cart(&cart, Some(&sam)).await["item_count"], 2);

    // Inventory comes back: the cart's background pass holds the line, with no visit needed.
    inventory.down.store(false, Ordering::SeqCst);
    eventually("the pending line held by the background pass", || async { inventory.held() == [("MUG-STN-01".to_owned(), 2)] }).await;
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!(line(&view, "MUG-STN-01")["hold"], "Held", "{view}");
}

#[tokio::test]
async fn with_the_provider_down_the_order_waits_for_payment_and_says_so() {
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 5)]);
    // The payment provider answers nothing but "unavailable".
    let provider = Double {
        name: ServiceName::PAYMENTS,
        prefix: tessera_contracts::payments::SANDBOX_PREFIX,
        router: Router::new().fallback(|| async { (Http::SERVICE_UNAVAILABLE, "restarting") }),
    };
    let options = Options { demo: Some(0), doubles: vec![inventory.double(), provider], ..Options::default() };
    let cart = Alone::start(&tessera_cart::server::Cart, Backend::Sqlite, options).await;
    let _ = inventory.verifier.set(cart.runtime.service_calls());
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    assert_eq!(add(&cart, Some(&sam), "MUG-STN-01", 1).await.0, StatusCode::OK);
    let (status, placed) = place(&cart, &sam).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    assert_eq!(placed["pay_url"], Value::Null);
    assert!(placed["message"].as_str().unwrap().contains("payment provider is not answering"), "{placed}");
    let id = placed["order_id"].as_str().unwrap();
    let (status, order) = cart.api("/cart/api/order", &format!("id={id}"), Some(&sam)).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::OK, Some("AwaitingPayment")), "the order is kept: {order}");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 1)], "and its stock held");
    let (status, json) = cart.api("/cart/api/pay_order", &format!("id={id}"), Some(&sam)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(json["message"].as_str().unwrap().contains("try paying again"), "{json}");
}

each_backend!(a_hold_whose_answer_never_came_is_found_again_not_made_twice);
async fn a_hold_whose_answer_never_came_is_found_again_not_made_twice(backend: Backend) {
    use tessera_contracts::inventory::Line;
    let inventory = Inventory::with_stock(&[("MUG-STN-01", 5)]);
    let cart = start(backend, &inventory).await;
    let sam = cart.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    assert_eq!(add(&cart, Some(&sam), "MUG-STN-01", 1).await.0, StatusCode::OK);
    let db = cart.runtime.db.clone();
    let (cart_id, first): (CartId, ReservationId) =
        sqlx::query_as("SELECT cart_id, reservation_id FROM cart_items WHERE sku = 'MUG-STN-01'").fetch_one(&db).await.unwrap();

    // The cart asked inventory to grow the line to 2 under key K; inventory did it, but the answer
    // never arrived, so the line is pending with K kept (what `holds::record` writes then).
    let target = tessera_fragment::peers::Target::in_process("/admin/inventory", inventory.double().router);
    let client =
        tessera_fragment::service::ServiceClient::new(ServiceName::INVENTORY, cart.runtime.service_calls(), target, std::time::Duration::from_secs(30));
    let request = ReserveRequest {
        idempotency_key: "unanswered-key".into(),
        owner: tessera_cart::store::cart_owner(&cart_id),
        lines: vec![Line { sku: "MUG-STN-01".parse().unwrap(), quantity: Quantity::parse(2).unwrap() }],
        ttl_seconds: tessera_cart::model::HOLD_TTL_SECONDS,
        replaces: vec![first.clone()],
    };
    let made: Reservation = client.post(RESERVATIONS_PATH, &request).await.unwrap();
    sqlx::query("UPDATE cart_items SET quantity = 2, hold_state = 'pending', hold_key = 'unanswered-key' WHERE cart_id = $1")
        .bind(&cart_id)
        .execute(&db)
        .await
        .unwrap();

    // The next visit retries under the same key: inventory answers with the reservation it made.
    let view = my_cart(&cart, Some(&sam)).await;
    assert_eq!(line(&view, "MUG-STN-01")["hold"], "Held", "{view}");
    let (now_held,): (ReservationId,) = sqlx::query_as("SELECT reservation_id FROM cart_items WHERE cart_id = $1").bind(&cart_id).fetch_one(&db).await.unwrap();
    assert_eq!(now_held, made.id, "{backend:?}: the same reservation, found again");
    assert_eq!(inventory.held(), [("MUG-STN-01".to_owned(), 2)], "{backend:?}: held once, not twice");
}

const DAY_MS: i64 = 24 * 3600 * 1000;

each_backend!(guest_carts_no_cookie_can_reach_go_while_younger_ones_stay);
async fn guest_carts_no_cookie_can_reach_go_while_younger_ones_stay(backend: Backend) {
    let inventory = Inventory::with_stock(&[("BAG-CNV-01", 5)]);
    let app = start(backend, &inventory).await;
    let cart = app.runtime.db.clone();
    // Guests are checked against the stock inventory announced.
    for (n, sku) in ["MUG-STN-01", "TEE-BLU-M"].into_iter().enumerate() {
        app.deliver(ServiceName::INVENTORY, &StockChanged { sku: sku.parse().unwrap(), on_hand: 5, available: 5 }, n as i64 + 1).await.unwrap();
    }
    let mut cookies = Vec::new();
    for sku in ["MUG-STN-01", "TEE-BLU-M"] {
        let response = app.post_form("/cart/api/add_item", format!("sku={sku}&quantity=1"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        cookies.push(tessera_testing::web::set_cookie(&response, "tessera_cart").expect("a guest cart"));
    }
    // The first cart was made 31 days ago: its cookie has expired in every browser.
    sqlx::query("UPDATE carts SET created_at_ms = created_at_ms - $1 WHERE id = (SELECT cart_id FROM cart_items WHERE sku = 'MUG-STN-01')")
        .bind(31 * DAY_MS)
        .execute(&cart)
        .await
        .unwrap();
    let pruned = tessera_cart::store::prune_guest_carts(&cart, tessera_fragment::db::now_ms()).await.unwrap();
    assert_eq!(pruned, 1, "{backend:?}");
    assert_eq!(count(&cart, "SELECT COUNT(*) FROM cart_items WHERE sku = 'MUG-STN-01'").await, 0);
    assert_eq!(my_cart(&app, Some(&cookies[1])).await["item_count"], 1, "the younger guest cart stays");
    // A signed-in shopper's cart is never a guest cart, however old.
    let sam = app.cookie_of(&Alone::user("sam", &[Role::Shopper]));
    assert_eq!(app.post_form("/cart/api/add_item", "sku=BAG-CNV-01&quantity=1", Some(&sam)).await.status(), StatusCode::OK);
    sqlx::query("UPDATE carts SET created_at_ms = created_at_ms - $1 WHERE user_id IS NOT NULL").bind(90 * DAY_MS).execute(&cart).await.unwrap();
    assert_eq!(tessera_cart::store::prune_guest_carts(&cart, tessera_fragment::db::now_ms()).await.unwrap(), 0);
    assert_eq!(my_cart(&app, Some(&sam)).await["item_count"], 1);
}
