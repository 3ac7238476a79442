//! What the admin pages read: the stock table, a SKU's page (counters, ledger, chart), the reservation
//! list and the low-stock widget, over the tables `ledger` and `reservations` own and write.

use sqlx::AnyPool;
use tessera_contracts::domain::{ReservationId, Sku};
use tessera_contracts::inventory::ReservationStatus;

use crate::model::{page_count, LedgerEntry, ReservationFilter, ReservationRow, SkuView, StockQuery, StockRow, LEDGER_ROWS, LOW_STOCK, PER_PAGE};

/// Stock rows with the soft reservations that lapsed (not yet swept) left out, and available clamped
/// at zero. `$1` is now (ms); `soft` is the placeholder the caller binds [`ReservationStatus::Soft`] to.
fn live_stock(soft: &str) -> String {
    format!(
        "SELECT s.sku, s.location, s.on_hand, s.soft_reserved - COALESCE(x.lapsed, 0) AS soft_reserved, \
         s.hard_reserved, s.unavailable, s.safety_stock, s.incoming, \
         CASE WHEN s.on_hand - (s.soft_reserved - COALESCE(x.lapsed, 0)) - s.hard_reserved - s.unavailable - s.safety_stock > 0 \
              THEN s.on_hand - (s.soft_reserved - COALESCE(x.lapsed, 0)) - s.hard_reserved - s.unavailable - s.safety_stock ELSE 0 END AS available \
         FROM stock_levels s LEFT JOIN ( \
             SELECT l.sku, l.location, CAST(SUM(l.quantity) AS BIGINT) AS lapsed FROM reservation_lines l \
             JOIN reservations r ON r.id = l.reservation_id WHERE r.status = {soft} AND r.expires_at_ms <= $1 \
             GROUP BY l.sku, l.location) x ON x.sku = s.sku AND x.location = s.location"
    )
}

/// A SKU search term: the characters a SKU may contain, upper-cased (anything else cannot match).
fn search_term(q: &str) -> String {
    q.trim().to_ascii_uppercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect()
}

pub async fn stock_page(db: &AnyPool, query: &StockQuery, now_ms: i64) -> Result<(Vec<StockRow>, i64), sqlx::Error> {
    let order = match query.sort.as_str() {
        "on_hand" => "on_hand",
        "available" => "available",
        "reserved" => "soft_reserved + hard_reserved",
        "incoming" => "incoming",
        _ => "sku",
    };
    let direction = if query.desc { "DESC" } else { "ASC" };
    let term = search_term(&query.q);
    let filter = "WHERE ($2 = '' OR sku LIKE $3) AND ($4 = 0 OR available < $5)";
    let pattern = format!("%{term}%");
    let low = i64::from(query.low);
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM ({}) t {filter}", live_stock("$6")))
        .bind(now_ms)
        .bind(&term)
        .bind(&pattern)
        .bind(low)
        .bind(LOW_STOCK)
        .bind(ReservationStatus::Soft)
        .fetch_one(db)
        .await?;
    let page = query.page.clamp(1, page_count(total));
    let rows: Vec<StockRow> =
        sqlx::query_as(&format!("SELECT * FROM ({}) t {filter} ORDER BY {order} {direction}, sku, location LIMIT $7 OFFSET $8", live_stock("$6")))
            .bind(now_ms)
            .bind(&term)
            .bind(&pattern)
            .bind(low)
            .bind(LOW_STOCK)
            .bind(ReservationStatus::Soft)
            .bind(PER_PAGE)
            .bind((page - 1) * PER_PAGE)
            .fetch_all(db)
            .await?;
    Ok((rows, total))
}

