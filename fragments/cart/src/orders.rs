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

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{format_time, CartId, OrderId, Quantity, ReservationId, Sku};
use tessera_contracts::events::{OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort};
use tessera_contracts::inventory::{InsufficientStock, Line, Reservation};
use tessera_contracts::payments::{CancelRequest, CreatePayment, RefundRequest, WebhookEvent, WebhookKind};
use tessera_fragment::db::now_ms;
use tessera_fragment::db::retrying;
use tessera_fragment::FragmentRuntime;

use crate::error::CartError;
use crate::holds::{self, Hold};
use crate::model::{money, Address, OrderLine, OrderStatus, OrderSummary, OrderView, PlacedOrder, ShippingMethod, TimelineEntry, CHECKOUT_TTL_SECONDS};
use crate::payments::{self, PaymentProvider};
use crate::store::{self, CartStatus, Item, Price, Shopper};

/// An order as stored.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: OrderId,
    pub user_id: String,
    pub cart_id: CartId,
    pub request_hash: String,
    pub status: OrderStatus,
    pub failure: Option<String>,
    pub address: Address,
    pub shipping_method: String,
    pub shipping_minor: i64,
    pub items_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub reservation_id: Option<ReservationId>,
    pub payment_id: Option<String>,
    pub pay_url: Option<String>,
    pub created_at_ms: i64,
    /// The shopper asked to cancel this paid order; inventory has not answered yet.
    pub cancel_requested: bool,
}

const ORDER_COLUMNS: &str = "id, user_id, cart_id, request_hash, status, failure, ship_name, ship_street, ship_city, ship_postcode, \
     ship_country, shipping_method, shipping_minor, items_minor, total_minor, currency, reservation_id, payment_id, pay_url, created_at_ms, \
     cancel_requested_at_ms";

/// An `orders` row as [`ORDER_COLUMNS`] read it; [`OrderRow`] gathers the address.
#[derive(sqlx::FromRow)]
struct StoredOrder {
    id: OrderId,
    user_id: String,
    cart_id: CartId,
    request_hash: String,
    status: OrderStatus,
    failure: Option<String>,
    ship_name: String,
    ship_street: String,
    ship_city: String,
    ship_postcode: String,
    ship_country: String,
    shipping_method: String,
    shipping_minor: i64,
    items_minor: i64,
    total_minor: i64,
    currency: String,
    reservation_id: Option<ReservationId>,
    payment_id: Option<String>,
    pay_url: Option<String>,
    created_at_ms: i64,
    cancel_requested_at_ms: Option<i64>,
}

impl OrderRow {
    /// The order's reservation in inventory: every order that got as far as awaiting payment has one
    /// (reserving is what placed it).
    fn reservation(&self) -> Result<ReservationId, sqlx::Error> {
        self.reservation_id.clone().ok_or_else(|| sqlx::Error::Protocol(format!("order {} has no reservation", self.id)))
    }
}

impl From<StoredOrder> for OrderRow {
    fn from(row: StoredOrder) -> OrderRow {
        OrderRow {
            id: row.id,
            user_id: row.user_id,
            cart_id: row.cart_id,
            request_hash: row.request_hash,
            status: row.status,
            failure: row.failure,
            address: Address { name: row.ship_name, street: row.ship_street, city: row.ship_city, postcode: row.ship_postcode, country: row.ship_country },
            shipping_method: row.shipping_method,
            shipping_minor: row.shipping_minor,
            items_minor: row.items_minor,
            total_minor: row.total_minor,
            currency: row.currency,
            reservation_id: row.reservation_id,
            payment_id: row.payment_id,
            pay_url: row.pay_url,
            created_at_ms: row.created_at_ms,
            cancel_requested: row.cancel_requested_at_ms.is_some(),
        }
    }
}

/// One order by id (any user's: callers scope by user themselves).
pub async fn find(connection: &mut AnyConnection, id: &OrderId) -> Result<Option<OrderRow>, sqlx::Error> {
    let row: Option<StoredOrder> =
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1")).bind(id).fetch_optional(&mut *connection).await?;
    Ok(row.map(OrderRow::from))
}

