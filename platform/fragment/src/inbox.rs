//! The consuming half of the event platform: the **inbox**. Whatever carried an event (an HTTP delivery to
//! `POST <prefix>/events`, served by `crate::routes`, or a broker's message read by the host), it is
//! applied here: the inbox row and the subscribed handler's effect commit in one transaction, so a
//! redelivered event has its effect once ([`apply`]).

use axum::http::HeaderMap;
use sqlx::AnyConnection;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Envelope;
use tessera_contracts::ApiError;

use crate::db::{now_ms, now_seconds, retrying};
use crate::runtime::FragmentRuntime;
use crate::signature::{EventSigner, UNKNOWN_KEY_REFUSAL};
use crate::subscriptions::HandlerError;

/// Largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Most events in one batch (`POST <prefix>/events/batch`).
pub const MAX_BATCH_EVENTS: usize = 500;
/// Largest batch body accepted.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How far in the future an event's time may be (clocks of two hosts disagree a little).
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a genuine, signed envelope is still not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inadmissible {
    /// Only the service an event type is named after may publish it (`tessera_contracts::events::owner_of`).
    #[error("{producer} may not publish {event_type:?}: only its owner may")]
    NotItsOwn { producer: ServiceName, event_type: String },
    /// Older than the inbox remembers: it might have been applied already.
    #[error("the event occurred {days} days ago, longer ago than this service remembers what it applied")]
    TooOld { days: i64 },
    #[error("the event's time is in the future")]
    FromTheFuture,
}

/// Whether an authentic envelope may be applied here: its type belongs to the producer that signed it,
/// and it is younger than `max_age_ms` (the inbox's memory) and not from the future.
pub fn admissible(envelope: &Envelope, max_age_ms: i64, now_ms: i64) -> Result<(), Inadmissible> {
    if tessera_contracts::events::owner_of(&envelope.event_type).as_ref() != Some(&envelope.producer) {
        return Err(Inadmissible::NotItsOwn { producer: envelope.producer.clone(), event_type: envelope.event_type.chars().take(100).collect() });
    }
    let age = now_ms - envelope.occurred_at_ms;
    if age > max_age_ms {
        return Err(Inadmissible::TooOld { days: age / (24 * 3600 * 1000) });
    }
    if age < -CLOCK_SKEW_MS {
        return Err(Inadmissible::FromTheFuture);
    }
    Ok(())
}

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
        runtime.events.subscriptions.take_locks(runtime, &mut tx, &[envelope]).await?;
        subscription.apply(runtime, &mut tx, envelope).await?;
        tx.commit().await?;
        Ok::<_, HandlerError>(true)
    })
    .await?;
    if applied {
        record_lag(envelope);
        // The handler may have published events of its own.
        runtime.events.outbox.committed();
        if let Some(after) = subscription.after_commit() {
            tokio::spawn(after(runtime.clone()));
        }
    }
    Ok(applied)
}

/// What became of one event of a batch.
#[derive(Debug)]
pub enum Applied {
    /// Applied (`false`: a duplicate, applied before).
    Done(bool),
    /// Its handler refused it, or the database failed: rolled back alone.
    Failed(HandlerError),
    /// Not tried: an earlier event of its aggregate in the same batch was not applied, and order comes
    /// first. The producer sends it again after that one.
    HeldBack,
}

/// [`aggregate_of`], owned (the key of the set of aggregates a batch stopped applying).
fn owned_aggregate(envelope: &Envelope) -> (String, String) {
    let (kind, id) = aggregate_of(envelope);
    (kind.to_owned(), id.to_owned())
}

/// The key that orders events: their aggregate.
pub fn aggregate_of(envelope: &Envelope) -> (&str, &str) {
    (envelope.aggregate_type.as_str(), envelope.aggregate_id.as_str())
}

