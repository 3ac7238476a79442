//! The ledger and the counters it moves: every stock change in the service goes through [`post`].
//!
//! [`post`] applies a movement's deltas to one stock row in a single guarded `UPDATE … RETURNING` (no
//! counter below zero, reservations and holds within on-hand, and for movements that need sellable stock,
//! enough of it), appends the ledger row with the resulting levels, and writes `inventory.stock_changed`
//! to the outbox, all on the caller's transaction. The database's CHECK constraints and append-only
//! triggers back the same rules, so a bug here fails loudly instead of corrupting stock.

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{OrderId, ReservationId, Sku};
use tessera_contracts::events::StockChanged;
use tessera_fragment::outbox::Outbox;

use crate::model::StockRow;

/// Transaction types (Broadleaf's, plus expiry and adjustment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SoftReserved,
    HardReserved,
    Fulfilled,
    Cancelled,
    Ordered,
    Returned,
    Received,
    Shrinkage,
    Expired,
    Adjustment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SoftReserved => "SOFT_RESERVED",
            Kind::HardReserved => "HARD_RESERVED",
            Kind::Fulfilled => "FULFILLED",
            Kind::Cancelled => "CANCELLED",
            Kind::Ordered => "ORDERED",
            Kind::Returned => "RETURNED",
            Kind::Received => "RECEIVED",
            Kind::Shrinkage => "SHRINKAGE",
            Kind::Expired => "EXPIRED",
            Kind::Adjustment => "ADJUSTMENT",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub const ALL: [Kind; 10] = [
        Kind::SoftReserved,
        Kind::HardReserved,
        Kind::Fulfilled,
        Kind::Cancelled,
        Kind::Ordered,
        Kind::Returned,
        Kind::Received,
        Kind::Shrinkage,
        Kind::Expired,
        Kind::Adjustment,
    ];
}

tessera_fragment::text_column!(Kind);

/// How a movement changes each counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    pub on_hand: i64,
    pub soft: i64,
    pub hard: i64,
    pub unavailable: i64,
    pub safety: i64,
    pub incoming: i64,
}

/// Why a movement happened: who, and the reservation, order or event behind it.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    pub actor: String,
    pub reason: Option<String>,
    pub reservation_id: Option<ReservationId>,
    pub order_id: Option<OrderId>,
    pub event_id: Option<String>,
}

impl Cause {
    pub fn by(actor: impl Into<String>) -> Cause {
        Cause { actor: actor.into(), ..Cause::default() }
    }
}

/// One movement of one SKU at one location.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    pub sku: &'a Sku,
    pub location: &'a str,
    pub kind: Kind,
    /// Units moved (positive); the deltas say where.
    pub quantity: i64,
    pub deltas: Deltas,
    /// Sellable units the movement needs (reservations); 0 for the rest.
    pub needs_available: i64,
}

/// Why [`post`] did not move stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No stock row for this SKU and location.
    Unknown,
    /// A guard failed; the row as it is.
    Guard(StockRow),
}

const STOCK_COLUMNS: &str = "sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming";

/// A `stock_levels` row as stored ([`STOCK_COLUMNS`]); [`StockRow`] adds what is available.
#[derive(sqlx::FromRow)]
struct StoredStock {
    sku: Sku,
    location: String,
    on_hand: i64,
    soft_reserved: i64,
    hard_reserved: i64,
    unavailable: i64,
    safety_stock: i64,
    incoming: i64,
}

fn stock_row(stored: StoredStock) -> StockRow {
    let StoredStock { sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming } = stored;
    let available = (on_hand - soft_reserved - hard_reserved - unavailable - safety_stock).max(0);
    StockRow { sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming, available }
}

/// A stock row as stored (soft reservations counted whether or not they expired).
pub async fn stock(connection: &mut AnyConnection, sku: &Sku, location: &str) -> Result<Option<StockRow>, sqlx::Error> {
    let row: Option<StoredStock> = sqlx::query_as(&format!("SELECT {STOCK_COLUMNS} FROM stock_levels WHERE sku = $1 AND location = $2"))
        .bind(sku)
        .bind(location)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(stock_row))
}

