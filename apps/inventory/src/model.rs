//! What the admin pages show: plain data shared by the server and the browser build.

use serde::{Deserialize, Serialize};
use tessera_contracts::inventory::{Line, ReservationStatus};

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
pub struct StockRow {
    pub sku: String,
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
    pub reservation_id: Option<String>,
    pub order_id: Option<String>,
    pub at_ms: i64,
}

/// A reservation as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRow {
    pub id: String,
    pub caller: String,
    pub owner: String,
    pub order_id: Option<String>,
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
