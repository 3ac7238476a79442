//! Payments: the merchant's validated request, the stored row, and every query on the `payments` and
//! `attempts` tables.
//!
//! Every state change goes through [`apply`]: one conditional `UPDATE … WHERE status IN (<expected>)` in a
//! transaction that also records the card attempt and writes the webhook to the outbox. Two concurrent
//! submits of the same form therefore cannot both succeed: the second finds the status already changed,
//! changes nothing and sends nothing.

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{Money, ServiceName};
use tessera_contracts::payments::{pay_page_path, CreatePayment, Payment, PaymentStatus, WebhookKind};
use tessera_contracts::ApiError;

use crate::error::Error;
use crate::webhooks;

/// Largest amount the sandbox accepts, in minor units (one million in a two-decimal currency).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000;
/// Longest idempotency key or reference, in characters.
const MAX_KEY_CHARS: usize = 128;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;
/// Longest return address, in bytes (all ASCII).
const MAX_RETURN_URL_BYTES: usize = 2048;
/// Longest refund or cancellation reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The columns of a [`PaymentRecord`], in every query that reads one.
const COLUMNS: &str = "id, caller, reference, amount_minor, currency, description, return_url, status, created_at_ms";

/// Text without control characters (they would end up in pages, logs and webhooks).
fn printable(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// An idempotency key or merchant reference: 1 to 128 printable characters.
pub fn check_key(field: &str, value: &str) -> Result<(), ApiError> {
    let length = value.chars().count();
    if (1..=MAX_KEY_CHARS).contains(&length) && printable(value) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{field} must be 1 to {MAX_KEY_CHARS} printable characters")))
    }
}

/// A refund or cancellation reason: up to 500 printable characters, possibly empty.
pub fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.chars().count() <= MAX_REASON_CHARS && printable(reason) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("reason must be at most {MAX_REASON_CHARS} printable characters")))
    }
}

/// The address the shopper goes back to: a path on the merchant's own site. A full URL, a
/// protocol-relative `//host` or a `/\host` (which browsers read as `//host`) would make the sandbox an
/// open redirect, so only a single leading `/` and visible ASCII are accepted.
fn check_return_url(url: &str) -> Result<(), ApiError> {
    if !url.starts_with('/') || url.starts_with("//") {
        return Err(ApiError::BadRequest("return_url must be a path on the shop's site starting with a single \"/\", like /cart/checkout/done".into()));
    }
    if url.len() > MAX_RETURN_URL_BYTES {
        return Err(ApiError::BadRequest(format!("return_url must be at most {MAX_RETURN_URL_BYTES} characters")));
    }
    if url.contains('\\') || !url.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ApiError::BadRequest("return_url may contain only visible ASCII characters and no backslash (percent-encode the rest)".into()));
    }
    Ok(())
}

/// A merchant's [`CreatePayment`] that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment(CreatePayment);

impl NewPayment {
    pub fn parse(request: CreatePayment) -> Result<NewPayment, ApiError> {
        check_key("idempotency_key", &request.idempotency_key)?;
        check_key("reference", &request.reference)?;
        if !(1..=MAX_AMOUNT_MINOR).contains(&request.amount_minor) {
            return Err(ApiError::BadRequest(format!("amount_minor must be between 1 and {MAX_AMOUNT_MINOR}, not {}", request.amount_minor)));
        }
        if request.currency.len() != 3 || !request.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ApiError::BadRequest("currency must be three uppercase letters (ISO 4217), like EUR".into()));
        }
        if request.description.chars().count() > MAX_DESCRIPTION_CHARS || !printable(&request.description) {
            return Err(ApiError::BadRequest(format!("description must be at most {MAX_DESCRIPTION_CHARS} printable characters")));
        }
        check_return_url(&request.return_url)?;
        Ok(NewPayment(request))
    }

    /// A fingerprint of the whole request, to tell a retry (same key, same request) from a reused key.
    /// It hashes the parsed request, so formatting differences in the JSON do not count.
    pub fn request_hash(&self) -> String {
        let canonical = serde_json::to_vec(&self.0).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
        digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentRecord {
    pub id: String,
    /// The service that created it; only that service may read, refund or cancel it.
    pub caller: ServiceName,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    pub return_url: String,
    pub status: PaymentStatus,
    pub created_at_ms: i64,
}

impl PaymentRecord {
    /// The payment as the merchant API and the webhooks report it.
    pub fn to_contract(&self) -> Payment {
        Payment {
            id: self.id.clone(),
            status: self.status,
            reference: self.reference.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            pay_url: pay_page_path(&self.id),
            created_at_ms: self.created_at_ms,
        }
    }

    /// The amount, formatted like `EUR 12.50`.
    pub fn amount(&self) -> String {
        Money { minor: self.amount_minor, currency: self.currency.clone() }.to_string()
    }
}

/// Whether `id` can be a payment id at all (a UUID); anything else is answered as unknown without a query.
pub fn plausible_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The answer for an id that names no payment the asker may see.
pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("there is no payment {:?}", id.chars().take(64).collect::<String>()))
}

