//! The cart's one domain error, and its one mapping to the wire.
//!
//! Cart and order operations return [`CartError`]; a database failure becomes one with `?` (it converts
//! from `sqlx::Error` and from a lease failure), and [`retrying`](tessera_fragment::db::retrying) sees the
//! database error inside to retry a transaction on a transient conflict. Only the edges — the server
//! functions, the webhook — turn it into the wire's [`ApiError`], through the `From` below, so a kind
//! and its HTTP status are decided in one place and a database's detail is logged, never sent.

use tessera_contracts::ApiError;
use tessera_fragment::db::AsDbError;
use tessera_fragment::lease::LeaseError;

/// Why a cart or order operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// Only a signed-in shopper may do this (check out, see or pay orders).
    #[error("please sign in first")]
    SignInFirst,
    /// What the shopper sent cannot be used; the message says why, in their words.
    #[error("{0}")]
    Invalid(String),
    /// A checkout of a cart with no lines.
    #[error("your cart is empty")]
    EmptyCart,
    /// A line or order the shopper cannot reach (someone else's looks the same as none).
    #[error("{0}")]
    NotFound(String),
    /// A checkout is in progress: the cart cannot change until it ends.
    #[error("your cart is locked while your order is being placed; wait a moment")]
    Locked,
    /// The request contradicts the cart's or the order's state (a limit, a currency, a used checkout
    /// form, an order that has shipped…).
    #[error("{0}")]
    Conflict(String),
    /// Another request is changing this cart right now (its lease is taken).
    #[error("Your cart is being changed elsewhere; try again in a moment.")]
    Busy,
    /// Inventory or the payment provider is not answering; the message says what happens next.
    #[error("{0}")]
    Unavailable(String),
    /// Inventory refused a request of the cart's outright: its answer, passed on as it came.
    #[error("{0}")]
    Refused(ApiError),
    /// The cart's own database failed.
    #[error("cart database: {0}")]
    Store(#[from] sqlx::Error),
}

impl From<tessera_contracts::domain::SkuError> for CartError {
    fn from(error: tessera_contracts::domain::SkuError) -> CartError {
        CartError::Invalid(error.to_string())
    }
}

impl From<tessera_contracts::domain::QuantityError> for CartError {
    fn from(error: tessera_contracts::domain::QuantityError) -> CartError {
        CartError::Invalid(error.to_string())
    }
}

impl From<LeaseError> for CartError {
    fn from(error: LeaseError) -> CartError {
        match error {
            LeaseError::Busy(_) => CartError::Busy,
            LeaseError::Database(error) => CartError::Store(error),
        }
    }
}

impl AsDbError for CartError {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            CartError::Store(error) => Some(error),
            _ => None,
        }
    }
}

impl From<CartError> for ApiError {
    fn from(error: CartError) -> ApiError {
        let message = error.to_string();
        match error {
            CartError::SignInFirst => ApiError::Unauthorized,
            CartError::Invalid(_) | CartError::EmptyCart => ApiError::BadRequest(message),
            CartError::NotFound(_) => ApiError::NotFound(message),
            CartError::Locked | CartError::Conflict(_) => ApiError::Conflict(message),
            CartError::Busy | CartError::Unavailable(_) => ApiError::Unavailable(message),
            CartError::Refused(error) => error,
            // Logged with its detail; the shopper reads that something went wrong on our side.
            CartError::Store(error) => tessera_fragment::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_answers_with_the_status_its_kind_names() {
        let cases = [
            (CartError::SignInFirst, 401),
            (CartError::Invalid("quantity must be between 1 and 99".into()), 400),
            (CartError::EmptyCart, 400),
            (CartError::NotFound("MUG-STN-01 is not in your cart".into()), 404),
            (CartError::Locked, 409),
            (CartError::Conflict("a cart holds at most 50 different items".into()), 409),
            (CartError::Busy, 503),
            (CartError::Unavailable("the stock service is not answering".into()), 503),
            (CartError::Refused(ApiError::NotFound("no SKU X".into())), 404),
            (CartError::Store(sqlx::Error::PoolTimedOut), 500),
        ];
        for (error, status) in cases {
            let shown = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.status(), status, "{shown}");
            if status < 500 && status != 401 {
                assert_eq!(api.to_string(), shown, "the shopper reads the domain's words");
            }
        }
    }

    #[test]
    fn a_database_failure_is_never_shown_and_is_retried_when_transient() {
        let error = CartError::Store(sqlx::Error::PoolTimedOut);
        assert!(error.db_error().is_some());
        assert_eq!(ApiError::from(error), ApiError::Internal);
        assert!(CartError::Busy.db_error().is_none());
        assert!(matches!(CartError::from(LeaseError::Database(sqlx::Error::PoolClosed)), CartError::Store(_)));
    }
}
