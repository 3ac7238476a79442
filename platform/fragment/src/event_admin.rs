//! What an operator sees and does with a fragment's event traffic: the outbox's depth and oldest
//! undelivered event, dead letters both ways (deliveries that failed for good, and events received from a
//! broker that could not be applied), replaying them, the commit-to-effect latency, the gauges a metrics
//! scrape reads, and pruning old rows ([`Retention`]). Served to site admins under the fragment's prefix
//! (`crate::routes`) and gathered on the shell's `/admin/events`.

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Envelope;

use crate::db::now_ms;
use crate::inbox::{apply, MAX_EVENT_BYTES};
use crate::outbox::{wake_stream, DeliveryStatus, Outbox};
use crate::runtime::FragmentRuntime;

/// What the admin sees of a service's event traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventStatus {
    pub service: ServiceName,
    /// Deliveries not yet made.
    pub outbox_depth: i64,
    /// Age of the oldest undelivered event, milliseconds.
    pub oldest_undelivered_age_ms: Option<i64>,
    pub dead_letters: Vec<DeadLetter>,
    /// Events received (inbox size).
    pub received: i64,
    /// Commit-to-effect latency of the most recent received events (up to 10,000), milliseconds.
    pub latency_ms: Option<Latency>,
    /// Each subscriber of its events with deliveries waiting: how many, how old the oldest is, and
    /// whether that is past the bound (`TESSERA_EVENTS_MAX_LAG_MS`).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionLag>,
}

/// How far one subscriber of a producer's events is behind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscriptionLag {
    pub subscriber: ServiceName,
    /// Deliveries not yet made to it.
    pub pending: i64,
    /// Age of its oldest undelivered event, milliseconds.
    pub lag_ms: i64,
    /// `lag_ms` is past the bound.
    pub behind: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Latency {
    pub samples: usize,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetter {
    pub seq: i64,
    pub subscriber: ServiceName,
    pub event_type: String,
    pub aggregate_id: String,
    pub attempts: i64,
    pub last_error: String,
}

/// A received event this service could not apply (`dead_letters`): the subscriber is the service itself.
#[derive(sqlx::FromRow)]
struct ReceivedDead {
    seq: i64,
    event_type: String,
    aggregate_id: String,
    attempts: i64,
    last_error: String,
}

/// Each subscriber with deliveries waiting in this database's outbox: how many, how old the oldest is,
/// and whether that is older than `max_lag_ms` (one grouped query; the shell's page, `/readyz` and
/// `/metrics` read it).
pub async fn subscription_lags(db: &AnyPool, max_lag_ms: i64) -> Result<Vec<SubscriptionLag>, sqlx::Error> {
    let now = now_ms();
    let lagging: Vec<(ServiceName, i64, i64)> = sqlx::query_as(
        "SELECT d.subscriber, COUNT(*), MIN(o.occurred_at_ms) FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq \
         WHERE d.status = $1 GROUP BY d.subscriber ORDER BY d.subscriber",
    )
    .bind(DeliveryStatus::Pending)
    .fetch_all(db)
    .await?;
    Ok(lagging
        .into_iter()
        .map(|(subscriber, pending, oldest)| {
            let lag_ms = (now - oldest).max(0);
            SubscriptionLag { subscriber, pending, lag_ms, behind: lag_ms > max_lag_ms }
        })
        .collect())
}

/// The event status of a fragment's database (every fragment has the runtime's event tables); a
/// subscription whose oldest undelivered event is older than `max_lag_ms` is marked behind.
pub async fn status(db: &AnyPool, service: &ServiceName, max_lag_ms: i64) -> Result<EventStatus, sqlx::Error> {
    let mut status = EventStatus {
        service: service.clone(),
        outbox_depth: 0,
        oldest_undelivered_age_ms: None,
        dead_letters: Vec::new(),
        received: 0,
        latency_ms: None,
        subscriptions: Vec::new(),
    };
    status.subscriptions = subscription_lags(db, max_lag_ms).await?;
    let (depth, oldest) = pending(db).await?;
    status.outbox_depth = depth;
    status.oldest_undelivered_age_ms = oldest.map(|at| (now_ms() - at).max(0));
    status.dead_letters = sqlx::query_as(
        "SELECT d.seq, d.subscriber, o.event_type, o.aggregate_id, d.attempts, COALESCE(d.last_error, '') AS last_error \
         FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE d.status = $1 ORDER BY d.seq LIMIT 100",
    )
    .bind(DeliveryStatus::Dead)
    .fetch_all(db)
    .await?;
    // Events received from a broker that could not be applied (the host's NATS consumers).
    let received_dead: Vec<ReceivedDead> =
        sqlx::query_as("SELECT sequence AS seq, event_type, aggregate_id, attempts, last_error FROM dead_letters ORDER BY failed_at_ms LIMIT 100")
            .fetch_all(db)
            .await?;
    status.dead_letters.extend(received_dead.into_iter().map(|dead| DeadLetter {
        seq: dead.seq,
        subscriber: service.clone(),
        event_type: dead.event_type,
        aggregate_id: dead.aggregate_id,
        attempts: dead.attempts,
        last_error: dead.last_error,
    }));
    let (received,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbox").fetch_one(db).await?;
    status.received = received;
    let recent: Vec<(i64,)> = sqlx::query_as("SELECT received_at_ms - occurred_at_ms FROM inbox ORDER BY position DESC LIMIT 10000").fetch_all(db).await?;
    let mut latencies: Vec<i64> = recent.into_iter().map(|(ms,)| ms.max(0)).collect();
    latencies.sort_unstable();
    if let Some(&max) = latencies.last() {
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        status.latency_ms = Some(Latency { samples: latencies.len(), p50: at(0.50), p99: at(0.99), max });
    }
    Ok(status)
}

/// The outbox figures a metrics scrape reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxGauges {
    /// Deliveries not yet made.
    pub depth: i64,
    /// Age of the oldest undelivered event (0 when none), milliseconds.
    pub oldest_age_ms: i64,
    pub dead: i64,
}

/// How many deliveries are pending, and when the oldest of their events occurred.
async fn pending(db: &AnyPool) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as("SELECT COUNT(*), MIN(o.occurred_at_ms) FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE d.status = $1")
        .bind(DeliveryStatus::Pending)
        .fetch_one(db)
        .await
}

