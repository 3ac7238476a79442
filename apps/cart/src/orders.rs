//! Orders: placing one from a cart, paying for it, and everything that happens to it afterwards.
//!
//! - **Placing** is idempotent per (user, key): the order row with status `placing` is written first and
//!   doubles as the lock a second click runs into; the cart moves to `checking_out` in the same
//!   transaction, so it cannot change meanwhile. Then inventory reserves every line under one reservation
//!   that *replaces* the lines' holds (their units count towards it). Success: `awaiting_payment`; a
//!   shortage: `failed`, the cart open again with the short lines marked.
//! - **Paid only from the webhook.** A `payment.succeeded` webhook (verified, deduplicated by event id in
//!   the same transaction as its effect) moves `awaiting_payment` to `paid` and emits `cart.order_paid`
//!   through the outbox. Every transition is conditional on the state it leaves, so events may arrive
//!   in any order and more than once: a late `payment.failed` never un-pays, a success after a refund or a
//!   cancellation is refunded rather than shipped.
//! - **Afterwards**: `inventory.order_fulfilled` → `fulfilled`; `inventory.order_short` (paid after the
//!   hold lapsed and the stock went elsewhere) → cancelled and refunded, with the reason on the timeline;
//!   a shopper's cancellation of an unpaid order → `cancelled` at once and `cart.order_cancelled`
//!   (inventory releases); of a paid order → `cart.order_cancel_requested`, and the order stays paid
//!   until inventory answers `inventory.order_cancel_confirmed` (→ `cancelled`, refund) or
//!   `inventory.order_cancel_refused` (it shipped: left as it was, the reason on the timeline).
//!   Refunds are recorded as due in the state change's transaction and requested by the background pass
//!   until the provider accepts, so none is lost when the provider is down.

use sqlx::{AnyConnection, AnyPool, Row};
use tessera_contracts::domain::format_time;
use tessera_contracts::events::{OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort};
use tessera_contracts::inventory::Line;
use tessera_contracts::payments::{CancelRequest, CreatePayment, RefundRequest, WebhookEvent, WebhookKind};
use tessera_contracts::ApiError;
use tessera_kit::db::retrying;
use tessera_kit::events::now_ms;
use tessera_kit::FragmentRuntime;

use crate::holds::{self, Hold};
use crate::model::{money, Address, OrderLine, OrderStatus, OrderSummary, OrderView, PlacedOrder, ShippingMethod, TimelineEntry, CHECKOUT_TTL_SECONDS};
use crate::payments::{self, PaymentProvider};
use crate::store::{self, Shopper};

/// An order as stored.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: String,
    pub user_id: String,
    pub cart_id: String,
    pub request_hash: String,
    pub status: OrderStatus,
    pub failure: Option<String>,
    pub address: Address,
    pub shipping_method: String,
    pub shipping_minor: i64,
    pub items_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub reservation_id: Option<String>,
    pub payment_id: Option<String>,
    pub pay_url: Option<String>,
    pub created_at_ms: i64,
    /// The shopper asked to cancel this paid order; inventory has not answered yet.
    pub cancel_requested: bool,
}

const ORDER_COLUMNS: &str = "id, user_id, cart_id, request_hash, status, failure, ship_name, ship_street, ship_city, ship_postcode, \
     ship_country, shipping_method, shipping_minor, items_minor, total_minor, currency, reservation_id, payment_id, pay_url, created_at_ms, \
     cancel_requested_at_ms";

fn order_of(row: &sqlx::any::AnyRow) -> Result<OrderRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(OrderRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        cart_id: row.try_get("cart_id")?,
        request_hash: row.try_get("request_hash")?,
        status: OrderStatus::parse(&status).ok_or_else(|| sqlx::Error::Decode(format!("unknown order status {status:?}").into()))?,
        failure: row.try_get("failure")?,
        address: Address {
            name: row.try_get("ship_name")?,
            street: row.try_get("ship_street")?,
            city: row.try_get("ship_city")?,
            postcode: row.try_get("ship_postcode")?,
            country: row.try_get("ship_country")?,
        },
        shipping_method: row.try_get("shipping_method")?,
        shipping_minor: row.try_get("shipping_minor")?,
        items_minor: row.try_get("items_minor")?,
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        reservation_id: row.try_get("reservation_id")?,
        payment_id: row.try_get("payment_id")?,
        pay_url: row.try_get("pay_url")?,
        created_at_ms: row.try_get("created_at_ms")?,
        cancel_requested: row.try_get::<Option<i64>, _>("cancel_requested_at_ms")?.is_some(),
    })
}

