//! `tessera inventory verify`: checks the inventory's invariants on a live database.
//!
//! The schema already refuses negative counters, commitments beyond on-hand, illegal reservation
//! transitions and ledger edits; this looks at what only the data as a whole can show: the ledger
//! replays to every counter, the counters match the reservations, and each reservation ended once.

use sqlx::AnyPool;
use tessera_contracts::inventory::ReservationStatus;

use crate::ledger::Kind;

/// One broken invariant, said plainly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What was checked and what is broken.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stock_rows: i64,
    pub ledger_rows: i64,
    pub reservations: i64,
    pub violations: Vec<Violation>,
}

/// The six counters of one SKU at one location: as stored, or as the ledger replays to.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
struct Counters {
    sku: String,
    location: String,
    on_hand: i64,
    soft_reserved: i64,
    hard_reserved: i64,
    unavailable: i64,
    safety_stock: i64,
    incoming: i64,
}

impl Counters {
    const NAMES: [&'static str; 6] = ["on_hand", "soft_reserved", "hard_reserved", "unavailable", "safety_stock", "incoming"];

    fn values(&self) -> [i64; 6] {
        [self.on_hand, self.soft_reserved, self.hard_reserved, self.unavailable, self.safety_stock, self.incoming]
    }

    fn is_at(&self, other: &Counters) -> bool {
        self.sku == other.sku && self.location == other.location
    }
}

/// The units the active reservations of one status hold of one SKU at one location.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Held {
    sku: String,
    location: String,
    status: ReservationStatus,
    units: i64,
}

/// Runs every check.
pub async fn verify(db: &AnyPool) -> Result<Report, sqlx::Error> {
    let mut report = Report::default();
    check_counters(db, &mut report).await?;
    check_reservation_endings(db, &mut report).await?;
    Ok(report)
}

/// Every stock row's counters: at or above zero, reservations within on-hand, equal to what the ledger
/// replays to and to what the active reservations hold; and no ledger rows without a stock row.
async fn check_counters(db: &AnyPool, report: &mut Report) -> Result<(), sqlx::Error> {
    let stock: Vec<Counters> = sqlx::query_as(
        "SELECT sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming FROM stock_levels ORDER BY sku, location",
    )
    .fetch_all(db)
    .await?;
    report.stock_rows = stock.len() as i64;
    let ledger: Vec<Counters> = sqlx::query_as(
        "SELECT sku, location, CAST(SUM(on_hand_delta) AS BIGINT) AS on_hand, CAST(SUM(soft_delta) AS BIGINT) AS soft_reserved, \
         CAST(SUM(hard_delta) AS BIGINT) AS hard_reserved, CAST(SUM(unavailable_delta) AS BIGINT) AS unavailable, \
         CAST(SUM(safety_delta) AS BIGINT) AS safety_stock, CAST(SUM(incoming_delta) AS BIGINT) AS incoming \
         FROM ledger GROUP BY sku, location ORDER BY sku, location",
    )
    .fetch_all(db)
    .await?;
    let reserved: Vec<Held> = sqlx::query_as(
        "SELECT l.sku, l.location, r.status, CAST(SUM(l.quantity) AS BIGINT) AS units FROM reservation_lines l \
         JOIN reservations r ON r.id = l.reservation_id WHERE r.status IN ($1, $2) GROUP BY l.sku, l.location, r.status",
    )
    .bind(ReservationStatus::Soft)
    .bind(ReservationStatus::Hard)
    .fetch_all(db)
    .await?;
    (report.ledger_rows,) = sqlx::query_as("SELECT COUNT(*) FROM ledger").fetch_one(db).await?;
    (report.reservations,) = sqlx::query_as("SELECT COUNT(*) FROM reservations").fetch_one(db).await?;

    for row in &stock {
        check_stock_row(row, &ledger, &reserved, report);
    }
    for replayed in &ledger {
        if !stock.iter().any(|stored| stored.is_at(replayed)) {
            report.violations.push(Violation(format!("{} at {}: ledger rows without a stock row", replayed.sku, replayed.location)));
        }
    }
    Ok(())
}

