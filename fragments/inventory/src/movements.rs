//! What staff record: receipts, purchase orders, shrinkage, returns and adjustments. Each is one ledger
//! movement in its own transaction, validated first so bad input changes nothing.

use sqlx::AnyPool;
use tessera_contracts::domain::Sku;
use tessera_contracts::inventory::InsufficientStock;
use tessera_contracts::ApiError;
use tessera_fragment::outbox::Outbox;

use crate::ledger::{self, AsDbError, Cause, Deltas, Kind, Movement, Refused};
use crate::model::{Counter, StockRow, MAX_MOVEMENT, MAX_REASON};

/// Why an inventory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Api(ApiError),
    #[error("{}", .0.message)]
    Short(InsufficientStock),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<ApiError> for OpError {
    fn from(error: ApiError) -> OpError {
        OpError::Api(error)
    }
}

impl AsDbError for OpError {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            OpError::Db(error) => Some(error),
            _ => None,
        }
    }
}

impl OpError {
    /// The API error to answer with (database details logged, never sent).
    pub fn into_api(self) -> ApiError {
        match self {
            OpError::Api(error) => error,
            OpError::Short(short) => ApiError::Conflict(short.message),
            OpError::Db(error) => tessera_fragment::internal(error),
        }
    }
}

/// A staff movement, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffMovement {
    /// Units arrived; they first settle open purchase orders (incoming).
    Receive { quantity: i64 },
    /// A purchase order was placed: units are incoming.
    Order { quantity: i64 },
    /// Units were lost, stolen or thrown away: from sellable stock, or from the damaged (unavailable) pool.
    Shrinkage { quantity: i64, damaged: bool },
    /// A customer sent units back: restocked, or held as damaged.
    Return { quantity: i64, damaged: bool },
    /// A correction of one counter, up or down.
    Adjust { counter: Counter, delta: i64 },
}

/// Checks a location name: 1–32 lowercase letters, digits and dashes.
pub fn parse_location(input: &str) -> Result<String, ApiError> {
    let input = input.trim();
    let input = if input.is_empty() { crate::model::MAIN_LOCATION } else { input };
    if input.len() > 32 || !input.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(ApiError::BadRequest(format!("{input:?} is not a location (up to 32 lowercase letters, digits and dashes)")));
    }
    Ok(input.to_owned())
}

/// Checks a free-text reason: required where the movement needs one, at most [`MAX_REASON`] characters.
pub fn parse_reason(input: Option<&str>, required: bool) -> Result<Option<String>, ApiError> {
    let reason = input.map(str::trim).filter(|reason| !reason.is_empty());
    match reason {
        None if required => Err(ApiError::BadRequest("please give a reason".into())),
        Some(reason) if reason.chars().count() > MAX_REASON => Err(ApiError::BadRequest(format!("a reason has at most {MAX_REASON} characters"))),
        Some(reason) if reason.chars().any(char::is_control) => Err(ApiError::BadRequest("a reason is one line of text".into())),
        reason => Ok(reason.map(str::to_owned)),
    }
}

fn check_quantity(quantity: i64, what: &str) -> Result<(), ApiError> {
    if (1..=MAX_MOVEMENT).contains(&quantity) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{what} must be between 1 and {MAX_MOVEMENT} units, not {quantity}")))
    }
}