/// One order by id (any user's: callers scope by user themselves).
pub async fn find(connection: &mut AnyConnection, id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1")).bind(id).fetch_optional(&mut *connection).await?;
    row.as_ref().map(order_of).transpose()
}

async fn find_by_key(db: &AnyPool, user_id: &str, key: &str) -> Result<Option<OrderRow>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2"))
        .bind(user_id)
        .bind(key)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(order_of).transpose()
}

async fn timeline(connection: &mut AnyConnection, order_id: &str, status: &str, note: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO order_timeline (order_id, at_ms, status, note) VALUES ($1, $2, $3, $4)")
        .bind(order_id)
        .bind(now_ms())
        .bind(status)
        .bind(note)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Moves an order from one of `from` to `to`; whether this call did it.
async fn transition(connection: &mut AnyConnection, order_id: &str, from: &[OrderStatus], to: OrderStatus) -> Result<bool, sqlx::Error> {
    let from: Vec<String> = from.iter().map(|status| format!("'{}'", status.as_str())).collect();
    let updated = sqlx::query(&format!("UPDATE orders SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ({})", from.join(", ")))
        .bind(to.as_str())
        .bind(now_ms())
        .bind(order_id)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() == 1)
}

async fn mark_refund_due(connection: &mut AnyConnection, order_id: &str, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET refund_due = 1, refund_reason = $1 WHERE id = $2 AND payment_id IS NOT NULL")
        .bind(reason)
        .bind(order_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Marks the refund of a cancelled order's payment as due; whether the order is cancelled.
async fn mark_refund_due_if_cancelled(connection: &mut AnyConnection, order_id: &str, reason: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE orders SET refund_due = 1, refund_reason = $1 WHERE id = $2 AND status = 'cancelled' AND payment_id IS NOT NULL")
        .bind(reason)
        .bind(order_id)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() == 1)
}

async fn order_lines(connection: &mut AnyConnection, order_id: &str) -> Result<Vec<Line>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, quantity FROM order_items WHERE order_id = $1 ORDER BY sku").bind(order_id).fetch_all(&mut *connection).await?;
    Ok(rows.into_iter().map(|(sku, quantity)| Line { sku, quantity }).collect())
}

fn request_hash(address: &Address, shipping: ShippingMethod) -> String {
    let text = format!("{}\n{}\n{}\n{}\n{}\n{}", address.name, address.street, address.city, address.postcode, address.country, shipping.as_str());
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::BadRequest("the checkout form is out of date; reload the page and try again".into()));
    }
    Ok(())
}

/// The answer for a key that was used before.
fn replay(existing: &OrderRow, hash: &str) -> Result<PlacedOrder, ApiError> {
    if existing.request_hash != hash {
        return Err(ApiError::Conflict("this checkout form was already used for a different order; reload the page to start again".into()));
    }
    match existing.status {
        OrderStatus::Placing => Err(ApiError::Conflict("your order is being placed; wait a moment and look at your orders".into())),
        OrderStatus::Failed => Err(ApiError::Conflict(existing.failure.clone().unwrap_or_else(|| "the order could not be placed".into()))),
        _ => Ok(PlacedOrder { order_id: existing.id.clone(), pay_url: existing.pay_url.clone(), message: None }),
    }
}