/// What [`create`] did.
pub enum Created {
    /// A new payment (201).
    New(PaymentRecord),
    /// The payment an earlier identical request created (200).
    Replayed(PaymentRecord),
}

/// Creates the payment, or finds the one an earlier request with the same key created. The unique
/// `(caller, idempotency_key)` decides between concurrent identical requests: exactly one insert wins.
pub async fn create(db: &AnyPool, caller: &ServiceName, request: &NewPayment, now_ms: i64) -> Result<Created, Error> {
    let hash = request.request_hash();
    let NewPayment(fields) = request;
    let inserted = sqlx::query(
        "INSERT INTO payments (id, caller, idempotency_key, request_hash, reference, amount_minor, currency, description, \
         return_url, status, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT (caller, idempotency_key) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(caller)
    .bind(&fields.idempotency_key)
    .bind(&hash)
    .bind(&fields.reference)
    .bind(fields.amount_minor)
    .bind(&fields.currency)
    .bind(&fields.description)
    .bind(&fields.return_url)
    .bind(PaymentStatus::RequiresPaymentMethod)
    .bind(now_ms)
    .execute(db)
    .await?
    .rows_affected();
    let (id, stored_hash): (String, String) = sqlx::query_as("SELECT id, request_hash FROM payments WHERE caller = $1 AND idempotency_key = $2")
        .bind(caller)
        .bind(&fields.idempotency_key)
        .fetch_one(db)
        .await?;
    if inserted == 0 && stored_hash != hash {
        return Err(ApiError::Conflict(format!("idempotency key {:?} was already used for a different payment request", fields.idempotency_key)).into());
    }
    let record = find(db, &id).await?.ok_or_else(|| not_found(&id))?;
    Ok(if inserted == 0 { Created::Replayed(record) } else { Created::New(record) })
}

/// The payment `id`, whoever created it (the shopper's pages).
pub async fn find(db: &AnyPool, id: &str) -> Result<Option<PaymentRecord>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// The payment `id` if `caller` created it (the merchant API: one merchant never sees another's).
pub async fn find_for_caller(db: &AnyPool, id: &str, caller: &ServiceName) -> Result<PaymentRecord, Error> {
    match find(db, id).await? {
        Some(record) if &record.caller == caller => Ok(record),
        _ => Err(not_found(id).into()),
    }
}

/// How one attempt at paying ended (`attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The card was charged.
    Succeeded,
    Declined,
    /// The bank asked the shopper to confirm.
    RequiresAction,
    /// The shopper confirmed, or did not.
    Confirmed,
    NotConfirmed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [Outcome::Succeeded, Outcome::Declined, Outcome::RequiresAction, Outcome::Confirmed, Outcome::NotConfirmed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Declined => "declined",
            Outcome::RequiresAction => "requires_action",
            Outcome::Confirmed => "confirmed",
            Outcome::NotConfirmed => "not_confirmed",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }
}

tessera_fragment::text_column!(Outcome);

/// A card attempt to record with a state change.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// The shopper submitted a card ending in `last4`.
    Card { last4: &'a str, outcome: Outcome },
    /// The shopper answered the bank's confirmation for the card of their last attempt.
    Confirmation { outcome: Outcome },
}

/// A state change and what comes with it; applied only while the payment is in one of `from`.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub from: &'a [PaymentStatus],
    pub to: PaymentStatus,
    pub attempt: Option<Attempt<'a>>,
    /// The webhook to send, with its message for the shopper.
    pub webhook: Option<(WebhookKind, Option<String>)>,
}