/// One stock row against the ledger's sums (`ledger`) and the active reservations' units (`reserved`).
fn check_stock_row(row: &Counters, ledger: &[Counters], reserved: &[Held], report: &mut Report) {
    let Counters { sku, location, on_hand, soft_reserved: soft, hard_reserved: hard, unavailable, .. } = row.clone();
    let at = format!("{sku} at {location}");
    for (name, value) in Counters::NAMES.iter().zip(row.values()) {
        if value < 0 {
            report.violations.push(Violation(format!("{at}: {name} is {value}, below zero")));
        }
    }
    if soft + hard + unavailable > on_hand {
        report
            .violations
            .push(Violation(format!("{at}: reserved and unavailable units ({soft} soft + {hard} hard + {unavailable} unavailable) exceed on-hand {on_hand}")));
    }
    let replayed = ledger.iter().find(|replayed| replayed.is_at(row)).cloned().unwrap_or_default();
    for ((name, stored), sum) in Counters::NAMES.iter().zip(row.values()).zip(replayed.values()) {
        if stored != sum {
            report.violations.push(Violation(format!("{at}: {name} is {stored} but the ledger replays to {sum}")));
        }
    }
    for (status, counter) in [(ReservationStatus::Soft, soft), (ReservationStatus::Hard, hard)] {
        let held: i64 = reserved.iter().filter(|held| held.sku == sku && held.location == location && held.status == status).map(|held| held.units).sum();
        if held != counter {
            let status = status.as_str();
            report.violations.push(Violation(format!("{at}: {status}_reserved is {counter} but active {status} reservations hold {held}")));
        }
    }
}

/// A reservation with more ending movements for one SKU than it may have.
#[derive(Debug, sqlx::FromRow)]
struct Ending {
    reservation_id: String,
    sku: String,
    status: ReservationStatus,
    endings: i64,
}

/// A reservation ends once: at most one ending movement (fulfilled, cancelled, expired) per line, none
/// while it is still active, and one for every line of an ended reservation.
async fn check_reservation_endings(db: &AnyPool, report: &mut Report) -> Result<(), sqlx::Error> {
    // A reservation ends once: at most one ending movement (fulfilled, cancelled, expired) per line, and
    // none while it is still active.
    // `$1`–`$3`: the ledger's ending kinds; `$4`, `$5`: the active statuses.
    let endings: Vec<Ending> = sqlx::query_as(
        "SELECT g.reservation_id, g.sku, r.status, g.n AS endings FROM \
         (SELECT reservation_id, sku, COUNT(*) AS n FROM ledger WHERE kind IN ($1, $2, $3) \
          AND reservation_id IS NOT NULL GROUP BY reservation_id, sku) g \
         JOIN reservations r ON r.id = g.reservation_id WHERE g.n > 1 OR r.status IN ($4, $5)",
    )
    .bind(Kind::Fulfilled)
    .bind(Kind::Cancelled)
    .bind(Kind::Expired)
    .bind(ReservationStatus::Soft)
    .bind(ReservationStatus::Hard)
    .fetch_all(db)
    .await?;
    for Ending { reservation_id, sku, status, endings } in endings {
        report.violations.push(Violation(format!("reservation {reservation_id} ({}): {endings} ending movements for {sku}", status.as_str())));
    }
    let ended = ReservationStatus::ALL.into_iter().filter(|status| status.is_terminal());
    let unended = sqlx::query_as::<_, (String, ReservationStatus)>(
        "SELECT r.id, r.status FROM reservations r WHERE r.status IN ($4, $5, $6, $7) \
         AND EXISTS (SELECT 1 FROM reservation_lines l WHERE l.reservation_id = r.id \
           AND NOT EXISTS (SELECT 1 FROM ledger g WHERE g.reservation_id = r.id AND g.sku = l.sku \
                           AND g.kind IN ($1, $2, $3)))",
    )
    .bind(Kind::Fulfilled)
    .bind(Kind::Cancelled)
    .bind(Kind::Expired);
    let unended = ended.fold(unended, |query, status| query.bind(status)).fetch_all(db).await?;
    for (id, status) in unended {
        report.violations.push(Violation(format!("reservation {id} is {} but its ledger never ended it", status.as_str())));
    }
    Ok(())
}