/// Places the signed-in shopper's cart as an order (see the module docs).
pub async fn place(runtime: &FragmentRuntime, shopper: &Shopper, key: &str, address: &Address, shipping: ShippingMethod) -> Result<PlacedOrder, ApiError> {
    let user = shopper.user.as_ref().ok_or(ApiError::Unauthorized)?;
    check_key(key)?;
    let db = &runtime.db;
    let hash = request_hash(address, shipping);
    if let Some(existing) = find_by_key(db, &user.id, key).await.map_err(tessera_kit::internal)? {
        return replay(&existing, &hash);
    }
    let cart = store::user_cart(db, &user.id).await.map_err(tessera_kit::internal)?.ok_or_else(|| ApiError::BadRequest("your cart is empty".into()))?;
    let _guard = holds::lock(runtime, &cart.id).await.map_err(holds::busy)?;
    let mut connection = db.acquire().await.map_err(tessera_kit::internal)?;
    let items = store::items(&mut connection, &cart.id).await.map_err(tessera_kit::internal)?;
    drop(connection);
    if items.is_empty() {
        return Err(ApiError::BadRequest("your cart is empty".into()));
    }
    let mut priced = Vec::with_capacity(items.len());
    for item in &items {
        let price = item.price.clone().ok_or_else(|| ApiError::Conflict(format!("{} is no longer sold; remove it from your cart", item.sku)))?;
        priced.push((item, price));
    }
    let currency = priced[0].1.currency.clone();
    if priced.iter().any(|(_, price)| price.currency != currency) {
        return Err(ApiError::Conflict("your cart mixes currencies; remove the items priced in another currency".into()));
    }
    let items_minor: i64 = priced.iter().map(|(item, price)| item.quantity * price.price_minor).sum();
    let shipping_minor = shipping.price_minor();
    let order_id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();

    // 1. The order row (the key's lock) and the cart lock, together.
    let started = retrying(|| async {
        let mut tx = db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, cart_id, idempotency_key, request_hash, status, ship_name, ship_street, ship_city, \
             ship_postcode, ship_country, shipping_method, shipping_minor, items_minor, total_minor, currency, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, 'placing', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(&order_id)
        .bind(&user.id)
        .bind(&cart.id)
        .bind(key)
        .bind(&hash)
        .bind(&address.name)
        .bind(&address.street)
        .bind(&address.city)
        .bind(&address.postcode)
        .bind(&address.country)
        .bind(shipping.as_str())
        .bind(shipping_minor)
        .bind(items_minor)
        .bind(items_minor + shipping_minor)
        .bind(&currency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(Err(None));
        }
        if !store::set_cart_status(&mut tx, &cart.id, "open", "checking_out").await? {
            return Ok(Err(Some(ApiError::Conflict("this cart is already being checked out in another window".into()))));
        }
        for (item, price) in &priced {
            sqlx::query("INSERT INTO order_items (order_id, sku, name, unit_price_minor, quantity) VALUES ($1, $2, $3, $4, $5)")
                .bind(&order_id)
                .bind(&item.sku)
                .bind(&price.name)
                .bind(price.price_minor)
                .bind(item.quantity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Ok(()))
    })
    .await
    .map_err(tessera_kit::internal)?;
    match started {
        Ok(()) => {}
        Err(Some(error)) => return Err(error),
        // A racing request with the same key got there first.
        Err(None) => {
            let existing = find_by_key(db, &user.id, key).await.map_err(tessera_kit::internal)?.ok_or(ApiError::Internal)?;
            return replay(&existing, &hash);
        }
    }

    // 2. One reservation for the whole order, replacing the lines' holds.
    let lines: Vec<Line> = items.iter().map(|item| Line { sku: item.sku.clone(), quantity: item.quantity }).collect();
    let replaces: Vec<String> = items.iter().filter_map(|item| item.reservation_id.clone()).collect();
    let outcome = holds::reserve(runtime, &shopper.owner(), Some(format!("checkout-{order_id}")), lines, replaces.clone(), CHECKOUT_TTL_SECONDS).await;

    // 3. Record the outcome.
    let failure = match &outcome {
        Hold::Held(_) => None,
        Hold::Short(short) => {
            let names: Vec<String> = short
                .shortages
                .iter()
                .map(|s| {
                    let name = priced.iter().find(|(item, _)| item.sku == s.sku).map(|(_, price)| price.name.clone()).unwrap_or_else(|| s.sku.clone());
                    holds::short_note(&name, &tessera_contracts::inventory::InsufficientStock::new(vec![s.clone()]))
                })
                .collect();
            Some(format!("Not enough stock to place your order: {} Your cart is unchanged otherwise.", names.join(" ")))
        }
        Hold::Unavailable(_) => Some("The stock service is not answering, so the order was not placed. Your cart is kept; try again in a moment.".into()),
        Hold::Refused(error) => Some(format!("The order could not be placed: {error}")),
    };
    retrying(|| async {
        let mut tx = db.begin().await?;
        match (&outcome, &failure) {
            (Hold::Held(reservation), _) => {
                sqlx::query("UPDATE orders SET status = 'awaiting_payment', reservation_id = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'placing'")
                    .bind(&reservation.id)
                    .bind(now_ms())
                    .bind(&order_id)
                    .execute(&mut *tx)
                    .await?;
                timeline(&mut tx, &order_id, OrderStatus::AwaitingPayment.as_str(), "Order placed; your items are held while you pay.").await?;
                store::set_cart_status(&mut tx, &cart.id, "checking_out", "ordered").await?;
            }
            (_, failure) => {
                sqlx::query("UPDATE orders SET status = 'failed', failure = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'placing'")
                    .bind(failure)
                    .bind(now_ms())
                    .bind(&order_id)
                    .execute(&mut *tx)
                    .await?;
                store::set_cart_status(&mut tx, &cart.id, "checking_out", "open").await?;
                if let Hold::Unavailable(_) = &outcome {
                    // Inventory may have made the order's reservation (releasing the lines' holds) and
                    // answered too late: the background pass finds it again by its key and releases it,
                    // and the lines are held again, replacing whatever they pointed at.
                    sqlx::query("UPDATE orders SET release_due = 1, checkout_replaces = $1 WHERE id = $2")
                        .bind(replaces.join(","))
                        .bind(&order_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE cart_items SET hold_state = 'pending', hold_note = $1 WHERE cart_id = $2")
                        .bind(holds::PENDING_NOTE)
                        .bind(&cart.id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Hold::Short(short) = &outcome {
                    for shortage in &short.shortages {
                        if let Some((item, price)) = priced.iter().find(|(item, _)| item.sku == shortage.sku) {
                            let single = tessera_contracts::inventory::InsufficientStock::new(vec![shortage.clone()]);
                            let record = holds::record(&Hold::Short(single), &price.name, item.reservation_id.as_deref(), "");
                            store::set_hold(&mut tx, &cart.id, &item.sku, &record).await?;
                        }
                    }
                }
            }
        }
        tx.commit().await
    })
    .await
    .map_err(tessera_kit::internal)?;
    if let Some(failure) = failure {
        return Err(match outcome {
            Hold::Unavailable(_) => ApiError::Unavailable(failure),
            _ => ApiError::Conflict(failure),
        });
    }

    // 4. The payment (if the provider is down, the order waits and the shopper can pay later).
    let mut connection = db.acquire().await.map_err(tessera_kit::internal)?;
    let order = find(&mut connection, &order_id).await.map_err(tessera_kit::internal)?.ok_or(ApiError::Internal)?;
    drop(connection);
    Ok(start_payment(runtime, &order).await)
}

/// Creates (or finds again) the order's payment at the provider.
pub async fn start_payment(runtime: &FragmentRuntime, order: &OrderRow) -> PlacedOrder {
    let request = CreatePayment {
        idempotency_key: format!("order-{}", order.id),
        reference: order.id.clone(),
        amount_minor: order.total_minor,
        currency: order.currency.clone(),
        description: format!("Tessera order {}", &order.id[..8]),
        return_url: format!("{}/orders/{}", crate::PREFIX, order.id),
    };
    match payments::provider(runtime).create(&request).await {
        Ok(payment) => {
            let saved = sqlx::query("UPDATE orders SET payment_id = $1, pay_url = $2, updated_at_ms = $3 WHERE id = $4")
                .bind(&payment.id)
                .bind(&payment.pay_url)
                .bind(now_ms())
                .bind(&order.id)
                .execute(&runtime.db)
                .await;
            if let Err(error) = saved {
                // Its webhooks would not find it: the shopper must not pay it. "Pay" creates it again
                // (the same idempotency key finds the same payment) and saves it then.
                tracing::error!(%error, order = order.id, "could not save the payment of an order");
                return PlacedOrder {
                    order_id: order.id.clone(),
                    pay_url: None,
                    message: Some("We could not prepare the payment; try paying again in a moment.".into()),
                };
            }
            PlacedOrder { order_id: order.id.clone(), pay_url: Some(payment.pay_url), message: None }
        }
        Err(error) => PlacedOrder { order_id: order.id.clone(), pay_url: None, message: Some(payments::unavailable(&error).to_string()) },
    }
}

/// The shopper's own order, or 404 (another user's order is indistinguishable from a missing one).
pub async fn own_order(db: &AnyPool, user_id: &str, order_id: &str) -> Result<OrderRow, ApiError> {
    let not_found = || ApiError::NotFound("there is no such order in your account".into());
    if order_id.len() > 64 || !order_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(not_found());
    }
    let mut connection = db.acquire().await.map_err(tessera_kit::internal)?;
    match find(&mut connection, order_id).await.map_err(tessera_kit::internal)? {
        Some(order) if order.user_id == user_id && order.status != OrderStatus::Placing => Ok(order),
        _ => Err(not_found()),
    }
}

/// "Pay now" on an order awaiting payment: its payment page (created again if the provider was down).
pub async fn pay(runtime: &FragmentRuntime, user_id: &str, order_id: &str) -> Result<PlacedOrder, ApiError> {
    let order = own_order(&runtime.db, user_id, order_id).await?;
    if order.status != OrderStatus::AwaitingPayment {
        return Err(ApiError::Conflict(format!("this order is {}; there is nothing to pay", order.status.label().to_lowercase())));
    }
    if let Some(pay_url) = &order.pay_url {
        return Ok(PlacedOrder { order_id: order.id.clone(), pay_url: Some(pay_url.clone()), message: None });
    }
    let placed = start_payment(runtime, &order).await;
    match &placed.pay_url {
        Some(_) => Ok(placed),
        None => Err(ApiError::Unavailable(placed.message.unwrap_or_default())),
    }
}

/// What a shopper's cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// An unpaid order: cancelled at once (nothing can ship before payment).
    Now,
    /// A paid order: inventory was asked; it is cancelled and refunded only once inventory confirms.
    Requested,
}

/// The shopper cancels an order that has not shipped.
///
/// An unpaid order is cancelled at once: inventory ships only paid orders, and a payment that still
/// arrives is refunded. A paid order may be shipping right now, and the cart's copy of it can be behind
/// the warehouse: so cancelling it is a request (`cart.order_cancel_requested`). The order stays paid,
/// nothing is refunded, and inventory — where cancelling and fulfilling meet on one reservation row —
/// confirms (then the order is cancelled and refunded) or refuses because it shipped (then the order is
/// left as it was and its timeline tells the shopper why).
pub async fn cancel(runtime: &FragmentRuntime, user_id: &str, order_id: &str) -> Result<Cancelled, ApiError> {
    let order = own_order(&runtime.db, user_id, order_id).await?;
    if !order.status.cancellable() {
        return Err(ApiError::Conflict(format!("this order is {}; it can no longer be cancelled", order.status.label().to_lowercase())));
    }
    if order.cancel_requested {
        return Ok(Cancelled::Requested);
    }
    let outbox = &runtime.events.outbox;
    let done = retrying(|| async {
        let mut tx = runtime.db.begin().await?;
        // Decided by the updates themselves, never by an earlier read: a payment committing meanwhile
        // makes the request the one that matches.
        let done = if request_cancel(&mut tx, &order.id).await? {
            timeline(&mut tx, &order.id, "cancel_requested", "You asked to cancel. We are checking with the warehouse that it has not shipped.").await?;
            let reservation_id = order.reservation_id.clone().unwrap_or_default();
            outbox.enqueue(&mut tx, &OrderCancelRequested { order_id: order.id.clone(), reservation_id }).await?;
            Cancelled::Requested
        } else if transition(&mut tx, &order.id, &[OrderStatus::AwaitingPayment], OrderStatus::Cancelled).await? {
            timeline(&mut tx, &order.id, OrderStatus::Cancelled.as_str(), "Cancelled by you before payment.").await?;
            if let Some(reservation_id) = &order.reservation_id {
                outbox.enqueue(&mut tx, &OrderCancelled { order_id: order.id.clone(), reservation_id: reservation_id.clone() }).await?;
            }
            Cancelled::Now
        } else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Some(done))
    })
    .await
    .map_err(tessera_kit::internal)?;
    let Some(done) = done else {
        // Asked twice at once: the other request is the one being answered.
        if own_order(&runtime.db, user_id, order_id).await?.cancel_requested {
            return Ok(Cancelled::Requested);
        }
        return Err(ApiError::Conflict("the order changed meanwhile (it may have shipped); reload to see where it stands".into()));
    };
    outbox.committed();
    if done == Cancelled::Now {
        if let Some(payment_id) = &order.payment_id {
            // So the shopper cannot pay a cancelled order; if they already are, the success is refunded.
            if let Err(error) = payments::provider(runtime).cancel(payment_id, &CancelRequest { reason: "order cancelled".into() }).await {
                tracing::warn!(%error, order = order.id, "could not cancel the payment; a late success will be refunded");
            }
        }
    }
    Ok(done)
}

/// Marks a paid order's cancellation as requested; whether this call did it.
async fn request_cancel(connection: &mut AnyConnection, order_id: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let updated =
        sqlx::query("UPDATE orders SET cancel_requested_at_ms = $1, updated_at_ms = $1 WHERE id = $2 AND status = 'paid' AND cancel_requested_at_ms IS NULL")
            .bind(now)
            .bind(order_id)
            .execute(&mut *connection)
            .await?;
    Ok(updated.rows_affected() == 1)
}

/// `inventory.order_cancel_confirmed`: the stock of an order the shopper asked to cancel went back on sale,
/// so it cannot ship: the order is cancelled and its refund is due (requested after the commit).
pub async fn apply_cancel_confirmed(connection: &mut AnyConnection, event: &OrderCancelConfirmed) -> Result<(), sqlx::Error> {
    let cancelled = sqlx::query(
        "UPDATE orders SET status = 'cancelled', cancel_requested_at_ms = NULL, updated_at_ms = $1 \
         WHERE id = $2 AND status = 'paid' AND cancel_requested_at_ms IS NOT NULL",
    )
    .bind(now_ms())
    .bind(&event.order_id)
    .execute(&mut *connection)
    .await?;
    if cancelled.rows_affected() == 1 {
        timeline(connection, &event.order_id, OrderStatus::Cancelled.as_str(), "Cancelled as you asked; your payment will be refunded.").await?;
        mark_refund_due(connection, &event.order_id, "You cancelled the order.").await?;
    }
    Ok(())
}

/// `inventory.order_cancel_refused`: the order shipped before the request reached the warehouse. The
/// order stays as it is (its `inventory.order_fulfilled` came first); the shopper reads why.
pub async fn apply_cancel_refused(connection: &mut AnyConnection, event: &OrderCancelRefused) -> Result<(), sqlx::Error> {
    let answered = sqlx::query("UPDATE orders SET cancel_requested_at_ms = NULL, updated_at_ms = $1 WHERE id = $2 AND cancel_requested_at_ms IS NOT NULL")
        .bind(now_ms())
        .bind(&event.order_id)
        .execute(&mut *connection)
        .await?;
    if answered.rows_affected() == 1 {
        let reason: String = event.reason.chars().take(200).collect();
        timeline(connection, &event.order_id, "cancel_refused", &format!("We could not cancel your order: {reason}. Nothing was refunded.")).await?;
    }
    Ok(())
}

/// What a webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Seen before (by event id).
    Duplicate,
    /// Valid, but nothing to change in the order's current state (an event arriving late).
    Ignored,
}

