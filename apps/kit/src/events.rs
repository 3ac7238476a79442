//! The event platform every service uses: transactional outbox, relay, signed transport, inbox. The
//! tables are the runtime's (`apps/kit/migrations`, in every fragment's database); the one endpoint that
//! receives events is `crate::routes`, driven by the consumer's `crate::fragment::Subscriptions`.
//!
//! - **Outbox.** [`Outbox::enqueue`] writes the event row (and one delivery row per subscriber) with the
//!   caller's connection, inside the caller's transaction: the state change and its event commit together
//!   or not at all. After the commit, [`Outbox::committed`] wakes the relay at once.
//! - **Relay.** [`Relay`] delivers pending deliveries at least once, oldest first, never overtaking an
//!   earlier undelivered event of the same aggregate for the same subscriber (order per aggregate), with
//!   exponential backoff between attempts and a dead-letter state after `max_attempts`; dead letters can be
//!   listed and replayed. Rows survive restarts, so a relay that dies anywhere resumes where it stopped.
//!   Every instance of a producer runs a relay on the shared outbox; a relay claims each delivery before
//!   sending it (a lease on the row), so N instances send each event once per subscriber, in order.
//! - **Transport.** Behind the small [`Transport`] trait: NATS JetStream when `TESSERA_NATS_URL` is set
//!   (`crate::broker`: streams per producer, durable consumers per subscriber), else, the embedded
//!   default, an HTTP POST to `<subscriber prefix>/events`, in process or over
//!   the network, signed with HMAC-SHA256 over timestamp, producer and body ([`EventSigner`]): the callee
//!   knows which service sent it, and a browser cannot forge one.
//! - **Inbox.** [`record_in_inbox`] stores the event id in the consumer's transaction, so a redelivered
//!   event has its effect once.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::events::{Envelope, Event};
use tokio::sync::Notify;

pub const PRODUCER_HEADER: &str = "x-tessera-event-producer";
pub const TIMESTAMP_HEADER: &str = "x-tessera-event-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tessera-event-signature";
/// Signed requests older or newer than this are refused (replays of captured requests).
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;
/// Largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Signs and verifies event requests between services. Holds one or more shared secrets: it signs with
/// the first and accepts any, so secrets can be rotated without losing events in flight.
#[derive(Clone)]
pub struct EventSigner {
    keys: Arc<Vec<ring::hmac::Key>>,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSigner { .. }")
    }
}

/// Why an event request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the event request is not signed")]
    Missing,
    #[error("the event request's timestamp is missing, malformed or outside the tolerance")]
    Stale,
    #[error("the event request's signature does not match")]
    Mismatch,
}