/// Reads [`OutboxGauges`]: two small aggregate queries on the deliveries' status index.
pub async fn outbox_gauges(db: &AnyPool) -> Result<OutboxGauges, sqlx::Error> {
    let (depth, oldest) = pending(db).await?;
    // Dead letters either way: undeliverable here, or received from a broker and not applicable here.
    let (dead,): (i64,) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM outbox_deliveries WHERE status = $1) + (SELECT COUNT(*) FROM dead_letters)")
        .bind(DeliveryStatus::Dead)
        .fetch_one(db)
        .await?;
    Ok(OutboxGauges { depth, oldest_age_ms: oldest.map(|at| (now_ms() - at).max(0)).unwrap_or(0), dead })
}

/// Puts dead letters back in line (all, or one `seq`); returns how many. The relay is woken (through the
/// WAL when it reads the replication stream, wherever it runs).
pub async fn replay_dead_letters(db: &AnyPool, outbox: &Outbox, seq: Option<i64>) -> Result<u64, sqlx::Error> {
    let result = match seq {
        Some(seq) => {
            sqlx::query("UPDATE outbox_deliveries SET status = $3, attempts = 0, next_attempt_at_ms = $1 WHERE status = $4 AND seq = $2")
                .bind(now_ms())
                .bind(seq)
                .bind(DeliveryStatus::Pending)
                .bind(DeliveryStatus::Dead)
                .execute(db)
                .await?
        }
        None => {
            sqlx::query("UPDATE outbox_deliveries SET status = $2, attempts = 0, next_attempt_at_ms = $1 WHERE status = $3")
                .bind(now_ms())
                .bind(DeliveryStatus::Pending)
                .bind(DeliveryStatus::Dead)
                .execute(db)
                .await?
        }
    };
    outbox.committed();
    if outbox.is_streamed() && result.rows_affected() > 0 {
        // The streaming relay sees inserts only: a message in the WAL tells it to look at the table now.
        wake_stream(db).await?;
    }
    Ok(result.rows_affected())
}

