//! The producing half of the event platform a fragment codes against: the **transactional outbox**.
//!
//! [`Outbox::enqueue`] writes the event row (and one delivery row per subscriber) with the caller's
//! connection, inside the caller's transaction: the state change and its event commit together or not at
//! all. After the commit, [`Outbox::committed`] wakes the relay at once. The relay that delivers the rows
//! at least once (over HTTP, NATS JetStream, or fed by PostgreSQL's replication stream) is the process
//! host's (`tessera_host::relay`); it learns of commits and backfills through [`OutboxSignals`].
//!
//! The tables (`outbox`, `outbox_deliveries`, `subscriptions`) are the runtime's, in every fragment's
//! database (`migrations/` of this crate, see `crate::db::RUNTIME_MIGRATIONS`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Event;
use tokio::sync::Notify;

use crate::db::now_ms;

/// Where one delivery of an event to one subscriber stands (`outbox_deliveries.status`): waiting to be
/// sent (or sent again after a failure), delivered, or dead after its last attempt (a dead letter, until
/// an admin replays it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

crate::text_column!(DeliveryStatus);

/// The one subscriber an event is addressed to when a broker carries the events: the broker's stream,
/// which every consumer reads for itself.
pub const BROKER_SUBSCRIBER: ServiceName = ServiceName::of("jetstream");

/// The prefix of the logical replication messages that wake a streaming relay ([`wake_stream`]).
pub const STREAM_WAKE_PREFIX: &str = "tessera.relay.wake";

/// Where a producer's events go.
///
/// The producer does not choose its subscribers: consumers subscribe (`crate::subscriptions`),
/// and the process host tells the outbox who subscribed to what ([`Outbox::subscribe`]) as it learns it,
/// from the fragments in its own process and from the published descriptions of the others. Subscriptions
/// are kept in the producer's database, so a restarted producer knows them before anyone answers; a new
/// subscriber gets every event of its types already in the outbox, like a durable stream consumer that
/// starts at the beginning. An event gets one delivery row for each subscriber known when it commits.
pub struct Outbox {
    producer: ServiceName,
    /// A broker carries the events (the host's NATS relay): each event is addressed once, to it.
    broker: AtomicBool,
    /// The replication stream feeds the relay (the host's CDC relay), which a commit here does not wake.
    streamed: AtomicBool,
    /// Event type → subscriber names.
    routes: RwLock<HashMap<String, BTreeSet<ServiceName>>>,
    /// What the relay is told: commits, and the second backfill passes of new subscriptions.
    signals: OutboxSignals,
}

/// How long after a new subscription its second backfill pass runs: longer than any transaction that
/// was committing while the first ran.
const SECOND_BACKFILL_AFTER: Duration = Duration::from_secs(5);

impl Outbox {
    pub fn new(producer: ServiceName) -> Outbox {
        Outbox {
            producer,
            broker: AtomicBool::new(false),
            streamed: AtomicBool::new(false),
            routes: RwLock::new(HashMap::new()),
            signals: OutboxSignals::default(),
        }
    }

    pub fn producer(&self) -> &ServiceName {
        &self.producer
    }

    /// From now on a broker carries this producer's events: every event gets one delivery, to the
    /// broker, and subscribers read them from its stream (so subscribing addresses nothing here).
    pub fn use_broker(&self) {
        self.broker.store(true, Ordering::SeqCst);
    }

    /// From now on the relay reads committed events from PostgreSQL's replication stream.
    pub fn use_stream(&self) {
        self.streamed.store(true, Ordering::SeqCst);
    }

    /// Whether the relay reads the replication stream (which sees inserts only: a replay must also
    /// [`wake_stream`]).
    pub fn is_streamed(&self) -> bool {
        self.streamed.load(Ordering::SeqCst)
    }

    /// What this outbox tells its relay, for the relay to hold.
    pub fn signals(&self) -> OutboxSignals {
        self.signals.clone()
    }

    fn uses_broker(&self) -> bool {
        self.broker.load(Ordering::SeqCst)
    }

    fn route(&self, event_type: &str, subscriber: &ServiceName) -> bool {
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.entry(event_type.to_owned()).or_default().insert(subscriber.clone())
    }