/// Applies `change` to payment `id` in one transaction (status, attempt, outbox row). `None` when the
/// payment was not in an expected status any more: nothing changed and nothing will be sent.
pub async fn apply(db: &AnyPool, id: &str, change: &Change<'_>, now_ms: i64) -> Result<Option<PaymentRecord>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let expected = (0..change.from.len()).map(|n| format!("${}", n + 4)).collect::<Vec<_>>().join(", ");
    let update = format!("UPDATE payments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status IN ({expected}) RETURNING {COLUMNS}");
    let mut query = sqlx::query_as::<_, PaymentRecord>(&update).bind(change.to).bind(now_ms).bind(id);
    for status in change.from {
        query = query.bind(*status);
    }
    let Some(record) = query.fetch_optional(&mut *tx).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    if let Some(attempt) = change.attempt {
        record_attempt(&mut tx, id, attempt, now_ms).await?;
    }
    if let Some((kind, message)) = &change.webhook {
        webhooks::enqueue(&mut tx, *kind, record.to_contract(), message.clone(), now_ms).await?;
    }
    tx.commit().await?;
    Ok(Some(record))
}

async fn record_attempt(connection: &mut AnyConnection, id: &str, attempt: Attempt<'_>, now_ms: i64) -> Result<(), sqlx::Error> {
    match attempt {
        Attempt::Card { last4, outcome } => {
            sqlx::query("INSERT INTO attempts (payment_id, card_last4, outcome, at_ms) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(last4)
                .bind(outcome)
                .bind(now_ms)
                .execute(&mut *connection)
                .await?;
        }
        Attempt::Confirmation { outcome } => {
            sqlx::query(
                "INSERT INTO attempts (payment_id, card_last4, outcome, at_ms) \
                 SELECT payment_id, card_last4, $2, $3 FROM attempts WHERE payment_id = $1 ORDER BY at_ms DESC LIMIT 1",
            )
            .bind(id)
            .bind(outcome)
            .bind(now_ms)
            .execute(&mut *connection)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreatePayment {
        CreatePayment {
            idempotency_key: "order-1-attempt-1".into(),
            reference: "order-1".into(),
            amount_minor: 1250,
            currency: "EUR".into(),
            description: "2 × Blue tee".into(),
            return_url: "/cart/checkout/done?order=1".into(),
        }
    }

    fn refused(change: impl FnOnce(&mut CreatePayment)) -> String {
        let mut request = request();
        change(&mut request);
        match NewPayment::parse(request) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_parses_and_hashes_stably() {
        let first = NewPayment::parse(request()).unwrap();
        assert_eq!(first.request_hash(), NewPayment::parse(request()).unwrap().request_hash());
        let other = NewPayment::parse(CreatePayment { amount_minor: 1251, ..request() }).unwrap();
        assert_ne!(first.request_hash(), other.request_hash());
    }

    #[test]
    fn bad_requests_are_refused_with_the_field_named() {
        assert!(refused(|r| r.amount_minor = 0).contains("amount_minor"));
        assert!(refused(|r| r.amount_minor = MAX_AMOUNT_MINOR + 1).contains("amount_minor"));
        assert!(refused(|r| r.currency = "eur".into()).contains("currency"));
        assert!(refused(|r| r.currency = "EURO".into()).contains("currency"));
        assert!(refused(|r| r.reference = String::new()).contains("reference"));
        assert!(refused(|r| r.idempotency_key = "k".repeat(129)).contains("idempotency_key"));
        assert!(refused(|r| r.idempotency_key = "a\nb".into()).contains("idempotency_key"));
        assert!(refused(|r| r.description = "d".repeat(201)).contains("description"));
        for url in ["https://evil.example/", "//evil.example/", "/\\evil.example", "cart", "", "/cart done", "/caf\u{e9}"] {
            assert!(refused(|r| r.return_url = url.into()).contains("return_url"), "{url:?}");
        }
        assert!(NewPayment::parse(CreatePayment { description: String::new(), amount_minor: MAX_AMOUNT_MINOR, ..request() }).is_ok());
    }

    #[test]
    fn amounts_are_shown_in_major_units() {
        let record = |amount_minor: i64, currency: &str| PaymentRecord {
            id: "id".into(),
            caller: ServiceName::CART,
            reference: "r".into(),
            amount_minor,
            currency: currency.into(),
            description: String::new(),
            return_url: "/".into(),
            status: PaymentStatus::RequiresPaymentMethod,
            created_at_ms: 0,
        };
        assert_eq!(record(1250, "EUR").amount(), "EUR 12.50");
        assert_eq!(record(5, "USD").amount(), "USD 0.05");
        assert_eq!(record(100_000_000, "EUR").amount(), "EUR 1000000.00");
    }
}
