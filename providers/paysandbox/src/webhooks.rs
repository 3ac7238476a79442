//! Webhooks to the merchant: a transactional outbox (`webhook_deliveries`) and the task that sends it.
//!
//! [`enqueue`] stores the event, serialised once, in the transaction of the state change it reports, so a
//! payment never changes without its webhook and a webhook never reports a change that rolled back. The
//! deliverer ([`spawn_deliverer`]) sends due rows oldest first, signed with the webhook secret, to the
//! cart's [`WEBHOOK_PATH`] (in process or over HTTP, as `Peers` says), and retries failures with
//! exponential backoff up to [`MAX_ATTEMPTS`]. Delivery is at least once: the merchant deduplicates on the
//! event id.

use std::time::Duration;

use axum::http::Method;
use sqlx::AnyConnection;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::payments::{Payment, WebhookEvent, WebhookKind, SIGNATURE_HEADER, WEBHOOK_PATH};
use tessera_fragment::db::now_ms;
use tessera_fragment::peers::{Outgoing, Reply};

use crate::Sandbox;

/// The peer name of the merchant the webhooks go to.
pub const MERCHANT: ServiceName = ServiceName::CART;
/// After this many failed attempts (about a day at the one-minute cap, like real providers' retry
/// windows: a merchant outage must not lose a payment's confirmation) a webhook is left alone, its last
/// error kept for inspection.
pub const MAX_ATTEMPTS: i64 = 1_500;
/// How many due webhooks one pass sends.
const BATCH: i64 = 50;
/// How often the deliverer looks for due retries when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; doubled on each failure up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 250;
const MAX_BACKOFF_MS: i64 = 60_000;
/// How much of a failure is kept in `last_error`.
const MAX_ERROR_CHARS: usize = 500;

/// Writes the webhook for a change of `payment` on `connection`, inside the change's transaction.
pub async fn enqueue(connection: &mut AnyConnection, kind: WebhookKind, payment: Payment, message: Option<String>, now_ms: i64) -> Result<(), sqlx::Error> {
    let event = WebhookEvent { id: uuid::Uuid::new_v4().to_string(), kind, created_at_ms: now_ms, payment, message };
    let body = serde_json::to_string(&event).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, payment_id, body, attempts, next_attempt_ms, created_at_ms) \
         VALUES ($1, $2, $3, 0, $4, $4)",
    )
    .bind(&event.id)
    .bind(&event.payment.id)
    .bind(&body)
    .bind(now_ms)
    .execute(connection)
    .await?;
    Ok(())
}

/// The wait before the next attempt after `failed_before` earlier failures: 250 ms, 500 ms, 1 s, … 60 s.
pub fn backoff_ms(failed_before: i64) -> i64 {
    let doublings = failed_before.clamp(0, 20) as u32;
    FIRST_BACKOFF_MS.saturating_mul(1 << doublings).min(MAX_BACKOFF_MS)
}

/// Starts the deliverer: it wakes when a change commits a webhook, and every 500 ms for retries.
pub fn spawn_deliverer(sandbox: Sandbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match deliver_due(&sandbox).await {
                // A full batch: more may be waiting.
                Ok(sent) if sent == BATCH as usize => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "the webhook deliverer cannot read its queue")
                }
            }
            tokio::select! {
                _ = sandbox.notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Sends every due webhook once (oldest first) and records the outcome of each. Returns how many it tried.
async fn deliver_due(sandbox: &Sandbox) -> Result<usize, sqlx::Error> {
    let due: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, body, attempts FROM webhook_deliveries \
         WHERE delivered_at_ms IS NULL AND attempts < $1 AND next_attempt_ms <= $2 \
         ORDER BY created_at_ms, event_id LIMIT $3",
    )
    .bind(MAX_ATTEMPTS)
    .bind(now_ms())
    .bind(BATCH)
    .fetch_all(&sandbox.db)
    .await?;
    for (event_id, body, attempts) in &due {
        let outcome = send(sandbox, body).await;
        record_outcome(sandbox, event_id, *attempts, outcome).await?;
    }
    Ok(due.len())
}

/// Marks a webhook delivered, or schedules its retry (or gives up after [`MAX_ATTEMPTS`]).
async fn record_outcome(sandbox: &Sandbox, event_id: &str, attempts: i64, outcome: Result<(), WebhookError>) -> Result<(), sqlx::Error> {
    let now = now_ms();
    match outcome {
        Ok(()) => {
            tracing::info!(event_id, attempts = attempts + 1, "webhook delivered");
            sqlx::query("UPDATE webhook_deliveries SET delivered_at_ms = $1, attempts = attempts + 1 WHERE event_id = $2")
                .bind(now)
                .bind(event_id)
                .execute(&sandbox.db)
                .await?;
        }
        Err(error) => {
            let error: String = error.to_string().chars().take(MAX_ERROR_CHARS).collect();
            if attempts + 1 >= MAX_ATTEMPTS {
                tracing::error!(event_id, attempts = attempts + 1, %error, "webhook not delivered; giving up");
            } else {
                tracing::warn!(event_id, attempts = attempts + 1, %error, "webhook not delivered; will retry");
            }
            sqlx::query("UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $1, next_attempt_ms = $2 WHERE event_id = $3")
                .bind(&error)
                .bind(now + backoff_ms(attempts))
                .bind(event_id)
                .execute(&sandbox.db)
                .await?;
        }
    }
    Ok(())
}

/// Why a webhook did not reach the merchant (kept as its `last_error`).
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("no route to the merchant")]
    NoRoute,
    #[error("the merchant did not answer within {} s", TIMEOUT.as_secs())]
    TimedOut,
    #[error("the merchant could not be reached: {0}")]
    Unreachable(tessera_fragment::peers::SendError),
    #[error("the merchant answered {status}: {answer}")]
    Refused { status: u16, answer: String },
}

/// POSTs one webhook body to the merchant, signed now. `Err` says why it did not get a 2xx.
async fn send(sandbox: &Sandbox, body: &str) -> Result<(), WebhookError> {
    let target = sandbox.peers.get(&MERCHANT).ok_or(WebhookError::NoRoute)?;
    let headers = [("content-type", "application/json".to_owned()), (SIGNATURE_HEADER, sandbox.webhooks.header(body.as_bytes(), now_ms() / 1000))];
    let sent = target.send(Outgoing {
        method: Method::POST,
        path: WEBHOOK_PATH,
        headers: &headers,
        body: body.as_bytes().to_vec(),
        max_bytes: 4096,
        timeout: TIMEOUT,
    });
    let Reply { status, body: answer } = tokio::time::timeout(TIMEOUT, sent).await.map_err(|_| WebhookError::TimedOut)?.map_err(WebhookError::Unreachable)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(WebhookError::Refused { status, answer: String::from_utf8_lossy(&answer).chars().take(300).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_minute() {
        assert_eq!(backoff_ms(0), 250);
        assert_eq!(backoff_ms(1), 500);
        assert_eq!(backoff_ms(2), 1_000);
        assert_eq!(backoff_ms(7), 32_000);
        assert_eq!(backoff_ms(8), 60_000);
        assert_eq!(backoff_ms(19), 60_000);
        assert_eq!(backoff_ms(i64::MAX), 60_000);
        assert_eq!(backoff_ms(-3), 250);
    }
}
