//! What the admin pages read: the stock table, a SKU's page (counters, ledger, chart), the reservation
//! list and the low-stock widget, over the tables `ledger` and `reservations` own and write.

use sqlx::{AnyPool, Row};

use crate::model::{page_count, LedgerEntry, ReservationFilter, ReservationRow, SkuView, StockQuery, StockRow, LEDGER_ROWS, LOW_STOCK, PER_PAGE};

/// Stock rows with the soft reservations that lapsed (not yet swept) left out, and available clamped
/// at zero. `$1` is now (ms).
const LIVE_STOCK: &str = "SELECT s.sku, s.location, s.on_hand, s.soft_reserved - COALESCE(x.lapsed, 0) AS soft_reserved, \
     s.hard_reserved, s.unavailable, s.safety_stock, s.incoming, \
     CASE WHEN s.on_hand - (s.soft_reserved - COALESCE(x.lapsed, 0)) - s.hard_reserved - s.unavailable - s.safety_stock > 0 \
          THEN s.on_hand - (s.soft_reserved - COALESCE(x.lapsed, 0)) - s.hard_reserved - s.unavailable - s.safety_stock ELSE 0 END AS available \
     FROM stock_levels s LEFT JOIN ( \
         SELECT l.sku, l.location, CAST(SUM(l.quantity) AS BIGINT) AS lapsed FROM reservation_lines l \
         JOIN reservations r ON r.id = l.reservation_id WHERE r.status = 'soft' AND r.expires_at_ms <= $1 \
         GROUP BY l.sku, l.location) x ON x.sku = s.sku AND x.location = s.location";

type Tuple = (String, String, i64, i64, i64, i64, i64, i64, i64);

fn row((sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming, available): Tuple) -> StockRow {
    StockRow { sku, location, on_hand, soft_reserved, hard_reserved, unavailable, safety_stock, incoming, available }
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
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM ({LIVE_STOCK}) t {filter}"))
        .bind(now_ms)
        .bind(&term)
        .bind(&pattern)
        .bind(low)
        .bind(LOW_STOCK)
        .fetch_one(db)
        .await?;
    let page = query.page.clamp(1, page_count(total));
    let rows: Vec<Tuple> = sqlx::query_as(&format!("SELECT * FROM ({LIVE_STOCK}) t {filter} ORDER BY {order} {direction}, sku, location LIMIT $6 OFFSET $7"))
        .bind(now_ms)
        .bind(&term)
        .bind(&pattern)
        .bind(low)
        .bind(LOW_STOCK)
        .bind(PER_PAGE)
        .bind((page - 1) * PER_PAGE)
        .fetch_all(db)
        .await?;
    Ok((rows.into_iter().map(row).collect(), total))
}

/// SKUs with fewer than `below` available, fewest first.
pub async fn low_stock(db: &AnyPool, below: i64, now_ms: i64, limit: i64) -> Result<(Vec<StockRow>, i64), sqlx::Error> {
    let (total,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM ({LIVE_STOCK}) t WHERE available < $2")).bind(now_ms).bind(below).fetch_one(db).await?;
    let rows: Vec<Tuple> = sqlx::query_as(&format!("SELECT * FROM ({LIVE_STOCK}) t WHERE available < $2 ORDER BY available, sku LIMIT $3"))
        .bind(now_ms)
        .bind(below)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok((rows.into_iter().map(row).collect(), total))
}

pub async fn sku_detail(db: &AnyPool, sku: &str, now_ms: i64) -> Result<SkuView, sqlx::Error> {
    let locations: Vec<Tuple> =
        sqlx::query_as(&format!("SELECT * FROM ({LIVE_STOCK}) t WHERE sku = $2 ORDER BY location")).bind(now_ms).bind(sku).fetch_all(db).await?;
    let ledger = sqlx::query(
        "SELECT seq, location, kind, quantity, on_hand_delta, soft_delta, hard_delta, unavailable_delta, safety_delta, \
         incoming_delta, on_hand_after, available_after, actor, reason, reservation_id, order_id, at_ms \
         FROM ledger WHERE sku = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(sku)
    .bind(LEDGER_ROWS)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(LedgerEntry {
            seq: r.try_get(0)?,
            location: r.try_get(1)?,
            kind: r.try_get(2)?,
            quantity: r.try_get(3)?,
            on_hand_delta: r.try_get(4)?,
            soft_delta: r.try_get(5)?,
            hard_delta: r.try_get(6)?,
            unavailable_delta: r.try_get(7)?,
            safety_delta: r.try_get(8)?,
            incoming_delta: r.try_get(9)?,
            on_hand_after: r.try_get(10)?,
            available_after: r.try_get(11)?,
            actor: r.try_get(12)?,
            reason: r.try_get(13)?,
            reservation_id: r.try_get(14)?,
            order_id: r.try_get(15)?,
            at_ms: r.try_get(16)?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT r.id FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id WHERE l.sku = $1 \
         ORDER BY CASE WHEN r.status IN ('soft', 'hard') THEN 0 ELSE 1 END, r.created_at_ms DESC LIMIT 50",
    )
    .bind(sku)
    .fetch_all(db)
    .await?;
    let reservations = load(db, ids, now_ms).await?;
    Ok(SkuView { sku: sku.to_owned(), locations: locations.into_iter().map(row).collect(), ledger, reservations })
}

async fn load(db: &AnyPool, ids: Vec<(String,)>, now_ms: i64) -> Result<Vec<ReservationRow>, sqlx::Error> {
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
    let (clause, status) = match filter {
        ReservationFilter::Active => ("(status = 'hard' OR (status = 'soft' AND expires_at_ms > $1))", ""),
        ReservationFilter::Lapsed => ("(status = 'soft' AND expires_at_ms <= $1)", ""),
        ReservationFilter::Status(status) => ("($1 = $1 AND status = $2)", status.as_str()),
        ReservationFilter::All => ("($1 = $1)", ""),
    };
    let clause = if status.is_empty() { format!("{clause} AND $2 = ''") } else { clause.to_owned() };
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM reservations WHERE {clause}")).bind(now_ms).bind(status).fetch_one(db).await?;
    let page = page.clamp(1, page_count(total));
    let ids: Vec<(String,)> = sqlx::query_as(&format!("SELECT id FROM reservations WHERE {clause} ORDER BY created_at_ms DESC, id LIMIT $3 OFFSET $4"))
        .bind(now_ms)
        .bind(status)
        .bind(PER_PAGE)
        .bind((page - 1) * PER_PAGE)
        .fetch_all(db)
        .await?;
    Ok((load(db, ids, now_ms).await?, total))
}