impl EventSigner {
    pub fn new(secrets: &[Vec<u8>]) -> EventSigner {
        assert!(!secrets.is_empty(), "at least one event secret");
        EventSigner { keys: Arc::new(secrets.iter().map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)).collect()) }
    }

    fn message(timestamp: i64, producer: &str, body: &[u8]) -> Vec<u8> {
        let mut message = format!("{timestamp}.{producer}.").into_bytes();
        message.extend_from_slice(body);
        message
    }

    /// The three headers of a signed event request.
    pub fn sign(&self, producer: &str, body: &[u8], timestamp: i64) -> [(&'static str, String); 3] {
        let tag = ring::hmac::sign(&self.keys[0], &EventSigner::message(timestamp, producer, body));
        [(PRODUCER_HEADER, producer.to_owned()), (TIMESTAMP_HEADER, timestamp.to_string()), (SIGNATURE_HEADER, format!("v1={}", STANDARD.encode(tag.as_ref())))]
    }

    /// Checks a request's signature (constant time) and returns the producer that signed it.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_seconds: i64) -> Result<String, SignatureError> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let (Some(producer), Some(signature)) = (header(PRODUCER_HEADER), header(SIGNATURE_HEADER)) else {
            return Err(SignatureError::Missing);
        };
        let timestamp: i64 = header(TIMESTAMP_HEADER).and_then(|t| t.parse().ok()).ok_or(SignatureError::Stale)?;
        if now_seconds.abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        let tag = signature.strip_prefix("v1=").and_then(|tag| STANDARD.decode(tag).ok()).ok_or(SignatureError::Mismatch)?;
        let message = EventSigner::message(timestamp, producer, body);
        if self.keys.iter().any(|key| ring::hmac::verify(key, &message, &tag).is_ok()) {
            Ok(producer.to_owned())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Where a producer's events go.
///
/// The producer does not choose its subscribers: consumers subscribe (`crate::fragment::Subscriptions`),
/// and the process host tells the outbox who subscribed to what ([`Outbox::subscribe`]) as it learns it,
/// from the fragments in its own process and from the published descriptions of the others. Subscriptions
/// are kept in the producer's database, so a restarted producer knows them before anyone answers; a new
/// subscriber gets every event of its types already in the outbox, like a durable stream consumer that
/// starts at the beginning. An event gets one delivery row for each subscriber known when it commits.
pub struct Outbox {
    producer: &'static str,
    /// A broker carries the events (`crate::broker`): each event is addressed once, to it.
    broker: std::sync::atomic::AtomicBool,
    /// The replication stream feeds the relay (`crate::cdc`), which a commit here does not wake.
    streamed: std::sync::atomic::AtomicBool,
    /// Event type → subscriber names.
    routes: RwLock<HashMap<String, BTreeSet<String>>>,
    /// Second backfill passes of new subscriptions (event type, subscriber, due), run by the relay.
    backfills: Arc<std::sync::Mutex<Vec<(String, String, tokio::time::Instant)>>>,
    wake: Arc<Notify>,
}

/// How long after a new subscription its second backfill pass runs: longer than any transaction that
/// was committing while the first ran.
const SECOND_BACKFILL_AFTER: Duration = Duration::from_secs(5);

impl Outbox {
    pub fn new(producer: &'static str) -> Outbox {
        Outbox {
            producer,
            broker: std::sync::atomic::AtomicBool::new(false),
            streamed: std::sync::atomic::AtomicBool::new(false),
            routes: RwLock::new(HashMap::new()),
            backfills: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn producer(&self) -> &'static str {
        self.producer
    }

    /// From now on a broker carries this producer's events: every event gets one delivery, to the
    /// broker, and subscribers read them from its stream (so subscribing addresses nothing here).
    pub fn use_broker(&self) {
        self.broker.store(true, Ordering::SeqCst);
    }

    /// From now on the relay reads committed events from PostgreSQL's replication stream (`crate::cdc`).
    pub fn use_stream(&self) {
        self.streamed.store(true, Ordering::SeqCst);
    }

    fn uses_broker(&self) -> bool {
        self.broker.load(Ordering::SeqCst)
    }

    fn route(&self, event_type: &str, subscriber: &str) -> bool {
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.entry(event_type.to_owned()).or_default().insert(subscriber.to_owned())
    }

    /// The subscriptions recorded in `db` (at start, before anything is enqueued).
    pub async fn load_subscriptions(&self, db: &AnyPool) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT event_type, subscriber FROM subscriptions").fetch_all(db).await?;
        for (event_type, subscriber) in rows {
            self.route(&event_type, &subscriber);
        }
        Ok(())
    }

    /// Makes `subscriber` a receiver of `event_type`, durably. The first time, every event of that type
    /// already in the outbox is addressed to it too — now, and once more a few seconds later for an event
    /// whose transaction was committing meanwhile (the delivery key makes the second pass add only what
    /// the first missed). Returns whether the subscription is new.
    pub async fn subscribe(&self, db: &AnyPool, event_type: &str, subscriber: &str) -> Result<bool, sqlx::Error> {
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
        tracing::info!(producer = self.producer, subscriber, event_type, backfilled, "new subscriber");
        let due = tokio::time::Instant::now() + SECOND_BACKFILL_AFTER;
        self.backfills.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((event_type.to_owned(), subscriber.to_owned(), due));
        self.committed();
        Ok(true)
    }

    /// The subscribers of `event_type`, sorted.
    pub fn subscribers(&self, event_type: &str) -> Vec<String> {
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
        let subscribers = if self.uses_broker() { vec![crate::broker::BROKER_SUBSCRIBER.to_owned()] } else { self.subscribers(E::TYPE) };
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
        self.wake.notify_one();
    }
}

/// Addresses every event of `event_type` in the outbox to `subscriber` (those it has no delivery of yet).
async fn backfill(db: &AnyPool, event_type: &str, subscriber: &str) -> Result<u64, sqlx::Error> {
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

/// Delivers an envelope to a subscriber.
pub trait Transport: Send + Sync + 'static {
    fn deliver<'a>(&'a self, subscriber: &'a str, envelope: &'a Envelope) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

pub use crate::peers::Target;

/// How long one event delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Signed HTTP POSTs to each subscriber's `<prefix>/events` (in process or over the network), found
/// among the producer's peers by the subscriber's name.
pub struct HttpTransport {
    producer: &'static str,
    signer: EventSigner,
    peers: Arc<crate::peers::Peers>,
}

impl HttpTransport {
    pub fn new(producer: &'static str, signer: EventSigner, peers: Arc<crate::peers::Peers>) -> HttpTransport {
        HttpTransport { producer, signer, peers }
    }
}

impl Transport for HttpTransport {
    fn deliver<'a>(&'a self, subscriber: &'a str, envelope: &'a Envelope) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let target = self.peers.get(subscriber).ok_or_else(|| format!("no route to subscriber {subscriber:?}"))?;
            if target.prefix().is_empty() {
                return Err(format!("{subscriber} has not described itself yet (its prefix is unknown)"));
            }
            let body = serde_json::to_vec(envelope).map_err(|error| error.to_string())?;
            let mut headers = vec![("content-type", "application/json".to_owned())];
            headers.extend(self.signer.sign(self.producer, &body, now_ms() / 1000));
            let path = format!("{}/events", target.prefix());
            let (status, answer) = target.send(axum::http::Method::POST, &path, &headers, body, 4096, DELIVERY_TIMEOUT).await?;
            let text = String::from_utf8_lossy(&answer);
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("{subscriber} answered {status}: {}", text.chars().take(300).collect::<String>()))
            }
        })
    }
}

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: i64,
    pub base_backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub batch: i64,
    /// Longest sleep when nothing wakes the relay (retries come due without a commit).
    pub idle_poll_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings { max_attempts: 8, base_backoff_ms: 200, max_backoff_ms: 60_000, batch: 200, idle_poll_ms: 500 }
    }
}