/// Applies a verified payment webhook (see the module docs for the rules).
pub async fn apply_payment_event(runtime: &FragmentRuntime, event: &WebhookEvent) -> Result<Applied, ApiError> {
    let outbox = &runtime.events.outbox;
    let outcome = retrying(|| async {
        let mut tx = runtime.db.begin().await?;
        let kind = serde_json::to_value(event.kind).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default();
        let recorded =
            sqlx::query("INSERT INTO payment_events (event_id, kind, payment_id, received_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING")
                .bind(&event.id)
                .bind(&kind)
                .bind(&event.payment.id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        if recorded.rows_affected() == 0 {
            return Ok(Ok(Applied::Duplicate));
        }
        let Some(order) = find(&mut tx, &event.payment.reference).await? else {
            return Ok(Err(ApiError::NotFound(format!("there is no order {:?}", event.payment.reference.chars().take(64).collect::<String>()))));
        };
        if order.payment_id.as_deref() != Some(event.payment.id.as_str()) {
            return Ok(Err(ApiError::Conflict(format!("payment {} is not the payment of order {}", event.payment.id, order.id))));
        }
        if event.payment.amount_minor != order.total_minor || event.payment.currency != order.currency {
            tracing::error!(order = order.id, payment = event.payment.id, "a payment's amount does not match its order");
            return Ok(Err(ApiError::Conflict(format!("payment {} is for another amount than order {}", event.payment.id, order.id))));
        }
        let applied = match event.kind {
            WebhookKind::PaymentSucceeded => {
                if transition(&mut tx, &order.id, &[OrderStatus::AwaitingPayment], OrderStatus::Paid).await? {
                    timeline(&mut tx, &order.id, OrderStatus::Paid.as_str(), "Payment received.").await?;
                    let lines = order_lines(&mut tx, &order.id).await?;
                    let reservation_id = order.reservation_id.clone().unwrap_or_default();
                    outbox.enqueue(&mut tx, &OrderPaid { order_id: order.id.clone(), reservation_id, lines }).await?;
                    Applied::Changed
                } else if mark_refund_due_if_cancelled(&mut tx, &order.id, "The order was cancelled before the payment completed.").await? {
                    // Decided by the update, not by the row read above: a cancel may have committed since.
                    timeline(&mut tx, &order.id, "payment_after_cancel", "A payment arrived after the order was cancelled; it will be refunded.").await?;
                    Applied::Changed
                } else {
                    Applied::Ignored
                }
            }
            WebhookKind::PaymentFailed => {
                if order.status == OrderStatus::AwaitingPayment {
                    let note = event.message.clone().unwrap_or_else(|| "A payment attempt failed.".into());
                    timeline(&mut tx, &order.id, "payment_failed", &format!("Payment attempt failed: {note}")).await?;
                    Applied::Changed
                } else {
                    Applied::Ignored
                }
            }
            WebhookKind::PaymentRefunded => {
                let from = [OrderStatus::AwaitingPayment, OrderStatus::Paid, OrderStatus::Cancelled];
                if transition(&mut tx, &order.id, &from, OrderStatus::Refunded).await? {
                    sqlx::query("UPDATE orders SET refund_due = 0 WHERE id = $1").bind(&order.id).execute(&mut *tx).await?;
                    let note = event.message.clone().unwrap_or_else(|| "Refunded.".into());
                    timeline(&mut tx, &order.id, OrderStatus::Refunded.as_str(), &format!("Your payment was refunded: {note}")).await?;
                    if order.status != OrderStatus::Cancelled {
                        // Not cancelled through the cart (refunded at the provider): let the stock go.
                        if let Some(reservation_id) = &order.reservation_id {
                            outbox.enqueue(&mut tx, &OrderCancelled { order_id: order.id.clone(), reservation_id: reservation_id.clone() }).await?;
                        }
                    }
                    Applied::Changed
                } else {
                    Applied::Ignored
                }
            }
            WebhookKind::PaymentCanceled => Applied::Ignored,
        };
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Ok(applied))
    })
    .await
    .map_err(tessera_kit::internal)?;
    if outcome == Ok(Applied::Changed) {
        outbox.committed();
    }
    outcome
}

