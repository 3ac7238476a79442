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
//!   same HMAC signature headers as the HTTP transport.
//! - **Consuming.** Each consuming fragment owns one durable pull consumer per producer it consumes from,
//!   named after itself: its subscriptions, not the producer, decide what it receives, and a consumer
//!   that starts late reads the stream from the beginning. The consumer's filter is the producer's whole
//!   subject space (NATS 2.9 allows one filter per consumer); events of types the fragment does not
//!   subscribe to are acknowledged and skipped. `max_ack_pending` is 1, so however many instances of
//!   the fragment pull, events are applied one at a time in stream order — in order per aggregate.
//! - **Acknowledging.** A message is acknowledged (and the acknowledgement confirmed) only after its
//!   inbox row and its effect committed together; a crash before that redelivers it, and the inbox makes
//!   the second arrival harmless. A failure is negatively acknowledged with a delay that doubles per
//!   delivery; after `events_max_attempts` deliveries the event becomes a dead letter in the consumer's
//!   database (`dead_letters`), shown on `/admin/events` and replayable from there, and is terminated in
//!   JetStream so it stops coming. (A message that is not a valid, signed envelope is a dead letter at
//!   once and is never replayed.)
//! - **Known limit.** A durable consumer acknowledges the types its fragment does not subscribe to; a
//!   release that subscribes to a new type gets that type's events from then on, not the earlier ones
//!   (the HTTP transport backfills them).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::StreamExt;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Envelope;
use tessera_fragment::db::now_ms;
use tessera_fragment::event_admin::record_dead_letter;
use tessera_fragment::inbox::apply;
use tessera_fragment::runtime::FragmentRuntime;
use tessera_fragment::signature::{EventSigner, SignatureError, PRODUCER_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::relay::{DeliveryError, Transport};

/// How long JetStream remembers message ids to drop duplicates (its default; longer than any relay
/// retry of a publish that was stored but not marked).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a stream keeps an event, for consumers that start later.
const STREAM_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a consumer has to apply one event before JetStream sends it again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Longest delay before a failed event is offered again.
const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(60);

/// Where the broker is and how its names are spelled.
#[derive(Clone)]
pub struct Broker {
    jetstream: jetstream::Context,
    prefix: String,
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

/// The URL without credentials, for messages.
fn redacted(url: &str) -> String {
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
        if url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        let client = options.connect(url).await.map_err(|source| BrokerError::Connect { url: redacted(url), source })?;
        Ok(Broker { jetstream: jetstream::new(client), prefix: prefix.to_owned() })
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
}

impl Consumer {
    /// Consumes until aborted; on a lost stream or consumer, waits a moment and starts again.
    async fn run(self) {
        loop {
            if let Err(error) = self.consume().await {
                tracing::warn!(subscriber = %self.runtime.name, producer = %self.producer, %error, "event consumer stopped; starting again");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume(&self) -> Result<(), BrokerError> {
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
            max_ack_pending: 1,
            filter_subject: format!("{}.{}.>", self.broker.prefix, self.producer),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream.get_or_create_consumer(&name, config).await.map_err(|error| BrokerError::Consumer(error.to_string()))?;
        let mut messages = consumer.messages().await.map_err(|error| BrokerError::Pull(error.to_string()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| BrokerError::Receive(error.to_string()))?;
            let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
            let acked = match self.handle(&message.payload, message.headers.as_ref(), delivered).await {
                Outcome::Applied | Outcome::Skipped => message.double_ack().await,
                Outcome::Retry(error) => {
                    let delay = self.redelivery_delay(delivered);
                    tracing::warn!(subscriber = %self.runtime.name, producer = %self.producer, delivered, %error, "event not applied; offered again later");
                    message.ack_with(AckKind::Nak(Some(delay))).await
                }
                Outcome::Dead(error) => {
                    tracing::error!(subscriber = %self.runtime.name, producer = %self.producer, delivered, %error, "event failed for good: dead letter");
                    message.double_ack_with(AckKind::Term).await
                }
            };
            if let Err(error) = acked {
                // The message comes again after the ack wait; the inbox makes that harmless.
                tracing::warn!(subscriber = %self.runtime.name, %error, "cannot acknowledge an event");
            }
        }
        Err(BrokerError::Ended)
    }

    fn redelivery_delay(&self, delivered: i64) -> Duration {
        let exponent = (delivered - 1).clamp(0, 20) as u32;
        Duration::from_millis(self.base_backoff_ms.saturating_mul(1i64 << exponent).max(0) as u64).min(MAX_REDELIVERY_DELAY)
    }

    async fn handle(&self, payload: &[u8], headers: Option<&async_nats::HeaderMap>, delivered: i64) -> Outcome {
        let last = delivered >= self.max_deliveries;
        let envelope = match self.accept(payload, headers) {
            Ok(envelope) => envelope,
            // Signed with a key discovery has not learned yet (a producer's new instance): again later,
            // a dead letter only when it never becomes known.
            Err(Unacceptable::Signature(error)) if error.is_transient() && !last => return Outcome::Retry(error.to_string()),
            // Never applicable, however often it comes: a dead letter at once.
            Err(error) => return self.bury(None, payload, &error.to_string(), delivered).await,
        };
        let Some(subscription) = self.runtime.events.subscriptions.get(&envelope.event_type) else {
            return Outcome::Skipped;
        };
        let error = match apply(&self.runtime, subscription, &envelope).await {
            Ok(_) => return Outcome::Applied,
            Err(error) => error.to_string(),
        };
        if last {
            self.bury(Some(&envelope), payload, &error, delivered).await
        } else {
            Outcome::Retry(error)
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
    async fn bury(&self, envelope: Option<&Envelope>, payload: &[u8], error: &str, delivered: i64) -> Outcome {
        match record_dead_letter(&self.runtime.db, &self.producer, envelope, payload, error, delivered).await {
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
