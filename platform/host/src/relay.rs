//! The relay: it delivers a producer's outbox (`tessera_fragment::outbox`) at least once, to each
//! subscriber, in order per aggregate, through a [`Transport`].
//!
//! - **Claims.** Every instance of a producer runs a relay on the shared outbox. A relay claims a delivery
//!   (a lease on the row, [`CLAIM_MS`]) before sending it; the others skip claimed rows but never an
//!   aggregate's earlier pending event, so N instances send each event once per subscriber, in order.
//! - **Batches.** A pass takes the due events (up to `batch`, each aggregate's a run from its oldest
//!   pending one, in order), claims each subscriber's share in one statement, sends it as one batch
//!   ([`Transport::deliver_batch`]: over HTTP one signed `POST <prefix>/events/batch` that the consumer
//!   applies in one transaction, in order), the subscribers at once, and records what was delivered in
//!   one statement; failures are recorded one by one, and the later events of a failed one's aggregate
//!   are let go unsent ([`DeliveryError::HeldBack`]) to follow it.
//! - **Retries.** Exponential backoff between failed attempts, a dead letter after `max_attempts`
//!   (listed and replayed through `tessera_fragment::event_admin`). Rows survive restarts, so a relay
//!   that dies anywhere resumes where it stopped.
//! - **Transports.** [`HttpTransport`] (the embedded default): a signed POST to `<subscriber
//!   prefix>/events/batch` (or `/events` for one event, or for a subscriber of a release without
//!   batches), in process or over the network; `crate::broker` publishes to NATS JetStream
//!   instead. `crate::cdc` feeds this relay from PostgreSQL's replication stream instead of polling.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Envelope;
use tessera_fragment::db::now_ms;
use tessera_fragment::event_admin::Retention;
use tessera_fragment::outbox::{DeliveryStatus, Outbox, OutboxSignals};
use tessera_fragment::peers::{Outgoing, Peers, Reply, SendError};
use tessera_fragment::signature::EventSigner;

/// How events travel: this module's section of the process settings (every process of a deployment must
/// agree on the transport, every instance of a fragment on the relay).
#[derive(Clone, Serialize, Deserialize)]
pub struct EventSettings {
    /// NATS server carrying events between services over JetStream (`TESSERA_NATS_URL`, `crate::broker`);
    /// unset: events travel over HTTP.
    pub nats_url: Option<String>,
    /// Prefix of the NATS subjects and streams of this deployment (several may share one server).
    pub nats_prefix: String,
    /// Copies of each event stream a JetStream cluster keeps (`TESSERA_NATS_REPLICAS`: 3 on a
    /// three-node cluster, so a node can be lost; 1 on a single server). Applies when a stream is created.
    pub nats_replicas: usize,
    /// How a producer's relay learns of committed events (`TESSERA_OUTBOX_RELAY`): `poll` (default) or
    /// `cdc`, PostgreSQL's logical replication stream.
    pub outbox_relay: OutboxRelay,
    /// Delivery attempts before an event becomes a dead letter.
    pub events_max_attempts: i64,
    /// First retry delay; it doubles with every attempt (capped at a minute).
    pub events_base_backoff_ms: i64,
    /// Days a delivered event is kept in its producer's outbox (a subscriber that appears later is
    /// backfilled with the events still kept).
    pub events_retention_days: i64,
    /// Days a consumer keeps the inbox row of an event it applied (a redelivery within them has no
    /// effect); longer than a dead letter may wait for its replay and than NATS keeps messages (30).
    pub inbox_retention_days: i64,
    /// A subscription whose oldest undelivered event is older than this is behind: the producer's event
    /// status, its `/readyz` and the shell's `/admin/events` say so (`TESSERA_EVENTS_MAX_LAG_MS`).
    pub events_max_lag_ms: i64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            nats_url: None,
            nats_prefix: "tessera".into(),
            nats_replicas: 1,
            outbox_relay: OutboxRelay::Poll,
            events_max_attempts: 8,
            events_base_backoff_ms: 200,
            events_retention_days: 7,
            inbox_retention_days: 45,
            events_max_lag_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for EventSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A NATS URL may hold credentials: never print it.
        f.debug_struct("EventSettings")
            .field("nats", &self.nats_url.as_ref().map(|_| "<set>"))
            .field("nats_prefix", &self.nats_prefix)
            .field("nats_replicas", &self.nats_replicas)
            .field("outbox_relay", &self.outbox_relay)
            .field("events_max_attempts", &self.events_max_attempts)
            .field("events_max_lag_ms", &self.events_max_lag_ms)
            .field("events_base_backoff_ms", &self.events_base_backoff_ms)
            .field("events_retention_days", &self.events_retention_days)
            .field("inbox_retention_days", &self.inbox_retention_days)
            .finish()
    }
}

