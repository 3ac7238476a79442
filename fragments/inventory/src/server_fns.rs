//! The admin pages' server functions (`/admin/inventory/api/*`); the reads behind them are `store`'s,
//! the changes `movements`' and `reservations'`. Every one checks the inventory-admin role itself: a
//! fragment trusts no gateway.

use leptos::prelude::*;
use tessera_contracts::ApiError;

#[cfg(feature = "ssr")]
use crate::model::{page_count, ReservationFilter};
use crate::model::{ReservationList, ReservationRow, SkuView, StockQuery, StockRow, StockTable};

/// The stock table: search, low-stock filter, sort and pagination.
#[server(prefix = "/admin/inventory/api", endpoint = "stock_page")]
pub async fn stock_page(#[server(default)] query: StockQuery) -> Result<StockTable, ApiError> {
    let user = shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let runtime = tessera_fragment::use_runtime()?;
    let (rows, total) = tessera_fragment::timing::data(crate::store::stock_page(&runtime.db, &query, tessera_fragment::db::now_ms()))
        .await
        .map_err(tessera_fragment::internal)?;
    let pages = page_count(total);
    Ok(StockTable { user_name: user.name, rows, total, page: query.page.clamp(1, pages), pages })
}

/// A SKU's stock at every location, its ledger and its reservations.
#[server(prefix = "/admin/inventory/api", endpoint = "sku_detail")]
pub async fn sku_detail(sku: String) -> Result<SkuView, ApiError> {
    shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let sku = tessera_contracts::domain::Sku::parse(&sku)?;
    let runtime = tessera_fragment::use_runtime()?;
    let detail = tessera_fragment::timing::data(crate::store::sku_detail(&runtime.db, &sku, tessera_fragment::db::now_ms()))
        .await
        .map_err(tessera_fragment::internal)?;
    if detail.locations.is_empty() {
        return Err(ApiError::NotFound(format!("{sku} is not stocked anywhere")));
    }
    Ok(detail)
}

/// Reservations by state: `active` (holding stock), `lapsed` (expired, not yet swept), or one status.
#[server(prefix = "/admin/inventory/api", endpoint = "reservation_page")]
pub async fn reservation_page(filter: String, page: i64) -> Result<ReservationList, ApiError> {
    shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let runtime = tessera_fragment::use_runtime()?;
    let filter = ReservationFilter::parse(&filter)?;
    let (rows, total) = tessera_fragment::timing::data(crate::store::reservation_page(&runtime.db, filter, page, tessera_fragment::db::now_ms()))
        .await
        .map_err(tessera_fragment::internal)?;
    let pages = page_count(total);
    Ok(ReservationList { rows, total, page: page.clamp(1, pages), pages })
}

/// Records a staff movement. `movement` is `receive`, `order`, `shrinkage`, `return` or `adjust`;
/// `quantity` is the units moved (for `adjust`, signed); `damaged` (a checkbox) says shrinkage comes from,
/// or a return goes to, the damaged pool; `counter` picks what an adjustment changes; `new_sku` lets a
/// receipt or purchase order introduce a SKU (or location) the inventory does not stock yet.
#[server(prefix = "/admin/inventory/api", endpoint = "record_movement")]
#[allow(clippy::too_many_arguments)]
pub async fn record_movement(
    sku: String,
    location: Option<String>,
    movement: String,
    quantity: i64,
    reason: Option<String>,
    damaged: Option<String>,
    counter: Option<String>,
    new_sku: Option<String>,
) -> Result<StockRow, ApiError> {
    use crate::model::Counter;
    use crate::movements::StaffMovement;
    let user = shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let sku = tessera_contracts::domain::Sku::parse(&sku)?;
    let checked = |value: Option<String>| value.is_some_and(|value| !value.is_empty() && value != "false");
    let (damaged, new_sku) = (checked(damaged), checked(new_sku));
    let movement = match movement.as_str() {
        "receive" => StaffMovement::Receive { quantity },
        "order" => StaffMovement::Order { quantity },
        "shrinkage" => StaffMovement::Shrinkage { quantity, damaged },
        "return" => StaffMovement::Return { quantity, damaged },
        "adjust" => {
            let counter = counter.as_deref().unwrap_or("on_hand");
            let counter =
                Counter::parse(counter).ok_or_else(|| ApiError::BadRequest(format!("{counter:?} is not a counter (on_hand, unavailable, safety_stock)")))?;
            StaffMovement::Adjust { counter, delta: quantity }
        }
        other => return Err(ApiError::BadRequest(format!("{other:?} is not a movement (receive, order, shrinkage, return, adjust)"))),
    };
    let runtime = tessera_fragment::use_runtime()?;
    let cause = crate::ledger::Cause { reason, ..crate::ledger::Cause::by(format!("user:{}", user.id)) };
    let location = location.unwrap_or_default();
    crate::movements::record(&runtime.db, &runtime.events.outbox, &sku, &location, movement, new_sku, cause, tessera_fragment::db::now_ms())
        .await
        .map_err(crate::movements::OpError::into_api)
}

/// The stock table's quick buttons: receive (`delta > 0`) or correct the count down (`delta < 0`).
#[server(prefix = "/admin/inventory/api", endpoint = "adjust_stock")]
pub async fn adjust_stock(sku: String, delta: i64) -> Result<StockRow, ApiError> {
    if delta > 0 {
        record_movement(sku, None, "receive".into(), delta, None, None, None, None).await
    } else {
        record_movement(sku, None, "adjust".into(), delta, Some("count correction from the stock table".into()), None, None, None).await
    }
}

/// Ships a paid order: its reserved units leave the stock.
#[server(prefix = "/admin/inventory/api", endpoint = "fulfil_order")]
pub async fn fulfil_order(reservation_id: String) -> Result<ReservationRow, ApiError> {
    let user = shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    if reservation_id.is_empty() || reservation_id.len() > 64 {
        return Err(ApiError::BadRequest("reservation_id is required".into()));
    }
    let reservation_id = tessera_contracts::domain::ReservationId::parse(&reservation_id)
        .map_err(|error| ApiError::NotFound(format!("there is no reservation {}", error.text)))?;
    let runtime = tessera_fragment::use_runtime()?;
    crate::reservations::fulfil(&runtime.db, &runtime.events.outbox, &reservation_id, &format!("user:{}", user.id), tessera_fragment::db::now_ms())
        .await
        .map_err(crate::movements::OpError::into_api)
}
