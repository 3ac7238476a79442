//! Value types every service parses its input into before doing anything else.

use serde::{Deserialize, Serialize};

/// A stock-keeping unit: 1–32 characters of `A–Z`, `0–9` and `-`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

/// Why a text is not a [`Sku`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkuError {
    #[error("a SKU is required")]
    Missing,
    #[error("a SKU has at most {} characters", Sku::MAX_LEN)]
    TooLong,
    #[error("{0:?} is not a SKU (capital letters, digits and dashes)")]
    NotASku(String),
}

impl Sku {
    pub const MAX_LEN: usize = 32;

    pub fn parse(input: &str) -> Result<Sku, SkuError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(SkuError::Missing);
        }
        if input.len() > Sku::MAX_LEN {
            return Err(SkuError::TooLong);
        }
        if !input.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-') || input.starts_with('-') || input.ends_with('-') {
            return Err(SkuError::NotASku(input.to_owned()));
        }
        Ok(Sku(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Sku {
    type Err = SkuError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Sku::parse(text)
    }
}

impl TryFrom<String> for Sku {
    type Error = SkuError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Sku::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A quantity in a cart line or a reservation line: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

/// Why a number is not a [`Quantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quantity must be between 1 and {max}, not {0}", max = Quantity::MAX)]
pub struct QuantityError(pub i64);

impl Quantity {
    pub const MAX: i64 = 99;

    pub fn parse(value: i64) -> Result<Quantity, QuantityError> {
        if (1..=Quantity::MAX).contains(&value) {
            Ok(Quantity(value))
        } else {
            Err(QuantityError(value))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The sum, at most [`Quantity::MAX`] (two cart lines of one SKU becoming one).
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity((self.0 + other.0).min(Quantity::MAX))
    }
}

impl TryFrom<i64> for Quantity {
    type Error = QuantityError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Quantity::parse(value)
    }
}

impl From<Quantity> for i64 {
    fn from(quantity: Quantity) -> i64 {
        quantity.0
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a text is not an id of the kind asked for ([`OrderId`], [`CartId`], [`ReservationId`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {kind}")]
pub struct IdError {
    /// What was expected, e.g. "an order id".
    pub kind: &'static str,
    /// The text, cut to 64 characters.
    pub text: String,
}

/// An id made by one service and named by others: a UUID's text (1–64 hex digits and dashes, so it is
/// safe in a URL path and a log line). A service parses what it is sent into one before using it.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What the id names, for messages.
            pub const KIND: &'static str = $kind;

            pub fn parse(text: &str) -> Result<$name, IdError> {
                if !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    Ok($name(text.to_owned()))
                } else {
                    Err(IdError { kind: $kind, text: text.chars().take(64).collect() })
                }
            }

            /// A new random id.
            #[cfg(feature = "server")]
            pub fn random() -> $name {
                $name(uuid::Uuid::new_v4().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::parse(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(feature = "server")]
        $crate::text_column!($name, |text| $name::parse(text).ok());
    };
}

id_type!(
    /// An order, as the cart names it to inventory, the payment provider and the shopper.
    OrderId,
    "an order id"
);
id_type!(
    /// A cart (the cart service's own row; a guest finds theirs by a secret cookie, never by this id).
    CartId,
    "a cart id"
);
id_type!(
    /// A stock reservation, as inventory names it to the cart.
    ReservationId,
    "a reservation id"
);

/// A service of the site, as the others name it: in routes between processes (`peers`), on signed calls
/// (who calls whom), as an event's producer or subscriber, and in a fragment's descriptor. 1–32
/// characters of `a–z`, `0–9` and `-`, starting with a letter (it is also a schema and a table prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(std::borrow::Cow<'static, str>);

/// Why a text is not a [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a service name (1 to 32 lowercase letters, digits and dashes, starting with a letter)")]
pub struct ServiceNameError(pub String);

impl ServiceName {
    pub const SHELL: ServiceName = ServiceName::of("shell");
    pub const CATALOG: ServiceName = ServiceName::of("catalog");
    pub const CART: ServiceName = ServiceName::of("cart");
    pub const INVENTORY: ServiceName = ServiceName::of("inventory");
    /// The payment provider, as the cart (its merchant) reaches it.
    pub const PAYMENTS: ServiceName = ServiceName::of("payments");

    /// A name known when the code is written (a fragment's own); checked when a test or a build uses
    /// it, like every other ([`ServiceName::parse`] is the check).
    pub const fn of(name: &'static str) -> ServiceName {
        ServiceName(std::borrow::Cow::Borrowed(name))
    }

    pub fn parse(text: &str) -> Result<ServiceName, ServiceNameError> {
        let mut chars = text.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if starts_with_letter && text.len() <= 32 && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            Ok(ServiceName(std::borrow::Cow::Owned(text.to_owned())))
        } else {
            Err(ServiceNameError(text.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ServiceName {
    type Err = ServiceNameError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ServiceName::parse(text)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ServiceName::parse(&value)
    }
}

impl From<ServiceName> for String {
    fn from(name: ServiceName) -> String {
        name.0.into_owned()
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A price in integer minor units (cents) with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{} {}.{:02}", self.currency, abs / 100, abs % 100)
    }
}

/// `YYYY-MM-DD HH:MM UTC` for milliseconds since the epoch (the same text on server and browser).
pub fn format_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

/// What a user may do. A role is granted by the shell and checked by each fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Shopper,
    CatalogEditor,
    InventoryAdmin,
    /// Manages accounts and roles.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Shopper, Role::CatalogEditor, Role::InventoryAdmin, Role::Admin];

    /// Stable name, as stored in the database and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shopper => "shopper",
            Role::CatalogEditor => "catalog_editor",
            Role::InventoryAdmin => "inventory_admin",
            Role::Admin => "admin",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            Role::Shopper => "Shopper",
            Role::CatalogEditor => "Catalog editor",
            Role::InventoryAdmin => "Inventory admin",
            Role::Admin => "Site admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_civil_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(format_time(1_795_618_380_000), "2026-11-25 14:53 UTC");
        assert_eq!(format_time(-60_000), "1969-12-31 23:59 UTC");
    }

    #[test]
    fn skus_are_parsed_strictly() {
        assert_eq!(Sku::parse(" TEE-BLU-M ").unwrap().as_str(), "TEE-BLU-M");
        for bad in ["", "tee-blu", "-A", "A-", "A B", "A;DROP", &"A".repeat(33)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert_eq!(Sku::parse("tee").unwrap_err().to_string(), "\"tee\" is not a SKU (capital letters, digits and dashes)");
    }

    #[test]
    fn ids_and_service_names_refuse_what_they_are_not() {
        assert_eq!(OrderId::parse("0f3a-11").unwrap().as_str(), "0f3a-11");
        for bad in ["", "x", "../a", &"a".repeat(65)] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(ReservationId::parse("zz").unwrap_err().to_string(), "\"zz\" is not a reservation id");
        assert!(serde_json::from_str::<CartId>("\"not-an-id\"").is_err());
        for name in [ServiceName::SHELL, ServiceName::CATALOG, ServiceName::CART, ServiceName::INVENTORY, ServiceName::PAYMENTS] {
            assert_eq!(ServiceName::parse(name.as_str()), Ok(name));
        }
        for bad in ["", "Cart", "1cart", "cart_x", "cart/x", &"a".repeat(33)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quantities_stay_in_range() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(99).unwrap().get(), 99);
        for bad in [0, -1, 100, i64::MAX, i64::MIN] {
            assert!(Quantity::parse(bad).is_err());
        }
        assert!(serde_json::from_str::<Quantity>("100").is_err());
        assert_eq!(serde_json::to_string(&Quantity::parse(3).unwrap()).unwrap(), "3");
    }

    #[test]
    fn money_formats_minor_units() {
        assert_eq!(Money { minor: 1905, currency: "EUR".into() }.to_string(), "EUR 19.05");
        assert_eq!(Money { minor: -5, currency: "EUR".into() }.to_string(), "-EUR 0.05");
    }
}
