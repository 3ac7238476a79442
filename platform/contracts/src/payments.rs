//! The payment provider's API, as the cart (the merchant) and the sandbox provider both speak it.
//!
//! The reference is inverted: the cart creates a payment and sends the shopper to the provider's page;
//! the provider later calls the cart back with a signed webhook ([`WebhookEvent`], header
//! [`SIGNATURE_HEADER`]). The order becomes paid only from that callback, never from the shopper's
//! redirect back. Merchant calls to the provider are signed service calls (`tessera_fragment::service`).
//!
//! The shapes follow what real providers do (Stripe's payment intents and signed webhooks), so a real
//! provider can sit behind the cart's `PaymentProvider` trait with an adapter.

use serde::{Deserialize, Serialize};

/// Where the sandbox provider lives when it runs inside the site process.
pub const SANDBOX_PREFIX: &str = "/sandbox-pay";
/// `POST` ([`CreatePayment`] → [`Payment`], 201; the same idempotency key replays the first answer).
pub const PAYMENTS_PATH: &str = "/sandbox-pay/v1/payments";
/// `GET <PAYMENTS_PATH>/<id>`, `POST …/<id>/refund` ([`RefundRequest`]).
pub fn payment_path(id: &str, action: Option<&str>) -> String {
    match action {
        Some(action) => format!("{PAYMENTS_PATH}/{id}/{action}"),
        None => format!("{PAYMENTS_PATH}/{id}"),
    }
}
/// The shopper's payment page at the provider.
pub fn pay_page_path(id: &str) -> String {
    format!("{SANDBOX_PREFIX}/pay/{id}")
}

/// The merchant's webhook endpoint (the cart's), called by the provider.
pub const WEBHOOK_PATH: &str = "/cart/payments/webhook";
/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=…]`: one `v1` per active secret, so a
/// secret can be rotated without refusing webhooks in flight.
pub const SIGNATURE_HEADER: &str = "tessera-signature";
/// A webhook whose timestamp is further than this from the receiver's clock is refused (replays).
pub const WEBHOOK_TOLERANCE_SECONDS: i64 = 300;

/// Test cards of the sandbox (any future expiry date, any CVC).
pub mod test_cards {
    /// Always succeeds.
    pub const SUCCEEDS: &str = "4242 4242 4242 4242";
    /// Always declined.
    pub const DECLINED: &str = "4000 0000 0000 0002";
    /// Asks the shopper for an extra confirmation step, then succeeds or fails as they choose.
    pub const NEEDS_CONFIRMATION: &str = "4000 0025 0000 3155";
}

/// What the merchant asks the provider for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePayment {
    /// The same key with the same request returns the first payment; with another request, a 409.
    pub idempotency_key: String,
    /// The merchant's reference (the order id); it comes back in every webhook.
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    /// Where the provider sends the shopper afterwards (a path on the merchant's site).
    pub return_url: String,
}

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the shopper to pay (also after a declined attempt: they may try another card).
    RequiresPaymentMethod,
    /// The shopper must confirm the payment (extra step) before it completes.
    RequiresAction,
    Succeeded,
    /// Fully refunded after succeeding.
    Refunded,
    /// Cancelled by the merchant before it was paid; no more attempts are possible.
    Canceled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresPaymentMethod => "requires_payment_method",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Canceled => "canceled",
        }
    }
    pub fn parse(text: &str) -> Option<PaymentStatus> {
        [PaymentStatus::RequiresPaymentMethod, PaymentStatus::RequiresAction, PaymentStatus::Succeeded, PaymentStatus::Refunded, PaymentStatus::Canceled]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// A payment as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub status: PaymentStatus,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The provider's page where the shopper pays (site-relative for the sandbox).
    pub pay_url: String,
    pub created_at_ms: i64,
}

/// `POST …/<id>/refund`: refund a succeeded payment in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub reason: String,
}

/// `POST …/<id>/cancel`: the merchant gives up on an unpaid payment (no body needed beyond a reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub reason: String,
}

/// Kinds of webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookKind {
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    /// One attempt failed (declined, or the extra confirmation was refused); the payment stays open.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    #[serde(rename = "payment.canceled")]
    PaymentCanceled,
}

/// The body of a webhook call. `id` is unique per event: receivers deduplicate on it. Events may arrive
/// more than once and in any order; `payment` is the payment as it was when the event happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    pub created_at_ms: i64,
    pub payment: Payment,
    /// Why an attempt failed or a refund was made, in words for the shopper.
    #[serde(default)]
    pub message: Option<String>,
}
