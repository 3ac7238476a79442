//! Events over NATS JetStream, chosen by `TESSERA_NATS_URL` (HTTP stays the embedded default).
//!
//! - **Streams.** One stream per producer, `<PREFIX>_<PRODUCER>`, holding the subjects
//!   `<prefix>.<producer>.<event type>` (`tessera.inventory.inventory.stock_changed`). Producer and
//!   consumers both create it if missing, with the same configuration, so neither has to start first. The
//!   prefix (`TESSERA_NATS_PREFIX`, default `tessera`) keeps deployments sharing one server apart.
//! - **Publishing.** The outbox addresses each event once, to the broker (not once per subscriber: the
//!   stream keeps it for every consumer), and the relay publishes it with the event id as `Nats-Msg-Id`,
//!   so JetStream drops a second publish of the same event (a relay that died after publishing and before
//!   marking the row). A delivery counts when JetStream acknowledged storing it. The message carries the
//!   same signature headers as the HTTP transport. A batch from the relay is published pipelined: every
//!   aggregate's events at once over the one connection, each aggregate's one after the other (the next
//!   after the previous is acknowledged, so a publish that failed cannot be overtaken in the stream).
//! - **Consuming.** Each consuming fragment owns one durable pull consumer per producer it consumes from,
//!   named after itself: its subscriptions, not the producer, decide what it receives, and a consumer
//!   that starts late reads the stream from the beginning. The consumer's filter is the producer's whole
//!   subject space (NATS 2.9 allows one filter per consumer); events of types the fragment does not
//!   subscribe to are acknowledged and skipped. One instance of the fragment pulls at a time (a lease in
//!   its database, `tessera_fragment::lease`; another takes over when it dies), so events are applied in
//!   stream order — in order per aggregate.
//! - **Batches.** The consumer takes what has arrived (up to [`PULL_BATCH`], never waiting for more) and
//!   applies it in one transaction (`tessera_fragment::inbox::apply_batch`: each event in a savepoint, a
//!   failing one rolled back alone). An event that fails holds back the later events of its aggregate
//!   ([`Held`]): they are offered again without counting an attempt until it is applied or becomes a dead
//!   letter, while other aggregates go on.
//! - **No overtaking after a loss.** Deliveries lost on the way (a server of the cluster went away) come
//!   back only after the ack wait, while newer ones may keep arriving. The consumer sees every message
//!   of the stream, so a gap in the stream positions of a pull ([`Expected`]) shows the loss: what came
//!   before it is applied, the rest is left unacknowledged, and a new pull waits out the ack wait, so
//!   JetStream sends everything unacknowledged again, oldest first, before anything newer.
//! - **Acknowledging.** A message is acknowledged (and the acknowledgement confirmed) only after its
//!   inbox row and its effect committed together; a crash before that redelivers it, and the inbox makes
//!   the second arrival harmless. A failure is negatively acknowledged with a delay that doubles per
//!   attempt; after `events_max_attempts` attempts the event becomes a dead letter in the consumer's
//!   database (`dead_letters`), shown on `/admin/events` and replayable from there, and is terminated in
//!   JetStream so it stops coming. (A message that is not a valid, signed envelope is a dead letter at
//!   once and is never replayed.)
//! - **Known limit.** A durable consumer acknowledges the types its fragment does not subscribe to; a
//!   release that subscribes to a new type gets that type's events from then on, not the earlier ones
//!   (the HTTP transport backfills them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::{FutureExt, StreamExt};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Envelope;
use tessera_fragment::db::now_ms;
use tessera_fragment::event_admin::record_dead_letter;
use tessera_fragment::inbox::{aggregate_of, apply_batch, Applied, Subscription};
use tessera_fragment::lease::Lease;
use tessera_fragment::runtime::FragmentRuntime;
use tessera_fragment::signature::{EventSigner, SignatureError, PRODUCER_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::relay::{DeliveryError, Transport};

/// How long JetStream remembers message ids to drop duplicates (its default; longer than any relay
/// retry of a publish that was stored but not marked).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a stream keeps an event, for consumers that start later.
const STREAM_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a consumer has to apply a batch before JetStream sends its events again (and how long a
/// new pull waits for the events an earlier one left unacknowledged).
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Longest delay before a failed event is offered again.
const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(60);
/// Most events a consumer applies in one transaction (what has arrived, up to this many).
const PULL_BATCH: usize = 256;
/// Most events delivered to a consumer and not acknowledged yet: the batch being applied, the next one
/// arriving meanwhile, and the events waiting behind a failed one of their aggregate.
const MAX_ACK_PENDING: i64 = 4 * PULL_BATCH as i64;
/// How long an instance's hold on consuming one producer's stream lasts unless renewed.
const CONSUMER_LEASE: Duration = Duration::from_secs(6);
/// How often an idle consumer checks it still holds its lease.
const LEASE_CHECK: Duration = Duration::from_secs(2);

/// Where the broker is and how its names are spelled.
#[derive(Clone)]
pub struct Broker {
    jetstream: jetstream::Context,
    prefix: String,
    /// Copies of each stream the cluster keeps (1 on a single server).
    replicas: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid NATS settings: {0}")]
    Settings(String),
    #[error("cannot reach NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("stream of {producer}: {message}")]
    Stream { producer: ServiceName, message: String },
    #[error("publishing to NATS: {0}")]
    Publish(String),
    #[error("NATS did not confirm the publish: {0}")]
    Unconfirmed(String),
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("pulling: {0}")]
    Pull(String),
    #[error("receiving: {0}")]
    Receive(String),
    #[error("the message stream ended")]
    Ended,
    #[error("deliveries were lost between stream positions {0} and {1}; waiting for them to come again")]
    Gap(u64, u64),
}

/// Why a message on a stream is not an event this consumer may apply (a dead letter at once: it never
/// becomes one, however often it comes).
#[derive(Debug, thiserror::Error)]
enum Unacceptable {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("not an event envelope: {0}")]
    NotAnEnvelope(#[from] serde_json::Error),
    #[error("signed by {signed} but claims to come from {claimed}")]
    OtherProducer { signed: ServiceName, claimed: ServiceName },
    #[error(transparent)]
    Inadmissible(#[from] tessera_fragment::inbox::Inadmissible),
}

/// The URL (or comma-separated URLs) without credentials, for messages.
fn redacted(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(|server| redacted(server.trim())).collect::<Vec<_>>().join(",");
    }
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<the configured URL>".to_owned(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Broker {
    /// Connects to NATS at `url`. Fails when it cannot be reached now: a process configured for a broker
    /// does not start without it (once running, the client reconnects by itself and events wait in the
    /// outbox meanwhile).
    /// Connects to the NATS server at `url` (`tls://` for TLS, trusting the system's roots and those of
    /// `ca_file`).
    pub async fn connect(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Broker, BrokerError> {
        if !valid_name(prefix) {
            return Err(BrokerError::Settings(format!("the prefix {prefix:?} must be letters, digits, '-' or '_'")));
        }
        crate::tls::install_crypto_provider();
        let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).name("tessera");
        if let Some(file) = ca_file {
            options = options.add_root_certificates(file.to_owned());
        }
        if url.split(',').any(|server| server.trim().starts_with("tls://")) {
            options = options.require_tls(true);
        }
        // A cluster is named by several of its servers, comma-separated; the client learns the rest from
        // them and moves to another when its server goes away.
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|server| server.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|error| BrokerError::Settings(format!("{} is not a NATS URL or a comma-separated list of them: {error}", redacted(url))))?;
        let client = options.connect(servers.as_slice()).await.map_err(|source| BrokerError::Connect { url: redacted(url), source })?;
        Ok(Broker { jetstream: jetstream::new(client), prefix: prefix.to_owned(), replicas: 1 })
    }

    /// Streams created from now on are kept by `replicas` servers of the cluster (`TESSERA_NATS_REPLICAS`).
    pub fn with_replicas(mut self, replicas: usize) -> Broker {
        self.replicas = replicas.max(1);
        self
    }

    /// The stream of `producer`'s events.
    pub fn stream_name(&self, producer: &ServiceName) -> String {
        format!("{}_{}", self.prefix, producer).to_ascii_uppercase()
    }

    /// The subject of one event.
    pub fn subject(&self, producer: &ServiceName, event_type: &str) -> String {
        format!("{}.{producer}.{event_type}", self.prefix)
    }

    /// The producer's stream, created if missing.
    pub async fn stream(&self, producer: &ServiceName) -> Result<stream::Stream, BrokerError> {
        let config = stream::Config {
            name: self.stream_name(producer),
            subjects: vec![format!("{}.{producer}.>", self.prefix)],
            duplicate_window: DUPLICATE_WINDOW,
            // A consumer that starts later reads from the beginning: kept for a month, then dropped.
            max_age: STREAM_MAX_AGE,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.jetstream.get_or_create_stream(config).await.map_err(|error| BrokerError::Stream { producer: producer.clone(), message: error.to_string() })
    }

    /// The JetStream context (tests inspect streams with it).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }
}

/// The relay's transport when a broker carries events: publishes to the producer's stream.
pub struct BrokerTransport {
    broker: Broker,
    producer: ServiceName,
    signer: EventSigner,
    stream_ready: tokio::sync::OnceCell<()>,
}

impl BrokerTransport {
    pub fn new(broker: Broker, producer: ServiceName, signer: EventSigner) -> BrokerTransport {
        BrokerTransport { broker, producer, signer, stream_ready: tokio::sync::OnceCell::new() }
    }
}

impl Transport for BrokerTransport {
    fn deliver<'a>(
        &'a self,
        _subscriber: &'a ServiceName,
        envelope: &'a Envelope,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let failed = |error: BrokerError| DeliveryError::Transport(Box::new(error));
            self.stream_ready.get_or_try_init(|| async { self.broker.stream(&self.producer).await.map(drop) }).await.map_err(failed)?;
            let body = serde_json::to_vec(envelope)?;
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in self.signer.sign(&body, now_ms() / 1000) {
                headers.insert(name, value.as_str());
            }
            let publish = jetstream::message::PublishMessage::build().payload(body.into()).headers(headers).message_id(&envelope.id);
            let subject = self.broker.subject(&self.producer, &envelope.event_type);
            let ack = self.broker.jetstream.send_publish(subject, publish).await.map_err(|error| failed(BrokerError::Publish(error.to_string())))?;
            // Stored (or recognised as a duplicate and dropped): either way the stream has it once.
            ack.await.map(drop).map_err(|error| failed(BrokerError::Unconfirmed(error.to_string())))
        })
    }
}

