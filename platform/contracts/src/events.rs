//! Events that cross services: typed, versioned, wrapped in one envelope.
//!
//! A service never reads another's tables; it learns about their changes from these events, which travel
//! through the producer's transactional outbox. Each event type has a name (`<service>.<what happened>`),
//! a schema version and the aggregate it is about; consumers decode only the versions they know and refuse
//! the rest with a clear error instead of guessing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{OrderId, ReservationId, ServiceName, Sku};

/// The wire form of every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id (UUID); consumers deduplicate on it.
    pub id: String,
    /// Event type, e.g. `inventory.stock_changed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `payload`.
    pub version: u32,
    /// What the event is about, e.g. `sku`, and which one.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The producer's outbox position: increases with every event of the producer, so a consumer can tell
    /// an older event of an aggregate from a newer one.
    pub sequence: i64,
    /// When the state change committed, milliseconds since the epoch.
    pub occurred_at_ms: i64,
    /// Service that produced it, e.g. `inventory`.
    pub producer: ServiceName,
    pub payload: serde_json::Value,
}

/// The service that owns an event type: types are named `<producer>.<what happened>`, and only that
/// producer may publish them (the host refuses a fragment publishing another's, and a consumer refuses
/// an event signed by anyone else).
pub fn owner_of(event_type: &str) -> Option<ServiceName> {
    event_type.split_once('.').and_then(|(producer, _)| ServiceName::parse(producer).ok())
}

/// A typed event.
pub trait Event: Serialize + DeserializeOwned {
    const TYPE: &'static str;
    const VERSION: u32;
    const AGGREGATE: &'static str;
    fn aggregate_id(&self) -> String;
}

/// Why an envelope could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event type {0:?} is not known here")]
    UnknownType(String),
    #[error("{event_type} version {version} is not supported here (supported: {supported})")]
    UnsupportedVersion { event_type: String, version: u32, supported: u32 },
    #[error("the {event_type} payload is malformed: {message}")]
    Malformed { event_type: String, message: String },
}

impl Envelope {
    /// The payload as event `E`, if the type and version match.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.event_type != E::TYPE {
            return Err(DecodeError::UnknownType(self.event_type.clone()));
        }
        if self.version != E::VERSION {
            return Err(DecodeError::UnsupportedVersion { event_type: self.event_type.clone(), version: self.version, supported: E::VERSION });
        }
        serde_json::from_value(self.payload.clone()).map_err(|error| DecodeError::Malformed { event_type: self.event_type.clone(), message: error.to_string() })
    }
}

/// `inventory.stock_changed` v1: the stock of a SKU changed (received, removed, adjusted, seeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    pub sku: Sku,
    /// Units on hand after the change.
    pub on_hand: i64,
    /// Units that can be sold after the change.
    pub available: i64,
}

impl Event for StockChanged {
    const TYPE: &'static str = "inventory.stock_changed";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "sku";
    fn aggregate_id(&self) -> String {
        self.sku.to_string()
    }
}

/// `cart.order_paid` v1: the payment of an order was confirmed. Inventory turns the order's soft
/// reservation hard (or, if it lapsed, reserves the lines again, hard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: OrderId,
    pub reservation_id: ReservationId,
    pub lines: Vec<crate::inventory::Line>,
}

impl Event for OrderPaid {
    const TYPE: &'static str = "cart.order_paid";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `cart.order_cancelled` v1: an order that could not have shipped (unpaid, or refunded at the provider)
/// was cancelled; its reserved stock goes back on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reservation_id: ReservationId,
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "cart.order_cancelled";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `cart.order_cancel_requested` v1: the shopper asked to cancel a paid order. The cart keeps it paid
/// and refunds nothing until inventory answers: [`OrderCancelConfirmed`] (its stock went back on sale, so
/// it can no longer ship) or [`OrderCancelRefused`] (it already shipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelRequested {
    pub order_id: OrderId,
    pub reservation_id: ReservationId,
}

impl Event for OrderCancelRequested {
    const TYPE: &'static str = "cart.order_cancel_requested";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `inventory.order_cancel_confirmed` v1: inventory cancelled the order's reservation in answer to
/// [`OrderCancelRequested`]; nothing of it can ship any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelConfirmed {
    pub order_id: OrderId,
}

impl Event for OrderCancelConfirmed {
    const TYPE: &'static str = "inventory.order_cancel_confirmed";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `inventory.order_cancel_refused` v1: inventory could not cancel the order (it was fulfilled first); the
/// reason is for the shopper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelRefused {
    pub order_id: OrderId,
    pub reason: String,
}

impl Event for OrderCancelRefused {
    const TYPE: &'static str = "inventory.order_cancel_refused";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `inventory.order_fulfilled` v1: the warehouse shipped an order; its units left the stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFulfilled {
    pub order_id: OrderId,
    pub reservation_id: ReservationId,
}

impl Event for OrderFulfilled {
    const TYPE: &'static str = "inventory.order_fulfilled";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `inventory.order_short` v1: an order was paid after its hold lapsed and the stock is gone; the order
/// cannot be reserved and needs a refund or a back order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShort {
    pub order_id: OrderId,
    pub shortages: Vec<crate::inventory::Shortage>,
}

impl Event for OrderShort {
    const TYPE: &'static str = "inventory.order_short";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "order";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// `catalog.product_changed` v1: a product was created or edited; its current name, price and SKUs.
/// The cart keeps the price snapshots of its lines honest with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductChanged {
    pub product_id: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub skus: Vec<Sku>,
}

impl Event for ProductChanged {
    const TYPE: &'static str = "catalog.product_changed";
    const VERSION: u32 = 1;
    const AGGREGATE: &'static str = "product";
    fn aggregate_id(&self) -> String {
        self.product_id.clone()
    }
}

/// Below this many available units a product shows as "low stock".
pub const LOW_STOCK_BELOW: i64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(version: u32, payload: serde_json::Value) -> Envelope {
        Envelope {
            id: "e1".into(),
            event_type: StockChanged::TYPE.into(),
            version,
            aggregate_type: "sku".into(),
            aggregate_id: "MUG-STN-01".into(),
            sequence: 1,
            occurred_at_ms: 0,
            producer: ServiceName::INVENTORY,
            payload,
        }
    }

    #[test]
    fn a_known_version_decodes_and_others_are_refused_clearly() {
        let good = envelope(1, serde_json::json!({"sku": "MUG-STN-01", "on_hand": 3, "available": 3}));
        assert_eq!(good.decode::<StockChanged>().unwrap().on_hand, 3);
        let future = envelope(2, serde_json::json!({"sku": "MUG-STN-01"}));
        let error = future.decode::<StockChanged>().unwrap_err();
        assert!(error.to_string().contains("version 2 is not supported"), "{error}");
        let malformed = envelope(1, serde_json::json!({"sku": 5}));
        assert!(matches!(malformed.decode::<StockChanged>(), Err(DecodeError::Malformed { .. })));
        let mut other = good.clone();
        other.event_type = "cart.order_paid".into();
        assert!(matches!(other.decode::<StockChanged>(), Err(DecodeError::UnknownType(_))));
        let json = serde_json::to_value(&good).unwrap();
        assert_eq!(json["type"], "inventory.stock_changed");
    }
}
