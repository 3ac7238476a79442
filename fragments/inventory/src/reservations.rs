//! Reservations: soft holds for carts, hard holds for paid orders, and their ends.
//!
//! Every function takes `now_ms`, the caller's clock, so tests drive expiry with an injected clock. A soft
//! reservation past its expiry holds nothing: it is ignored when stock runs short (expired on the spot, in
//! the same transaction, "lazily") and the [`sweep`] job expires the rest. Each status change is one
//! conditional `UPDATE … WHERE status = …`, so two racing callers cannot both end a reservation, and the
//! database's lifecycle trigger refuses any other transition.

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{OrderId, Quantity, ReservationId, ServiceName, Sku};
use tessera_contracts::events::{OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort};
use tessera_contracts::inventory::{
    InsufficientStock, Line, Reservation, ReservationStatus, ReserveRequest, Shortage, MAX_KEY_LENGTH, MAX_LINES, MAX_TTL_SECONDS, MIN_TTL_SECONDS,
};
use tessera_contracts::ApiError;
use tessera_fragment::outbox::Outbox;

use crate::ledger::{self, Cause, Deltas, Kind, Movement, Refused};
use crate::model::{ReservationRow, MAIN_LOCATION};
use crate::movements::OpError;

/// A reservation request that passed validation: lines sorted by SKU (the order rows are locked in).
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub idempotency_key: String,
    pub owner: String,
    pub lines: Vec<(Sku, Quantity)>,
    pub ttl_seconds: i64,
    /// Reservations released in the same transaction (sorted, no duplicates).
    pub replaces: Vec<ReservationId>,
    /// Fingerprint of everything but the key, to tell a replay from a different request.
    pub hash: String,
}

fn check_reference(value: &str, what: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_KEY_LENGTH || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("{what} must be 1 to {MAX_KEY_LENGTH} printable characters")));
    }
    Ok(value.to_owned())
}

fn check_ttl(ttl_seconds: i64) -> Result<i64, ApiError> {
    if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        Ok(ttl_seconds)
    } else {
        Err(ApiError::BadRequest(format!("ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}, not {ttl_seconds}")))
    }
}

fn check_lines(lines: &[Line]) -> Result<Vec<(Sku, Quantity)>, ApiError> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(ApiError::BadRequest(format!("a reservation has 1 to {MAX_LINES} lines, not {}", lines.len())));
    }
    // Each line's SKU and quantity were checked when the request was read (they are a `Sku` and a
    // `Quantity`); what is left is the request as a whole.
    let mut parsed: Vec<(Sku, Quantity)> = lines.iter().map(|line| (line.sku.clone(), line.quantity)).collect();
    parsed.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = parsed.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(ApiError::BadRequest(format!("{} appears on two lines; send one line per SKU", pair[0].0)));
    }
    Ok(parsed)
}

