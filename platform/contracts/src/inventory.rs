//! The inventory service's API for other services (the cart), and the words both sides use.
//!
//! Callers are services, never browsers: every request is signed with the services' shared secret
//! (`tessera_fragment::service`), so a shopper cannot reserve stock by calling inventory directly. A soft
//! reservation holds stock for a cart for a limited time; the order being paid (event `cart.order_paid`)
//! turns it hard; cancelling releases it; the warehouse fulfilling it consumes the units.

use serde::{Deserialize, Serialize};

use crate::domain::{OrderId, Quantity, QuantityError, ReservationId, ServiceName, Sku, SkuError};

/// `POST`: create a soft reservation ([`ReserveRequest`] → [`Reservation`]). All lines or none.
pub const RESERVATIONS_PATH: &str = "/admin/inventory/service/reservations";

/// `GET <RESERVATIONS_PATH>/<id>`, `POST …/<id>/extend` ([`ExtendRequest`]), `POST …/<id>/release`.
pub fn reservation_path(id: &ReservationId, action: Option<&str>) -> String {
    match action {
        Some(action) => format!("{RESERVATIONS_PATH}/{id}/{action}"),
        None => format!("{RESERVATIONS_PATH}/{id}"),
    }
}

/// The services that may call the reservation API: the cart alone (another service holding the service
/// secret is refused).
pub const RESERVATION_CALLERS: [ServiceName; 1] = [ServiceName::CART];

/// Most lines in one reservation.
pub const MAX_LINES: usize = 50;
/// Shortest and longest hold of a soft reservation, and the default.
pub const MIN_TTL_SECONDS: i64 = 30;
pub const MAX_TTL_SECONDS: i64 = 3_600;
pub const DEFAULT_TTL_SECONDS: i64 = 900;
/// Longest idempotency key and owner reference.
pub const MAX_KEY_LENGTH: usize = 128;

/// One SKU and how many units of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A soft reservation request. Sending the same `idempotency_key` again with the same body returns the
/// reservation made the first time; with a different body it is refused (422).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub idempotency_key: String,
    /// Whose cart this is (the caller's reference, e.g. a user id); shown to staff.
    pub owner: String,
    pub lines: Vec<Line>,
    /// How long the hold lasts unless extended ([`MIN_TTL_SECONDS`]..=[`MAX_TTL_SECONDS`]).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: i64,
    /// The caller's soft reservations this one replaces: released in the same transaction, so their
    /// units count towards this one (a cart line changing quantity, a cart becoming an order). If this
    /// reservation cannot be made, they stay as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<ReservationId>,
}

impl ReserveRequest {
    /// A request for `lines` under `idempotency_key`, held for [`DEFAULT_TTL_SECONDS`], replacing nothing.
    pub fn new(idempotency_key: impl Into<String>, owner: impl Into<String>, lines: Vec<Line>) -> ReserveRequest {
        ReserveRequest { idempotency_key: idempotency_key.into(), owner: owner.into(), lines, ttl_seconds: DEFAULT_TTL_SECONDS, replaces: Vec::new() }
    }
}

/// Why a SKU and a number are not a [`Line`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error(transparent)]
    Sku(#[from] SkuError),
    #[error(transparent)]
    Quantity(#[from] QuantityError),
}

impl Line {
    /// `quantity` of `sku`, both checked.
    pub fn of(sku: &str, quantity: i64) -> Result<Line, LineError> {
        Ok(Line { sku: Sku::parse(sku)?, quantity: Quantity::parse(quantity)? })
    }
}

fn default_ttl() -> i64 {
    DEFAULT_TTL_SECONDS
}

/// `POST …/<id>/extend`: hold the stock this long from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendRequest {
    pub ttl_seconds: i64,
}

/// Where a reservation is in its life. `Soft` → `Hard` → `Fulfilled`; or it ends `Released` (by the
/// cart), `Expired` (not paid in time) or `Cancelled` (order cancelled). Each reservation reaches exactly
/// one terminal state, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Soft,
    Hard,
    Fulfilled,
    Released,
    Expired,
    Cancelled,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 6] = [
        ReservationStatus::Soft,
        ReservationStatus::Hard,
        ReservationStatus::Fulfilled,
        ReservationStatus::Released,
        ReservationStatus::Expired,
        ReservationStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Soft => "soft",
            ReservationStatus::Hard => "hard",
            ReservationStatus::Fulfilled => "fulfilled",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
            ReservationStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<ReservationStatus> {
        ReservationStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Whether the reservation's life is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ReservationStatus::Soft | ReservationStatus::Hard)
    }
}

/// A reservation as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    pub status: ReservationStatus,
    pub owner: String,
    pub order_id: Option<OrderId>,
    pub lines: Vec<Line>,
    pub created_at_ms: i64,
    /// When a soft reservation stops holding stock.
    pub expires_at_ms: i64,
    /// True when this answer is the replay of an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

/// One line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub sku: Sku,
    pub requested: i64,
    pub available: i64,
}

/// The 409 answer when stock is short: `{"kind":"insufficient_stock","message":…,"shortages":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsufficientStock {
    pub kind: String,
    pub message: String,
    pub shortages: Vec<Shortage>,
}

impl InsufficientStock {
    pub const KIND: &'static str = "insufficient_stock";

    pub fn new(shortages: Vec<Shortage>) -> InsufficientStock {
        let parts: Vec<String> = shortages.iter().map(|s| format!("{} has {} available, {} requested", s.sku, s.available, s.requested)).collect();
        InsufficientStock { kind: InsufficientStock::KIND.into(), message: format!("not enough stock: {}", parts.join("; ")), shortages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_know_which_are_final() {
        for status in ReservationStatus::ALL {
            assert_eq!(ReservationStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!(!ReservationStatus::Hard.is_terminal());
        assert!(ReservationStatus::Expired.is_terminal());
        assert_eq!(ReservationStatus::parse("lost"), None);
    }

    #[test]
    fn a_shortage_names_the_sku_and_what_is_left() {
        let refusal = InsufficientStock::new(vec![Shortage { sku: Sku::parse("MUG-STN-01").unwrap(), requested: 5, available: 2 }]);
        assert_eq!(refusal.message, "not enough stock: MUG-STN-01 has 2 available, 5 requested");
        let request: ReserveRequest = serde_json::from_str(r#"{"idempotency_key":"k","owner":"u1","lines":[{"sku":"A-1","quantity":1}]}"#).unwrap();
        assert_eq!(request.ttl_seconds, DEFAULT_TTL_SECONDS);
        let lowercase = serde_json::from_str::<ReserveRequest>(r#"{"idempotency_key":"k","owner":"u1","lines":[{"sku":"a-1","quantity":1}]}"#);
        assert!(lowercase.unwrap_err().to_string().contains("is not a SKU"));
        let too_many = serde_json::from_str::<ReserveRequest>(r#"{"idempotency_key":"k","owner":"u1","lines":[{"sku":"A-1","quantity":100}]}"#);
        assert!(too_many.unwrap_err().to_string().contains("quantity must be between 1 and 99"));
    }
}