/// The producer of an event type (`tessera_contracts::events::owner_of`), which `crate::assembly`
/// checks for every fragment's published types.
pub use tessera_contracts::events::owner_of as producer_of;

/// Whether an error of the pull ends it: the consumer is gone. Others (a missed heartbeat, a pull
/// refused during a leader election) pass; the pull goes on, reissuing its requests.
fn fatal(error: consumer::pull::MessagesError) -> Result<(), BrokerError> {
    use consumer::pull::MessagesErrorKind as Kind;
    match error.kind() {
        Kind::ConsumerDeleted | Kind::PushBasedConsumer | Kind::RequestLimitExceeded => Err(BrokerError::Receive(error.to_string())),
        _ => {
            tracing::warn!(%error, "pulling events: carrying on");
            Ok(())
        }
    }
}

/// An event's aggregate, owned (the key of [`Held`]).
fn owned(envelope: &Envelope) -> Aggregate {
    let (kind, id) = aggregate_of(envelope);
    (kind.to_owned(), id.to_owned())
}

/// Starts the consumers of a fragment: one per producer it consumes from. They run until aborted.
fn spawn_consumers(broker: &Broker, runtime: &FragmentRuntime, max_deliveries: i64, base_backoff_ms: i64) -> Vec<tokio::task::JoinHandle<()>> {
    let mut producers: BTreeMap<ServiceName, Vec<&str>> = BTreeMap::new();
    for (event_type, _) in runtime.events.subscriptions.types() {
        if let Some(producer) = producer_of(event_type) {
            producers.entry(producer).or_default().push(event_type);
        } else {
            tracing::error!(event_type, "an event type that names no producer cannot be consumed from a broker");
        }
    }
    producers
        .into_keys()
        .map(|producer| {
            let consumer = Consumer {
                broker: broker.clone(),
                runtime: runtime.clone(),
                producer,
                max_deliveries: max_deliveries.max(1),
                base_backoff_ms: base_backoff_ms.max(0),
            };
            tokio::spawn(consumer.run())
        })
        .collect()
}