/// `inventory.order_fulfilled`: the order shipped.
pub async fn apply_fulfilled(connection: &mut AnyConnection, event: &OrderFulfilled) -> Result<(), sqlx::Error> {
    if transition(connection, &event.order_id, &[OrderStatus::Paid], OrderStatus::Fulfilled).await? {
        timeline(connection, &event.order_id, OrderStatus::Fulfilled.as_str(), "Your order has shipped.").await?;
    } else if find(connection, &event.order_id).await?.is_some() {
        timeline(connection, &event.order_id, "fulfilled_late", "The warehouse reports this order as shipped.").await?;
    }
    Ok(())
}

/// `inventory.order_short`: paid, but the stock could not be reserved any more: cancel and refund.
pub async fn apply_short(connection: &mut AnyConnection, event: &OrderShort) -> Result<(), sqlx::Error> {
    // Inventory sends it only in answer to `cart.order_paid`, so only a paid order has anything to refund.
    if transition(connection, &event.order_id, &[OrderStatus::Paid], OrderStatus::Cancelled).await? {
        let skus: Vec<&str> = event.shortages.iter().map(|s| s.sku.as_str()).collect();
        let note = format!(
            "Sorry: your hold on the items lapsed before the payment arrived, and {} sold out meanwhile. We cancelled the order and are refunding your payment in full.",
            skus.join(", ")
        );
        timeline(connection, &event.order_id, OrderStatus::Cancelled.as_str(), &note).await?;
        mark_refund_due(connection, &event.order_id, "The items sold out before your payment arrived.").await?;
    }
    Ok(())
}