impl EventSettings {
    /// How long the runtime keeps event rows.
    pub fn retention(&self) -> Retention {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        Retention { events_ms: self.events_retention_days.max(1) * DAY_MS, inbox_ms: self.inbox_retention_days.max(1) * DAY_MS }
    }

    /// The relay's tuning.
    pub fn relay(&self) -> RelaySettings {
        RelaySettings { max_attempts: self.events_max_attempts, base_backoff_ms: self.events_base_backoff_ms, ..RelaySettings::default() }
    }
}

/// How a producer's relay learns of committed events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxRelay {
    /// Queries the delivery table after each local commit and once a second ([`Relay`]).
    #[default]
    Poll,
    /// Reads committed outbox rows from PostgreSQL's logical replication stream (`crate::cdc`).
    Cdc,
}

/// The outcomes of a batch, one per envelope, in order.
pub type BatchDelivery<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), DeliveryError>>> + Send + 'a>>;

/// Delivers envelopes to a subscriber.
pub trait Transport: Send + Sync + 'static {
    fn deliver<'a>(&'a self, subscriber: &'a ServiceName, envelope: &'a Envelope) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

    /// Delivers several envelopes to one subscriber, each aggregate's in their order; one outcome per
    /// envelope, in order. By default each goes on its own ([`deliver_each_in_order`]); a transport with
    /// a batch form overrides it.
    fn deliver_batch<'a>(&'a self, subscriber: &'a ServiceName, envelopes: &'a [Envelope]) -> BatchDelivery<'a> {
        Box::pin(deliver_each_in_order(self, subscriber, envelopes))
    }
}

/// Delivers `envelopes` one by one: the aggregates at once, each aggregate's events one after the other,
/// and after one fails the rest of its aggregate are held back ([`DeliveryError::HeldBack`]).
pub async fn deliver_each_in_order<T: Transport + ?Sized>(transport: &T, subscriber: &ServiceName, envelopes: &[Envelope]) -> Vec<Result<(), DeliveryError>> {
    let mut runs: Vec<((&str, &str), Vec<usize>)> = Vec::new();
    for (index, envelope) in envelopes.iter().enumerate() {
        let key = (envelope.aggregate_type.as_str(), envelope.aggregate_id.as_str());
        match runs.iter_mut().find(|(run, _)| *run == key) {
            Some((_, indexes)) => indexes.push(index),
            None => runs.push((key, vec![index])),
        }
    }
    let sent = futures::future::join_all(runs.iter().map(|(_, indexes)| async move {
        let mut outcomes = Vec::with_capacity(indexes.len());
        let mut failed = false;
        for &index in indexes {
            if failed {
                outcomes.push((index, Err(DeliveryError::HeldBack)));
                continue;
            }
            let outcome = transport.deliver(subscriber, &envelopes[index]).await;
            failed = outcome.is_err();
            outcomes.push((index, outcome));
        }
        outcomes
    }))
    .await;
    let mut ordered: Vec<Option<Result<(), DeliveryError>>> = envelopes.iter().map(|_| None).collect();
    for (index, outcome) in sent.into_iter().flatten() {
        ordered[index] = Some(outcome);
    }
    ordered.into_iter().map(|outcome| outcome.unwrap_or(Err(DeliveryError::HeldBack))).collect()
}

