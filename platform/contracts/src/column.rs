//! The contracts' types as database columns (feature `server`): a service binds a [`Sku`], an
//! [`OrderId`] or a [`ReservationStatus`] as itself and reads one back already checked, so a status is
//! never a string literal in SQL and a row never holds a text that is not what its column says.
//!
//! [`Sku`]: crate::domain::Sku
//! [`OrderId`]: crate::domain::OrderId
//! [`ReservationStatus`]: crate::inventory::ReservationStatus

/// Stores a type as its text in a column: `.bind(OrderStatus::Paid)`,
/// `row.try_get::<OrderStatus, _>("status")`, a `sqlx::FromRow` field of the type. The type needs
/// `fn as_str(&self) -> &str` and either `fn parse(&str) -> Option<Self>` or a parse given as a closure
/// (`text_column!(Sku, |text| Sku::parse(text).ok())`). A text the type does not take fails to decode,
/// with both named, instead of turning silently into some default.
#[macro_export]
macro_rules! text_column {
    ($type:ty) => {
        $crate::text_column!($type, |text| <$type>::parse(text));
    };
    ($type:ty, $parse:expr) => {
        impl ::sqlx::Type<::sqlx::Any> for $type {
            fn type_info() -> ::sqlx::any::AnyTypeInfo {
                <str as ::sqlx::Type<::sqlx::Any>>::type_info()
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Any> for $type {
            fn encode_by_ref(
                &self,
                buf: &mut <::sqlx::Any as ::sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <String as ::sqlx::Encode<'q, ::sqlx::Any>>::encode(self.as_str().to_owned(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Any> for $type {
            fn decode(value: <::sqlx::Any as ::sqlx::Database>::ValueRef<'r>) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <String as ::sqlx::Decode<'r, ::sqlx::Any>>::decode(value)?;
                let parse: fn(&str) -> Option<$type> = $parse;
                parse(&text).ok_or_else(|| format!("{text:?} is not a {}", stringify!($type)).into())
            }
        }
    };
}

text_column!(crate::domain::Sku, |text| crate::domain::Sku::parse(text).ok());

/// A [`Quantity`](crate::domain::Quantity) is stored as its number; one out of range fails to decode.
impl sqlx::Type<sqlx::Any> for crate::domain::Quantity {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for crate::domain::Quantity {
    fn encode_by_ref(&self, buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<'q, sqlx::Any>>::encode(self.get(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for crate::domain::Quantity {
    fn decode(value: <sqlx::Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(crate::domain::Quantity::parse(<i64 as sqlx::Decode<'r, sqlx::Any>>::decode(value)?)?)
    }
}
text_column!(crate::domain::ServiceName, |text| crate::domain::ServiceName::parse(text).ok());
text_column!(crate::domain::Role);
text_column!(crate::inventory::ReservationStatus);
text_column!(crate::payments::PaymentStatus);
