//! What the admin pages show: plain data shared by the server and the browser build.

use serde::{Deserialize, Serialize};
use tessera_contracts::domain::{OrderId, ReservationId, ServiceName, Sku};
use tessera_contracts::inventory::{Line, ReservationStatus};
use tessera_contracts::ApiError;

/// The main (and default) stock location.
pub const MAIN_LOCATION: &str = "main";
/// Below this many available units a SKU counts as low on stock.
pub const LOW_STOCK: i64 = tessera_contracts::events::LOW_STOCK_BELOW;
/// Largest quantity one admin movement (receipt, order, write-off, return, adjustment) may carry.
pub const MAX_MOVEMENT: i64 = 10_000;
/// Longest reason text.
pub const MAX_REASON: usize = 200;

/// Every counter of one SKU at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct StockRow {
    pub sku: Sku,
    pub location: String,
    pub on_hand: i64,
    pub soft_reserved: i64,
    pub hard_reserved: i64,
    pub unavailable: i64,
    pub safety_stock: i64,
    pub incoming: i64,
    /// On hand minus unexpired soft reservations, hard reservations, unavailable units and safety stock;
    /// zero when safety stock eats into it (never negative).
    pub available: i64,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct LedgerEntry {
    pub seq: i64,
    pub location: String,
    pub kind: String,
    pub quantity: i64,
    pub on_hand_delta: i64,
    pub soft_delta: i64,
    pub hard_delta: i64,
    pub unavailable_delta: i64,
    pub safety_delta: i64,
    pub incoming_delta: i64,
    pub on_hand_after: i64,
    pub available_after: i64,
    pub actor: String,
    pub reason: Option<String>,
    pub reservation_id: Option<ReservationId>,
    pub order_id: Option<OrderId>,
    pub at_ms: i64,
}

/// A reservation as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRow {
    pub id: ReservationId,
    pub caller: ServiceName,
    pub owner: String,
    pub order_id: Option<OrderId>,
    pub status: ReservationStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// Soft, and past its expiry: no longer holds stock, waiting for the sweeper.
    pub lapsed: bool,
    pub lines: Vec<Line>,
}

/// Which counter an adjustment changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// A count correction.
    OnHand,
    /// Units put on (or taken off) quality hold.
    Unavailable,
    /// The buffer never offered for sale.
    SafetyStock,
}

impl Counter {
    pub fn parse(text: &str) -> Option<Counter> {
        match text {
            "on_hand" => Some(Counter::OnHand),
            "unavailable" => Some(Counter::Unavailable),
            "safety_stock" => Some(Counter::SafetyStock),
            _ => None,
        }
    }
}

/// Rows per page of the stock table and the reservation list.
pub const PER_PAGE: i64 = 50;
/// Ledger rows shown (and charted) on a SKU page, newest first.
pub const LEDGER_ROWS: i64 = 200;

/// How many pages `total` rows fill (at least one).
pub fn page_count(total: i64) -> i64 {
    ((total + PER_PAGE - 1) / PER_PAGE).max(1)
}

/// The stock table's filters, as they appear in the page's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StockQuery {
    /// Part of a SKU.
    pub q: String,
    /// Only SKUs with fewer than `LOW_STOCK` available.
    pub low: bool,
    /// `sku`, `on_hand`, `available`, `reserved` or `incoming`.
    pub sort: String,
    pub desc: bool,
    /// 1-based.
    pub page: i64,
}

/// One page of the stock table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockTable {
    pub user_name: String,
    pub rows: Vec<StockRow>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

/// Everything the SKU page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuView {
    pub sku: Sku,
    pub locations: Vec<StockRow>,
    /// Newest first.
    pub ledger: Vec<LedgerEntry>,
    pub reservations: Vec<ReservationRow>,
}

/// One page of reservations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationList {
    pub rows: Vec<ReservationRow>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

/// Which reservations the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationFilter {
    /// Holding stock: unexpired soft, and hard.
    Active,
    /// Soft but past expiry, waiting for the sweeper.
    Lapsed,
    Status(ReservationStatus),
    All,
}

impl ReservationFilter {
    pub fn parse(text: &str) -> Result<ReservationFilter, ApiError> {
        match text {
            "" | "active" => Ok(ReservationFilter::Active),
            "lapsed" => Ok(ReservationFilter::Lapsed),
            "all" => Ok(ReservationFilter::All),
            other => ReservationStatus::parse(other)
                .map(ReservationFilter::Status)
                .ok_or_else(|| ApiError::BadRequest(format!("{other:?} is not a reservation filter"))),
        }
    }
}