/// Why one delivery failed: logged, and kept as text in the delivery's `last_error` (the event status
/// page shows it with the dead letters).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no route to subscriber {0:?}")]
    NoRoute(ServiceName),
    #[error("{0} has not described itself yet (its prefix is unknown)")]
    NotDescribed(ServiceName),
    #[error("{0}")]
    Unreachable(SendError),
    #[error("{subscriber} answered {status}: {answer}")]
    Refused { subscriber: ServiceName, status: u16, answer: String },
    #[error("{0} did not answer within {1:?}")]
    TimedOut(ServiceName, Duration),
    #[error("the envelope cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another transport's own failure (publishing to NATS: `crate::broker::BrokerError`).
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
    /// Not tried: an earlier event of its aggregate in the same batch failed. Sent again after it,
    /// without counting an attempt.
    #[error("held back behind an earlier event of its aggregate")]
    HeldBack,
}

/// How long one event delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Signed HTTP POSTs to each subscriber's `<prefix>/events` (in process or over the network), found
/// among the producer's peers by the subscriber's name.
pub struct HttpTransport {
    signer: EventSigner,
    peers: Arc<Peers>,
}

impl HttpTransport {
    /// Delivers the events of the service `signer` signs for.
    pub fn new(signer: EventSigner, peers: Arc<Peers>) -> HttpTransport {
        HttpTransport { signer, peers }
    }
}

impl HttpTransport {
    /// One signed `POST <prefix>/events/batch`: each envelope's outcome, or `None` when the subscriber has
    /// no batch endpoint (a release before it: 404 or 405), so they go one at a time.
    async fn post_batch(&self, subscriber: &ServiceName, envelopes: &[Envelope]) -> Result<Option<Vec<Result<(), DeliveryError>>>, DeliveryError> {
        let target = self.peers.get(subscriber).ok_or_else(|| DeliveryError::NoRoute(subscriber.clone()))?;
        if target.prefix().is_empty() {
            return Err(DeliveryError::NotDescribed(subscriber.clone()));
        }
        let body = serde_json::to_vec(envelopes)?;
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(self.signer.sign(&body, now_ms() / 1000));
        let path = format!("{}/events/batch", target.prefix());
        let max_bytes = 256 + 512 * envelopes.len();
        let outgoing = Outgoing { method: axum::http::Method::POST, path: &path, headers: &headers, body, max_bytes, timeout: DELIVERY_TIMEOUT };
        let Reply { status, body: answer } = target.send(outgoing).await.map_err(DeliveryError::Unreachable)?;
        if status == 404 || status == 405 {
            return Ok(None);
        }
        let refused = |status: u16, answer: &[u8]| DeliveryError::Refused {
            subscriber: subscriber.clone(),
            status,
            answer: String::from_utf8_lossy(answer).chars().take(300).collect(),
        };
        if !(200..300).contains(&status) {
            return Err(refused(status, &answer));
        }
        let outcomes: Vec<tessera_fragment::routes::BatchOutcome> =
            serde_json::from_slice(&answer).map_err(|error| refused(status, format!("an unreadable batch answer: {error}").as_bytes()))?;
        if outcomes.len() != envelopes.len() {
            return Err(refused(status, format!("{} outcomes for {} events", outcomes.len(), envelopes.len()).as_bytes()));
        }
        Ok(Some(
            outcomes
                .into_iter()
                .map(|outcome| match outcome.status {
                    200..=299 => Ok(()),
                    409 if outcome.message.as_deref().is_some_and(|message| message.starts_with(tessera_fragment::routes::HELD_BACK)) => {
                        Err(DeliveryError::HeldBack)
                    }
                    other => Err(refused(other, outcome.message.unwrap_or_default().as_bytes())),
                })
                .collect(),
        ))
    }
}