async fn find_by_key(db: &AnyPool, user_id: &str, key: &str) -> Result<Option<OrderRow>, sqlx::Error> {
    let row: Option<StoredOrder> = sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2"))
        .bind(user_id)
        .bind(key)
        .fetch_optional(db)
        .await?;
    Ok(row.map(OrderRow::from))
}

/// What an order's timeline records: the status it moved to, or something that happened to it and left
/// its status as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Became(OrderStatus),
    PaymentFailed,
    /// A payment succeeded after the order was cancelled (it is refunded).
    PaymentAfterCancel,
    CancelRequested,
    /// Inventory answered that the order had shipped.
    CancelRefused,
    /// The warehouse reports an order shipped that is no longer paid here (cancelled, refunded).
    FulfilledLate,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Became(status) => status.as_str(),
            Step::PaymentFailed => "payment_failed",
            Step::PaymentAfterCancel => "payment_after_cancel",
            Step::CancelRequested => "cancel_requested",
            Step::CancelRefused => "cancel_refused",
            Step::FulfilledLate => "fulfilled_late",
        }
    }
}

async fn timeline(connection: &mut AnyConnection, order_id: &OrderId, step: Step, note: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO order_timeline (order_id, at_ms, status, note) VALUES ($1, $2, $3, $4)")
        .bind(order_id)
        .bind(now_ms())
        .bind(step.as_str())
        .bind(note)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Moves an order from one of `from` to `to`; whether this call did it.
async fn transition(connection: &mut AnyConnection, order_id: &OrderId, from: &[OrderStatus], to: OrderStatus) -> Result<bool, sqlx::Error> {
    let from_placeholders: Vec<String> = (0..from.len()).map(|n| format!("${}", n + 4)).collect();
    let sql = format!("UPDATE orders SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ({})", from_placeholders.join(", "));
    let mut update = sqlx::query(&sql).bind(to).bind(now_ms()).bind(order_id);
    for status in from {
        update = update.bind(*status);
    }
    Ok(update.execute(&mut *connection).await?.rows_affected() == 1)
}

async fn mark_refund_due(connection: &mut AnyConnection, order_id: &OrderId, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET refund_due = 1, refund_reason = $1 WHERE id = $2 AND payment_id IS NOT NULL")
        .bind(reason)
        .bind(order_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Marks the refund of a cancelled order's payment as due; whether the order is cancelled.
async fn mark_refund_due_if_cancelled(connection: &mut AnyConnection, order_id: &OrderId, reason: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE orders SET refund_due = 1, refund_reason = $1 WHERE id = $2 AND status = $3 AND payment_id IS NOT NULL")
        .bind(reason)
        .bind(order_id)
        .bind(OrderStatus::Cancelled)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() == 1)
}

async fn order_lines(connection: &mut AnyConnection, order_id: &OrderId) -> Result<Vec<Line>, sqlx::Error> {
    let rows: Vec<(Sku, Quantity)> =
        sqlx::query_as("SELECT sku, quantity FROM order_items WHERE order_id = $1 ORDER BY sku").bind(order_id).fetch_all(&mut *connection).await?;
    Ok(rows.into_iter().map(|(sku, quantity)| Line { sku, quantity }).collect())
}

fn request_hash(address: &Address, shipping: ShippingMethod) -> String {
    let text = format!("{}\n{}\n{}\n{}\n{}\n{}", address.name, address.street, address.city, address.postcode, address.country, shipping.as_str());
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check_key(key: &str) -> Result<(), CartError> {
    if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(CartError::Invalid("the checkout form is out of date; reload the page and try again".into()));
    }
    Ok(())
}

/// The answer for a key that was used before.
fn replay(existing: &OrderRow, hash: &str) -> Result<PlacedOrder, CartError> {
    if existing.request_hash != hash {
        return Err(CartError::Conflict("this checkout form was already used for a different order; reload the page to start again".into()));
    }
    match existing.status {
        OrderStatus::Placing => Err(CartError::Conflict("your order is being placed; wait a moment and look at your orders".into())),
        OrderStatus::Failed => Err(CartError::Conflict(existing.failure.clone().unwrap_or_else(|| "the order could not be placed".into()))),
        _ => Ok(PlacedOrder { order_id: existing.id.to_string(), pay_url: existing.pay_url.clone(), message: None }),
    }
}

/// The idempotency key of an order's reservation in inventory.
fn reservation_key(order_id: &OrderId) -> String {
    format!("checkout-{order_id}")
}

/// An order about to be placed: the shopper's request and their cart's lines at today's prices.
struct Draft<'a> {
    order_id: OrderId,
    user_id: &'a str,
    cart_id: &'a CartId,
    key: &'a str,
    request_hash: String,
    address: &'a Address,
    shipping: ShippingMethod,
    lines: Vec<(Item, Price)>,
    currency: String,
    items_minor: i64,
}

impl Draft<'_> {
    fn total_minor(&self) -> i64 {
        self.items_minor + self.shipping.price_minor()
    }

    /// The lines' holds, which the order's reservation replaces.
    fn replaces(&self) -> Vec<ReservationId> {
        self.lines.iter().filter_map(|(item, _)| item.reservation_id.clone()).collect()
    }

    /// A SKU's name as the shopper knows it.
    fn name_of<'n>(&'n self, sku: &'n Sku) -> &'n str {
        self.lines.iter().find(|(item, _)| &item.sku == sku).map_or(sku.as_str(), |(_, price)| price.name.as_str())
    }
}

