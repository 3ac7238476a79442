//! The consuming half of the event platform: the **inbox**. Whatever carried an event (an HTTP delivery to
//! `POST <prefix>/events`, served by `crate::routes`, or a broker's message read by the host), it is
//! applied here: the inbox row and the subscribed handler's effect commit in one transaction, so a
//! redelivered event has its effect once ([`apply`]).

use axum::http::HeaderMap;
use sqlx::AnyConnection;
use tessera_contracts::events::Envelope;
use tessera_contracts::ApiError;

use crate::db::{now_ms, now_seconds, retrying};
use crate::runtime::FragmentRuntime;
use crate::signature::EventSigner;
use crate::subscriptions::HandlerError;

/// Largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One subscription of this runtime's fragment.
pub type Subscription = crate::subscriptions::Subscription<FragmentRuntime>;

/// Applies a received event, whatever carried it: the inbox row and the handler's effect in one
/// transaction (retried on transient conflicts), then the work after the commit. `Ok(false)`: a
/// duplicate, applied before.
pub async fn apply(runtime: &FragmentRuntime, subscription: &Subscription, envelope: &Envelope) -> Result<bool, HandlerError> {
    let applied = retrying(|| async {
        let mut tx = runtime.db.begin().await?;
        if !record_in_inbox(&mut tx, envelope).await? {
            return Ok(false);
        }
        subscription.apply(runtime, &mut tx, envelope).await?;
        tx.commit().await?;
        Ok::<_, HandlerError>(true)
    })
    .await?;
    if applied {
        // The handler may have published events of its own.
        runtime.events.outbox.committed();
        if let Some(after) = subscription.after_commit() {
            tokio::spawn(after(runtime.clone()));
        }
    }
    Ok(applied)
}

/// Records an event in the consumer's inbox on `connection` (inside the consumer's transaction).
/// Returns `false` when it was there already: a redelivery, whose effect must not be applied again.
pub async fn record_in_inbox(connection: &mut AnyConnection, envelope: &Envelope) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO inbox (event_id, producer, event_type, aggregate_id, sequence, occurred_at_ms, received_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&envelope.id)
    .bind(&envelope.producer)
    .bind(&envelope.event_type)
    .bind(&envelope.aggregate_id)
    .bind(envelope.sequence)
    .bind(envelope.occurred_at_ms)
    .bind(now_ms())
    .execute(&mut *connection)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The envelope of a signed `POST <prefix>/events` request, or the error to answer with: 401 when the
/// signature is missing or wrong, 400 when the body is not an envelope of the service that signed it.
pub fn accept_envelope(signer: &EventSigner, headers: &HeaderMap, body: &[u8]) -> Result<Envelope, ApiError> {
    let producer = signer.verify(headers, body, now_seconds()).map_err(|error| {
        tracing::warn!(%error, "event request refused");
        ApiError::Unauthorized
    })?;
    let envelope: Envelope = serde_json::from_slice(body).map_err(|error| ApiError::BadRequest(format!("not an event envelope: {error}")))?;
    if envelope.producer != producer {
        return Err(ApiError::BadRequest(format!("signed by {producer} but claims to come from {}", envelope.producer)));
    }
    Ok(envelope)
}
