//! What the cart's pages and server functions exchange (compiled for the server and the browser), and
//! the checks on what a shopper types, kept here so both sides agree.

use serde::{Deserialize, Serialize};
use shared_auth::SessionUser;
use tessera_contracts::domain::Money;
use tessera_contracts::ApiError;

/// How long a cart line's soft reservation lasts; it is extended while the shopper is active.
pub const HOLD_TTL_SECONDS: i64 = 900;
/// How long the stock of a placed order stays held while the shopper pays.
pub const CHECKOUT_TTL_SECONDS: i64 = 1_800;
/// Cookie that finds an anonymous visitor's cart.
pub use tessera_contracts::cart::CART_COOKIE;
/// Most distinct lines in one cart (inventory reserves at most this many lines at once).
pub const MAX_LINES: usize = tessera_contracts::inventory::MAX_LINES;

/// Whether inventory holds a line's stock for the shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    /// Held until the line's expiry.
    Held,
    /// Inventory could not be reached; retried in the background and on every visit.
    Pending,
    /// The stock is not there any more.
    Short,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Pending => "pending",
            HoldState::Short => "short",
        }
    }
    pub fn parse(text: &str) -> Option<HoldState> {
        [HoldState::Held, HoldState::Pending, HoldState::Short].into_iter().find(|state| state.as_str() == text)
    }
}

#[cfg(feature = "ssr")]
tessera_fragment::text_column!(HoldState);

/// One cart line as the shopper sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineView {
    pub sku: String,
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
    pub hold: HoldState,
    /// e.g. "Held for you until 2026-11-25 17:45 UTC", or why it is not.
    pub hold_text: String,
    pub held_until_ms: Option<i64>,
    /// Set when the catalog changed the price since the shopper added the line.
    pub price_note: Option<String>,
}

/// The cart page's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    pub user: Option<SessionUser>,
    pub lines: Vec<LineView>,
    pub item_count: i64,
    pub subtotal: Money,
    /// A checkout is in progress: the cart cannot change.
    pub locked: bool,
}

/// Shipping methods offered at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShippingMethod {
    Standard,
    Express,
}

impl ShippingMethod {
    pub const ALL: [ShippingMethod; 2] = [ShippingMethod::Standard, ShippingMethod::Express];
    pub fn as_str(self) -> &'static str {
        match self {
            ShippingMethod::Standard => "standard",
            ShippingMethod::Express => "express",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            ShippingMethod::Standard => "Standard (3–5 days)",
            ShippingMethod::Express => "Express (next day)",
        }
    }
    pub fn price_minor(self) -> i64 {
        match self {
            ShippingMethod::Standard => 495,
            ShippingMethod::Express => 1_295,
        }
    }
    pub fn parse(text: &str) -> Result<ShippingMethod, ApiError> {
        ShippingMethod::ALL
            .into_iter()
            .find(|method| method.as_str() == text)
            .ok_or_else(|| ApiError::BadRequest(format!("choose a shipping method (standard or express), not {:?}", text.chars().take(32).collect::<String>())))
    }
}

/// A delivery address that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub street: String,
    pub city: String,
    pub postcode: String,
    /// ISO 3166 alpha-2, upper case.
    pub country: String,
}

fn field(value: &str, what: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::BadRequest(format!("enter the {what}")));
    }
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("the {what} must be at most {max} characters, on one line")));
    }
    Ok(value.to_owned())
}

impl Address {
    pub fn parse(name: &str, street: &str, city: &str, postcode: &str, country: &str) -> Result<Address, ApiError> {
        let postcode = field(postcode, "postcode", 12)?;
        if !postcode.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
            return Err(ApiError::BadRequest("the postcode may hold only letters, digits, spaces and dashes".into()));
        }
        let country = country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ApiError::BadRequest("the country is a two-letter code such as DE or FR".into()));
        }
        Ok(Address { name: field(name, "name", 100)?, street: field(street, "street address", 200)?, city: field(city, "city", 100)?, postcode, country })
    }
}

/// What the checkout page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutForm {
    pub cart: CartView,
    /// A fresh idempotency key for this attempt: a double click or a retried request sends the same one.
    pub key: String,
}

/// The answer to placing an order (or to asking to pay for one again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub order_id: String,
    /// The provider's payment page; `None` when the provider could not be reached (pay later from the
    /// order page).
    pub pay_url: Option<String>,
    pub message: Option<String>,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Placing,
    Failed,
    AwaitingPayment,
    Paid,
    Fulfilled,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placing,
        OrderStatus::Failed,
        OrderStatus::AwaitingPayment,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placing => "placing",
            OrderStatus::Failed => "failed",
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }
    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
    pub fn label(self) -> &'static str {
        match self {
            OrderStatus::Placing => "Being placed",
            OrderStatus::Failed => "Not placed",
            OrderStatus::AwaitingPayment => "Awaiting payment",
            OrderStatus::Paid => "Paid",
            OrderStatus::Fulfilled => "Fulfilled",
            OrderStatus::Cancelled => "Cancelled",
            OrderStatus::Refunded => "Refunded",
        }
    }
    /// Whether the shopper may still cancel (nothing has shipped).
    pub fn cancellable(self) -> bool {
        matches!(self, OrderStatus::AwaitingPayment | OrderStatus::Paid)
    }
}

#[cfg(feature = "ssr")]
tessera_fragment::text_column!(OrderStatus);

/// A row of the order history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub id: String,
    pub status: OrderStatus,
    pub placed_at: String,
    pub total: Money,
    pub item_count: i64,
}

/// One line of an order, at the price it was placed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// One step of an order's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: String,
    pub status: String,
    pub note: String,
}

/// The order page's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub status: OrderStatus,
    pub placed_at: String,
    pub lines: Vec<OrderLine>,
    pub items: Money,
    pub shipping: Money,
    pub shipping_method: String,
    pub total: Money,
    pub address: Address,
    pub timeline: Vec<TimelineEntry>,
    /// Where to pay, while the order awaits payment.
    pub pay_url: Option<String>,
    /// The shopper asked to cancel this paid order and the warehouse has not answered yet.
    pub cancel_requested: bool,
}

/// Money in the cart's currency.
pub fn money(minor: i64, currency: &str) -> Money {
    Money { minor, currency: currency.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_field_by_field() {
        let ok = Address::parse(" Ada ", "1 Loop Lane", "Berlin", "10115", "de").unwrap();
        assert_eq!((ok.name.as_str(), ok.country.as_str()), ("Ada", "DE"));
        assert!(Address::parse("", "1 Loop Lane", "Berlin", "10115", "DE").unwrap_err().to_string().contains("name"));
        assert!(Address::parse("Ada", "1 Loop Lane", "Berlin", "10115", "Germany").is_err());
        assert!(Address::parse("Ada", "1 Loop Lane", "Berlin", "<b>", "DE").is_err());
        assert!(Address::parse("Ada", &"x".repeat(201), "Berlin", "10115", "DE").is_err());
        assert!(Address::parse("Ada\nEvil", "1 Loop Lane", "Berlin", "10115", "DE").is_err());
    }

    #[test]
    fn statuses_and_methods_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ShippingMethod::parse("express").unwrap(), ShippingMethod::Express);
        assert!(ShippingMethod::parse("teleport").is_err());
    }
}