/// Prices a cart's lines for an order: refused when the cart is empty, a line is no longer sold, or the
/// lines are priced in more than one currency.
fn priced(items: Vec<Item>) -> Result<(Vec<(Item, Price)>, String), CartError> {
    let mut lines = Vec::with_capacity(items.len());
    for item in items {
        let price = item.price.clone().ok_or_else(|| CartError::Conflict(format!("{} is no longer sold; remove it from your cart", item.sku)))?;
        lines.push((item, price));
    }
    let currency = lines.first().map(|(_, price)| price.currency.clone()).ok_or(CartError::EmptyCart)?;
    if lines.iter().any(|(_, price)| price.currency != currency) {
        return Err(CartError::Conflict("your cart mixes currencies; remove the items priced in another currency".into()));
    }
    Ok((lines, currency))
}

/// Places the signed-in shopper's cart as an order (see the module docs): the order and the cart's lock
/// are written together, inventory reserves the whole order, the outcome is recorded, and the payment is
/// prepared.
pub async fn place(runtime: &FragmentRuntime, shopper: &Shopper, key: &str, address: &Address, shipping: ShippingMethod) -> Result<PlacedOrder, CartError> {
    let user = shopper.user.as_ref().ok_or(CartError::SignInFirst)?;
    check_key(key)?;
    let db = &runtime.db;
    let hash = request_hash(address, shipping);
    if let Some(existing) = find_by_key(db, &user.id, key).await? {
        return replay(&existing, &hash);
    }
    let cart = store::user_cart(db, &user.id).await?.ok_or(CartError::EmptyCart)?;
    let _guard = holds::lock(runtime, &cart.id).await?;
    let items = store::items(&mut *db.acquire().await?, &cart.id).await?;
    let (lines, currency) = priced(items)?;
    let items_minor = lines.iter().map(|(item, price)| item.quantity.get() * price.price_minor).sum();
    let draft =
        Draft { order_id: OrderId::random(), user_id: &user.id, cart_id: &cart.id, key, request_hash: hash, address, shipping, lines, currency, items_minor };
    if !open_order(db, &draft).await? {
        // A racing request with the same key got there first.
        let existing = find_by_key(db, &user.id, key).await?.ok_or(sqlx::Error::RowNotFound)?;
        return replay(&existing, &draft.request_hash);
    }
    let outcome = reserve_order(runtime, shopper, &draft).await;
    record_outcome(db, &draft, &outcome).await?;
    // If the provider is down, the order waits and the shopper can pay later.
    let order = find(&mut *db.acquire().await?, &draft.order_id).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(start_payment(runtime, &order).await)
}

