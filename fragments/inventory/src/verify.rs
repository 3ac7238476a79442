//! `tessera inventory verify`: checks the inventory's invariants on a live database.
//!
//! The schema already refuses negative counters, commitments beyond on-hand, illegal reservation
//! transitions and ledger edits; this looks at what only the data as a whole can show: the ledger
//! replays to every counter, the counters match the reservations, and each reservation ended once.

use sqlx::AnyPool;

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

type Counters = (String, String, i64, i64, i64, i64, i64, i64);

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
        "SELECT sku, location, CAST(SUM(on_hand_delta) AS BIGINT), CAST(SUM(soft_delta) AS BIGINT), CAST(SUM(hard_delta) AS BIGINT), \
         CAST(SUM(unavailable_delta) AS BIGINT), CAST(SUM(safety_delta) AS BIGINT), CAST(SUM(incoming_delta) AS BIGINT) \
         FROM ledger GROUP BY sku, location ORDER BY sku, location",
    )
    .fetch_all(db)
    .await?;
    let reserved: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT l.sku, l.location, r.status, CAST(SUM(l.quantity) AS BIGINT) FROM reservation_lines l \
         JOIN reservations r ON r.id = l.reservation_id WHERE r.status IN ('soft', 'hard') GROUP BY l.sku, l.location, r.status",
    )
    .fetch_all(db)
    .await?;
    (report.ledger_rows,) = sqlx::query_as("SELECT COUNT(*) FROM ledger").fetch_one(db).await?;
    (report.reservations,) = sqlx::query_as("SELECT COUNT(*) FROM reservations").fetch_one(db).await?;

    for row in &stock {
        check_stock_row(row, &ledger, &reserved, report);
    }
    for l in &ledger {
        if !stock.iter().any(|s| s.0 == l.0 && s.1 == l.1) {
            report.violations.push(Violation(format!("{} at {}: ledger rows without a stock row", l.0, l.1)));
        }
    }
    Ok(())
}

/// One stock row against the ledger's sums (`ledger`) and the active reservations' units (`reserved`).
fn check_stock_row(row: &Counters, ledger: &[Counters], reserved: &[(String, String, String, i64)], report: &mut Report) {
    let zero = |sku: &str, location: &str| (sku.to_owned(), location.to_owned(), 0, 0, 0, 0, 0, 0);
    let names = ["on_hand", "soft_reserved", "hard_reserved", "unavailable", "safety_stock", "incoming"];
    let (sku, location, on_hand, soft, hard, unavailable, safety, incoming) = row.clone();
    let at = format!("{sku} at {location}");
    for (name, value) in names.iter().zip([on_hand, soft, hard, unavailable, safety, incoming]) {
        if value < 0 {
            report.violations.push(Violation(format!("{at}: {name} is {value}, below zero")));
        }
    }
    if soft + hard + unavailable > on_hand {
        report
            .violations
            .push(Violation(format!("{at}: reserved and unavailable units ({soft} soft + {hard} hard + {unavailable} unavailable) exceed on-hand {on_hand}")));
    }
    let replayed = ledger.iter().find(|l| l.0 == sku && l.1 == location).cloned().unwrap_or_else(|| zero(&sku, &location));
    let stored = [on_hand, soft, hard, unavailable, safety, incoming];
    let sums = [replayed.2, replayed.3, replayed.4, replayed.5, replayed.6, replayed.7];
    for ((name, stored), sum) in names.iter().zip(stored).zip(sums) {
        if stored != sum {
            report.violations.push(Violation(format!("{at}: {name} is {stored} but the ledger replays to {sum}")));
        }
    }
    for (status, counter) in [("soft", soft), ("hard", hard)] {
        let held: i64 = reserved.iter().filter(|r| r.0 == sku && r.1 == location && r.2 == status).map(|r| r.3).sum();
        if held != counter {
            report.violations.push(Violation(format!("{at}: {status}_reserved is {counter} but active {status} reservations hold {held}")));
        }
    }
}

/// A reservation ends once: at most one ending movement (fulfilled, cancelled, expired) per line, none
/// while it is still active, and one for every line of an ended reservation.
async fn check_reservation_endings(db: &AnyPool, report: &mut Report) -> Result<(), sqlx::Error> {
    // A reservation ends once: at most one ending movement (fulfilled, cancelled, expired) per line, and
    // none while it is still active.
    let endings: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT g.reservation_id, g.sku, r.status, g.n FROM \
         (SELECT reservation_id, sku, COUNT(*) AS n FROM ledger WHERE kind IN ('FULFILLED', 'CANCELLED', 'EXPIRED') \
          AND reservation_id IS NOT NULL GROUP BY reservation_id, sku) g \
         JOIN reservations r ON r.id = g.reservation_id WHERE g.n > 1 OR r.status IN ('soft', 'hard')",
    )
    .fetch_all(db)
    .await?;
    for (id, sku, status, count) in endings {
        report.violations.push(Violation(format!("reservation {id} ({status}): {count} ending movements for {sku}")));
    }
    let unended: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.id, r.status FROM reservations r WHERE r.status IN ('fulfilled', 'cancelled', 'expired', 'released') \
         AND EXISTS (SELECT 1 FROM reservation_lines l WHERE l.reservation_id = r.id \
           AND NOT EXISTS (SELECT 1 FROM ledger g WHERE g.reservation_id = r.id AND g.sku = l.sku \
                           AND g.kind IN ('FULFILLED', 'CANCELLED', 'EXPIRED')))",
    )
    .fetch_all(db)
    .await?;
    for (id, status) in unended {
        report.violations.push(Violation(format!("reservation {id} is {status} but its ledger never ended it")));
    }
    Ok(())
}