/// SKUs with fewer than `below` available, fewest first.
pub async fn low_stock(db: &AnyPool, below: i64, now_ms: i64, limit: i64) -> Result<(Vec<StockRow>, i64), sqlx::Error> {
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM ({}) t WHERE available < $2", live_stock("$3")))
        .bind(now_ms)
        .bind(below)
        .bind(ReservationStatus::Soft)
        .fetch_one(db)
        .await?;
    let rows: Vec<StockRow> = sqlx::query_as(&format!("SELECT * FROM ({}) t WHERE available < $2 ORDER BY available, sku LIMIT $4", live_stock("$3")))
        .bind(now_ms)
        .bind(below)
        .bind(ReservationStatus::Soft)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok((rows, total))
}

pub async fn sku_detail(db: &AnyPool, sku: &Sku, now_ms: i64) -> Result<SkuView, sqlx::Error> {
    let locations: Vec<StockRow> = sqlx::query_as(&format!("SELECT * FROM ({}) t WHERE sku = $2 ORDER BY location", live_stock("$3")))
        .bind(now_ms)
        .bind(sku)
        .bind(ReservationStatus::Soft)
        .fetch_all(db)
        .await?;
    let ledger: Vec<LedgerEntry> = sqlx::query_as(
        "SELECT seq, location, kind, quantity, on_hand_delta, soft_delta, hard_delta, unavailable_delta, safety_delta, \
         incoming_delta, on_hand_after, available_after, actor, reason, reservation_id, order_id, at_ms \
         FROM ledger WHERE sku = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(sku)
    .bind(LEDGER_ROWS)
    .fetch_all(db)
    .await?;
    let ids: Vec<(ReservationId,)> = sqlx::query_as(
        "SELECT r.id FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id WHERE l.sku = $1 \
         ORDER BY CASE WHEN r.status IN ($2, $3) THEN 0 ELSE 1 END, r.created_at_ms DESC LIMIT 50",
    )
    .bind(sku)
    .bind(ReservationStatus::Soft)
    .bind(ReservationStatus::Hard)
    .fetch_all(db)
    .await?;
    let reservations = load(db, ids, now_ms).await?;
    Ok(SkuView { sku: sku.clone(), locations, ledger, reservations })
}

async fn load(db: &AnyPool, ids: Vec<(ReservationId,)>, now_ms: i64) -> Result<Vec<ReservationRow>, sqlx::Error> {
    let mut connection = db.acquire().await?;
    let mut rows = Vec::with_capacity(ids.len());
    for (id,) in ids {
        if let Some(row) = crate::reservations::find(&mut connection, &id, None, now_ms).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

pub async fn reservation_page(db: &AnyPool, filter: ReservationFilter, page: i64, now_ms: i64) -> Result<(Vec<ReservationRow>, i64), sqlx::Error> {
    // `$1` is now; `$2` and `$3` the statuses the filter names (a filter that names fewer compares them
    // to themselves: every placeholder is used, as SQLite requires).
    use ReservationStatus::{Hard, Soft};
    let (clause, statuses) = match filter {
        ReservationFilter::Active => ("(status = $2 OR (status = $3 AND expires_at_ms > $1))", [Hard, Soft]),
        ReservationFilter::Lapsed => ("(status = $2 AND expires_at_ms <= $1 AND $3 = $3)", [Soft, Soft]),
        ReservationFilter::Status(status) => ("($1 = $1 AND status = $2 AND $3 = $3)", [status, status]),
        ReservationFilter::All => ("($1 = $1 AND $2 = $2 AND $3 = $3)", [Soft, Soft]),
    };
    let (total,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM reservations WHERE {clause}")).bind(now_ms).bind(statuses[0]).bind(statuses[1]).fetch_one(db).await?;
    let page = page.clamp(1, page_count(total));
    let ids: Vec<(ReservationId,)> = sqlx::query_as(&format!("SELECT id FROM reservations WHERE {clause} ORDER BY created_at_ms DESC, id LIMIT $4 OFFSET $5"))
        .bind(now_ms)
        .bind(statuses[0])
        .bind(statuses[1])
        .bind(PER_PAGE)
        .bind((page - 1) * PER_PAGE)
        .fetch_all(db)
        .await?;
    Ok((load(db, ids, now_ms).await?, total))
}