fn check_replaces(ids: &[ReservationId]) -> Result<Vec<ReservationId>, ApiError> {
    if ids.len() > MAX_LINES {
        return Err(ApiError::BadRequest(format!("a reservation replaces at most {MAX_LINES} others, not {}", ids.len())));
    }
    let mut ids: Vec<ReservationId> = ids.to_vec();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn fingerprint(owner: &str, lines: &[(Sku, Quantity)], ttl_seconds: i64, replaces: &[ReservationId]) -> String {
    let mut text = format!("{owner}\n{ttl_seconds}\n");
    for (sku, quantity) in lines {
        text.push_str(&format!("{sku}:{}\n", quantity.get()));
    }
    for id in replaces {
        text.push_str(&format!("replaces {id}\n"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

impl ValidRequest {
    pub fn parse(request: &ReserveRequest) -> Result<ValidRequest, ApiError> {
        let idempotency_key = check_reference(&request.idempotency_key, "idempotency_key")?;
        let owner = check_reference(&request.owner, "owner")?;
        let lines = check_lines(&request.lines)?;
        let ttl_seconds = check_ttl(request.ttl_seconds)?;
        let replaces = check_replaces(&request.replaces)?;
        let hash = fingerprint(&owner, &lines, ttl_seconds, &replaces);
        Ok(ValidRequest { idempotency_key, owner, lines, ttl_seconds, replaces, hash })
    }
}

/// A `reservations` row as stored; [`ReservationRow`] adds its lines and whether it lapsed.
#[derive(sqlx::FromRow)]
struct StoredReservation {
    id: ReservationId,
    caller: ServiceName,
    owner: String,
    order_id: Option<OrderId>,
    status: ReservationStatus,
    created_at_ms: i64,
    expires_at_ms: i64,
}

async fn lines_of(connection: &mut AnyConnection, id: &ReservationId) -> Result<Vec<Line>, sqlx::Error> {
    let rows: Vec<(Sku, i64)> = sqlx::query_as("SELECT sku, quantity FROM reservation_lines WHERE reservation_id = $1 ORDER BY sku, location")
        .bind(id)
        .fetch_all(&mut *connection)
        .await?;
    rows.into_iter()
        .map(|(sku, quantity)| {
            let quantity = Quantity::parse(quantity).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            Ok(Line { sku, quantity })
        })
        .collect()
}

/// One reservation, if it exists and (when `caller` is given) belongs to that caller.
pub async fn find(
    connection: &mut AnyConnection,
    id: &ReservationId,
    caller: Option<&ServiceName>,
    now_ms: i64,
) -> Result<Option<ReservationRow>, sqlx::Error> {
    let stored: Option<StoredReservation> =
        sqlx::query_as("SELECT id, caller, owner, order_id, status, created_at_ms, expires_at_ms FROM reservations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    let Some(stored) = stored.filter(|stored| caller.is_none_or(|caller| caller == &stored.caller)) else {
        return Ok(None);
    };
    let StoredReservation { id, caller, owner, order_id, status, created_at_ms, expires_at_ms } = stored;
    let lines = lines_of(connection, &id).await?;
    let lapsed = status == ReservationStatus::Soft && expires_at_ms <= now_ms;
    Ok(Some(ReservationRow { id, caller, owner, order_id, status, created_at_ms, expires_at_ms, lapsed, lines }))
}

/// The API view of a reservation.
pub fn to_contract(row: ReservationRow, replayed: bool) -> Reservation {
    Reservation {
        id: row.id,
        status: if row.lapsed { ReservationStatus::Expired } else { row.status },
        owner: row.owner,
        order_id: row.order_id,
        lines: row.lines,
        created_at_ms: row.created_at_ms,
        expires_at_ms: row.expires_at_ms,
        replayed,
    }
}

fn not_found(id: &ReservationId) -> OpError {
    OpError::Api(ApiError::NotFound(format!("there is no reservation {id}")))
}

/// Holds `quantity` of each line for a reservation, lazily expiring lapsed holds on a SKU that runs short.
/// Returns the shortages (nothing is held when there are any; the caller rolls back).
async fn hold_lines(
    connection: &mut AnyConnection,
    outbox: &Outbox,
    lines: &[(Sku, Quantity)],
    kind: Kind,
    cause: &Cause,
    now_ms: i64,
) -> Result<Vec<Shortage>, OpError> {
    let mut shortages = Vec::new();
    for (sku, quantity) in lines {
        let quantity = quantity.get();
        let deltas = match kind {
            Kind::HardReserved => Deltas { hard: quantity, ..Deltas::default() },
            _ => Deltas { soft: quantity, ..Deltas::default() },
        };
        let movement = Movement { sku, location: MAIN_LOCATION, kind, quantity, deltas, needs_available: quantity };
        let mut outcome = ledger::post(connection, outbox, &movement, cause, now_ms).await?;
        if matches!(outcome, Err(Refused::Guard(_))) && expire_lapsed_holding(connection, outbox, sku, now_ms).await? > 0 {
            outcome = ledger::post(connection, outbox, &movement, cause, now_ms).await?;
        }
        match outcome {
            Ok(_) => {}
            Err(Refused::Unknown) => return Err(OpError::Api(ApiError::NotFound(format!("{sku} is not stocked")))),
            Err(Refused::Guard(row)) => shortages.push(Shortage { sku: sku.clone(), requested: quantity, available: row.available }),
        }
    }
    Ok(shortages)
}

async fn insert_lines(connection: &mut AnyConnection, id: &ReservationId, lines: &[(Sku, Quantity)]) -> Result<(), sqlx::Error> {
    for (sku, quantity) in lines {
        sqlx::query("INSERT INTO reservation_lines (reservation_id, sku, location, quantity) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(sku)
            .bind(MAIN_LOCATION)
            .bind(quantity.get())
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Creates a soft reservation of every line, or none. The same idempotency key with the same request
/// returns the first answer; with a different request it is a conflict.
pub async fn reserve(db: &AnyPool, outbox: &Outbox, caller: &ServiceName, request: &ValidRequest, now_ms: i64) -> Result<Reservation, OpError> {
    let created = ledger::retrying(|| async {
        let mut tx = db.begin().await?;
        let id = ReservationId::random();
        // The first statement writes, so SQLite takes the write lock here (waiting its turn) rather than
        // failing a read-then-write upgrade later.
        let inserted = sqlx::query(
            "INSERT INTO reservations (id, caller, idempotency_key, request_hash, owner, status, created_at_ms, expires_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $8, $6, $7, $6) ON CONFLICT (caller, idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(caller)
        .bind(&request.idempotency_key)
        .bind(&request.hash)
        .bind(&request.owner)
        .bind(now_ms)
        .bind(now_ms + request.ttl_seconds * 1000)
        .bind(ReservationStatus::Soft)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        // Releasing the replaced reservations and holding the new lines touch several stock rows: take
        // them in SKU order first (a cart adding a SKU that sorts before the ones it holds would otherwise
        // lock in the opposite order of a cart doing the reverse). New lines alone come sorted already.
        if !request.replaces.is_empty() && ledger::locks_rows(&tx) {
            let mut skus: Vec<Sku> = request.lines.iter().map(|(sku, _)| sku.clone()).collect();
            for replaced in &request.replaces {
                skus.extend(lines_of(&mut tx, replaced).await?.into_iter().map(|line| line.sku));
            }
            ledger::lock_in_order(&mut tx, &skus, MAIN_LOCATION).await?;
        }
        for replaced in &request.replaces {
            release_in(&mut tx, outbox, caller, replaced, &format!("replaced by reservation {id}"), now_ms).await?;
        }
        let cause = Cause { reservation_id: Some(id.clone()), ..Cause::by(format!("service:{caller}")) };
        let shortages = hold_lines(&mut tx, outbox, &request.lines, Kind::SoftReserved, &cause, now_ms).await?;
        if !shortages.is_empty() {
            return Err(OpError::Short(InsufficientStock::new(shortages)));
        }
        insert_lines(&mut tx, &id, &request.lines).await?;
        let row = find(&mut tx, &id, None, now_ms).await?.ok_or_else(|| not_found(&id))?;
        tx.commit().await?;
        Ok(Some(row))
    })
    .await?;
    if let Some(row) = created {
        outbox.committed();
        return Ok(to_contract(row, false));
    }
    // The key was used before: the same request gets the same answer, a different one a conflict.
    let mut connection = db.acquire().await?;
    let existing: Option<(ReservationId, String)> = sqlx::query_as("SELECT id, request_hash FROM reservations WHERE caller = $1 AND idempotency_key = $2")
        .bind(caller)
        .bind(&request.idempotency_key)
        .fetch_optional(&mut *connection)
        .await?;
    let Some((id, hash)) = existing else {
        return Err(OpError::Api(ApiError::Conflict("the idempotency key is in use by a request still running; retry".into())));
    };
    if hash != request.hash {
        return Err(OpError::Api(ApiError::Conflict(format!(
            "idempotency key {:?} was already used for a different reservation request",
            request.idempotency_key
        ))));
    }
    let row = find(&mut connection, &id, None, now_ms).await?.ok_or_else(|| not_found(&id))?;
    Ok(to_contract(row, true))
}

/// Moves every line of reservation `id` out of the counter its `from` status holds it in, recording `kind`.
async fn unhold(
    connection: &mut AnyConnection,
    outbox: &Outbox,
    id: &ReservationId,
    from: ReservationStatus,
    kind: Kind,
    cause: &Cause,
    now_ms: i64,
) -> Result<(), OpError> {
    for line in lines_of(connection, id).await? {
        let q = line.quantity.get();
        let deltas = match (from, kind) {
            (ReservationStatus::Soft, Kind::HardReserved) => Deltas { soft: -q, hard: q, ..Deltas::default() },
            (ReservationStatus::Soft, _) => Deltas { soft: -q, ..Deltas::default() },
            (ReservationStatus::Hard, Kind::Fulfilled) => Deltas { hard: -q, on_hand: -q, ..Deltas::default() },
            (_, _) => Deltas { hard: -q, ..Deltas::default() },
        };
        let movement = Movement { sku: &line.sku, location: MAIN_LOCATION, kind, quantity: q, deltas, needs_available: 0 };
        if let Err(refused) = ledger::post(connection, outbox, &movement, cause, now_ms).await? {
            // The counters include every active reservation, so this means they disagree with the
            // reservations: refuse and roll back rather than record something false.
            tracing::error!(reservation = %id, sku = %line.sku, ?refused, "stock counters disagree with a reservation");
            return Err(OpError::Api(ApiError::Conflict(format!("the stock of {} does not cover reservation {id}; run `tessera inventory verify`", line.sku))));
        }
    }
    Ok(())
}

/// Moves reservation `id` from `from` to `to` if it is still in `from` (and, for soft holds, unexpired
/// unless `lapsed_only`). Returns whether this call made the change.
async fn transition(
    connection: &mut AnyConnection,
    id: &ReservationId,
    from: ReservationStatus,
    to: ReservationStatus,
    order_id: Option<&OrderId>,
    expiry: Expiry,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let expiry_clause = match expiry {
        Expiry::Any => "",
        Expiry::Live => " AND expires_at_ms > $4",
        Expiry::Lapsed => " AND expires_at_ms <= $4",
    };
    let updated = sqlx::query(&format!(
        "UPDATE reservations SET status = $1, order_id = COALESCE(order_id, $5), updated_at_ms = $4 \
         WHERE id = $2 AND status = $3{expiry_clause}"
    ))
    .bind(to)
    .bind(id)
    .bind(from)
    .bind(now_ms)
    .bind(order_id)
    .execute(&mut *connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

#[derive(Clone, Copy)]
enum Expiry {
    Any,
    Live,
    Lapsed,
}

/// Expires one lapsed soft reservation (if it still is one) and frees its units.
async fn expire_one(connection: &mut AnyConnection, outbox: &Outbox, id: &ReservationId, actor: &str, now_ms: i64) -> Result<bool, OpError> {
    if !transition(connection, id, ReservationStatus::Soft, ReservationStatus::Expired, None, Expiry::Lapsed, now_ms).await? {
        return Ok(false);
    }
    let cause = Cause { reservation_id: Some(id.clone()), ..Cause::by(actor) };
    unhold(connection, outbox, id, ReservationStatus::Soft, Kind::Expired, &cause, now_ms).await?;
    Ok(true)
}

/// Expires the lapsed soft reservations that hold `sku`, inside the caller's transaction.
async fn expire_lapsed_holding(connection: &mut AnyConnection, outbox: &Outbox, sku: &Sku, now_ms: i64) -> Result<usize, OpError> {
    let ids: Vec<(ReservationId,)> = sqlx::query_as(
        "SELECT r.id FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id \
         WHERE l.sku = $1 AND l.location = $2 AND r.status = $4 AND r.expires_at_ms <= $3 ORDER BY r.id LIMIT 200",
    )
    .bind(sku)
    .bind(MAIN_LOCATION)
    .bind(now_ms)
    .bind(ReservationStatus::Soft)
    .fetch_all(&mut *connection)
    .await?;
    let mut expired = 0;
    for (id,) in ids {
        if expire_one(connection, outbox, &id, "lazy expiry", now_ms).await? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Holds a caller's soft reservation for `ttl_seconds` from now.
pub async fn extend(db: &AnyPool, caller: &ServiceName, id: &ReservationId, ttl_seconds: i64, now_ms: i64) -> Result<Reservation, OpError> {
    let ttl_seconds = check_ttl(ttl_seconds)?;
    let mut connection = db.acquire().await?;
    let updated = sqlx::query(
        "UPDATE reservations SET expires_at_ms = $1, updated_at_ms = $2 \
         WHERE id = $3 AND caller = $4 AND status = $5 AND expires_at_ms > $2",
    )
    .bind(now_ms + ttl_seconds * 1000)
    .bind(now_ms)
    .bind(id)
    .bind(caller)
    .bind(ReservationStatus::Soft)
    .execute(&mut *connection)
    .await?;
    let row = find(&mut connection, id, Some(caller), now_ms).await?.ok_or_else(|| not_found(id))?;
    if updated.rows_affected() == 1 {
        return Ok(to_contract(row, false));
    }
    let status = if row.lapsed { ReservationStatus::Expired } else { row.status };
    Err(OpError::Api(ApiError::Conflict(format!("reservation {id} is {}; only an active soft reservation can be extended (reserve again)", status.as_str()))))
}

/// Ends a caller's soft reservation and puts its units back on sale. Releasing one that already ended
/// (released, expired, cancelled) changes nothing and says where it stands; a paid one is a conflict.
pub async fn release(db: &AnyPool, outbox: &Outbox, caller: &ServiceName, id: &ReservationId, now_ms: i64) -> Result<Reservation, OpError> {
    let row = ledger::retrying(|| async {
        let mut tx = db.begin().await?;
        release_in(&mut tx, outbox, caller, id, "released by the cart", now_ms).await?;
        let row = find(&mut tx, id, Some(caller), now_ms).await?.ok_or_else(|| not_found(id))?;
        tx.commit().await?;
        Ok::<_, OpError>(row)
    })
    .await?;
    outbox.committed();
    Ok(to_contract(row, false))
}

/// [`release`] inside the caller's transaction (also used for the reservations a new one replaces).
async fn release_in(
    connection: &mut AnyConnection,
    outbox: &Outbox,
    caller: &ServiceName,
    id: &ReservationId,
    reason: &str,
    now_ms: i64,
) -> Result<(), OpError> {
    let released = sqlx::query(
        "UPDATE reservations SET status = $4, updated_at_ms = $1 \
         WHERE id = $2 AND caller = $3 AND status = $5 AND expires_at_ms > $1",
    )
    .bind(now_ms)
    .bind(id)
    .bind(caller)
    .bind(ReservationStatus::Released)
    .bind(ReservationStatus::Soft)
    .execute(&mut *connection)
    .await?;
    if released.rows_affected() == 1 {
        let cause = Cause { reservation_id: Some(id.clone()), reason: Some(reason.into()), ..Cause::by(format!("service:{caller}")) };
        return unhold(connection, outbox, id, ReservationStatus::Soft, Kind::Cancelled, &cause, now_ms).await;
    }
    let row = find(connection, id, Some(caller), now_ms).await?.ok_or_else(|| not_found(id))?;
    if row.lapsed {
        expire_one(connection, outbox, id, "lazy expiry", now_ms).await?;
    } else if row.status == ReservationStatus::Hard {
        return Err(OpError::Api(ApiError::Conflict(format!("reservation {id} belongs to a paid order; cancel the order instead"))));
    }
    Ok(())
}

/// What applying an order event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event changed stock.
    Done,
    /// Already applied, or nothing to do (said why).
    Nothing(String),
    /// The order could not be reserved: an `inventory.order_short` event went out.
    Short(Vec<Shortage>),
}

/// `cart.order_paid`: the order's soft reservation becomes hard. If the hold lapsed (or never existed),
/// the lines are reserved again, hard, when stock allows; otherwise `inventory.order_short` goes out.
/// Runs on the event's transaction (which holds its inbox row); the attempt to reserve again is a
/// savepoint that rolls back on short stock, so only the expiry and the `order_short` event remain.
pub async fn order_paid(
    tx: &mut AnyConnection,
    outbox: &Outbox,
    envelope: &tessera_contracts::events::Envelope,
    event: &OrderPaid,
    now_ms: i64,
) -> Result<Applied, OpError> {
    let lines = check_lines(&event.lines).map_err(|error| OpError::Api(ApiError::BadRequest(format!("order {}: {error}", event.order_id))))?;
    let cause = Cause {
        reservation_id: Some(event.reservation_id.clone()),
        order_id: Some(event.order_id.clone()),
        event_id: Some(envelope.id.clone()),
        ..Cause::by(format!("event:{}", envelope.producer))
    };
    let mut attempt = sqlx::Connection::begin(&mut *tx).await?;
    let outcome = pay_order(&mut attempt, outbox, envelope, event, &lines, &cause, now_ms).await?;
    let Applied::Short(shortages) = outcome else {
        attempt.commit().await?;
        return Ok(outcome);
    };
    attempt.rollback().await?;
    // The attempt rolled back; tell the order's owner, on the event's transaction.
    if let Some(row) = find(tx, &event.reservation_id, None, now_ms).await? {
        if row.lapsed {
            expire_one(tx, outbox, &row.id, "lazy expiry", now_ms).await?;
        }
    }
    outbox.enqueue(tx, &OrderShort { order_id: event.order_id.clone(), shortages: shortages.clone() }).await?;
    tracing::warn!(order = %event.order_id, ?shortages, "a paid order could not be reserved");
    Ok(Applied::Short(shortages))
}

/// The body of [`order_paid`], on its savepoint.
async fn pay_order(
    tx: &mut AnyConnection,
    outbox: &Outbox,
    envelope: &tessera_contracts::events::Envelope,
    event: &OrderPaid,
    lines: &[(Sku, Quantity)],
    cause: &Cause,
    now_ms: i64,
) -> Result<Applied, OpError> {
    if transition(tx, &event.reservation_id, ReservationStatus::Soft, ReservationStatus::Hard, Some(&event.order_id), Expiry::Live, now_ms).await? {
        unhold(tx, outbox, &event.reservation_id, ReservationStatus::Soft, Kind::HardReserved, cause, now_ms).await?;
        return Ok(Applied::Done);
    }
    let existing = find(tx, &event.reservation_id, None, now_ms).await?;
    if let Some(row) = &existing {
        if row.status == ReservationStatus::Hard && row.order_id.as_ref() == Some(&event.order_id) {
            return Ok(Applied::Nothing("the order is already reserved".into()));
        }
        if matches!(row.status, ReservationStatus::Hard | ReservationStatus::Fulfilled | ReservationStatus::Cancelled) {
            return Err(OpError::Api(ApiError::Conflict(format!(
                "reservation {} is {} for order {:?}; it cannot be paid by order {}",
                row.id,
                row.status.as_str(),
                row.order_id,
                event.order_id
            ))));
        }
        if row.lapsed {
            expire_one(tx, outbox, &row.id, "lazy expiry", now_ms).await?;
        }
    }
    let of_order: Vec<(ReservationStatus,)> =
        sqlx::query_as("SELECT status FROM reservations WHERE order_id = $1").bind(&event.order_id).fetch_all(&mut *tx).await?;
    if of_order.iter().any(|(status,)| matches!(status, ReservationStatus::Hard | ReservationStatus::Fulfilled)) {
        return Ok(Applied::Nothing("the order is already reserved".into()));
    }
    if of_order.iter().any(|(status,)| *status == ReservationStatus::Cancelled) {
        return Err(OpError::Api(ApiError::Conflict(format!("order {} was cancelled; it cannot be paid", event.order_id))));
    }
    // The hold lapsed or never existed: reserve the order's lines again, hard, if the stock is there.
    let id = ReservationId::random();
    let owner = existing.map(|row| row.owner).unwrap_or_else(|| format!("order {}", event.order_id));
    let inserted = sqlx::query(
        "INSERT INTO reservations (id, caller, idempotency_key, request_hash, owner, order_id, status, created_at_ms, expires_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $8, $7, $7, $7) ON CONFLICT (caller, idempotency_key) DO NOTHING",
    )
    .bind(&id)
    .bind(&envelope.producer)
    .bind(format!("order:{}", event.order_id))
    .bind(fingerprint(&owner, lines, 0, &[]))
    .bind(&owner)
    .bind(&event.order_id)
    .bind(now_ms)
    .bind(ReservationStatus::Hard)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(OpError::Api(ApiError::Conflict(format!("order {} was reserved before and ended; it cannot be paid again", event.order_id))));
    }
    let cause = Cause { reservation_id: Some(id.clone()), ..cause.clone() };
    let shortages = hold_lines(tx, outbox, lines, Kind::HardReserved, &cause, now_ms).await?;
    if !shortages.is_empty() {
        return Ok(Applied::Short(shortages));
    }
    insert_lines(tx, &id, lines).await?;
    Ok(Applied::Done)
}

/// The stock rows applying these order events will change, locked in SKU order before any of them is
/// applied (`Subscriptions::lock_first`): a batch of paid and cancelled orders touches many SKUs.
pub async fn lock_for_events(tx: &mut AnyConnection, envelopes: &[&tessera_contracts::events::Envelope]) -> Result<(), sqlx::Error> {
    // One event alone takes its rows in SKU order already (an order's lines come sorted).
    if envelopes.len() < 2 || !ledger::locks_rows(tx) {
        return Ok(());
    }
    let mut skus: Vec<Sku> = Vec::new();
    for envelope in envelopes {
        // An event that does not decode is refused by its handler; it locks nothing.
        let (reservation_id, order_id) = if let Ok(paid) = envelope.decode::<OrderPaid>() {
            skus.extend(paid.lines.into_iter().map(|line| line.sku));
            (paid.reservation_id, paid.order_id)
        } else if let Ok(cancelled) = envelope.decode::<OrderCancelled>() {
            (cancelled.reservation_id, cancelled.order_id)
        } else if let Ok(requested) = envelope.decode::<OrderCancelRequested>() {
            (requested.reservation_id, requested.order_id)
        } else {
            continue;
        };
        let held: Vec<(Sku,)> = sqlx::query_as(
            "SELECT l.sku FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id \
             WHERE (r.id = $1 OR r.order_id = $2) AND r.status IN ($3, $4)",
        )
        .bind(&reservation_id)
        .bind(&order_id)
        .bind(ReservationStatus::Soft)
        .bind(ReservationStatus::Hard)
        .fetch_all(&mut *tx)
        .await?;
        skus.extend(held.into_iter().map(|(sku,)| sku));
    }
    ledger::lock_in_order(tx, &skus, MAIN_LOCATION).await
}

/// What ending an order's reservations found.
enum Ended {
    /// Its active reservations (soft or hard) were cancelled and their units went back on sale.
    Released,
    /// It had shipped: nothing was changed.
    Fulfilled,
    /// It held nothing (released, expired or never reserved): nothing can ship.
    HeldNothing,
}

/// Cancels an order's active reservations on the event's transaction. The reservation row is the one
/// place where cancelling and fulfilling meet: whichever of the two commits first wins, and the other
/// sees it (fulfilling needs a hard reservation, cancelling needs one not yet fulfilled).
async fn end_order(
    tx: &mut AnyConnection,
    outbox: &Outbox,
    envelope: &tessera_contracts::events::Envelope,
    order_id: &OrderId,
    reservation_id: &ReservationId,
    now_ms: i64,
) -> Result<Ended, OpError> {
    let active: Vec<(ReservationId, ReservationStatus)> =
        sqlx::query_as("SELECT id, status FROM reservations WHERE (id = $1 OR order_id = $2) AND status IN ($3, $4) ORDER BY id")
            .bind(reservation_id)
            .bind(order_id)
            .bind(ReservationStatus::Soft)
            .bind(ReservationStatus::Hard)
            .fetch_all(&mut *tx)
            .await?;
    if active.is_empty() {
        let fulfilled: Option<(ReservationId,)> = sqlx::query_as("SELECT id FROM reservations WHERE (id = $1 OR order_id = $2) AND status = $3")
            .bind(reservation_id)
            .bind(order_id)
            .bind(ReservationStatus::Fulfilled)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(if fulfilled.is_some() { Ended::Fulfilled } else { Ended::HeldNothing });
    }
    for (id, from) in active {
        if transition(tx, &id, from, ReservationStatus::Cancelled, Some(order_id), Expiry::Any, now_ms).await? {
            let cause = Cause {
                reservation_id: Some(id.clone()),
                order_id: Some(order_id.clone()),
                event_id: Some(envelope.id.clone()),
                reason: Some("order cancelled".into()),
                ..Cause::by(format!("event:{}", envelope.producer))
            };
            unhold(tx, outbox, &id, from, Kind::Cancelled, &cause, now_ms).await?;
        }
    }
    Ok(Ended::Released)
}

/// `cart.order_cancelled`: an order that could not have shipped was cancelled; its active reservation
/// (soft or hard) ends and its units go back on sale. Runs on the event's transaction.
pub async fn order_cancelled(
    tx: &mut AnyConnection,
    outbox: &Outbox,
    envelope: &tessera_contracts::events::Envelope,
    event: &OrderCancelled,
    now_ms: i64,
) -> Result<Applied, OpError> {
    match end_order(tx, outbox, envelope, &event.order_id, &event.reservation_id, now_ms).await? {
        Ended::Released => Ok(Applied::Done),
        Ended::Fulfilled => Err(OpError::Api(ApiError::Conflict(format!("order {} was already fulfilled; process a return instead", event.order_id)))),
        Ended::HeldNothing => Ok(Applied::Nothing("the order holds no stock".into())),
    }
}

/// `cart.order_cancel_requested`: the shopper wants a paid order cancelled. Inventory decides, on the
/// event's transaction: the reservation is cancelled and `inventory.order_cancel_confirmed` goes out, or
/// the order already shipped and `inventory.order_cancel_refused` says so. Either answer follows any
/// `inventory.order_fulfilled` of the same order (one aggregate, delivered in order).
pub async fn order_cancel_requested(
    tx: &mut AnyConnection,
    outbox: &Outbox,
    envelope: &tessera_contracts::events::Envelope,
    event: &OrderCancelRequested,
    now_ms: i64,
) -> Result<Applied, OpError> {
    let order_id = event.order_id.clone();
    match end_order(tx, outbox, envelope, &event.order_id, &event.reservation_id, now_ms).await? {
        Ended::Released => {
            outbox.enqueue(tx, &OrderCancelConfirmed { order_id }).await?;
            Ok(Applied::Done)
        }
        Ended::HeldNothing => {
            outbox.enqueue(tx, &OrderCancelConfirmed { order_id }).await?;
            Ok(Applied::Nothing("the order holds no stock; its cancellation is confirmed".into()))
        }
        Ended::Fulfilled => {
            let reason = "it had already left the warehouse".to_owned();
            outbox.enqueue(tx, &OrderCancelRefused { order_id, reason }).await?;
            Ok(Applied::Nothing("the order shipped; its cancellation is refused".into()))
        }
    }
}

/// Staff shipped a paid order: its units leave the stock, and `inventory.order_fulfilled` goes out.
pub async fn fulfil(db: &AnyPool, outbox: &Outbox, id: &ReservationId, actor: &str, now_ms: i64) -> Result<ReservationRow, OpError> {
    let row = ledger::retrying(|| async {
        let mut tx = db.begin().await?;
        if !transition(&mut tx, id, ReservationStatus::Hard, ReservationStatus::Fulfilled, None, Expiry::Any, now_ms).await? {
            let row = find(&mut tx, id, None, now_ms).await?.ok_or_else(|| not_found(id))?;
            return Err(OpError::Api(ApiError::Conflict(format!(
                "reservation {id} is {}; only a paid order can be fulfilled",
                if row.lapsed { "expired" } else { row.status.as_str() }
            ))));
        }
        let row = find(&mut tx, id, None, now_ms).await?.ok_or_else(|| not_found(id))?;
        let cause = Cause { reservation_id: Some(id.clone()), order_id: row.order_id.clone(), ..Cause::by(actor) };
        unhold(&mut tx, outbox, id, ReservationStatus::Hard, Kind::Fulfilled, &cause, now_ms).await?;
        // A hard reservation is always an order's (paying it is what made it hard).
        if let Some(order_id) = row.order_id.clone() {
            outbox.enqueue(&mut tx, &OrderFulfilled { order_id, reservation_id: id.clone() }).await?;
        }
        tx.commit().await?;
        Ok::<_, OpError>(row)
    })
    .await?;
    outbox.committed();
    Ok(ReservationRow { status: ReservationStatus::Fulfilled, ..row })
}

/// Expires lapsed soft reservations (at most `limit`), each in its own transaction. Returns how many.
pub async fn sweep(db: &AnyPool, outbox: &Outbox, now_ms: i64, limit: i64) -> Result<usize, OpError> {
    let ids: Vec<(ReservationId,)> = sqlx::query_as("SELECT id FROM reservations WHERE status = $3 AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2")
        .bind(now_ms)
        .bind(limit)
        .bind(ReservationStatus::Soft)
        .fetch_all(db)
        .await?;
    let mut expired = 0;
    for (id,) in ids {
        let done = ledger::retrying(|| async {
            let mut tx = db.begin().await?;
            let done = expire_one(&mut tx, outbox, &id, "sweeper", now_ms).await?;
            tx.commit().await?;
            Ok::<_, OpError>(done)
        })
        .await?;
        expired += usize::from(done);
    }
    if expired > 0 {
        outbox.committed();
    }
    Ok(expired)
}

/// Runs [`sweep`] every `every` until the task is aborted.
pub fn spawn_sweeper(runtime: tessera_fragment::FragmentRuntime, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Every inventory instance schedules the sweep; one of them runs it each period.
            let pass = sweep(&runtime.db, &runtime.events.outbox, tessera_fragment::db::now_ms(), 500);
            match tessera_fragment::lease::once_per_period(&runtime.db, "reservation-sweeper", every, pass).await {
                Ok(None | Some(Ok(0))) => {}
                Ok(Some(Ok(count))) => tracing::info!(count, "expired soft reservations"),
                Ok(Some(Err(error))) => tracing::warn!(%error, "the reservation sweeper failed; it tries again"),
                Err(error) => tracing::warn!(%error, "could not take the sweeper's lease"),
            }
        }
    })
}