/// Requests the refunds that are due; the provider's idempotency key makes a repeat harmless.
pub async fn settle_refunds(runtime: &FragmentRuntime) {
    let due: Result<Vec<(String, String, Option<String>)>, _> =
        sqlx::query_as("SELECT id, payment_id, refund_reason FROM orders WHERE refund_due = 1 AND payment_id IS NOT NULL ORDER BY updated_at_ms LIMIT 50")
            .fetch_all(&runtime.db)
            .await;
    let Ok(due) = due else { return };
    let provider = payments::provider(runtime);
    for (order_id, payment_id, reason) in due {
        let request = RefundRequest { idempotency_key: format!("refund-{order_id}"), reason: reason.unwrap_or_else(|| "Refund".into()) };
        match provider.refund(&payment_id, &request).await {
            Ok(_) => {
                let _ = sqlx::query("UPDATE orders SET refund_due = 0 WHERE id = $1").bind(&order_id).execute(&runtime.db).await;
            }
            Err(error) => {
                tracing::warn!(%error, order = order_id, "refund not accepted yet; retrying later");
                // To the back of the queue, so one refused refund cannot hold up the others.
                let _ = sqlx::query("UPDATE orders SET updated_at_ms = $1 WHERE id = $2").bind(now_ms()).bind(&order_id).execute(&runtime.db).await;
            }
        }
    }
}