impl Transport for HttpTransport {
    fn deliver_batch<'a>(&'a self, subscriber: &'a ServiceName, envelopes: &'a [Envelope]) -> BatchDelivery<'a> {
        Box::pin(async move {
            if envelopes.len() == 1 {
                return vec![self.deliver(subscriber, &envelopes[0]).await];
            }
            match self.post_batch(subscriber, envelopes).await {
                Ok(Some(outcomes)) => outcomes,
                Ok(None) => deliver_each_in_order(self, subscriber, envelopes).await,
                // The whole request failed: the first event of each aggregate in it did (an attempt), the
                // later ones of the aggregate wait behind it.
                Err(error) => {
                    let message = error.to_string();
                    let mut seen: Vec<(&str, &str)> = Vec::new();
                    envelopes
                        .iter()
                        .map(|envelope| {
                            let key = (envelope.aggregate_type.as_str(), envelope.aggregate_id.as_str());
                            if seen.contains(&key) {
                                Err(DeliveryError::HeldBack)
                            } else {
                                seen.push(key);
                                Err(DeliveryError::Transport(message.clone().into()))
                            }
                        })
                        .collect()
                }
            }
        })
    }

    fn deliver<'a>(&'a self, subscriber: &'a ServiceName, envelope: &'a Envelope) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let target = self.peers.get(subscriber).ok_or_else(|| DeliveryError::NoRoute(subscriber.clone()))?;
            if target.prefix().is_empty() {
                return Err(DeliveryError::NotDescribed(subscriber.clone()));
            }
            let body = serde_json::to_vec(envelope)?;
            let mut headers = vec![("content-type", "application/json".to_owned())];
            headers.extend(self.signer.sign(&body, now_ms() / 1000));
            let path = format!("{}/events", target.prefix());
            let outgoing = Outgoing { method: axum::http::Method::POST, path: &path, headers: &headers, body, max_bytes: 4096, timeout: DELIVERY_TIMEOUT };
            let Reply { status, body: answer } = target.send(outgoing).await.map_err(DeliveryError::Unreachable)?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                let answer = String::from_utf8_lossy(&answer).chars().take(300).collect();
                Err(DeliveryError::Refused { subscriber: subscriber.clone(), status, answer })
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
        RelaySettings { max_attempts: 8, base_backoff_ms: 200, max_backoff_ms: 60_000, batch: 200, idle_poll_ms: 1000 }
    }
}

/// A pass's query: the due deliveries (`$1` now, `$2` how many at most, `$3` the pending status), each
/// aggregate's a run from its oldest pending one: those before the first pending delivery of their
/// aggregate that waits for a retry or is claimed (found once per aggregate, so a backlog of one
/// aggregate costs its length, not its square). On a large outbox it is served by the indexes
/// `outbox_deliveries_due` (status, next attempt) and `outbox_deliveries_order` (subscriber, aggregate,
/// status, seq) and the outbox's key: no scan of the delivered rows (a PostgreSQL test reads its plan).
pub const DUE_QUERY: &str = "WITH blocked AS (SELECT subscriber, aggregate_key, MIN(seq) AS first_seq FROM outbox_deliveries \
       WHERE status = $3 AND (next_attempt_at_ms > $1 OR (claimed_until_ms IS NOT NULL AND claimed_until_ms >= $1)) \
       GROUP BY subscriber, aggregate_key) \
     SELECT d.seq, d.subscriber, d.aggregate_key, o.id, o.version, o.event_type, o.aggregate_type, o.payload, o.occurred_at_ms \
     FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq \
     LEFT JOIN blocked b ON b.subscriber = d.subscriber AND b.aggregate_key = d.aggregate_key \
     WHERE d.status = $3 AND d.next_attempt_at_ms <= $1 \
       AND (d.claimed_until_ms IS NULL OR d.claimed_until_ms < $1) \
       AND (b.first_seq IS NULL OR d.seq < b.first_seq) \
     ORDER BY d.seq LIMIT $2";

/// A delivery that is due, with its event (one row of a pass's query).
#[derive(sqlx::FromRow)]
struct DueRow {
    seq: i64,
    subscriber: ServiceName,
    aggregate_key: String,
    id: String,
    version: i64,
    event_type: String,
    aggregate_type: String,
    payload: String,
    occurred_at_ms: i64,
}

/// A delivery a relay may claim: to whom is the map's key ([`Relay::claim_and_send`]).
pub(crate) struct Candidate {
    /// `<aggregate type>:<aggregate id>`, as the delivery row has it.
    pub aggregate_key: String,
    pub envelope: Envelope,
}