/// One fragment's durable consumer of one producer's stream.
struct Consumer {
    broker: Broker,
    runtime: FragmentRuntime,
    producer: ServiceName,
    max_deliveries: i64,
    base_backoff_ms: i64,
}

/// What became of one message.
enum Outcome {
    Applied,
    Skipped,
    Retry(String),
    Dead(String),
    /// Not tried: an earlier event of its aggregate has not been applied yet. Offered again shortly,
    /// without counting as an attempt.
    Waiting,
}

/// An event's aggregate (type and id): the unit of order.
type Aggregate = (String, String);

/// The aggregates whose head event is waiting for a retry, with the stream positions of their events
/// not applied yet, so none of them overtakes an earlier one; and how often each such event was offered
/// only to wait (not an attempt of its own).
#[derive(Default)]
struct Held {
    waiting: HashMap<Aggregate, BTreeSet<u64>>,
    waits: HashMap<u64, i64>,
}

impl Held {
    /// Whether the event at `position` must wait for an earlier one of `aggregate`.
    fn blocks(&self, aggregate: &Aggregate, position: u64) -> bool {
        self.waiting.get(aggregate).and_then(|positions| positions.first()).is_some_and(|&head| position > head)
    }

    fn hold(&mut self, aggregate: Aggregate, position: u64) {
        self.waiting.entry(aggregate).or_default().insert(position);
    }