/// Releases the reservations of checkouts whose answer from inventory never came: the same request
/// under the same key finds the reservation inventory made unseen (or makes it, all or nothing), and it is
/// released at once.
pub async fn release_unanswered_checkouts(runtime: &FragmentRuntime) -> Result<(), sqlx::Error> {
    let due: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, user_id, checkout_replaces FROM orders WHERE release_due = 1 AND status = 'failed' LIMIT 20").fetch_all(&runtime.db).await?;
    for (order_id, user_id, replaces) in due {
        let mut connection = runtime.db.acquire().await?;
        let lines = order_lines(&mut connection, &order_id).await?;
        drop(connection);
        let replaces: Vec<String> = replaces.unwrap_or_default().split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect();
        let key = Some(format!("checkout-{order_id}"));
        let settled = match holds::reserve(runtime, &store::user_owner(&user_id), key, lines, replaces, CHECKOUT_TTL_SECONDS).await {
            Hold::Held(reservation) => {
                holds::release(runtime, &reservation.id).await;
                true
            }
            // Nothing was made (all or nothing), or inventory will never take this request.
            Hold::Short(_) | Hold::Refused(_) => true,
            Hold::Unavailable(_) => false,
        };
        if settled {
            sqlx::query("UPDATE orders SET release_due = 0 WHERE id = $1").bind(&order_id).execute(&runtime.db).await?;
        }
    }
    Ok(())
}