type DueRow = (i64, String, String, String, i64, String, String, String, i64);

/// An outbox row as the relay reads it (from the table, or from the replication stream).
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub seq: i64,
    pub id: String,
    pub version: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub occurred_at_ms: i64,
}

/// How long a relay's claim on a delivery lasts: well beyond one attempt ([`DELIVERY_TIMEOUT`]), so it
/// runs out only when the relay holding it died.
const CLAIM_MS: i64 = 3 * DELIVERY_TIMEOUT.as_millis() as i64;

/// Delivers a producer's outbox. Every instance of the producer runs one; they share the outbox and
/// take turns through claims on its rows.
pub struct Relay {
    /// Names this relay's claims.
    id: String,
    db: AnyPool,
    producer: &'static str,
    transport: Arc<dyn Transport>,
    wake: Arc<Notify>,
    backfills: Arc<std::sync::Mutex<Vec<(String, String, tokio::time::Instant)>>>,
    settings: RelaySettings,
}

impl Relay {
    pub fn new(db: AnyPool, outbox: &Outbox, transport: Arc<dyn Transport>, settings: RelaySettings) -> Relay {
        Relay {
            id: uuid::Uuid::new_v4().to_string(),
            db,
            producer: outbox.producer,
            transport,
            wake: outbox.wake.clone(),
            backfills: outbox.backfills.clone(),
            settings,
        }
    }

    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exponent = attempts.clamp(0, 20) as u32;
        self.settings.base_backoff_ms.saturating_mul(1i64 << exponent).min(self.settings.max_backoff_ms)
    }

    /// Runs the second backfill pass of each new subscription whose time has come.
    async fn run_due_backfills(&self) -> Result<(), sqlx::Error> {
        let now = tokio::time::Instant::now();
        let due: Vec<(String, String, tokio::time::Instant)> = {
            let mut pending = self.backfills.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let (due, later) = pending.drain(..).partition(|(_, _, at)| *at <= now);
            *pending = later;
            due
        };
        for (event_type, subscriber, _) in due {
            let added = backfill(&self.db, &event_type, &subscriber).await?;
            if added > 0 {
                tracing::info!(producer = self.producer, %subscriber, %event_type, added, "second backfill pass addressed events committed meanwhile");
            }
        }
        Ok(())
    }

    /// Claims a delivery for this relay until it is sent or [`CLAIM_MS`] pass; returns its attempts so
    /// far, or `None` when another relay holds it, it is no longer pending, or an earlier event of its
    /// aggregate for the same subscriber is still pending (claimed or not). So while one relay sends an
    /// event no relay sends the next of the same aggregate: order holds across instances, whether the
    /// delivery was found by a pass's query or on the replication stream (`crate::cdc`).
    pub(crate) async fn claim(&self, seq: i64, subscriber: &str, aggregate_key: &str) -> Result<Option<i64>, sqlx::Error> {
        let now = now_ms();
        sqlx::query_as::<_, (i64,)>(
            "UPDATE outbox_deliveries SET claimed_by = $1, claimed_until_ms = $2 \
             WHERE seq = $3 AND subscriber = $4 AND status = 'pending' AND (claimed_until_ms IS NULL OR claimed_until_ms < $5) \
               AND NOT EXISTS (SELECT 1 FROM outbox_deliveries e WHERE e.subscriber = $4 AND e.aggregate_key = $6 \
                   AND e.status = 'pending' AND e.seq < $3) \
             RETURNING attempts",
        )
        .bind(&self.id)
        .bind(now + CLAIM_MS)
        .bind(seq)
        .bind(subscriber)
        .bind(now)
        .bind(aggregate_key)
        .fetch_optional(&self.db)
        .await
        .map(|claimed| claimed.map(|(attempts,)| attempts))
    }

    /// The event of outbox row `seq`, as it goes out (`None`: no such row).
    pub(crate) async fn envelope(&self, seq: i64) -> Result<Option<Envelope>, sqlx::Error> {
        let row: Option<(String, i64, String, String, String, String, i64)> =
            sqlx::query_as("SELECT id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms FROM outbox WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&self.db)
                .await?;
        Ok(row.map(|(id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms)| {
            self.envelope_of(OutboxRow { seq, id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms })
        }))
    }

    pub(crate) fn envelope_of(&self, row: OutboxRow) -> Envelope {
        Envelope {
            id: row.id,
            event_type: row.event_type,
            version: u32::try_from(row.version).unwrap_or_default(),
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.seq,
            occurred_at_ms: row.occurred_at_ms,
            producer: self.producer.to_owned(),
            payload: serde_json::from_str(&row.payload).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Attempts every delivery that is due now (the oldest pending one of each aggregate and subscriber);
    /// returns how many were attempted. Call again while it delivers: the next events of each aggregate
    /// become due as the earlier ones are delivered.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        self.pass().await.map(|(attempted, _)| attempted)
    }

    /// One pass: (attempted, delivered).
    pub(crate) async fn pass(&self) -> Result<(usize, usize), sqlx::Error> {
        self.run_due_backfills().await?;
        let now = now_ms();
        let due: Vec<DueRow> = sqlx::query_as(
            "SELECT d.seq, d.subscriber, d.aggregate_key, o.id, o.version, o.event_type, o.aggregate_type, o.payload, o.occurred_at_ms \
             FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq \
             WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $1 \
               AND (d.claimed_until_ms IS NULL OR d.claimed_until_ms < $1) \
               AND NOT EXISTS (SELECT 1 FROM outbox_deliveries e WHERE e.subscriber = d.subscriber \
                   AND e.aggregate_key = d.aggregate_key AND e.status = 'pending' AND e.seq < d.seq) \
             ORDER BY d.seq LIMIT $2",
        )
        .bind(now)
        .bind(self.settings.batch)
        .fetch_all(&self.db)
        .await?;
        // Every row is the oldest pending event of its aggregate for its subscriber (the query says so).
        // They go one at a time: concurrent deliveries only make an SQLite consumer's writers queue on its
        // lock (measured: 5x slower), and one at a time keeps the relay easy to reason about.
        let mut attempted = 0;
        let mut delivered = 0;
        for (seq, subscriber, aggregate_key, id, version, event_type, aggregate_type, payload, occurred_at_ms) in due {
            let Some(attempts) = self.claim(seq, &subscriber, &aggregate_key).await? else {
                // Another instance's relay took it since the query: it delivers it.
                continue;
            };
            attempted += 1;
            let aggregate_id = aggregate_key.split_once(':').map(|(_, id)| id.to_owned()).unwrap_or_default();
            let envelope = self.envelope_of(OutboxRow { seq, id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms });
            if self.send_claimed(&subscriber, attempts, &envelope).await? {
                delivered += 1;
            }
        }
        Ok((attempted, delivered))
    }

    /// Sends a delivery this relay claimed and records the outcome (delivered; or failed, to be retried
    /// after a backoff or, after the last attempt, dead). Returns whether it was delivered.
    pub(crate) async fn send_claimed(&self, subscriber: &str, attempts: i64, envelope: &Envelope) -> Result<bool, sqlx::Error> {
        let seq = envelope.sequence;
        // Bounded also in process (an HTTP delivery has its own timeout), so it ends within the claim.
        let delivered_in_time = tokio::time::timeout(2 * DELIVERY_TIMEOUT, self.transport.deliver(subscriber, envelope))
            .await
            .unwrap_or_else(|_| Err(format!("{subscriber} did not answer within {:?}", 2 * DELIVERY_TIMEOUT)));
        match delivered_in_time {
            Ok(()) => {
                let lag = (now_ms() - envelope.occurred_at_ms).max(0) as f64 / 1000.0;
                metrics::histogram!("tessera_event_delivery_lag_seconds", "producer" => self.producer).record(lag);
                sqlx::query(
                    "UPDATE outbox_deliveries SET status = 'delivered', attempts = $1, delivered_at_ms = $2, last_error = NULL, claimed_by = NULL, claimed_until_ms = NULL \
                     WHERE seq = $3 AND subscriber = $4 AND claimed_by = $5",
                )
                .bind(attempts + 1)
                .bind(now_ms())
                .bind(seq)
                .bind(subscriber)
                .bind(&self.id)
                .execute(&self.db)
                .await?;
                Ok(true)
            }
            Err(error) => {
                let attempts = attempts + 1;
                let dead = attempts >= self.settings.max_attempts;
                if dead {
                    tracing::error!(producer = self.producer, %subscriber, seq, %error, "event delivery failed for good: dead letter");
                } else {
                    tracing::warn!(producer = self.producer, %subscriber, seq, attempts, %error, "event delivery failed; will retry");
                }
                sqlx::query(
                    "UPDATE outbox_deliveries SET status = $1, attempts = $2, next_attempt_at_ms = $3, last_error = $4, claimed_by = NULL, claimed_until_ms = NULL \
                     WHERE seq = $5 AND subscriber = $6 AND claimed_by = $7",
                )
                .bind(if dead { "dead" } else { "pending" })
                .bind(attempts)
                .bind(now_ms() + self.backoff_ms(attempts - 1))
                .bind(error.chars().take(500).collect::<String>())
                .bind(seq)
                .bind(subscriber)
                .bind(&self.id)
                .execute(&self.db)
                .await?;
                Ok(false)
            }
        }
    }

    /// Runs until the task is aborted: delivers, then waits for a commit or the next retry.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                // Keep going while deliveries succeed; wait only when there is nothing deliverable.
                let busy = match self.pass().await {
                    Ok((_, delivered)) => delivered > 0,
                    Err(error) => {
                        tracing::error!(producer = self.producer, %error, "relay pass failed");
                        false
                    }
                };
                if !busy {
                    let _ = tokio::time::timeout(Duration::from_millis(self.settings.idle_poll_ms), self.wake.notified()).await;
                }
            }
        })
    }
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
                AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.seq = o.seq AND d.status <> 'delivered')";
    let mut tx = db.begin().await?;
    sqlx::query(&format!("DELETE FROM outbox_deliveries WHERE seq IN ({done})")).bind(events_before).execute(&mut *tx).await?;
    let events = sqlx::query("DELETE FROM outbox WHERE occurred_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.seq = outbox.seq)")
        .bind(events_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let inbox = sqlx::query("DELETE FROM inbox WHERE received_at_ms < $1").bind(now - retention.inbox_ms).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok((events, inbox))
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

/// What the admin sees of a service's event traffic.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EventStatus {
    pub service: String,
    /// Deliveries not yet made.
    pub outbox_depth: i64,
    /// Age of the oldest undelivered event, milliseconds.
    pub oldest_undelivered_age_ms: Option<i64>,
    pub dead_letters: Vec<DeadLetter>,
    /// Events received (inbox size).
    pub received: i64,
    /// Commit-to-effect latency of the most recent received events (up to 10,000), milliseconds.
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Latency {
    pub samples: usize,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: i64,
    pub subscriber: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub attempts: i64,
    pub last_error: String,
}

/// The event status of a fragment's database (every fragment has the runtime's event tables).
pub async fn status(db: &AnyPool, service: &str) -> Result<EventStatus, sqlx::Error> {
    let mut status =
        EventStatus { service: service.to_owned(), outbox_depth: 0, oldest_undelivered_age_ms: None, dead_letters: Vec::new(), received: 0, latency_ms: None };
    let (depth, oldest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(o.occurred_at_ms) FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE d.status = 'pending'")
            .fetch_one(db)
            .await?;
    status.outbox_depth = depth;
    status.oldest_undelivered_age_ms = oldest.map(|at| (now_ms() - at).max(0));
    let dead: Vec<(i64, String, String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT d.seq, d.subscriber, o.event_type, o.aggregate_id, d.attempts, d.last_error \
         FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE d.status = 'dead' ORDER BY d.seq LIMIT 100",
    )
    .fetch_all(db)
    .await?;
    status.dead_letters = dead
        .into_iter()
        .map(|(seq, subscriber, event_type, aggregate_id, attempts, last_error)| DeadLetter {
            seq,
            subscriber,
            event_type,
            aggregate_id,
            attempts,
            last_error: last_error.unwrap_or_default(),
        })
        .collect();
    // Events received from a broker that could not be applied (`crate::broker`).
    let received_dead: Vec<(i64, String, String, i64, String)> =
        sqlx::query_as("SELECT sequence, event_type, aggregate_id, attempts, last_error FROM dead_letters ORDER BY failed_at_ms LIMIT 100")
            .fetch_all(db)
            .await?;
    status.dead_letters.extend(received_dead.into_iter().map(|(seq, event_type, aggregate_id, attempts, last_error)| DeadLetter {
        seq,
        subscriber: service.to_owned(),
        event_type,
        aggregate_id,
        attempts,
        last_error,
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

/// Reads [`OutboxGauges`]: two small aggregate queries on the deliveries' status index.
pub async fn outbox_gauges(db: &AnyPool) -> Result<OutboxGauges, sqlx::Error> {
    let (depth, oldest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(o.occurred_at_ms) FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq WHERE d.status = 'pending'")
            .fetch_one(db)
            .await?;
    // Dead letters either way: undeliverable here, or received from a broker and not applicable here.
    let (dead,): (i64,) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM outbox_deliveries WHERE status = 'dead') + (SELECT COUNT(*) FROM dead_letters)").fetch_one(db).await?;
    Ok(OutboxGauges { depth, oldest_age_ms: oldest.map(|at| (now_ms() - at).max(0)).unwrap_or(0), dead })
}

/// Puts dead letters back in line (all, or one `seq`); returns how many. The relay is woken (through the
/// WAL when it reads the replication stream, wherever it runs).
pub async fn replay_dead_letters(db: &AnyPool, outbox: &Outbox, seq: Option<i64>) -> Result<u64, sqlx::Error> {
    let result = match seq {
        Some(seq) => {
            sqlx::query("UPDATE outbox_deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1 WHERE status = 'dead' AND seq = $2")
                .bind(now_ms())
                .bind(seq)
                .execute(db)
                .await?
        }
        None => {
            sqlx::query("UPDATE outbox_deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1 WHERE status = 'dead'")
                .bind(now_ms())
                .execute(db)
                .await?
        }
    };
    outbox.committed();
    if outbox.streamed.load(Ordering::SeqCst) && result.rows_affected() > 0 {
        // The streaming relay sees inserts only: a message in the WAL tells it to look at the table now.
        crate::cdc::wake(db).await?;
    }
    Ok(result.rows_affected())
}

/// Records an event received from a broker that could not be applied (`envelope` is `None` when the
/// message was not even a valid, signed envelope; `payload` is kept either way).
pub async fn record_dead_letter(
    db: &AnyPool,
    producer: &str,
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
pub async fn replay_received(runtime: &crate::FragmentRuntime, seq: Option<i64>) -> Result<u64, sqlx::Error> {
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
                Some(subscription) => crate::routes::apply(runtime, subscription, &envelope).await.map(drop).map_err(|error| error.to_string()),
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

/// The envelope of a signed `POST <prefix>/events` request, or the error to answer with: 401 when the
/// signature is missing or wrong, 400 when the body is not an envelope of the service that signed it.
pub fn accept_envelope(signer: &EventSigner, headers: &HeaderMap, body: &[u8]) -> Result<Envelope, tessera_contracts::ApiError> {
    use tessera_contracts::ApiError;
    let producer = signer.verify(headers, body, crate::db::now_seconds()).map_err(|error| {
        tracing::warn!(%error, "event request refused");
        ApiError::Unauthorized
    })?;
    let envelope: Envelope = serde_json::from_slice(body).map_err(|error| ApiError::BadRequest(format!("not an event envelope: {error}")))?;
    if envelope.producer != producer {
        return Err(ApiError::BadRequest(format!("signed by {producer} but claims to come from {}", envelope.producer)));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_name_the_producer_and_refuse_tampering_staleness_and_other_secrets() {
        let signer = EventSigner::new(&[b"secret-one".to_vec()]);
        let body = br#"{"id":"1"}"#;
        let mut headers = HeaderMap::new();
        for (name, value) in signer.sign("inventory", body, 1_000) {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(signer.verify(&headers, body, 1_000).as_deref(), Ok("inventory"));
        assert_eq!(signer.verify(&headers, br#"{"id":"2"}"#, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(signer.verify(&headers, body, 1_000 + SIGNATURE_TOLERANCE_SECONDS + 1), Err(SignatureError::Stale));
        assert_eq!(EventSigner::new(&[b"other".to_vec()]).verify(&headers, body, 1_000), Err(SignatureError::Mismatch));
        // Claiming to be another producer breaks the signature.
        headers.insert(PRODUCER_HEADER, "cart".parse().unwrap());
        assert_eq!(signer.verify(&headers, body, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(signer.verify(&HeaderMap::new(), body, 1_000), Err(SignatureError::Missing));
        // Rotation: a verifier with the new and the old secret accepts both.
        let rotated = EventSigner::new(&[b"secret-two".to_vec(), b"secret-one".to_vec()]);
        headers.insert(PRODUCER_HEADER, "inventory".parse().unwrap());
        assert!(rotated.verify(&headers, body, 1_000).is_ok());
    }
}