    /// The subscriptions recorded in `db` (at start, before anything is enqueued).
    pub async fn load_subscriptions(&self, db: &AnyPool) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, ServiceName)> = sqlx::query_as("SELECT event_type, subscriber FROM subscriptions").fetch_all(db).await?;
        for (event_type, subscriber) in rows {
            self.route(&event_type, &subscriber);
        }
        Ok(())
    }

    /// Makes `subscriber` a receiver of `event_type`, durably. The first time, every event of that type
    /// already in the outbox is addressed to it too — now, and once more a few seconds later for an event
    /// whose transaction was committing meanwhile (the delivery key makes the second pass add only what
    /// the first missed). Returns whether the subscription is new.
    pub async fn subscribe(&self, db: &AnyPool, event_type: &str, subscriber: &ServiceName) -> Result<bool, sqlx::Error> {
        if self.uses_broker() {
            return Ok(false);
        }
        // In memory first: every event enqueued from now on is addressed to the subscriber.
        self.route(event_type, subscriber);
        let inserted = sqlx::query(
            "INSERT INTO subscriptions (subscriber, event_type, subscribed_at_ms) VALUES ($1, $2, $3) ON CONFLICT (subscriber, event_type) DO NOTHING",
        )
        .bind(subscriber)
        .bind(event_type)
        .bind(now_ms())
        .execute(db)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        let backfilled = backfill(db, event_type, subscriber).await?;
        tracing::info!(producer = %self.producer, %subscriber, event_type, backfilled, "new subscriber");
        let due = tokio::time::Instant::now() + SECOND_BACKFILL_AFTER;
        self.signals.backfills.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((event_type.to_owned(), subscriber.clone(), due));
        self.committed();
        Ok(true)
    }

    /// The subscribers of `event_type`, sorted.
    pub fn subscribers(&self, event_type: &str) -> Vec<ServiceName> {
        let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.get(event_type).map(|subscribers| subscribers.iter().cloned().collect()).unwrap_or_default()
    }

    /// Writes `event` to the outbox on `connection`, which must be inside the caller's transaction.
    pub async fn enqueue<E: Event>(&self, connection: &mut AnyConnection, event: &E) -> Result<(), sqlx::Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let payload = serde_json::to_string(event).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        let now = now_ms();
        let aggregate_id = event.aggregate_id();
        let (seq,): (i64,) = sqlx::query_as(
            "INSERT INTO outbox (id, event_type, version, aggregate_type, aggregate_id, payload, occurred_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(&id)
        .bind(E::TYPE)
        .bind(i64::from(E::VERSION))
        .bind(E::AGGREGATE)
        .bind(&aggregate_id)
        .bind(&payload)
        .bind(now)
        .fetch_one(&mut *connection)
        .await?;
        let subscribers = if self.uses_broker() { vec![BROKER_SUBSCRIBER] } else { self.subscribers(E::TYPE) };
        for subscriber in subscribers {
            sqlx::query("INSERT INTO outbox_deliveries (seq, subscriber, aggregate_key, next_attempt_at_ms) VALUES ($1, $2, $3, $4)")
                .bind(seq)
                .bind(&subscriber)
                .bind(format!("{}:{aggregate_id}", E::AGGREGATE))
                .bind(now)
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }

    /// Tells the relay that a transaction with events committed.
    pub fn committed(&self) {
        self.signals.wake.notify_one();
    }
}

/// Addresses every event of `event_type` in the outbox to `subscriber` (those it has no delivery of yet).
pub async fn backfill(db: &AnyPool, event_type: &str, subscriber: &ServiceName) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO outbox_deliveries (seq, subscriber, aggregate_key, next_attempt_at_ms) \
         SELECT seq, $1, aggregate_type || ':' || aggregate_id, $2 FROM outbox WHERE event_type = $3 \
         ON CONFLICT (seq, subscriber) DO NOTHING",
    )
    .bind(subscriber)
    .bind(now_ms())
    .bind(event_type)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// What an outbox tells the relay that delivers it: that a transaction with events committed, and which
/// new subscriptions are due a second backfill pass. Cheap to clone; the relay holds one.
#[derive(Clone, Default)]
pub struct OutboxSignals {
    wake: Arc<Notify>,
    /// Second backfill passes of new subscriptions (event type, subscriber, due).
    backfills: Arc<Mutex<Vec<(String, ServiceName, tokio::time::Instant)>>>,
}

impl OutboxSignals {
    /// Waits for the next commit, at most `timeout`.
    pub async fn committed_within(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    /// Runs the second backfill pass of each new subscription whose time has come (see
    /// [`Outbox::subscribe`]).
    pub async fn run_due_backfills(&self, db: &AnyPool, producer: &ServiceName) -> Result<(), sqlx::Error> {
        let now = tokio::time::Instant::now();
        let due: Vec<(String, ServiceName, tokio::time::Instant)> = {
            let mut pending = self.backfills.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let (due, later) = pending.drain(..).partition(|(_, _, at)| *at <= now);
            *pending = later;
            due
        };
        for (event_type, subscriber, _) in due {
            let added = backfill(db, &event_type, &subscriber).await?;
            if added > 0 {
                tracing::info!(%producer, %subscriber, %event_type, added, "second backfill pass addressed events committed meanwhile");
            }
        }
        Ok(())
    }
}

/// Tells a relay that reads the replication stream to look at the delivery table now (it sees inserts
/// only, so an update such as a replay needs a message in the WAL), wherever that relay runs.
pub async fn wake_stream(db: &AnyPool) -> Result<(), sqlx::Error> {
    // Transactional (`true`): the message is decoded when this statement's transaction commits. The
    // function returns an LSN, which the Any driver cannot decode: select from it instead.
    sqlx::query("SELECT 1 FROM (SELECT pg_logical_emit_message(true, $1, '')) AS sent").bind(STREAM_WAKE_PREFIX).execute(db).await?;
    Ok(())
}