/// An outbox row as the relay reads it (from the table, or from the replication stream).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub seq: i64,
    pub id: String,
    pub version: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub occurred_at_ms: i64,
}

/// `count` numbered placeholders from `$first` on, comma-separated: the list of an `IN (…)` whose values
/// are bound after the statement's fixed parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
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
    producer: ServiceName,
    transport: Arc<dyn Transport>,
    /// Commits and due backfills of the outbox it delivers.
    signals: OutboxSignals,
    settings: RelaySettings,
}

impl Relay {
    pub fn new(db: AnyPool, outbox: &Outbox, transport: Arc<dyn Transport>, settings: RelaySettings) -> Relay {
        Relay { id: uuid::Uuid::new_v4().to_string(), db, producer: outbox.producer().clone(), transport, signals: outbox.signals(), settings }
    }

    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exponent = attempts.clamp(0, 20) as u32;
        self.settings.base_backoff_ms.saturating_mul(1i64 << exponent).min(self.settings.max_backoff_ms)
    }

    /// The event of outbox row `seq`, as it goes out (`None`: no such row).
    pub(crate) async fn envelope(&self, seq: i64) -> Result<Option<Envelope>, sqlx::Error> {
        let row: Option<OutboxRow> =
            sqlx::query_as("SELECT seq, id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms FROM outbox WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&self.db)
                .await?;
        Ok(row.map(|row| self.envelope_of(row)))
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
            producer: self.producer.clone(),
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
        self.signals.run_due_backfills(&self.db, &self.producer).await?;
        let now = now_ms();
        let due: Vec<DueRow> = sqlx::query_as(DUE_QUERY).bind(now).bind(self.settings.batch).bind(DeliveryStatus::Pending).fetch_all(&self.db).await?;
        // Every row's earlier pending events of its aggregate (for its subscriber) are due, unclaimed and
        // earlier in this list (the query says so): each aggregate's rows are a run from its oldest pending
        // event, in order, and a subscriber's rows may go together: one claim, one request (or one round
        // of publishes) and one record of what was delivered per subscriber, the subscribers at once (each
        // is its own consumer, with its own database).
        let mut by_subscriber: BTreeMap<ServiceName, Vec<Candidate>> = BTreeMap::new();
        for DueRow { seq, subscriber, aggregate_key, id, version, event_type, aggregate_type, payload, occurred_at_ms } in due {
            let aggregate_id = aggregate_key.split_once(':').map(|(_, id)| id.to_owned()).unwrap_or_default();
            let envelope = self.envelope_of(OutboxRow { seq, id, version, event_type, aggregate_type, aggregate_id, payload, occurred_at_ms });
            by_subscriber.entry(subscriber).or_default().push(Candidate { aggregate_key, envelope });
        }
        self.claim_and_send(by_subscriber).await
    }

    /// Claims each subscriber's share of `candidates` in one statement and sends it as one batch, the
    /// subscribers at once; records the outcomes. Returns (attempted, delivered). The polling pass finds
    /// its candidates by a query, the streaming relay (`crate::cdc`) on the replication stream.
    pub(crate) async fn claim_and_send(&self, candidates: BTreeMap<ServiceName, Vec<Candidate>>) -> Result<(usize, usize), sqlx::Error> {
        let mut batches = Vec::new();
        for (subscriber, rows) in candidates {
            let claimed = self.claim_batch(&subscriber, rows).await?;
            if !claimed.is_empty() {
                batches.push((subscriber, claimed));
            }
        }
        let sent = futures::future::join_all(batches.iter().map(|(subscriber, claimed)| self.send_batch(subscriber, claimed))).await;
        let mut attempted = 0;
        let mut delivered = 0;
        for ((_, claimed), outcome) in batches.iter().zip(sent) {
            attempted += claimed.len();
            delivered += outcome?;
        }
        Ok((attempted, delivered))
    }

    /// Claims, in one statement, those of `rows` (due deliveries to `subscriber`, each aggregate's a run
    /// from its oldest pending event) that are still pending and unclaimed and whose earlier pending
    /// events are all among `rows`; keeps of each aggregate only the run from its first row that it got
    /// (what another relay took meanwhile breaks a run: the rest after it are let go again); returns
    /// them with their attempts so far, as envelopes, in outbox order.
    async fn claim_batch(&self, subscriber: &ServiceName, rows: Vec<Candidate>) -> Result<Vec<(i64, Envelope)>, sqlx::Error> {
        let now = now_ms();
        let list = placeholders(6, rows.len());
        // A row may be claimed when no pending row of its aggregate outside the list comes before it: when
        // its seq is below the aggregate's first unlisted pending seq. That one is found per aggregate by
        // walking the aggregate's pending rows in order past the listed ones (they come first), so the
        // statement reads about as many rows as it claims. (Asking, per row, whether an earlier unlisted
        // row exists walked the aggregate's whole backlog for each row: a second per claim of 100 rows
        // with a few thousand pending.)
        let sql = format!(
            "WITH listed AS (SELECT DISTINCT aggregate_key FROM outbox_deliveries WHERE subscriber = $3 AND seq IN ({list})), \
                  firsts AS MATERIALIZED (SELECT l.aggregate_key, \
                      (SELECT e.seq FROM outbox_deliveries e WHERE e.subscriber = $3 AND e.aggregate_key = l.aggregate_key AND e.status = $4 \
                          AND e.seq NOT IN ({list}) ORDER BY e.seq LIMIT 1) AS first_unlisted \
                      FROM listed l) \
             UPDATE outbox_deliveries SET claimed_by = $1, claimed_until_ms = $2 \
             WHERE subscriber = $3 AND status = $4 AND (claimed_until_ms IS NULL OR claimed_until_ms < $5) AND seq IN ({list}) \
               AND NOT EXISTS (SELECT 1 FROM firsts f WHERE f.aggregate_key = outbox_deliveries.aggregate_key AND f.first_unlisted < outbox_deliveries.seq) \
             RETURNING seq, attempts"
        );
        let mut query = sqlx::query_as::<_, (i64, i64)>(&sql).bind(&self.id).bind(now + CLAIM_MS).bind(subscriber).bind(DeliveryStatus::Pending).bind(now);
        for row in &rows {
            query = query.bind(row.envelope.sequence);
        }
        let mut attempts: HashMap<i64, i64> = query.fetch_all(&self.db).await?.into_iter().collect();
        // Rows another instance's relay took since the query are its to deliver; so are the rows of an
        // aggregate after one it took (this relay must not send them before it).
        let mut broken: Vec<&str> = Vec::new();
        let mut let_go = Vec::new();
        for row in &rows {
            let seq = row.envelope.sequence;
            if broken.contains(&row.aggregate_key.as_str()) {
                if attempts.remove(&seq).is_some() {
                    let_go.push(seq);
                }
            } else if !attempts.contains_key(&seq) {
                broken.push(&row.aggregate_key);
            }
        }
        self.release(subscriber, &let_go).await?;
        Ok(rows.into_iter().filter_map(|row| Some((*attempts.get(&row.envelope.sequence)?, row.envelope))).collect())
    }

    /// Sends deliveries to `subscriber` this relay claimed, together, and records the outcomes: those
    /// delivered in one statement, each failure on its own (retried after a backoff or, after the last
    /// attempt, dead). Returns how many were delivered.
    async fn send_batch(&self, subscriber: &ServiceName, claimed: &[(i64, Envelope)]) -> Result<usize, sqlx::Error> {
        let envelopes: Vec<Envelope> = claimed.iter().map(|(_, envelope)| envelope.clone()).collect();
        // Bounded also in process (an HTTP delivery has its own timeout), so it ends within the claim.
        let outcomes = match tokio::time::timeout(2 * DELIVERY_TIMEOUT, self.transport.deliver_batch(subscriber, &envelopes)).await {
            Ok(outcomes) if outcomes.len() == envelopes.len() => outcomes,
            Ok(_) | Err(_) => envelopes.iter().map(|_| Err(DeliveryError::TimedOut(subscriber.clone(), 2 * DELIVERY_TIMEOUT))).collect(),
        };
        let mut delivered = Vec::new();
        let mut held_back = Vec::new();
        for ((attempts, envelope), outcome) in claimed.iter().zip(outcomes) {
            match outcome {
                Ok(()) => delivered.push(envelope),
                Err(DeliveryError::HeldBack) => held_back.push(envelope.sequence),
                Err(error) => self.record_failure(subscriber, *attempts, envelope.sequence, &error).await?,
            }
        }
        self.record_delivered(subscriber, &delivered).await?;
        self.release(subscriber, &held_back).await?;
        Ok(delivered.len())
    }

    /// Gives up this relay's claim on these deliveries to `subscriber` without counting an attempt (they
    /// were not sent).
    async fn release(&self, subscriber: &ServiceName, seqs: &[i64]) -> Result<(), sqlx::Error> {
        if seqs.is_empty() {
            return Ok(());
        }
        let list = placeholders(3, seqs.len());
        let sql =
            format!("UPDATE outbox_deliveries SET claimed_by = NULL, claimed_until_ms = NULL WHERE subscriber = $1 AND claimed_by = $2 AND seq IN ({list})");
        let mut query = sqlx::query(&sql).bind(subscriber).bind(&self.id);
        for seq in seqs {
            query = query.bind(*seq);
        }
        query.execute(&self.db).await?;
        Ok(())
    }

    /// Marks these deliveries to `subscriber`, claimed by this relay, delivered (one statement).
    async fn record_delivered(&self, subscriber: &ServiceName, delivered: &[&Envelope]) -> Result<(), sqlx::Error> {
        if delivered.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for envelope in delivered {
            let lag = (now - envelope.occurred_at_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("tessera_event_delivery_lag_seconds", "producer" => self.producer.to_string()).record(lag);
        }
        let sql = format!(
            "UPDATE outbox_deliveries SET status = $1, attempts = attempts + 1, delivered_at_ms = $2, last_error = NULL, claimed_by = NULL, claimed_until_ms = NULL \
             WHERE subscriber = $3 AND claimed_by = $4 AND seq IN ({})",
            placeholders(5, delivered.len())
        );
        let mut query = sqlx::query(&sql).bind(DeliveryStatus::Delivered).bind(now).bind(subscriber).bind(&self.id);
        for envelope in delivered {
            query = query.bind(envelope.sequence);
        }
        query.execute(&self.db).await?;
        Ok(())
    }

    /// Records a failed attempt of a delivery this relay claimed: pending again after a backoff, or dead
    /// after the last attempt.
    async fn record_failure(&self, subscriber: &ServiceName, attempts: i64, seq: i64, error: &DeliveryError) -> Result<(), sqlx::Error> {
        let attempts = attempts + 1;
        let dead = attempts >= self.settings.max_attempts;
        if dead {
            tracing::error!(producer = %self.producer, %subscriber, seq, %error, "event delivery failed for good: dead letter");
        } else {
            tracing::warn!(producer = %self.producer, %subscriber, seq, attempts, %error, "event delivery failed; will retry");
        }
        sqlx::query(
            "UPDATE outbox_deliveries SET status = $1, attempts = $2, next_attempt_at_ms = $3, last_error = $4, claimed_by = NULL, claimed_until_ms = NULL \
             WHERE seq = $5 AND subscriber = $6 AND claimed_by = $7",
        )
        .bind(if dead { DeliveryStatus::Dead } else { DeliveryStatus::Pending })
        .bind(attempts)
        .bind(now_ms() + self.backoff_ms(attempts - 1))
        .bind(error.to_string().chars().take(500).collect::<String>())
        .bind(seq)
        .bind(subscriber)
        .bind(&self.id)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Runs until the task is aborted: delivers, then waits for a commit or the next retry.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                // Keep going while deliveries succeed; wait only when there is nothing deliverable.
                let busy = match self.pass().await {
                    Ok((_, delivered)) => delivered > 0,
                    Err(error) => {
                        tracing::error!(producer = %self.producer, %error, "relay pass failed");
                        false
                    }
                };
                if !busy {
                    self.signals.committed_within(Duration::from_millis(self.settings.idle_poll_ms)).await;
                }
            }
        })
    }
}