/// Orders stuck in `placing` (the process stopped mid-way) fail after this long and free their cart.
const STALE_PLACING_MS: i64 = 120_000;

/// Fails orders stuck in `placing` and reopens their carts.
pub async fn fail_stale_placing(db: &AnyPool) -> Result<(), sqlx::Error> {
    let stale: Vec<(String, String)> = sqlx::query_as("SELECT id, cart_id FROM orders WHERE status = 'placing' AND created_at_ms < $1")
        .bind(now_ms() - STALE_PLACING_MS)
        .fetch_all(db)
        .await?;
    for (order_id, cart_id) in stale {
        let mut tx = db.begin().await?;
        if transition(&mut tx, &order_id, &[OrderStatus::Placing], OrderStatus::Failed).await? {
            sqlx::query("UPDATE orders SET failure = 'The order was interrupted; place it again.' WHERE id = $1").bind(&order_id).execute(&mut *tx).await?;
            store::set_cart_status(&mut tx, &cart_id, "checking_out", "open").await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The shopper's orders, newest first.
pub async fn list(db: &AnyPool, user_id: &str) -> Result<Vec<OrderSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.status, o.created_at_ms, o.total_minor, o.currency, \
         CAST((SELECT COALESCE(SUM(quantity), 0) FROM order_items i WHERE i.order_id = o.id) AS BIGINT) AS item_count \
         FROM orders o WHERE o.user_id = $1 AND o.status NOT IN ('placing', 'failed') ORDER BY o.created_at_ms DESC LIMIT 100",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            let currency: String = row.try_get("currency")?;
            Ok(OrderSummary {
                id: row.try_get("id")?,
                status: OrderStatus::parse(&row.try_get::<String, _>("status")?).unwrap_or(OrderStatus::Failed),
                placed_at: format_time(row.try_get("created_at_ms")?),
                total: money(row.try_get("total_minor")?, &currency),
                item_count: row.try_get("item_count")?,
            })
        })
        .collect()
}

/// The order page's data.
pub async fn view(db: &AnyPool, order: OrderRow) -> Result<OrderView, sqlx::Error> {
    let mut connection = db.acquire().await?;
    let lines: Vec<(String, String, i64, i64)> =
        sqlx::query_as("SELECT sku, name, unit_price_minor, quantity FROM order_items WHERE order_id = $1 ORDER BY sku")
            .bind(&order.id)
            .fetch_all(&mut *connection)
            .await?;
    let timeline: Vec<(i64, String, String)> = sqlx::query_as("SELECT at_ms, status, note FROM order_timeline WHERE order_id = $1 ORDER BY position")
        .bind(&order.id)
        .fetch_all(&mut *connection)
        .await?;
    let currency = order.currency.clone();
    let shipping = ShippingMethod::parse(&order.shipping_method).map(|method| method.label().to_owned()).unwrap_or(order.shipping_method.clone());
    Ok(OrderView {
        id: order.id.clone(),
        status: order.status,
        placed_at: format_time(order.created_at_ms),
        lines: lines
            .into_iter()
            .map(|(sku, name, unit, quantity)| OrderLine {
                sku,
                name,
                quantity,
                unit_price: money(unit, &currency),
                line_total: money(unit * quantity, &currency),
            })
            .collect(),
        items: money(order.items_minor, &currency),
        shipping: money(order.shipping_minor, &currency),
        shipping_method: shipping,
        total: money(order.total_minor, &currency),
        address: order.address.clone(),
        timeline: timeline.into_iter().map(|(at, status, note)| TimelineEntry { at: format_time(at), status, note }).collect(),
        pay_url: if order.status == OrderStatus::AwaitingPayment { order.pay_url.clone() } else { None },
        cancel_requested: order.cancel_requested && order.status == OrderStatus::Paid,
    })
}