/// Records an event received from a broker that could not be applied (`envelope` is `None` when the
/// message was not even a valid, signed envelope; `payload` is kept either way).
pub async fn record_dead_letter(
    db: &AnyPool,
    producer: &ServiceName,
    envelope: Option<&Envelope>,
    payload: &[u8],
    error: &str,
    attempts: i64,
) -> Result<(), sqlx::Error> {
    let id = envelope.map(|envelope| envelope.id.clone()).unwrap_or_else(|| format!("invalid-{}", uuid::Uuid::new_v4()));
    sqlx::query(
        "INSERT INTO dead_letters (event_id, producer, event_type, aggregate_id, sequence, envelope, attempts, last_error, failed_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (event_id) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error, failed_at_ms = excluded.failed_at_ms",
    )
    .bind(&id)
    .bind(producer)
    .bind(envelope.map(|envelope| envelope.event_type.as_str()).unwrap_or("(invalid)"))
    .bind(envelope.map(|envelope| envelope.aggregate_id.as_str()).unwrap_or(""))
    .bind(envelope.map(|envelope| envelope.sequence).unwrap_or_default())
    .bind(String::from_utf8_lossy(payload).chars().take(MAX_EVENT_BYTES).collect::<String>())
    .bind(attempts)
    .bind(error.chars().take(500).collect::<String>())
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// Applies the received dead letters again (all, or those of one `seq`): each that applies now leaves
/// the list; one that fails again stays with the new error. Returns how many applied.
pub async fn replay_received(runtime: &FragmentRuntime, seq: Option<i64>) -> Result<u64, sqlx::Error> {
    // Messages that were not a valid, signed envelope stay where they are: replaying one would apply
    // whatever anyone able to publish to the broker wrote.
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT event_id, sequence, envelope FROM dead_letters WHERE event_id NOT LIKE 'invalid-%' ORDER BY failed_at_ms")
            .fetch_all(&runtime.db)
            .await?;
    let mut applied = 0;
    for (event_id, sequence, envelope) in rows.into_iter().filter(|(_, sequence, _)| seq.is_none_or(|seq| seq == *sequence)) {
        let outcome = match serde_json::from_str::<Envelope>(&envelope) {
            Err(error) => Err(format!("not an event envelope: {error}")),
            Ok(envelope) => match runtime.events.subscriptions.get(&envelope.event_type) {
                None => Err(format!("{} does not subscribe to {}", runtime.name, envelope.event_type)),
                Some(subscription) => apply(runtime, subscription, &envelope).await.map(drop).map_err(|error| error.to_string()),
            },
        };
        match outcome {
            Ok(()) => {
                applied += 1;
                sqlx::query("DELETE FROM dead_letters WHERE event_id = $1").bind(&event_id).execute(&runtime.db).await?;
            }
            Err(error) => {
                tracing::warn!(event = %event_id, sequence, %error, "a replayed dead letter failed again");
                sqlx::query("UPDATE dead_letters SET last_error = $1, failed_at_ms = $2 WHERE event_id = $3")
                    .bind(error.chars().take(500).collect::<String>())
                    .bind(now_ms())
                    .bind(&event_id)
                    .execute(&runtime.db)
                    .await?;
            }
        }
    }
    Ok(applied)
}

/// How long the runtime keeps event rows.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// An event delivered to every subscriber (or addressed to none) is deleted this long after it
    /// occurred. A subscriber that appears later is backfilled with the events still kept.
    pub events_ms: i64,
    /// An inbox row (the record that makes a redelivery harmless) is deleted this long after it arrived;
    /// keep it longer than any event waits for a replay, and than a broker keeps its messages.
    pub inbox_ms: i64,
}

/// Deletes what [`Retention`] lets go: delivered events with their delivery rows, and old inbox rows.
/// An event with a delivery still pending or dead is kept, whatever its age. Returns (events, inbox rows)
/// deleted.
pub async fn prune(db: &AnyPool, retention: Retention, now: i64) -> Result<(u64, u64), sqlx::Error> {
    let events_before = now - retention.events_ms;
    let done = "SELECT o.seq FROM outbox o WHERE o.occurred_at_ms < $1 \
                AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.seq = o.seq AND d.status <> $2)";
    let mut tx = db.begin().await?;
    sqlx::query(&format!("DELETE FROM outbox_deliveries WHERE seq IN ({done})")).bind(events_before).bind(DeliveryStatus::Delivered).execute(&mut *tx).await?;
    let events = sqlx::query("DELETE FROM outbox WHERE occurred_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.seq = outbox.seq)")
        .bind(events_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let inbox = sqlx::query("DELETE FROM inbox WHERE received_at_ms < $1").bind(now - retention.inbox_ms).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok((events, inbox))
}
