//! Value types every service parses its input into before doing anything else.

use serde::{Deserialize, Serialize};

/// A stock-keeping unit: 1–32 characters of `A–Z`, `0–9` and `-`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 32;

    pub fn parse(input: &str) -> Result<Sku, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("a SKU is required".into());
        }
        if input.len() > Sku::MAX_LEN {
            return Err(format!("a SKU has at most {} characters", Sku::MAX_LEN));
        }
        if !input.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-') || input.starts_with('-') || input.ends_with('-') {
            return Err(format!("{input:?} is not a SKU (capital letters, digits and dashes)"));
        }
        Ok(Sku(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = String;
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

/// A quantity in a cart line: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 99;

    pub fn parse(value: i64) -> Result<Quantity, String> {
        if (1..=Quantity::MAX).contains(&value) {
            Ok(Quantity(value))
        } else {
            Err(format!("quantity must be between 1 and {}, not {value}", Quantity::MAX))
        }
    }

    pub fn get(self) -> i64 {
        self.0
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
    }

    #[test]
    fn quantities_stay_in_range() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(99).unwrap().get(), 99);
        for bad in [0, -1, 100, i64::MAX, i64::MIN] {
            assert!(Quantity::parse(bad).is_err());
        }
    }

    #[test]
    fn money_formats_minor_units() {
        assert_eq!(Money { minor: 1905, currency: "EUR".into() }.to_string(), "EUR 19.05");
        assert_eq!(Money { minor: -5, currency: "EUR".into() }.to_string(), "-EUR 0.05");
    }
}
