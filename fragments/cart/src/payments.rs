//! The payment provider behind a trait, and the sandbox provider that implements it.
//!
//! The cart only ever asks a provider to create, refund or cancel a payment, and to vouch for a webhook
//! it received. A real provider (Stripe, Adyen…) fits behind [`PaymentProvider`] with an adapter; the
//! sandbox (`tessera-paysandbox`) is reached like any other service, through `runtime.peers`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tessera_contracts::domain::ServiceName;
use tessera_contracts::payments::{payment_path, CancelRequest, CreatePayment, Payment, RefundRequest, WebhookEvent, PAYMENTS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::secrets::SecretError;
use tessera_fragment::service::{CallError, ServiceClient};
use tessera_fragment::webhook::{WebhookError, WebhookSigner};
use tessera_fragment::FragmentRuntime;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a webhook was refused, and the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookRefusal {
    /// Unsigned, malformed or stale: 400.
    BadRequest(String),
    /// A signature that does not match: 401.
    Unauthorized(String),
    /// The cart cannot check signatures right now (its webhook secrets could not be read): 503, and
    /// the provider sends it again later.
    Unavailable(String),
}

/// What the cart needs from a payment provider.
pub trait PaymentProvider: Send + Sync {
    /// Creates (or, for the same idempotency key, finds again) a payment and its page for the shopper.
    fn create<'a>(&'a self, request: &'a CreatePayment) -> BoxFuture<'a, Result<Payment, CallError>>;
    /// Refunds a succeeded payment in full (idempotent).
    fn refund<'a>(&'a self, payment_id: &'a str, request: &'a RefundRequest) -> BoxFuture<'a, Result<Payment, CallError>>;
    /// Gives up on an unpaid payment, so the shopper cannot pay a cancelled order.
    fn cancel<'a>(&'a self, payment_id: &'a str, request: &'a CancelRequest) -> BoxFuture<'a, Result<Payment, CallError>>;
    /// Checks a webhook's signature over its raw body, then reads it.
    fn verify_webhook(&self, signature: Option<&str>, body: &[u8], now_seconds: i64) -> Result<WebhookEvent, WebhookRefusal>;
}

/// The sandbox provider: service calls to `tessera-paysandbox` signed with the payment API secret,
/// webhooks signed with the shared webhook secrets.
pub struct SandboxProvider {
    client: Result<ServiceClient, NoProvider>,
    webhooks: Result<WebhookSigner, std::sync::Arc<SecretError>>,
}

/// Why the provider cannot be called from this process (every call then answers "unavailable").
#[derive(Debug, thiserror::Error)]
enum NoProvider {
    #[error("no payment provider is configured")]
    NoRoute,
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl SandboxProvider {
    pub fn new(runtime: &FragmentRuntime) -> SandboxProvider {
        let client = match (runtime.peers.get(&ServiceName::PAYMENTS), runtime.secrets.payment_api(runtime.name.clone())) {
            (Some(target), Ok(signer)) => Ok(ServiceClient::new(ServiceName::PAYMENTS, signer, target, Duration::from_secs(5))),
            (None, _) => Err(NoProvider::NoRoute),
            (_, Err(error)) => Err(error.into()),
        };
        SandboxProvider { client, webhooks: runtime.secrets.payment_webhooks().map_err(std::sync::Arc::new) }
    }

    fn client(&self) -> Result<&ServiceClient, CallError> {
        self.client.as_ref().map_err(|error| CallError::Unavailable { service: ServiceName::PAYMENTS, message: error.to_string() })
    }
}

impl PaymentProvider for SandboxProvider {
    fn create<'a>(&'a self, request: &'a CreatePayment) -> BoxFuture<'a, Result<Payment, CallError>> {
        Box::pin(async move { self.client()?.post(PAYMENTS_PATH, request).await })
    }

    fn refund<'a>(&'a self, payment_id: &'a str, request: &'a RefundRequest) -> BoxFuture<'a, Result<Payment, CallError>> {
        Box::pin(async move { self.client()?.post(&payment_path(payment_id, Some("refund")), request).await })
    }

    fn cancel<'a>(&'a self, payment_id: &'a str, request: &'a CancelRequest) -> BoxFuture<'a, Result<Payment, CallError>> {
        Box::pin(async move { self.client()?.post(&payment_path(payment_id, Some("cancel")), request).await })
    }

    fn verify_webhook(&self, signature: Option<&str>, body: &[u8], now_seconds: i64) -> Result<WebhookEvent, WebhookRefusal> {
        let webhooks = self.webhooks.as_ref().map_err(|error| WebhookRefusal::Unavailable(error.to_string()))?;
        match webhooks.verify(signature, body, now_seconds) {
            Ok(()) => {}
            Err(error @ WebhookError::Mismatch) => return Err(WebhookRefusal::Unauthorized(error.to_string())),
            Err(error) => return Err(WebhookRefusal::BadRequest(error.to_string())),
        }
        serde_json::from_slice(body).map_err(|error| WebhookRefusal::BadRequest(format!("the webhook body is not a payment event: {error}")))
    }
}

/// The provider this runtime uses.
pub fn provider(runtime: &FragmentRuntime) -> SandboxProvider {
    SandboxProvider::new(runtime)
}

/// A provider failure in words for the shopper.
pub fn unavailable(error: &CallError) -> ApiError {
    tracing::warn!(%error, "payment provider call failed");
    ApiError::Unavailable("The payment provider is not answering right now. Your order is saved; try paying again in a moment.".into())
}