    fn waited(&mut self, aggregate: Aggregate, position: u64) {
        self.hold(aggregate, position);
        *self.waits.entry(position).or_default() += 1;
    }

    /// The event at `position` is settled (applied, skipped or a dead letter): the next may go.
    fn settled(&mut self, aggregate: &Aggregate, position: u64) {
        self.waits.remove(&position);
        if let Some(positions) = self.waiting.get_mut(aggregate) {
            positions.remove(&position);
            if positions.is_empty() {
                self.waiting.remove(aggregate);
            }
        }
    }

    /// How many real attempts a message delivered `delivered` times has had.
    fn attempts(&self, position: u64, delivered: i64) -> i64 {
        (delivered - self.waits.get(&position).copied().unwrap_or(0)).max(1)
    }
}

/// The stream position the next first delivery should have (unknown until the pull's first message).
#[derive(Default)]
struct Expected {
    next: Option<u64>,
}

impl Expected {
    /// Whether `message` keeps the order: one seen before in this pull (a redelivery), or the one at
    /// the expected position (which moves the expectation on); `false` for one past it.
    fn follows(&mut self, message: &jetstream::Message) -> bool {
        let Ok(info) = message.info() else { return true };
        let position = info.stream_sequence;
        match self.next {
            Some(next) if position > next => false,
            Some(next) if position < next => true,
            _ => {
                self.next = Some(position + 1);
                true
            }
        }
    }
}

/// One message of a pulled batch, read.
struct Pulled {
    message: jetstream::Message,
    position: u64,
    attempts: i64,
    read: Result<Envelope, Unacceptable>,
}

impl Pulled {
    /// The aggregate the message names, even when it cannot be applied (yet): the key its later events
    /// wait on.
    fn aggregate(&self) -> Option<Aggregate> {
        match &self.read {
            Ok(envelope) => Some(owned(envelope)),
            Err(_) => serde_json::from_slice::<Envelope>(&self.message.payload).ok().map(|envelope| owned(&envelope)),
        }
    }
}