/// Writes the order (status `placing`: the key's lock) and locks the cart, in one transaction. `false`
/// when the key was taken meanwhile; a conflict when the cart is being checked out in another window.
async fn open_order(db: &AnyPool, draft: &Draft<'_>) -> Result<bool, CartError> {
    retrying(|| async {
        let mut tx = db.begin().await?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, cart_id, idempotency_key, request_hash, status, ship_name, ship_street, ship_city, \
             ship_postcode, ship_country, shipping_method, shipping_minor, items_minor, total_minor, currency, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(&draft.order_id)
        .bind(draft.user_id)
        .bind(draft.cart_id)
        .bind(draft.key)
        .bind(&draft.request_hash)
        .bind(OrderStatus::Placing)
        .bind(&draft.address.name)
        .bind(&draft.address.street)
        .bind(&draft.address.city)
        .bind(&draft.address.postcode)
        .bind(&draft.address.country)
        .bind(draft.shipping.as_str())
        .bind(draft.shipping.price_minor())
        .bind(draft.items_minor)
        .bind(draft.total_minor())
        .bind(&draft.currency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        if !store::set_cart_status(&mut tx, draft.cart_id, CartStatus::Open, CartStatus::CheckingOut).await? {
            return Err(CartError::Conflict("this cart is already being checked out in another window".into()));
        }
        for (item, price) in &draft.lines {
            sqlx::query("INSERT INTO order_items (order_id, sku, name, unit_price_minor, quantity) VALUES ($1, $2, $3, $4, $5)")
                .bind(&draft.order_id)
                .bind(&item.sku)
                .bind(&price.name)
                .bind(price.price_minor)
                .bind(item.quantity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, CartError>(true)
    })
    .await
}

/// One reservation in inventory for the whole order, replacing the lines' holds.
async fn reserve_order(runtime: &FragmentRuntime, shopper: &Shopper, draft: &Draft<'_>) -> Hold {
    let lines = draft.lines.iter().map(|(item, _)| Line { sku: item.sku.clone(), quantity: item.quantity }).collect();
    let key = Some(reservation_key(&draft.order_id));
    holds::reserve(runtime, &shopper.owner(), key, lines, draft.replaces(), CHECKOUT_TTL_SECONDS).await
}

/// Records inventory's answer: held, the order awaits payment and the cart is ordered; otherwise the
/// order failed, the cart is open again, and the shopper is told why (the error returned).
async fn record_outcome(db: &AnyPool, draft: &Draft<'_>, outcome: &Hold) -> Result<(), CartError> {
    let failure = match outcome {
        Hold::Held(reservation) => {
            retrying(|| async {
                let mut tx = db.begin().await?;
                await_payment(&mut tx, draft, reservation).await?;
                tx.commit().await
            })
            .await?;
            return Ok(());
        }
        Hold::Short(short) => {
            let names: Vec<String> = short
                .shortages
                .iter()
                .map(|shortage| holds::short_note(draft.name_of(&shortage.sku), &InsufficientStock::new(vec![shortage.clone()])))
                .collect();
            format!("Not enough stock to place your order: {} Your cart is unchanged otherwise.", names.join(" "))
        }
        Hold::Unavailable(_) => "The stock service is not answering, so the order was not placed. Your cart is kept; try again in a moment.".into(),
        Hold::Refused(error) => format!("The order could not be placed: {error}"),
    };
    retrying(|| async {
        let mut tx = db.begin().await?;
        fail_order(&mut tx, draft, outcome, &failure).await?;
        tx.commit().await
    })
    .await?;
    Err(match outcome {
        Hold::Unavailable(_) => CartError::Unavailable(failure),
        _ => CartError::Conflict(failure),
    })
}

/// The order is reserved: it awaits payment, and its cart is done.
async fn await_payment(connection: &mut AnyConnection, draft: &Draft<'_>, reservation: &Reservation) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = $1, reservation_id = $2, updated_at_ms = $3 WHERE id = $4 AND status = $5")
        .bind(OrderStatus::AwaitingPayment)
        .bind(&reservation.id)
        .bind(now_ms())
        .bind(&draft.order_id)
        .bind(OrderStatus::Placing)
        .execute(&mut *connection)
        .await?;
    timeline(connection, &draft.order_id, Step::Became(OrderStatus::AwaitingPayment), "Order placed; your items are held while you pay.").await?;
    store::set_cart_status(connection, draft.cart_id, CartStatus::CheckingOut, CartStatus::Ordered).await?;
    Ok(())
}

/// The order could not be reserved: it failed with `failure`, its cart is open again, and the lines say
/// what became of their holds.
async fn fail_order(connection: &mut AnyConnection, draft: &Draft<'_>, outcome: &Hold, failure: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = $1, failure = $2, updated_at_ms = $3 WHERE id = $4 AND status = $5")
        .bind(OrderStatus::Failed)
        .bind(failure)
        .bind(now_ms())
        .bind(&draft.order_id)
        .bind(OrderStatus::Placing)
        .execute(&mut *connection)
        .await?;
    store::set_cart_status(connection, draft.cart_id, CartStatus::CheckingOut, CartStatus::Open).await?;
    match outcome {
        Hold::Unavailable(_) => {
            // Inventory may have made the order's reservation (releasing the lines' holds) and answered
            // too late: the background pass finds it again by its key and releases it, and the lines are
            // held again, replacing whatever they pointed at.
            sqlx::query("UPDATE orders SET release_due = 1, checkout_replaces = $1 WHERE id = $2")
                .bind(draft.replaces().iter().map(ReservationId::as_str).collect::<Vec<_>>().join(","))
                .bind(&draft.order_id)
                .execute(&mut *connection)
                .await?;
            store::mark_holds_pending(connection, draft.cart_id, holds::PENDING_NOTE).await?;
        }
        Hold::Short(short) => {
            for shortage in &short.shortages {
                if let Some((item, price)) = draft.lines.iter().find(|(item, _)| item.sku == shortage.sku) {
                    let single = InsufficientStock::new(vec![shortage.clone()]);
                    let record = holds::record(&Hold::Short(single), &price.name, item.reservation_id.as_ref(), "");
                    store::set_hold(connection, draft.cart_id, &item.sku, &record).await?;
                }
            }
        }
        Hold::Held(_) | Hold::Refused(_) => {}
    }
    Ok(())
}

/// Creates (or finds again) the order's payment at the provider.
pub async fn start_payment(runtime: &FragmentRuntime, order: &OrderRow) -> PlacedOrder {
    let request = CreatePayment {
        idempotency_key: format!("order-{}", order.id),
        reference: order.id.to_string(),
        amount_minor: order.total_minor,
        currency: order.currency.clone(),
        description: format!("Tessera order {}", &order.id.as_str()[..8.min(order.id.as_str().len())]),
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
                tracing::error!(%error, order = %order.id, "could not save the payment of an order");
                return PlacedOrder {
                    order_id: order.id.to_string(),
                    pay_url: None,
                    message: Some("We could not prepare the payment; try paying again in a moment.".into()),
                };
            }
            PlacedOrder { order_id: order.id.to_string(), pay_url: Some(payment.pay_url), message: None }
        }
        Err(error) => PlacedOrder { order_id: order.id.to_string(), pay_url: None, message: Some(payments::unavailable(&error).to_string()) },
    }
}

/// The shopper's own order, or 404 (another user's order is indistinguishable from a missing one).
pub async fn own_order(db: &AnyPool, user_id: &str, order_id: &str) -> Result<OrderRow, CartError> {
    let not_found = || CartError::NotFound("there is no such order in your account".into());
    let order_id = OrderId::parse(order_id).map_err(|_| not_found())?;
    match find(&mut *db.acquire().await?, &order_id).await? {
        Some(order) if order.user_id == user_id && order.status != OrderStatus::Placing => Ok(order),
        _ => Err(not_found()),
    }
}

/// "Pay now" on an order awaiting payment: its payment page (created again if the provider was down).
pub async fn pay(runtime: &FragmentRuntime, user_id: &str, order_id: &str) -> Result<PlacedOrder, CartError> {
    let order = own_order(&runtime.db, user_id, order_id).await?;
    if order.status != OrderStatus::AwaitingPayment {
        return Err(CartError::Conflict(format!("this order is {}; there is nothing to pay", order.status.label().to_lowercase())));
    }
    if let Some(pay_url) = &order.pay_url {
        return Ok(PlacedOrder { order_id: order.id.to_string(), pay_url: Some(pay_url.clone()), message: None });
    }
    let placed = start_payment(runtime, &order).await;
    match &placed.pay_url {
        Some(_) => Ok(placed),
        None => Err(CartError::Unavailable(placed.message.unwrap_or_default())),
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
pub async fn cancel(runtime: &FragmentRuntime, user_id: &str, order_id: &str) -> Result<Cancelled, CartError> {
    let order = own_order(&runtime.db, user_id, order_id).await?;
    if !order.status.cancellable() {
        return Err(CartError::Conflict(format!("this order is {}; it can no longer be cancelled", order.status.label().to_lowercase())));
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
            timeline(&mut tx, &order.id, Step::CancelRequested, "You asked to cancel. We are checking with the warehouse that it has not shipped.").await?;
            let reservation_id = order.reservation()?;
            outbox.enqueue(&mut tx, &OrderCancelRequested { order_id: order.id.clone(), reservation_id }).await?;
            Cancelled::Requested
        } else if transition(&mut tx, &order.id, &[OrderStatus::AwaitingPayment], OrderStatus::Cancelled).await? {
            timeline(&mut tx, &order.id, Step::Became(OrderStatus::Cancelled), "Cancelled by you before payment.").await?;
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
    .await?;
    let Some(done) = done else {
        // Asked twice at once: the other request is the one being answered.
        if own_order(&runtime.db, user_id, order_id).await?.cancel_requested {
            return Ok(Cancelled::Requested);
        }
        return Err(CartError::Conflict("the order changed meanwhile (it may have shipped); reload to see where it stands".into()));
    };
    outbox.committed();
    if done == Cancelled::Now {
        if let Some(payment_id) = &order.payment_id {
            // So the shopper cannot pay a cancelled order; if they already are, the success is refunded.
            if let Err(error) = payments::provider(runtime).cancel(payment_id, &CancelRequest { reason: "order cancelled".into() }).await {
                tracing::warn!(%error, order = %order.id, "could not cancel the payment; a late success will be refunded");
            }
        }
    }
    Ok(done)
}

/// Marks a paid order's cancellation as requested; whether this call did it.
async fn request_cancel(connection: &mut AnyConnection, order_id: &OrderId) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let updated =
        sqlx::query("UPDATE orders SET cancel_requested_at_ms = $1, updated_at_ms = $1 WHERE id = $2 AND status = $3 AND cancel_requested_at_ms IS NULL")
            .bind(now)
            .bind(order_id)
            .bind(OrderStatus::Paid)
            .execute(&mut *connection)
            .await?;
    Ok(updated.rows_affected() == 1)
}

/// `inventory.order_cancel_confirmed`: the stock of an order the shopper asked to cancel went back on sale,
/// so it cannot ship: the order is cancelled and its refund is due (requested after the commit).
pub async fn apply_cancel_confirmed(connection: &mut AnyConnection, event: &OrderCancelConfirmed) -> Result<(), sqlx::Error> {
    let cancelled = sqlx::query(
        "UPDATE orders SET status = $3, cancel_requested_at_ms = NULL, updated_at_ms = $1 \
         WHERE id = $2 AND status = $4 AND cancel_requested_at_ms IS NOT NULL",
    )
    .bind(now_ms())
    .bind(&event.order_id)
    .bind(OrderStatus::Cancelled)
    .bind(OrderStatus::Paid)
    .execute(&mut *connection)
    .await?;
    if cancelled.rows_affected() == 1 {
        timeline(connection, &event.order_id, Step::Became(OrderStatus::Cancelled), "Cancelled as you asked; your payment will be refunded.").await?;
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
        timeline(connection, &event.order_id, Step::CancelRefused, &format!("We could not cancel your order: {reason}. Nothing was refunded.")).await?;
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
pub async fn apply_payment_event(runtime: &FragmentRuntime, event: &WebhookEvent) -> Result<Applied, CartError> {
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
            return Ok(Applied::Duplicate);
        }
        let no_order = || CartError::NotFound(format!("there is no order {:?}", event.payment.reference.chars().take(64).collect::<String>()));
        let order_id = OrderId::parse(&event.payment.reference).map_err(|_| no_order())?;
        let Some(order) = find(&mut tx, &order_id).await? else {
            return Err(no_order());
        };
        if order.payment_id.as_deref() != Some(event.payment.id.as_str()) {
            return Err(CartError::Conflict(format!("payment {} is not the payment of order {}", event.payment.id, order.id)));
        }
        if event.payment.amount_minor != order.total_minor || event.payment.currency != order.currency {
            tracing::error!(order = %order.id, payment = event.payment.id, "a payment's amount does not match its order");
            return Err(CartError::Conflict(format!("payment {} is for another amount than order {}", event.payment.id, order.id)));
        }
        let applied = match event.kind {
            WebhookKind::PaymentSucceeded => {
                if transition(&mut tx, &order.id, &[OrderStatus::AwaitingPayment], OrderStatus::Paid).await? {
                    timeline(&mut tx, &order.id, Step::Became(OrderStatus::Paid), "Payment received.").await?;
                    let lines = order_lines(&mut tx, &order.id).await?;
                    let reservation_id = order.reservation()?;
                    outbox.enqueue(&mut tx, &OrderPaid { order_id: order.id.clone(), reservation_id, lines }).await?;
                    Applied::Changed
                } else if mark_refund_due_if_cancelled(&mut tx, &order.id, "The order was cancelled before the payment completed.").await? {
                    // Decided by the update, not by the row read above: a cancel may have committed since.
                    timeline(&mut tx, &order.id, Step::PaymentAfterCancel, "A payment arrived after the order was cancelled; it will be refunded.").await?;
                    Applied::Changed
                } else {
                    Applied::Ignored
                }
            }
            WebhookKind::PaymentFailed => {
                if order.status == OrderStatus::AwaitingPayment {
                    let note = event.message.clone().unwrap_or_else(|| "A payment attempt failed.".into());
                    timeline(&mut tx, &order.id, Step::PaymentFailed, &format!("Payment attempt failed: {note}")).await?;
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
                    timeline(&mut tx, &order.id, Step::Became(OrderStatus::Refunded), &format!("Your payment was refunded: {note}")).await?;
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
        Ok::<_, CartError>(applied)
    })
    .await;
    if matches!(outcome, Ok(Applied::Changed)) {
        outbox.committed();
    }
    outcome
}

/// `inventory.order_fulfilled`: the order shipped.
pub async fn apply_fulfilled(connection: &mut AnyConnection, event: &OrderFulfilled) -> Result<(), sqlx::Error> {
    if transition(connection, &event.order_id, &[OrderStatus::Paid], OrderStatus::Fulfilled).await? {
        timeline(connection, &event.order_id, Step::Became(OrderStatus::Fulfilled), "Your order has shipped.").await?;
    } else if find(connection, &event.order_id).await?.is_some() {
        timeline(connection, &event.order_id, Step::FulfilledLate, "The warehouse reports this order as shipped.").await?;
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
        timeline(connection, &event.order_id, Step::Became(OrderStatus::Cancelled), &note).await?;
        mark_refund_due(connection, &event.order_id, "The items sold out before your payment arrived.").await?;
    }
    Ok(())
}

/// Requests the refunds that are due; the provider's idempotency key makes a repeat harmless. A refund
/// the provider does not accept yet, or a database failure, is logged and left due for the next pass.
pub async fn settle_refunds(runtime: &FragmentRuntime) {
    if let Err(error) = request_due_refunds(runtime).await {
        tracing::warn!(%error, "could not settle the refunds that are due; the next pass tries again");
    }
}

async fn request_due_refunds(runtime: &FragmentRuntime) -> Result<(), sqlx::Error> {
    let due: Vec<(OrderId, String, Option<String>)> =
        sqlx::query_as("SELECT id, payment_id, refund_reason FROM orders WHERE refund_due = 1 AND payment_id IS NOT NULL ORDER BY updated_at_ms LIMIT 50")
            .fetch_all(&runtime.db)
            .await?;
    let provider = payments::provider(runtime);
    for (order_id, payment_id, reason) in due {
        let request = RefundRequest { idempotency_key: format!("refund-{order_id}"), reason: reason.unwrap_or_else(|| "Refund".into()) };
        match provider.refund(&payment_id, &request).await {
            Ok(_) => {
                sqlx::query("UPDATE orders SET refund_due = 0 WHERE id = $1").bind(&order_id).execute(&runtime.db).await?;
            }
            Err(error) => {
                tracing::warn!(%error, order = %order_id, "refund not accepted yet; retrying later");
                // To the back of the queue, so one refused refund cannot hold up the others.
                sqlx::query("UPDATE orders SET updated_at_ms = $1 WHERE id = $2").bind(now_ms()).bind(&order_id).execute(&runtime.db).await?;
            }
        }
    }
    Ok(())
}

/// Releases the reservations of checkouts whose answer from inventory never came: the same request
/// under the same key finds the reservation inventory made unseen (or makes it, all or nothing), and it is
/// released at once.
pub async fn release_unanswered_checkouts(runtime: &FragmentRuntime) -> Result<(), sqlx::Error> {
    let due: Vec<(OrderId, String, Option<String>)> =
        sqlx::query_as("SELECT id, user_id, checkout_replaces FROM orders WHERE release_due = 1 AND status = $1 LIMIT 20")
            .bind(OrderStatus::Failed)
            .fetch_all(&runtime.db)
            .await?;
    for (order_id, user_id, replaces) in due {
        let mut connection = runtime.db.acquire().await?;
        let lines = order_lines(&mut connection, &order_id).await?;
        drop(connection);
        // Written by `fail_order` from ids it held: one that does not parse is not a reservation to replace.
        let replaces: Vec<ReservationId> = replaces.unwrap_or_default().split(',').filter_map(|id| ReservationId::parse(id).ok()).collect();
        let key = Some(reservation_key(&order_id));
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
    let stale: Vec<(OrderId, CartId)> = sqlx::query_as("SELECT id, cart_id FROM orders WHERE status = $1 AND created_at_ms < $2")
        .bind(OrderStatus::Placing)
        .bind(now_ms() - STALE_PLACING_MS)
        .fetch_all(db)
        .await?;
    for (order_id, cart_id) in stale {
        let mut tx = db.begin().await?;
        if transition(&mut tx, &order_id, &[OrderStatus::Placing], OrderStatus::Failed).await? {
            sqlx::query("UPDATE orders SET failure = 'The order was interrupted; place it again.' WHERE id = $1").bind(&order_id).execute(&mut *tx).await?;
            store::set_cart_status(&mut tx, &cart_id, CartStatus::CheckingOut, CartStatus::Open).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The shopper's orders, newest first.
pub async fn list(db: &AnyPool, user_id: &str) -> Result<Vec<OrderSummary>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Listed {
        id: OrderId,
        status: OrderStatus,
        created_at_ms: i64,
        total_minor: i64,
        currency: String,
        item_count: i64,
    }
    let rows: Vec<Listed> = sqlx::query_as(
        "SELECT o.id, o.status, o.created_at_ms, o.total_minor, o.currency, \
         CAST((SELECT COALESCE(SUM(quantity), 0) FROM order_items i WHERE i.order_id = o.id) AS BIGINT) AS item_count \
         FROM orders o WHERE o.user_id = $1 AND o.status NOT IN ($2, $3) ORDER BY o.created_at_ms DESC LIMIT 100",
    )
    .bind(user_id)
    .bind(OrderStatus::Placing)
    .bind(OrderStatus::Failed)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| OrderSummary {
            id: row.id.to_string(),
            status: row.status,
            placed_at: format_time(row.created_at_ms),
            total: money(row.total_minor, &row.currency),
            item_count: row.item_count,
        })
        .collect())
}

/// The order page's data.
pub async fn view(db: &AnyPool, order: OrderRow) -> Result<OrderView, sqlx::Error> {
    let mut connection = db.acquire().await?;
    #[derive(sqlx::FromRow)]
    struct Ordered {
        sku: Sku,
        name: String,
        unit_price_minor: i64,
        quantity: Quantity,
    }
    let lines: Vec<Ordered> = sqlx::query_as("SELECT sku, name, unit_price_minor, quantity FROM order_items WHERE order_id = $1 ORDER BY sku")
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
        id: order.id.to_string(),
        status: order.status,
        placed_at: format_time(order.created_at_ms),
        lines: lines
            .into_iter()
            .map(|line| OrderLine {
                sku: line.sku.to_string(),
                name: line.name,
                quantity: line.quantity.get(),
                unit_price: money(line.unit_price_minor, &currency),
                line_total: money(line.unit_price_minor * line.quantity.get(), &currency),
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