impl StaffMovement {
    fn validate(self) -> Result<(), ApiError> {
        match self {
            StaffMovement::Receive { quantity } => check_quantity(quantity, "a receipt"),
            StaffMovement::Order { quantity } => check_quantity(quantity, "a purchase order"),
            StaffMovement::Shrinkage { quantity, .. } => check_quantity(quantity, "shrinkage"),
            StaffMovement::Return { quantity, .. } => check_quantity(quantity, "a return"),
            StaffMovement::Adjust { delta, .. } => {
                if delta == 0 || delta.unsigned_abs() > MAX_MOVEMENT.unsigned_abs() {
                    Err(ApiError::BadRequest(format!("an adjustment must be between 1 and {MAX_MOVEMENT} units either way, not {delta}")))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn needs_reason(self) -> bool {
        matches!(self, StaffMovement::Shrinkage { .. } | StaffMovement::Adjust { .. })
    }

    fn creates_stock(self) -> bool {
        matches!(self, StaffMovement::Receive { .. } | StaffMovement::Order { .. })
    }

    fn kind(self) -> Kind {
        match self {
            StaffMovement::Receive { .. } => Kind::Received,
            StaffMovement::Order { .. } => Kind::Ordered,
            StaffMovement::Shrinkage { .. } => Kind::Shrinkage,
            StaffMovement::Return { .. } => Kind::Returned,
            StaffMovement::Adjust { .. } => Kind::Adjustment,
        }
    }

    fn quantity(self) -> i64 {
        match self {
            StaffMovement::Receive { quantity }
            | StaffMovement::Order { quantity }
            | StaffMovement::Shrinkage { quantity, .. }
            | StaffMovement::Return { quantity, .. } => quantity,
            StaffMovement::Adjust { delta, .. } => delta.abs(),
        }
    }

    fn deltas(self, current: &StockRow) -> Deltas {
        match self {
            StaffMovement::Receive { quantity } => Deltas { on_hand: quantity, incoming: -quantity.min(current.incoming), ..Deltas::default() },
            StaffMovement::Order { quantity } => Deltas { incoming: quantity, ..Deltas::default() },
            StaffMovement::Shrinkage { quantity, damaged } => {
                Deltas { on_hand: -quantity, unavailable: if damaged { -quantity } else { 0 }, ..Deltas::default() }
            }
            StaffMovement::Return { quantity, damaged } => Deltas { on_hand: quantity, unavailable: if damaged { quantity } else { 0 }, ..Deltas::default() },
            StaffMovement::Adjust { counter: Counter::OnHand, delta } => Deltas { on_hand: delta, ..Deltas::default() },
            StaffMovement::Adjust { counter: Counter::Unavailable, delta } => Deltas { unavailable: delta, ..Deltas::default() },
            StaffMovement::Adjust { counter: Counter::SafetyStock, delta } => Deltas { safety: delta, ..Deltas::default() },
        }
    }

    /// What to tell the user when a guard refused the movement.
    fn refusal(self, row: &StockRow) -> String {
        let unreserved = row.on_hand - row.soft_reserved - row.hard_reserved - row.unavailable;
        let at = format!("{} at {}", row.sku, row.location);
        match self {
            StaffMovement::Shrinkage { quantity, damaged: true } => {
                format!("only {} damaged units of {at}; cannot write off {quantity}", row.unavailable)
            }
            StaffMovement::Shrinkage { quantity, damaged: false } => {
                format!("only {unreserved} unreserved units of {at}; cannot write off {quantity} (release or cancel reservations first)")
            }
            StaffMovement::Adjust { counter: Counter::OnHand, delta } => {
                format!("only {unreserved} unreserved units of {at}; cannot remove {}", -delta)
            }
            StaffMovement::Adjust { counter: Counter::Unavailable, delta } if delta > 0 => {
                format!("only {unreserved} unreserved units of {at}; cannot hold {delta}")
            }
            StaffMovement::Adjust { counter: Counter::Unavailable, delta } => {
                format!("only {} units of {at} are on hold; cannot release {}", row.unavailable, -delta)
            }
            StaffMovement::Adjust { counter: Counter::SafetyStock, delta } => {
                format!("the safety stock of {at} is {}; cannot lower it by {}", row.safety_stock, -delta)
            }
            _ => format!("{at} changed meanwhile; please try again"),
        }
    }
}

/// Records a staff movement of `sku` at `location`. `cause.reason` is validated here. Only a receipt or a
/// purchase order with `new_stock` may introduce a SKU or location; otherwise an unknown one is a 404
/// (a typo must not create stock).
#[allow(clippy::too_many_arguments)]
pub async fn record(
    db: &AnyPool,
    outbox: &Outbox,
    sku: &Sku,
    location: &str,
    movement: StaffMovement,
    new_stock: bool,
    cause: Cause,
    now_ms: i64,
) -> Result<StockRow, OpError> {
    movement.validate()?;
    let location = parse_location(location)?;
    let cause = Cause { reason: parse_reason(cause.reason.as_deref(), movement.needs_reason())?, ..cause };
    let row = ledger::retrying(|| async {
        let mut tx = db.begin().await?;
        if new_stock && movement.creates_stock() {
            ledger::ensure_stock(&mut tx, sku, &location, now_ms).await?;
        }
        // Lock the row before reading it (a write first: PostgreSQL locks the row, SQLite takes its write
        // lock), so the deltas are computed from the state they apply to.
        ledger::lock_stock(&mut tx, sku, &location, now_ms).await?;
        let Some(current) = ledger::stock(&mut tx, sku, &location).await? else {
            return Err(OpError::Api(ApiError::NotFound(format!("{sku} is not stocked at {location}; receive it as a new SKU first"))));
        };
        let step =
            Movement { sku, location: &location, kind: movement.kind(), quantity: movement.quantity(), deltas: movement.deltas(&current), needs_available: 0 };
        match ledger::post(&mut tx, outbox, &step, &cause, now_ms).await? {
            Ok(row) => {
                tx.commit().await?;
                Ok(row)
            }
            Err(Refused::Guard(row)) => Err(OpError::Api(ApiError::Conflict(movement.refusal(&row)))),
            Err(Refused::Unknown) => Err(OpError::Api(ApiError::NotFound(format!("there is no stock of {sku} at {location}")))),
        }
    })
    .await?;
    outbox.committed();
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_reasons_are_checked() {
        assert_eq!(parse_location("").unwrap(), "main");
        assert_eq!(parse_location(" annex-2 ").unwrap(), "annex-2");
        assert!(parse_location("Main Hall").is_err());
        assert!(parse_location(&"a".repeat(33)).is_err());
        assert_eq!(parse_reason(Some("  "), false).unwrap(), None);
        assert!(parse_reason(None, true).is_err());
        assert!(parse_reason(Some("two\nlines"), false).is_err());
        assert!(parse_reason(Some(&"é".repeat(201)), false).is_err());
        assert_eq!(parse_reason(Some(" broken "), true).unwrap().as_deref(), Some("broken"));
    }

    #[test]
    fn a_receipt_settles_purchase_orders_first() {
        let row = StockRow {
            sku: "A-1".parse().unwrap(),
            location: "main".into(),
            on_hand: 0,
            soft_reserved: 0,
            hard_reserved: 0,
            unavailable: 0,
            safety_stock: 0,
            incoming: 4,
            available: 0,
        };
        assert_eq!(StaffMovement::Receive { quantity: 10 }.deltas(&row), Deltas { on_hand: 10, incoming: -4, ..Deltas::default() });
        assert_eq!(StaffMovement::Receive { quantity: 3 }.deltas(&row), Deltas { on_hand: 3, incoming: -3, ..Deltas::default() });
        assert!(StaffMovement::Adjust { counter: Counter::OnHand, delta: 0 }.validate().is_err());
        assert!(StaffMovement::Shrinkage { quantity: MAX_MOVEMENT + 1, damaged: false }.validate().is_err());
    }
}