/// Locks a stock row for the rest of the transaction with a harmless write.
pub async fn lock_stock(connection: &mut AnyConnection, sku: &Sku, location: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stock_levels SET updated_at = $1 WHERE sku = $2 AND location = $3")
        .bind(now_ms / 1000)
        .bind(sku)
        .bind(location)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Whether this database locks rows (PostgreSQL), so that their order matters; SQLite locks the whole
/// database for one writer at a time. Callers skip gathering what [`lock_in_order`] would lock when not.
pub fn locks_rows(connection: &AnyConnection) -> bool {
    connection.backend_name() == "PostgreSQL"
}

/// Locks the stock rows of `skus` at `location` in SKU order, on PostgreSQL, when a transaction is about
/// to change more than one of them. Every transaction that changes several stock rows takes them in this
/// one order, so two of them wait for each other instead of deadlocking (PostgreSQL would fail one after
/// its `deadlock_timeout`: a second lost and a retry, enough to time a shopper's request out at the shell).
/// One statement: PostgreSQL locks the rows as the sort emits them. SQLite needs nothing: one writer at a
/// time holds the whole database.
pub async fn lock_in_order<'s>(connection: &mut AnyConnection, skus: impl IntoIterator<Item = &'s Sku>, location: &str) -> Result<(), sqlx::Error> {
    let skus: std::collections::BTreeSet<&Sku> = skus.into_iter().collect();
    if skus.len() < 2 || !locks_rows(connection) {
        return Ok(());
    }
    let placeholders: Vec<String> = (2..skus.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!("SELECT sku FROM stock_levels WHERE location = $1 AND sku IN ({}) ORDER BY sku FOR UPDATE", placeholders.join(", "));
    let mut query = sqlx::query(&sql).bind(location);
    for sku in skus {
        query = query.bind(sku);
    }
    query.fetch_all(&mut *connection).await?;
    Ok(())
}

/// Creates an empty stock row if there is none (receipts and purchase orders may introduce a SKU).
pub async fn ensure_stock(connection: &mut AnyConnection, sku: &Sku, location: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO stock_levels (sku, location, updated_at) VALUES ($1, $2, $3) ON CONFLICT (sku, location) DO NOTHING")
        .bind(sku)
        .bind(location)
        .bind(now_ms / 1000)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Applies `movement` if every guard holds, records it in the ledger and announces the SKU's new stock.
pub async fn post(
    connection: &mut AnyConnection,
    outbox: &Outbox,
    movement: &Movement<'_>,
    cause: &Cause,
    now_ms: i64,
) -> Result<Result<StockRow, Refused>, sqlx::Error> {
    let d = movement.deltas;
    let updated: Option<StoredStock> = sqlx::query_as(&format!(
        "UPDATE stock_levels SET on_hand = on_hand + $1, soft_reserved = soft_reserved + $2, \
         hard_reserved = hard_reserved + $3, unavailable = unavailable + $4, safety_stock = safety_stock + $5, \
         incoming = incoming + $6, updated_at = $7 \
         WHERE sku = $8 AND location = $9 \
           AND on_hand + $1 >= 0 AND soft_reserved + $2 >= 0 AND hard_reserved + $3 >= 0 \
           AND unavailable + $4 >= 0 AND safety_stock + $5 >= 0 AND incoming + $6 >= 0 \
           AND soft_reserved + $2 + hard_reserved + $3 + unavailable + $4 <= on_hand + $1 \
           AND ($10 = 0 OR on_hand - soft_reserved - hard_reserved - unavailable - safety_stock >= $10) \
         RETURNING {STOCK_COLUMNS}"
    ))
    .bind(d.on_hand)
    .bind(d.soft)
    .bind(d.hard)
    .bind(d.unavailable)
    .bind(d.safety)
    .bind(d.incoming)
    .bind(now_ms / 1000)
    .bind(movement.sku)
    .bind(movement.location)
    .bind(movement.needs_available)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(updated) = updated.map(stock_row) else {
        return Ok(Err(match stock(connection, movement.sku, movement.location).await? {
            Some(row) => Refused::Guard(row),
            None => Refused::Unknown,
        }));
    };
    sqlx::query(
        "INSERT INTO ledger (sku, location, kind, quantity, on_hand_delta, soft_delta, hard_delta, unavailable_delta, \
         safety_delta, incoming_delta, on_hand_after, available_after, actor, reason, reservation_id, order_id, event_id, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(movement.sku)
    .bind(movement.location)
    .bind(movement.kind)
    .bind(movement.quantity)
    .bind(d.on_hand)
    .bind(d.soft)
    .bind(d.hard)
    .bind(d.unavailable)
    .bind(d.safety)
    .bind(d.incoming)
    .bind(updated.on_hand)
    .bind(updated.available)
    .bind(&cause.actor)
    .bind(cause.reason.as_deref())
    .bind(cause.reservation_id.as_ref())
    .bind(cause.order_id.as_ref())
    .bind(cause.event_id.as_deref())
    .bind(now_ms)
    .execute(&mut *connection)
    .await?;
    announce(connection, outbox, movement.sku).await?;
    Ok(Ok(updated))
}

/// `inventory.stock_changed` for a SKU (all locations together), into the caller's transaction.
pub async fn announce(connection: &mut AnyConnection, outbox: &Outbox, sku: &Sku) -> Result<(), sqlx::Error> {
    let (on_hand, available): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN on_hand - soft_reserved - hard_reserved - unavailable - safety_stock > 0 \
                                THEN on_hand - soft_reserved - hard_reserved - unavailable - safety_stock ELSE 0 END), 0) AS BIGINT) \
         FROM stock_levels WHERE sku = $1",
    )
    .bind(sku)
    .fetch_one(&mut *connection)
    .await?;
    outbox.enqueue(connection, &StockChanged { sku: sku.clone(), on_hand, available }).await
}

pub use tessera_fragment::db::{is_transient, retrying, AsDbError};

/// Every stock row, for tests and the verifier.
pub async fn all_stock(db: &AnyPool) -> Result<Vec<StockRow>, sqlx::Error> {
    let rows: Vec<StoredStock> = sqlx::query_as(&format!("SELECT {STOCK_COLUMNS} FROM stock_levels ORDER BY sku, location")).fetch_all(db).await?;
    Ok(rows.into_iter().map(stock_row).collect())
}
