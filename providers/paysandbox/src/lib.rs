//! A **sandbox** payment provider: it takes test cards only and no real money ever moves. It stands in
//! for a real provider (Stripe-like payment intents and signed webhooks) so the cart's checkout can be
//! built and tested end to end against the same shapes (`tessera_contracts::payments`).
//!
//! Its job, in the order a payment lives:
//! 1. the merchant (the cart) creates a payment through the **merchant API** (`merchant_api`): signed
//!    service calls (`tessera_fragment::service`), idempotent on the merchant's key;
//! 2. the shopper pays on the provider's **pay page** (`pay_pages`, rendered by `html`): a plain HTML form,
//!    no login and no JavaScript; the unguessable payment id in the address is the only credential. The
//!    card is checked (`card`) and the test card decides what happens, possibly after an extra
//!    confirmation step;
//! 3. every state change is one conditional update (`payments::apply`) that also writes its **webhook** to
//!    an outbox in the same transaction; the deliverer (`webhooks`) sends it, signed
//!    (`tessera_fragment::webhook`), to the cart until the cart answers 2xx. The order becomes paid from that
//!    webhook, never from the shopper's redirect back.
//!
//! Errors follow one enum (`error`); every refusal is a 4xx with a message a person understands. The
//! service keeps its own database (`payments`, `attempts`, `webhook_deliveries`), on SQLite or PostgreSQL
//! like every Tessera service.

mod card;
mod error;
mod html;
mod merchant_api;
mod pay_pages;
mod payments;
mod webhooks;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use tessera_fragment::db::now_ms;
use tessera_fragment::db::{DbError, Migrations, StoreSettings};
use tessera_fragment::peers::Peers;
use tessera_fragment::signature::CallSigner;
use tessera_fragment::webhook::WebhookSigner;
use tessera_host::serve::{serve, Running};
use tessera_host::{Host, HostError, Settings};
use tokio::sync::Notify;

pub use error::Error;
pub use webhooks::{spawn_deliverer, MAX_ATTEMPTS, MERCHANT};

/// The service (and database) name.
pub const NAME: &str = "paysandbox";
/// Largest request body, for the merchant API and the shopper's forms alike.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The sandbox's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// Everything the sandbox's handlers and deliverer share. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    /// The sandbox's own database.
    pub db: AnyPool,
    /// Verifies the merchant's signed API calls (the payment API secret, never the events or service
    /// secret: the provider holds only what its two relationships with the merchant need).
    pub signer: CallSigner,
    /// Signs the webhooks (the secret shared with the merchant for webhooks only).
    pub webhooks: WebhookSigner,
    /// Where the merchant is (`cart`), read on every delivery.
    pub peers: Arc<Peers>,
    /// Wakes the deliverer when a webhook was committed.
    notify: Arc<Notify>,
}

impl Sandbox {
    /// A sandbox on an already migrated pool (see [`open`]).
    pub fn new(db: AnyPool, signer: CallSigner, webhooks: WebhookSigner, peers: Arc<Peers>) -> Sandbox {
        Sandbox { db, signer, webhooks, peers, notify: Arc::new(Notify::new()) }
    }

    /// Applies a state change (retrying transient lock conflicts) and wakes the deliverer if it committed
    /// a webhook. `None`: the payment was no longer in a status the change expects.
    async fn apply(&self, id: &str, change: &payments::Change<'_>) -> Result<Option<payments::PaymentRecord>, Error> {
        let applied = tessera_fragment::db::retrying(|| payments::apply(&self.db, id, change, now_ms())).await?;
        if applied.is_some() && change.webhook.is_some() {
            self.notify.notify_one();
        }
        Ok(applied)
    }
}

/// Opens (creating and migrating) the sandbox's database and returns the sandbox on it.
pub async fn open(store: &StoreSettings, signer: CallSigner, webhooks: WebhookSigner, peers: Arc<Peers>) -> Result<Sandbox, DbError> {
    let db = store.open(NAME, &MIGRATIONS).await?;
    Ok(Sandbox::new(db, signer, webhooks, peers))
}

/// Every route of the sandbox, all under `SANDBOX_PREFIX` (`/sandbox-pay`): the merchant API under
/// `/sandbox-pay/v1/payments` and the shopper's pages under `/sandbox-pay/pay/{id}`.
pub fn router(sandbox: Sandbox) -> Router {
    Router::new().merge(merchant_api::routes()).merge(pay_pages::routes()).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(sandbox)
}

/// Runs the sandbox in `host`'s process: its database, its deliverer, and its routes (returned, to merge
/// into the process's router). Services of the process reach it as `payments`.
pub async fn attach(host: &mut Host) -> Result<Router, HostError> {
    let sandbox = open(
        &host.settings.store,
        host.secrets.payment_api(tessera_contracts::domain::ServiceName::PAYMENTS)?,
        host.secrets.payment_webhooks()?,
        host.peers.clone(),
    )
    .await?;
    let router = router(sandbox.clone());
    host.add_service(tessera_contracts::domain::ServiceName::PAYMENTS, tessera_contracts::payments::SANDBOX_PREFIX, router.clone());
    host.background.push(spawn_deliverer(sandbox));
    Ok(router)
}

/// Serves the sandbox alone, as `tessera-paysandbox` does: its own process and database, the merchant
/// (`cart`) reached over HTTP through its configured upstreams (`TESSERA_FRAGMENTS__CART__UPSTREAMS`).
pub async fn run_alone(settings: &Settings) -> Result<Running, HostError> {
    let mut host = Host::new(settings)?;
    let routes = attach(&mut host).await?;
    let started = host.start().await?;
    let exposure = started.exposure();
    serve(&settings.server, routes, started.background, started.teardown, exposure).await
}