/// Applies a batch of received events in one transaction, each in a savepoint of its own, in the order
/// given (a producer sends an aggregate's events in its order): an event its handler refuses is rolled
/// back alone and the others commit, except the later events of its aggregate, held back (one commit for
/// the batch instead of one per event: the consumer's share of a fast event path). A transient conflict
/// retries the whole batch. `held` lists aggregates already held back (refused before this call).
/// Returns, in order, each event's outcome.
pub async fn apply_batch(runtime: &FragmentRuntime, batch: &[(&Subscription, &Envelope)], held: &[(String, String)]) -> Result<Vec<Applied>, sqlx::Error> {
    let outcomes = retrying(|| async {
        let mut tx = runtime.db.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut stopped: std::collections::HashSet<(String, String)> = held.iter().cloned().collect();
        let envelopes: Vec<&Envelope> =
            batch.iter().filter(|(_, envelope)| !stopped.contains(&owned_aggregate(envelope))).map(|(_, envelope)| *envelope).collect();
        runtime.events.subscriptions.take_locks(runtime, &mut tx, &envelopes).await?;
        for (subscription, envelope) in batch {
            let aggregate = owned_aggregate(envelope);
            if stopped.contains(&aggregate) {
                outcomes.push(Applied::HeldBack);
                continue;
            }
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
            let outcome = async {
                if !record_in_inbox(&mut savepoint, envelope).await? {
                    return Ok(false);
                }
                subscription.apply(runtime, &mut savepoint, envelope).await?;
                Ok::<_, HandlerError>(true)
            }
            .await;
            match outcome {
                Ok(applied) => {
                    savepoint.commit().await?;
                    outcomes.push(Applied::Done(applied));
                }
                // Another writer got in the way: the whole batch again, as `apply` would.
                Err(HandlerError::Database(error)) if crate::db::is_transient(&error) => return Err(error),
                Err(error) => {
                    savepoint.rollback().await?;
                    stopped.insert(aggregate);
                    outcomes.push(Applied::Failed(error));
                }
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(outcomes)
    })
    .await?;
    for ((_, envelope), outcome) in batch.iter().zip(&outcomes) {
        if matches!(outcome, Applied::Done(true)) {
            record_lag(envelope);
        }
    }
    if outcomes.iter().any(|outcome| matches!(outcome, Applied::Done(true))) {
        runtime.events.outbox.committed();
    }
    for ((subscription, _), outcome) in batch.iter().zip(&outcomes) {
        if let (Applied::Done(true), Some(after)) = (outcome, subscription.after_commit()) {
            tokio::spawn(after(runtime.clone()));
        }
    }
    Ok(outcomes)
}

/// How old an event was when its effect committed here (`tessera_event_applied_lag_seconds`, by producer
/// and event type): what the shop shows is this much behind what happened.
fn record_lag(envelope: &Envelope) {
    let lag = (now_ms() - envelope.occurred_at_ms).max(0) as f64 / 1000.0;
    metrics::histogram!("tessera_event_applied_lag_seconds", "producer" => envelope.producer.to_string(), "event_type" => envelope.event_type.clone())
        .record(lag);
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

/// The service that signed an event request (one event or a batch), or the error to answer with: 401
/// when the signature is missing or wrong, 503 when it is under a key not learned yet.
pub fn signed_by(signer: &EventSigner, headers: &HeaderMap, body: &[u8]) -> Result<ServiceName, ApiError> {
    signer.verify(headers, body, now_seconds()).map_err(|error| {
        tracing::warn!(%error, "event request refused");
        if error.is_transient() {
            ApiError::Unavailable(format!("{UNKNOWN_KEY_REFUSAL}; try again shortly ({error})"))
        } else {
            ApiError::Unauthorized
        }
    })
}

/// The envelope of a signed `POST <prefix>/events` request, or the error to answer with: 401 when the
/// signature is missing or wrong, 503 when it is under a key not learned yet (the relay retries), 400
/// when the body is not an envelope of the service that signed it.
pub fn accept_envelope(signer: &EventSigner, headers: &HeaderMap, body: &[u8]) -> Result<Envelope, ApiError> {
    let producer = signed_by(signer, headers, body)?;
    let envelope: Envelope = serde_json::from_slice(body).map_err(|error| ApiError::BadRequest(format!("not an event envelope: {error}")))?;
    if envelope.producer != producer {
        return Err(ApiError::BadRequest(format!("signed by {producer} but claims to come from {}", envelope.producer)));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: &str, producer: ServiceName, occurred_at_ms: i64) -> Envelope {
        Envelope {
            id: "e1".into(),
            event_type: event_type.into(),
            version: 1,
            aggregate_type: "order".into(),
            aggregate_id: "1".into(),
            sequence: 1,
            occurred_at_ms,
            producer,
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn an_event_is_admissible_from_its_owner_within_the_inbox_memory_only() {
        const DAY: i64 = 24 * 3600 * 1000;
        let now = 100 * DAY;
        assert_eq!(admissible(&envelope("cart.order_paid", ServiceName::CART, now), 45 * DAY, now), Ok(()));
        assert!(matches!(admissible(&envelope("cart.order_paid", ServiceName::CATALOG, now), 45 * DAY, now), Err(Inadmissible::NotItsOwn { .. })));
        assert!(matches!(admissible(&envelope("nodot", ServiceName::CART, now), 45 * DAY, now), Err(Inadmissible::NotItsOwn { .. })));
        assert_eq!(admissible(&envelope("cart.order_paid", ServiceName::CART, now - 46 * DAY), 45 * DAY, now), Err(Inadmissible::TooOld { days: 46 }));
        assert_eq!(admissible(&envelope("cart.order_paid", ServiceName::CART, now + DAY), 45 * DAY, now), Err(Inadmissible::FromTheFuture));
    }
}