impl Consumer {
    /// Consumes until aborted, while this instance holds the consumer's lease (one instance of a fragment
    /// pulls at a time, so batches are applied in stream order); on a lost stream, consumer or lease,
    /// waits a moment and starts again.
    async fn run(self) {
        let lease_name = format!("jetstream-consumer:{}", self.producer);
        // Kept across restarts of the pull: events waiting behind a failed one still wait.
        let mut held = Held::default();
        loop {
            match Lease::try_take(&self.runtime.db, &lease_name, CONSUMER_LEASE).await {
                Ok(Some(lease)) => {
                    let lease = lease.kept(CONSUMER_LEASE);
                    if let Err(error) = self.consume(&lease, &mut held).await {
                        tracing::warn!(subscriber = %self.runtime.name, producer = %self.producer, %error, "event consumer stopped; starting again");
                    }
                    lease.release().await;
                }
                // Another instance consumes; this one takes over when that one's lease runs out.
                Ok(None) => {}
                Err(error) => tracing::warn!(subscriber = %self.runtime.name, producer = %self.producer, %error, "cannot take the consumer's lease"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume(&self, lease: &Lease, held: &mut Held) -> Result<(), BrokerError> {
        let stream = self.broker.stream(&self.producer).await?;
        let name = self.runtime.name.to_string();
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("{} consuming the events of {}", self.runtime.name, self.producer)),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            // Unbounded here: the consumer dead-letters after `max_deliveries` itself, and a message whose
            // dead letter could not be written must keep coming rather than be dropped by JetStream.
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            filter_subject: format!("{}.{}.>", self.broker.prefix, self.producer),
            ..Default::default()
        };
        // Created, or updated in place (a consumer made by an earlier release took one event at a time).
        let consumer: consumer::PullConsumer = stream.create_consumer(config).await.map_err(|error| BrokerError::Consumer(error.to_string()))?;
        // Events delivered to an earlier pull (this instance's before a restart, or a dead instance's)
        // and never acknowledged come again after the ack wait, and JetStream then sends them before
        // newer ones. Pulling at once would let a newer event of their aggregate overtake them.
        if consumer.cached_info().num_ack_pending > 0 {
            tracing::info!(subscriber = %self.runtime.name, producer = %self.producer, "waiting for the events of an earlier pull to come back");
            tokio::time::sleep(ACK_WAIT).await;
        }
        let mut messages = consumer.stream().max_messages_per_batch(PULL_BATCH).messages().await.map_err(|error| BrokerError::Pull(error.to_string()))?;
        let mut expected = Expected::default();
        loop {
            if !lease.is_held() {
                return Ok(());
            }
            let first = match tokio::time::timeout(LEASE_CHECK, messages.next()).await {
                Err(_) => continue,
                Ok(None) => return Err(BrokerError::Ended),
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    fatal(error)?;
                    continue;
                }
            };
            // Whatever else has arrived already joins the batch; nothing waits for more.
            let mut batch = vec![first];
            let mut broken = None;
            while batch.len() < PULL_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(error))) => {
                        broken = fatal(error).err();
                        break;
                    }
                    Some(None) => {
                        broken = Some(BrokerError::Ended);
                        break;
                    }
                    None => break,
                }
            }
            // The consumer sees every message of the stream, so first deliveries come in unbroken stream
            // order. A gap means deliveries were lost on the way (a server went away): what follows
            // must not overtake them. It is left unacknowledged, and the pull starts again, waiting for
            // all of it to come back in order.
            if let Some(gap) = batch.iter().position(|message| !expected.follows(message)) {
                let expected_position = expected.next.unwrap_or_default();
                let position = batch[gap].info().map(|info| info.stream_sequence).unwrap_or_default();
                batch.truncate(gap);
                self.handle_batch(batch, held).await;
                return Err(BrokerError::Gap(expected_position, position));
            }
            self.handle_batch(batch, held).await;
            if let Some(error) = broken {
                return Err(error);
            }
        }
    }

    fn redelivery_delay(&self, attempts: i64) -> Duration {
        let exponent = (attempts - 1).clamp(0, 20) as u32;
        Duration::from_millis(self.base_backoff_ms.saturating_mul(1i64 << exponent).max(0) as u64).min(MAX_REDELIVERY_DELAY)
    }

    /// Applies a pulled batch in one transaction (`tessera_fragment::inbox::apply_batch`), then
    /// acknowledges what committed and offers the rest again.
    async fn handle_batch(&self, batch: Vec<jetstream::Message>, held: &mut Held) {
        let pulled: Vec<Pulled> = batch
            .into_iter()
            .map(|message| {
                let info = message.info().ok();
                let position = info.as_ref().map(|info| info.stream_sequence).unwrap_or_default();
                let delivered = info.as_ref().map(|info| info.delivered).unwrap_or(1);
                let read = self.accept(&message.payload, message.headers.as_ref());
                Pulled { attempts: held.attempts(position, delivered), message, position, read }
            })
            .collect();
        let mut outcomes: Vec<Option<Outcome>> = pulled.iter().map(|_| None).collect();
        let mut to_apply: Vec<usize> = Vec::new();
        for (index, item) in pulled.iter().enumerate() {
            let last = item.attempts >= self.max_deliveries;
            match &item.read {
                Ok(envelope) => {
                    let aggregate = owned(envelope);
                    if self.runtime.events.subscriptions.get(&envelope.event_type).is_none() {
                        outcomes[index] = Some(Outcome::Skipped);
                    } else if held.blocks(&aggregate, item.position) {
                        held.waited(aggregate, item.position);
                        outcomes[index] = Some(Outcome::Waiting);
                    } else {
                        to_apply.push(index);
                    }
                }
                // Signed with a key discovery has not learned yet (a producer's new instance): again later,
                // a dead letter only when it never becomes known. Its aggregate's later events wait for it.
                Err(Unacceptable::Signature(error)) if error.is_transient() && !last => {
                    if let Some(aggregate) = item.aggregate() {
                        held.hold(aggregate, item.position);
                    }
                    outcomes[index] = Some(Outcome::Retry(error.to_string()));
                }
                // Never applicable, however often it comes: a dead letter at once.
                Err(error) => outcomes[index] = Some(self.bury(None, &item.message.payload, &error.to_string(), item.attempts).await),
            }
        }
        let applying: Vec<(&Subscription, &Envelope)> = to_apply
            .iter()
            .filter_map(|&index| {
                let envelope = pulled[index].read.as_ref().ok()?;
                Some((self.runtime.events.subscriptions.get(&envelope.event_type)?, envelope))
            })
            .collect();
        let applied = if applying.is_empty() { Ok(Vec::new()) } else { apply_batch(&self.runtime, &applying, &[]).await };
        match applied {
            Ok(results) => {
                for (&index, result) in to_apply.iter().zip(results) {
                    let item = &pulled[index];
                    let Ok(envelope) = &item.read else { continue };
                    outcomes[index] = Some(match result {
                        Applied::Done(_) => Outcome::Applied,
                        Applied::HeldBack => {
                            held.waited(owned(envelope), item.position);
                            Outcome::Waiting
                        }
                        Applied::Failed(error) if item.attempts >= self.max_deliveries => {
                            self.bury(Some(envelope), &item.message.payload, &error.to_string(), item.attempts).await
                        }
                        Applied::Failed(error) => {
                            held.hold(owned(envelope), item.position);
                            Outcome::Retry(error.to_string())
                        }
                    });
                }
            }
            // The database failed the whole batch: each is offered again, in order.
            Err(error) => {
                for &index in &to_apply {
                    if let Ok(envelope) = &pulled[index].read {
                        held.hold(owned(envelope), pulled[index].position);
                    }
                    outcomes[index] = Some(Outcome::Retry(error.to_string()));
                }
            }
        }
        let acknowledged = pulled.iter().zip(outcomes).map(|(item, outcome)| {
            let outcome = outcome.unwrap_or(Outcome::Retry("not handled".into()));
            if matches!(outcome, Outcome::Applied | Outcome::Skipped | Outcome::Dead(_)) {
                if let Some(aggregate) = item.aggregate() {
                    held.settled(&aggregate, item.position);
                }
            }
            self.acknowledge(&item.message, item.attempts, outcome)
        });
        for result in futures::future::join_all(acknowledged.collect::<Vec<_>>()).await {
            if let Err(error) = result {
                // The message comes again after the ack wait; the inbox makes that harmless.
                tracing::warn!(subscriber = %self.runtime.name, %error, "cannot acknowledge an event");
            }
        }
    }

    /// Tells JetStream what became of a message: done (confirmed), again after a delay, or never again.
    async fn acknowledge(&self, message: &jetstream::Message, attempts: i64, outcome: Outcome) -> Result<(), async_nats::Error> {
        match outcome {
            Outcome::Applied | Outcome::Skipped => message.double_ack().await,
            Outcome::Waiting => message.ack_with(AckKind::Nak(Some(self.redelivery_delay(1)))).await,
            Outcome::Retry(error) => {
                tracing::warn!(subscriber = %self.runtime.name, producer = %self.producer, attempts, %error, "event not applied; offered again later");
                message.ack_with(AckKind::Nak(Some(self.redelivery_delay(attempts)))).await
            }
            Outcome::Dead(error) => {
                tracing::error!(subscriber = %self.runtime.name, producer = %self.producer, attempts, %error, "event failed for good: dead letter");
                message.double_ack_with(AckKind::Term).await
            }
        }
    }

    /// The envelope of a message: signed by a Tessera service that is the producer it names. The
    /// signature's age is not checked: a message may be redelivered long after it was published, and
    /// the inbox, not the clock, refuses a replay.
    fn accept(&self, payload: &[u8], headers: Option<&async_nats::HeaderMap>) -> Result<Envelope, Unacceptable> {
        let mut http = axum::http::HeaderMap::new();
        for name in [PRODUCER_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            if let Some(value) = headers.and_then(|headers| headers.get(name)).and_then(|value| axum::http::HeaderValue::from_str(value.as_str()).ok()) {
                http.insert(name, value);
            }
        }
        let signed_at = http.get(TIMESTAMP_HEADER).and_then(|value| value.to_str().ok()).and_then(|value| value.parse().ok()).unwrap_or_default();
        let producer = self.runtime.events.signer.verify(&http, payload, signed_at)?;
        let envelope: Envelope = serde_json::from_slice(payload)?;
        if envelope.producer != producer || producer != self.producer {
            return Err(Unacceptable::OtherProducer { signed: producer, claimed: envelope.producer });
        }
        // The stream is the producer's own; this also bounds the envelope's age (a message can be
        // redelivered long after it was signed, but not applied again once the inbox forgot it).
        tessera_fragment::inbox::admissible(&envelope, self.runtime.events.max_age_ms, now_ms())?;
        Ok(envelope)
    }

    /// Records a dead letter; if that fails too, the message is offered again rather than lost.
    async fn bury(&self, envelope: Option<&Envelope>, payload: &[u8], error: &str, attempts: i64) -> Outcome {
        match record_dead_letter(&self.runtime.db, &self.producer, envelope, payload, error, attempts).await {
            Ok(()) => Outcome::Dead(error.to_owned()),
            Err(db_error) => Outcome::Retry(format!("{error}; and the dead letter could not be recorded: {db_error}")),
        }
    }
}

/// The consumers of every local fragment that consumes, for `crate::assembly`.
pub fn spawn_all(broker: &Broker, runtimes: &[FragmentRuntime], max_deliveries: i64, base_backoff_ms: i64) -> Vec<tokio::task::JoinHandle<()>> {
    runtimes
        .iter()
        .filter(|runtime| !runtime.events.subscriptions.is_empty())
        .flat_map(|runtime| spawn_consumers(broker, runtime, max_deliveries, base_backoff_ms))
        .collect()
}
