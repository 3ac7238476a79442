//! Holding stock for cart lines: the cart's side of inventory's reservation API.
//!
//! Each line has its own soft reservation. A quantity change reserves the new quantity *replacing* the
//! line's old reservation in one inventory transaction, so the line's units count towards the new hold and
//! a refusal leaves the old hold in place. Holds are extended while the shopper is active (any visit
//! extends those past half their life) and retried when inventory could not be reached. Inventory is
//! called while the shopper waits; a per-cart lock serialises one cart's changes, across every cart
//! instance, so two tabs cannot leave a line pointing at the wrong reservation.
//!
//! **Guests hold nothing.** A cart without an account costs nothing to make, so holds for guests let one
//! client take a SKU off sale for everyone (65 anonymous requests once held every mug for 15 minutes,
//! renewable by any visit). Limits per address would not bound it (addresses are cheap, and one proxy
//! is many shoppers), and shorter or smaller guest holds only slow it down. So a guest's line is checked
//! against what inventory last announced as available (`inventory.stock_changed`, projected into the
//! cart's `stock` table) and kept unheld, with a note; signing in merges the cart, and the user's cart
//! holds every line at once. Checkout needs an account anyway, so no guest ever needed a hold to buy.

use std::time::Duration;

use tessera_contracts::domain::{format_time, CartId, Quantity, ReservationId, ServiceName, Sku};
use tessera_contracts::inventory::{reservation_path, ExtendRequest, InsufficientStock, Line, Reservation, ReserveRequest, Shortage, RESERVATIONS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::db::now_ms;
use tessera_fragment::lease::{Lease, LeaseError};
use tessera_fragment::service::{CallError, ServiceClient};
use tessera_fragment::FragmentRuntime;

use crate::error::CartError;
use crate::model::{HoldState, HOLD_TTL_SECONDS};
use crate::store::{self, HoldRecord, Item};

/// How long the shopper waits for inventory before the line is kept as pending.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cart lease lasts without renewal: it is renewed while held, so it runs out only when the
/// instance holding it died.
const CART_LEASE: Duration = Duration::from_secs(30);

/// The turn of one task to change a cart, across every cart instance (see [`lock`]).
#[derive(Debug)]
pub struct CartGuard {
    _lease: Lease,
}

/// Serialises changes to one cart, whichever cart instance they arrive at: a lease on the cart in the
/// cart database (`tessera_fragment::lease`). A waiter polls, a few milliseconds apart at first: two changes
/// of one cart at once are rare (two tabs), so no queue is kept. Waits at most a little longer than a
/// lease lasts.
pub async fn lock(runtime: &FragmentRuntime, cart_id: &CartId) -> Result<CartGuard, LeaseError> {
    let lease = Lease::take(&runtime.db, &format!("cart:{cart_id}"), CART_LEASE, CART_LEASE + Duration::from_secs(5)).await?;
    // Renewed while held: a refresh that waits long on inventory keeps the cart.
    Ok(CartGuard { _lease: lease.kept(CART_LEASE) })
}

/// The outcome of asking inventory to hold stock.
#[derive(Debug)]
pub enum Hold {
    Held(Reservation),
    Short(InsufficientStock),
    /// Inventory could not be reached or answered nonsense: try again later.
    Unavailable(String),
    /// Inventory refused the request itself (unknown SKU, a paid reservation…).
    Refused(ApiError),
}

/// Why inventory cannot be called at all from this process.
#[derive(Debug, thiserror::Error)]
enum NoInventory {
    #[error("no route to the inventory service is configured")]
    NoRoute,
}

fn inventory(runtime: &FragmentRuntime) -> Result<ServiceClient, NoInventory> {
    let target = runtime.peers.get(&ServiceName::INVENTORY).ok_or(NoInventory::NoRoute)?;
    Ok(ServiceClient::new(ServiceName::INVENTORY, runtime.service_calls(), target, INVENTORY_TIMEOUT))
}

fn classify(result: Result<Reservation, CallError>) -> Hold {
    match result {
        Ok(reservation) => Hold::Held(reservation),
        Err(CallError::InsufficientStock(short)) => Hold::Short(short),
        Err(CallError::Unavailable { message, .. }) => Hold::Unavailable(message),
        Err(CallError::Api(ApiError::Internal)) => Hold::Unavailable("inventory failed".into()),
        Err(CallError::Api(ApiError::Unavailable(message))) => Hold::Unavailable(message),
        Err(CallError::Api(error)) => Hold::Refused(error),
    }
}

/// Reserves `lines` under a fresh key (or `key`), releasing `replaces` in the same inventory transaction.
pub async fn reserve(runtime: &FragmentRuntime, owner: &str, key: Option<String>, lines: Vec<Line>, replaces: Vec<ReservationId>, ttl_seconds: i64) -> Hold {
    let client = match inventory(runtime) {
        Ok(client) => client,
        Err(error) => return Hold::Unavailable(error.to_string()),
    };
    let request = ReserveRequest { idempotency_key: key.unwrap_or_else(new_key), owner: owner.to_owned(), lines, ttl_seconds, replaces };
    classify(client.post(RESERVATIONS_PATH, &request).await)
}

/// Extends a hold; `Err` with the reason when it cannot be (lapsed, ended, inventory down).
pub async fn extend(runtime: &FragmentRuntime, reservation_id: &ReservationId, ttl_seconds: i64) -> Hold {
    let client = match inventory(runtime) {
        Ok(client) => client,
        Err(error) => return Hold::Unavailable(error.to_string()),
    };
    classify(client.post(&reservation_path(reservation_id, Some("extend")), &ExtendRequest { ttl_seconds }).await)
}

/// Releases a hold (best effort: an unreleased hold lapses on its own).
pub async fn release(runtime: &FragmentRuntime, reservation_id: &ReservationId) {
    let Ok(client) = inventory(runtime) else {
        return;
    };
    if let Err(error) = client.post::<_, Reservation>(&reservation_path(reservation_id, Some("release")), &serde_json::json!({})).await {
        tracing::warn!(%error, reservation = %reservation_id, "could not release a cart hold; it will lapse");
    }
}

/// The words for a line that is not fully held.
pub fn short_note(name: &str, short: &InsufficientStock) -> String {
    match short.shortages.first() {
        Some(s) if s.available == 0 => format!("{name} is sold out."),
        Some(s) => format!("Only {} of {name} are available.", s.available),
        None => short.message.clone(),
    }
}

/// Why a guest's line is not held.
pub const GUEST_NOTE: &str = "Sign in to have it held for you: we set stock aside for signed-in shoppers only.";

/// A guest's line of `quantity` × `sku` (see the module docs): refused when inventory last announced less
/// than that, else kept unheld (a hold it had from before, if any, stays until signing in replaces it).
pub async fn guest_line(
    runtime: &FragmentRuntime,
    sku: &Sku,
    name: &str,
    quantity: Quantity,
    previous: Option<&ReservationId>,
) -> Result<HoldRecord, CartError> {
    if let Some(available) = store::available(&runtime.db, sku).await? {
        if quantity.get() > available {
            let short = InsufficientStock::new(vec![Shortage { sku: sku.clone(), requested: quantity.get(), available }]);
            return Err(CartError::Conflict(short_note(name, &short)));
        }
    }
    Ok(HoldRecord { reservation_id: previous.cloned(), held_until_ms: None, hold: HoldState::Pending, note: Some(GUEST_NOTE.into()), key: None })
}

pub const PENDING_NOTE: &str = "The stock service is not answering right now. The item stays in your cart and we will hold it as soon as it is back.";

/// A fresh idempotency key for one hold attempt.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The hold record of an attempt under `key`, for a line that had `previous` as its reservation. When
/// the answer never came, the key is kept: the retry sends it again, so a reservation inventory made
/// unseen is found rather than made twice.
pub fn record(outcome: &Hold, name: &str, previous: Option<&ReservationId>, key: &str) -> HoldRecord {
    let unchanged = |hold, note| HoldRecord { reservation_id: previous.cloned(), held_until_ms: None, hold, note: Some(note), key: None };
    match outcome {
        Hold::Held(reservation) => HoldRecord {
            reservation_id: Some(reservation.id.clone()),
            held_until_ms: Some(reservation.expires_at_ms),
            hold: HoldState::Held,
            note: None,
            key: None,
        },
        Hold::Short(short) => unchanged(HoldState::Short, format!("{} Lower the quantity or remove it to check out.", short_note(name, short))),
        Hold::Unavailable(_) => HoldRecord { key: Some(key.to_owned()), ..unchanged(HoldState::Pending, PENDING_NOTE.into()) },
        // Inventory refuses to hold it at all (e.g. no longer stocked): say so; retrying will not help.
        Hold::Refused(error) => unchanged(HoldState::Short, format!("{name} cannot be held for you: {error}. Remove it to check out.")),
    }
}

/// Brings every hold of a cart up to date (the caller holds the cart's lock): extends live holds past
/// half their life, reserves again lapsed, pending or short ones. Returns whether anything changed.
pub async fn refresh(runtime: &FragmentRuntime, cart_id: &CartId) -> Result<bool, sqlx::Error> {
    let owner = &store::cart_owner(cart_id);
    let mut connection = runtime.db.acquire().await?;
    // Only a user's open cart holds stock of its own (an ordered cart's went into its order; guests hold
    // nothing).
    let cart = store::cart(&mut connection, cart_id).await?;
    if cart.is_none_or(|cart| cart.status != store::CartStatus::Open || !cart.of_user) {
        return Ok(false);
    }
    let items = store::items(&mut connection, cart_id).await?;
    drop(connection);
    let now = now_ms();
    let mut changed = false;
    for item in items {
        let name = item.price.as_ref().map(|price| price.name.clone()).unwrap_or_else(|| item.sku.to_string());
        let live = item.hold == HoldState::Held && item.held_until_ms.is_some_and(|until| until > now);
        let fresh = item.held_until_ms.is_some_and(|until| until - now > HOLD_TTL_SECONDS * 1000 / 2);
        if live && fresh {
            continue;
        }
        let mut outcome = Hold::Unavailable(String::new());
        if live {
            if let Some(id) = &item.reservation_id {
                outcome = extend(runtime, id, HOLD_TTL_SECONDS).await;
                if matches!(outcome, Hold::Unavailable(_)) {
                    // Still held for a while: try again on the next visit rather than mark it pending.
                    continue;
                }
            }
        }
        let mut key = new_key();
        if !matches!(outcome, Hold::Held(_)) {
            (outcome, key) = rehold(runtime, owner, &item).await;
        }
        let record = record(&outcome, &name, item.reservation_id.as_ref(), &key);
        let mut connection = runtime.db.acquire().await?;
        store::set_hold(&mut connection, cart_id, &item.sku, &record).await?;
        changed = true;
    }
    Ok(changed)
}

/// Reserves an item's quantity again, replacing whatever it held: under the key of an unanswered attempt
/// if there is one (inventory replays what it made), else a new one. Returns the outcome and its key.
async fn rehold(runtime: &FragmentRuntime, owner: &str, item: &Item) -> (Hold, String) {
    let lines = vec![Line { sku: item.sku.clone(), quantity: item.quantity }];
    let replaces: Vec<ReservationId> = item.reservation_id.iter().cloned().collect();
    if let Some(key) = &item.hold_key {
        let outcome = reserve(runtime, owner, Some(key.clone()), lines.clone(), replaces.clone(), HOLD_TTL_SECONDS).await;
        // A conflict means the line changed since that attempt (another body under the key): start afresh.
        if !matches!(outcome, Hold::Refused(ApiError::Conflict(_))) {
            return (outcome, key.clone());
        }
    }
    let key = new_key();
    (reserve(runtime, owner, Some(key.clone()), lines, replaces, HOLD_TTL_SECONDS).await, key)
}

/// "Held for you until …" or the reason it is not.
pub fn hold_text(item: &Item, now: i64) -> String {
    match (item.hold, item.held_until_ms) {
        (HoldState::Held, Some(until)) if until > now => {
            format!("Held for you until {}", format_time(until))
        }
        (HoldState::Held, _) => "Your hold lapsed; we will try to hold it again on your next visit.".into(),
        (_, _) => item.hold_note.clone().unwrap_or_else(|| PENDING_NOTE.into()),
    }
}
