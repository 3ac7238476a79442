//! The outbox relay fed by PostgreSQL's logical replication stream (change data capture), chosen with
//! `TESSERA_OUTBOX_RELAY=cdc`; the polling relay (`crate::relay::Relay`) stays the default.
//!
//! Application events are still written by the application, in the transaction of their change (the
//! outbox); what changes is how the relay learns of them. The polling relay asks the outbox tables for
//! due deliveries after every local commit and once a second besides. This one asks PostgreSQL to
//! push the rows inserted into `outbox` and `outbox_deliveries` as their transactions commit (the
//! `pgoutput` plugin over a replication connection, through `pgwire-replication`, which owns the wire
//! protocol and acknowledgements; the few `pgoutput` messages it leaves to its user, relation and insert,
//! are decoded here). A committed transaction's deliveries are sent at once from the stream's own copy
//! of the rows: no query finds them, and an idle shop sends no query at all.
//!
//! Key decisions:
//! - **One leader per fragment.** Every instance runs this relay; one leads, holding a session advisory
//!   lock of the schema on an ordinary connection, and the others wait for that lock in one blocked
//!   statement (nothing polls). The leader's slot has a fixed name per schema and is *temporary*: it
//!   disappears with its session, so a dead leader never leaves PostgreSQL keeping WAL for nobody, and
//!   its lock goes with its connection, so the next leader starts at once.
//! - **The tables stay the truth.** The stream says what to send; each send is still claimed, recorded,
//!   retried with backoff and dead-lettered through the delivery rows, exactly as the polling relay does
//!   (`Relay::claim_and_send`: the transactions that have arrived together, up to [`STREAM_BATCH`]
//!   deliveries, go as one claim and one batch per subscriber). What the stream cannot carry is swept from the table by
//!   the polling relay's pass, run by the leader only: the backlog when it takes over (events committed
//!   while no one streamed), retries as they come due, and a rare row its claim could not see yet. A
//!   dead letter put back in line updates a row, which the stream does not carry, so the replay writes a
//!   logical message (`tessera_fragment::outbox::wake_stream`) that makes the leader sweep at once.
//! - **Order.** A claim is refused while an earlier event of the same aggregate for the same subscriber
//!   is pending, so such an event waits for the sweep, which sends them in order. The stream itself
//!   arrives in commit order, which for one aggregate is its order (its transactions are serialised by
//!   the aggregate's row locks).
//! - PostgreSQL only: the server needs `wal_level = logical` and the role the `REPLICATION` attribute
//!   (checked at start, with a message that says so).
//! - **TLS as the pools have it.** The replication connection reads `sslmode` and `sslrootcert` from the
//!   same URL (`prefer` when unset, as libpq and sqlx do), trusting `TESSERA_TLS_CA_FILE` when the URL
//!   names no authority (`crate::tls`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures::FutureExt;
use pgwire_replication::lsn::Lsn;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, SslMode, TlsConfig};
use sqlx::AnyPool;

use tessera_contracts::domain::ServiceName;
use tessera_fragment::outbox::{DeliveryStatus, STREAM_WAKE_PREFIX as WAKE_PREFIX};

use crate::relay::{Candidate, OutboxRow, Relay};
/// How long an instance waits to try again after leading ended or waiting to lead failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How often the leader sweeps when it knows of nothing waiting (a backstop: nothing should be there).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Most deliveries sent as one batch: the transactions committed by the time the first is read, up to
/// this many deliveries.
const STREAM_BATCH: usize = 500;
/// The soonest the leader sweeps again while deliveries wait.
const RETRY_SWEEP: Duration = Duration::from_millis(100);

/// Where a fragment's replication stream comes from: its PostgreSQL server and schema.
#[derive(Clone)]
pub struct Source {
    /// The URL itself, for the leadership lock's ordinary connection.
    url: String,
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    schema: String,
    /// TLS on the replication connection: the URL's `sslmode` (`prefer` when it has none, as for the
    /// pools) and `sslrootcert`, else the deployment's `TESSERA_TLS_CA_FILE`.
    tls: TlsConfig,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Source")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("tls", &self.tls.mode)
            .finish()
    }
}

/// Why the streaming relay cannot run with these settings on this server (the process does not start).
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("the PostgreSQL URL is not valid: {0}")]
    Url(#[from] url::ParseError),
    #[error("the PostgreSQL URL names no host")]
    NoHost,
    #[error("cannot read the server's {what}: {source}")]
    Unreadable { what: &'static str, source: sqlx::Error },
    #[error(
        "TESSERA_OUTBOX_RELAY=cdc reads PostgreSQL's logical replication stream, which needs wal_level = logical (the server has {0}): \
         run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL, or use the polling relay"
    )]
    WalLevel(String),
    #[error("TESSERA_OUTBOX_RELAY=cdc needs a PostgreSQL role with the REPLICATION attribute (ALTER ROLE … REPLICATION)")]
    NoReplication,
    #[error("the PostgreSQL URL asks for sslmode={0:?}, which is none of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
}

/// Why a `pgoutput` message from the replication stream could not be read (the stream is restarted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("a pgoutput message ended early")]
    EndedEarly,
    #[error("a pgoutput {0} that is not UTF-8")]
    NotUtf8(&'static str),
    #[error("a pgoutput string without its terminator")]
    Unterminated,
    #[error("an insert without a new tuple")]
    NoNewTuple,
    #[error("an insert into relation {0}, which was never described")]
    UnknownRelation(u32),
    #[error("the stream's row has no {0}")]
    MissingColumn(String),
    #[error("the stream's {0} is not {1}")]
    BadValue(String, &'static str),
}

impl Source {
    /// The stream of `schema`'s outbox on the server at `url` (a `postgres://` URL, as for the pools).
    pub fn new(url: &str, schema: &str) -> Result<Source, CdcError> {
        let parsed = url::Url::parse(url)?;
        let parameter = |wanted: &str| parsed.query_pairs().find(|(name, _)| name == wanted).map(|(_, value)| value.into_owned());
        // As libpq reads them; never plain text where the URL asks for TLS.
        let mode = match parameter("sslmode").as_deref() {
            Some("disable" | "allow") => SslMode::Disable,
            None | Some("prefer") => SslMode::Prefer,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => return Err(CdcError::SslMode(other.chars().take(32).collect())),
        };
        let tls = TlsConfig { mode, ca_pem_path: parameter("sslrootcert").map(std::path::PathBuf::from), ..TlsConfig::default() };
        let host = parsed.host_str().filter(|host| !host.is_empty()).ok_or(CdcError::NoHost)?.to_owned();
        let user = match parsed.username() {
            "" => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
            user => percent_decode(user),
        };
        let database = match parsed.path().trim_start_matches('/') {
            "" => user.clone(),
            name => percent_decode(name),
        };
        Ok(Source {
            url: url.to_owned(),
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: parsed.port().unwrap_or(5432),
            user,
            password: parsed.password().map(percent_decode).unwrap_or_default(),
            database,
            schema: schema.to_owned(),
            tls,
        })
    }

    /// Verifies the server against `ca_file` (the deployment's `TESSERA_TLS_CA_FILE`) unless the URL
    /// names its own `sslrootcert`. Without either, a verifying mode trusts the Mozilla roots.
    pub fn with_ca_file(mut self, ca_file: Option<&std::path::Path>) -> Source {
        if self.tls.ca_pem_path.is_none() {
            self.tls.ca_pem_path = ca_file.map(std::path::Path::to_path_buf);
        }
        self
    }

    /// The temporary slot of this schema's relay leader (one per schema: holding it is leading).
    pub fn slot(&self) -> String {
        object_name("tessera_relay_", &self.schema)
    }

    /// The publication of this schema's outbox tables.
    pub fn publication(&self) -> String {
        publication_of(&self.schema)
    }
}

/// The publication of `schema`'s outbox tables.
pub fn publication_of(schema: &str) -> String {
    object_name("tessera_outbox_", schema)
}

/// A slot or publication name for `schema`: lower-case, within PostgreSQL's 63 bytes.
fn object_name(kind: &str, schema: &str) -> String {
    let name = format!("{kind}{}", schema.to_ascii_lowercase());
    if name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return name;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, schema.as_bytes());
    let hex: String = digest.as_ref()[..12].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{kind}{hex}")
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Checks that the server can stream the outbox: `wal_level = logical`, a role allowed to replicate.
pub async fn check_server(db: &AnyPool) -> Result<(), CdcError> {
    let (level,): (String,) = sqlx::query_as("SELECT setting FROM pg_settings WHERE name = 'wal_level'")
        .fetch_one(db)
        .await
        .map_err(|source| CdcError::Unreadable { what: "wal_level", source })?;
    if level != "logical" {
        return Err(CdcError::WalLevel(level));
    }
    let (allowed,): (bool,) = sqlx::query_as("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(db)
        .await
        .map_err(|source| CdcError::Unreadable { what: "role's attributes", source })?;
    if !allowed {
        return Err(CdcError::NoReplication);
    }
    Ok(())
}

/// Why leading stopped.
#[derive(Debug)]
enum Stop {
    /// Another instance holds the slot.
    Standby,
    Failed(String),
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Stop {
        Stop::Failed(error.to_string())
    }
}

impl From<StreamError> for Stop {
    fn from(error: StreamError) -> Stop {
        Stop::Failed(error.to_string())
    }
}

impl From<pgwire_replication::error::PgWireError> for Stop {
    fn from(error: pgwire_replication::error::PgWireError) -> Stop {
        Stop::Failed(error.to_string())
    }
}

/// The outbox relay of one fragment, fed by the replication stream (see the module docs).
pub struct StreamingRelay {
    relay: Arc<Relay>,
    db: AnyPool,
    source: Source,
    producer: ServiceName,
}

impl StreamingRelay {
    pub fn new(relay: Relay, db: AnyPool, source: Source, producer: ServiceName) -> StreamingRelay {
        StreamingRelay { relay: Arc::new(relay), db, source, producer }
    }

    /// Runs until the task is aborted: leads while it holds the leadership lock and the slot, otherwise
    /// waits to.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let leader = metrics::gauge!("tessera_relay_leader", "producer" => self.producer.to_string());
            loop {
                let lock = match self.wait_to_lead().await {
                    Ok(lock) => lock,
                    Err(error) => {
                        tracing::warn!(producer = %self.producer, %error, "cannot wait for the relay's leadership; retrying");
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                };
                let outcome = self.lead(&leader).await;
                leader.set(0.0);
                let _ = sqlx::Connection::close(lock).await;
                match outcome {
                    // The last leader's session is still going away with its slot.
                    Stop::Standby => tracing::debug!(producer = %self.producer, "the relay's slot is still held; retrying"),
                    Stop::Failed(error) => tracing::warn!(producer = %self.producer, %error, "the relay's replication stream ended; retrying"),
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        })
    }

    /// Waits until no other instance leads: a session advisory lock on a connection of its own, held
    /// while leading. An instance that does not lead waits in one blocked statement (no polling), and a
    /// leader that dies releases the lock with its connection, so the next one starts at once.
    async fn wait_to_lead(&self) -> Result<sqlx::AnyConnection, sqlx::Error> {
        use sqlx::Connection;
        let mut connection = sqlx::AnyConnection::connect(&self.source.url).await?;
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("tessera-relay:{}", self.source.schema).as_bytes());
        let key = i64::from_be_bytes(digest.as_ref()[..8].try_into().expect("eight bytes"));
        // `pg_advisory_lock` returns void, which the Any driver cannot decode: select from it instead.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_lock($1)) AS locked").bind(key).execute(&mut connection).await?;
        Ok(connection)
    }

    /// Creates the publication of the outbox tables unless it exists (two instances may race: one wins).
    async fn publish(&self) -> Result<(), Stop> {
        let publication = self.source.publication();
        let (exists,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)").bind(&publication).fetch_one(&self.db).await?;
        if exists {
            return Ok(());
        }
        let schema = &self.source.schema;
        let create = format!("CREATE PUBLICATION {publication} FOR TABLE {schema}.outbox, {schema}.outbox_deliveries WITH (publish = 'insert')");
        match sqlx::query(&create).execute(&self.db).await {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42710") => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Takes the slot and relays from the stream until it ends.
    async fn lead(&self, leader: &metrics::Gauge) -> Stop {
        match self.try_lead(leader).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn try_lead(&self, leader: &metrics::Gauge) -> Result<std::convert::Infallible, Stop> {
        self.publish().await?;
        let source = &self.source;
        let config = ReplicationConfig::new(&source.host, &source.user, &source.password, &source.database, source.slot(), source.publication().as_str())
            .with_port(source.port)
            .with_tls(source.tls.clone())
            .with_start_lsn(Lsn(0))
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(10))
            .with_buffer_size(1024)
            .with_application_name(format!("tessera-relay-{}", self.producer));
        let mut client = ReplicationClient::connect_gated(config).await?;
        let create = format!("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT", self.source.slot());
        if let Err(error) = client.simple_query(&create).await {
            return Err(match error.to_string().contains("already exists") {
                true => Stop::Standby,
                false => Stop::Failed(error.to_string()),
            });
        }
        client.start().await?;
        client.wait_started().await?;
        leader.set(1.0);
        tracing::info!(producer = %self.producer, slot = %self.source.slot(), "leading the relay from the replication stream");
        // What committed before the slot existed is in the table, not in the stream.
        let mut next_sweep = self.sweep().await?;
        let mut decoder = Decoder::new(&self.source.schema);
        // Transactions committed and not sent yet, with the position after the last of them.
        let mut committed = Transaction::default();
        let mut committed_end = None;
        loop {
            let event = tokio::select! {
                event = client.recv() => event?,
                _ = tokio::time::sleep_until(next_sweep) => {
                    next_sweep = self.sweep().await?;
                    continue;
                }
            };
            // What else has arrived already goes in the same batch; nothing waits for more.
            let mut next = Some(event);
            while let Some(event) = next.take() {
                let Some(event) = event else {
                    return Err(Stop::Failed("the server ended the stream".into()));
                };
                match event {
                    ReplicationEvent::Begin { .. } => decoder.begin(),
                    ReplicationEvent::XLogData { data, .. } => decoder.decode(data)?,
                    ReplicationEvent::Commit { end_lsn, .. } => {
                        committed.absorb(decoder.commit());
                        committed_end = Some(end_lsn);
                    }
                    ReplicationEvent::KeepAlive { wal_end, .. } if !decoder.in_transaction() && committed_end.is_none() => client.update_applied_lsn(wal_end),
                    ReplicationEvent::Message { prefix, .. } if prefix == WAKE_PREFIX => next_sweep = tokio::time::Instant::now(),
                    _ => {}
                }
                if committed.deliveries.len() < STREAM_BATCH {
                    next = client.recv().now_or_never().transpose()?;
                }
            }
            if let Some(end_lsn) = committed_end.take() {
                let transactions = std::mem::take(&mut committed);
                if !transactions.deliveries.is_empty() && !self.send(transactions).await? {
                    next_sweep = next_sweep.min(tokio::time::Instant::now() + RETRY_SWEEP);
                }
                client.update_applied_lsn(end_lsn);
            }
        }
    }

    /// Sends committed transactions' deliveries, each subscriber's as one batch through the relay's own
    /// claim and record (`Relay::claim_and_send`); returns whether every one went out.
    async fn send(&self, transaction: Transaction) -> Result<bool, Stop> {
        let mut candidates: BTreeMap<ServiceName, Vec<Candidate>> = BTreeMap::new();
        let mut count = 0;
        for delivery in transaction.deliveries {
            // A backfill addresses events committed earlier: their rows are in the table, not here.
            let envelope = match transaction.events.get(&delivery.seq) {
                Some(row) => self.relay.envelope_of(row.clone()),
                None => match self.relay.envelope(delivery.seq).await? {
                    Some(envelope) => envelope,
                    None => continue,
                },
            };
            count += 1;
            candidates.entry(delivery.subscriber).or_default().push(Candidate { aggregate_key: delivery.aggregate_key, envelope });
        }
        // What was not claimed (an earlier event of the aggregate waits, another relay holds it, or rarely
        // the commit is not visible to a new snapshot yet) or not delivered, the sweep sends.
        let (attempted, delivered) = self.relay.claim_and_send(candidates).await?;
        Ok(attempted == count && delivered == attempted)
    }

    /// Sends what the table holds and the stream did not (see the module docs); returns when to sweep
    /// next: when the first waiting delivery comes due (its retry, or the end of a dead relay's claim),
    /// soon if one is due already (behind an earlier event, or not yet visible to its claim), and after
    /// [`SWEEP_EVERY`] at the latest.
    async fn sweep(&self) -> Result<tokio::time::Instant, Stop> {
        while self.relay.pass().await?.1 > 0 {}
        let (due,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(CASE WHEN claimed_until_ms > next_attempt_at_ms THEN claimed_until_ms ELSE next_attempt_at_ms END) \
             FROM outbox_deliveries WHERE status = $1",
        )
        .bind(DeliveryStatus::Pending)
        .fetch_one(&self.db)
        .await?;
        let wait = match due {
            None => SWEEP_EVERY,
            Some(due) => Duration::from_millis(u64::try_from(due - tessera_fragment::db::now_ms()).unwrap_or(0)).clamp(RETRY_SWEEP, SWEEP_EVERY),
        };
        Ok(tokio::time::Instant::now() + wait)
    }
}

/// A delivery row as inserted.
#[derive(Debug, PartialEq)]
struct Delivery {
    seq: i64,
    subscriber: ServiceName,
    aggregate_key: String,
}

/// The outbox rows and delivery rows one transaction inserted (or several, in commit order).
#[derive(Debug, Default)]
struct Transaction {
    events: HashMap<i64, OutboxRow>,
    deliveries: Vec<Delivery>,
}

impl Transaction {
    /// Adds a later transaction's rows.
    fn absorb(&mut self, later: Transaction) {
        self.events.extend(later.events);
        self.deliveries.extend(later.deliveries);
    }
}

/// Which of the schema's tables a relation is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Table {
    Outbox,
    Deliveries,
    Other,
}

/// Decodes the `pgoutput` messages the replication client hands over as data: relations (sent before
/// the first change to each table in a session, and again when one changes) and inserts into the two
/// outbox tables of one schema.
struct Decoder {
    schema: String,
    relations: HashMap<u32, (Table, Vec<String>)>,
    open: Option<Transaction>,
}

impl Decoder {
    fn new(schema: &str) -> Decoder {
        Decoder { schema: schema.to_ascii_lowercase(), relations: HashMap::new(), open: None }
    }

    fn begin(&mut self) {
        self.open = Some(Transaction::default());
    }

    fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    fn commit(&mut self) -> Transaction {
        self.open.take().unwrap_or_default()
    }

    fn decode(&mut self, mut data: bytes::Bytes) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        match data.get_u8() {
            b'R' => {
                let id = take_u32(&mut data)?;
                let namespace = take_string(&mut data)?;
                let name = take_string(&mut data)?;
                let _replica_identity = take_u8(&mut data)?;
                let count = take_u16(&mut data)?;
                let mut columns = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let _flags = take_u8(&mut data)?;
                    columns.push(take_string(&mut data)?);
                    let _type_id = take_u32(&mut data)?;
                    let _type_modifier = take_u32(&mut data)?;
                }
                let table = match (namespace == self.schema, name.as_str()) {
                    (true, "outbox") => Table::Outbox,
                    (true, "outbox_deliveries") => Table::Deliveries,
                    _ => Table::Other,
                };
                self.relations.insert(id, (table, columns));
            }
            b'I' => {
                let id = take_u32(&mut data)?;
                if take_u8(&mut data)? != b'N' {
                    return Err(StreamError::NoNewTuple);
                }
                let Some((table, columns)) = self.relations.get(&id) else {
                    return Err(StreamError::UnknownRelation(id));
                };
                let values = take_tuple(&mut data)?;
                let row: HashMap<&str, Option<String>> = columns.iter().map(String::as_str).zip(values).collect();
                let transaction = self.open.get_or_insert_with(Transaction::default);
                match table {
                    Table::Outbox => {
                        let event = outbox_row(&row)?;
                        transaction.events.insert(event.seq, event);
                    }
                    Table::Deliveries => transaction.deliveries.push(Delivery {
                        seq: number(&row, "seq")?,
                        subscriber: ServiceName::parse(&text(&row, "subscriber")?).map_err(|_| StreamError::BadValue("subscriber".into(), "a service name"))?,
                        aggregate_key: text(&row, "aggregate_key")?,
                    }),
                    Table::Other => {}
                }
            }
            // Types, origins, truncates, updates and deletes (not published) say nothing to the relay.
            _ => {}
        }
        Ok(())
    }
}

fn text(row: &HashMap<&str, Option<String>>, column: &str) -> Result<String, StreamError> {
    row.get(column).cloned().flatten().ok_or_else(|| StreamError::MissingColumn(column.to_owned()))
}

fn number(row: &HashMap<&str, Option<String>>, column: &str) -> Result<i64, StreamError> {
    text(row, column)?.parse().map_err(|_| StreamError::BadValue(column.to_owned(), "a number"))
}

fn outbox_row(row: &HashMap<&str, Option<String>>) -> Result<OutboxRow, StreamError> {
    Ok(OutboxRow {
        seq: number(row, "seq")?,
        id: text(row, "id")?,
        version: number(row, "version")?,
        event_type: text(row, "event_type")?,
        aggregate_type: text(row, "aggregate_type")?,
        aggregate_id: text(row, "aggregate_id")?,
        payload: text(row, "payload")?,
        occurred_at_ms: number(row, "occurred_at_ms")?,
    })
}

fn need(data: &bytes::Bytes, bytes: usize) -> Result<(), StreamError> {
    if data.remaining() < bytes {
        return Err(StreamError::EndedEarly);
    }
    Ok(())
}

fn take_u8(data: &mut bytes::Bytes) -> Result<u8, StreamError> {
    need(data, 1)?;
    Ok(data.get_u8())
}

fn take_u16(data: &mut bytes::Bytes) -> Result<u16, StreamError> {
    need(data, 2)?;
    Ok(data.get_u16())
}

fn take_u32(data: &mut bytes::Bytes) -> Result<u32, StreamError> {
    need(data, 4)?;
    Ok(data.get_u32())
}

fn take_string(data: &mut bytes::Bytes) -> Result<String, StreamError> {
    let end = data.iter().position(|&byte| byte == 0).ok_or(StreamError::Unterminated)?;
    let text = String::from_utf8(data.split_to(end).to_vec()).map_err(|_| StreamError::NotUtf8("string"))?;
    data.advance(1);
    Ok(text)
}

/// A tuple's columns in text form (`None`: NULL, or a value the stream left out).
fn take_tuple(data: &mut bytes::Bytes) -> Result<Vec<Option<String>>, StreamError> {
    let count = take_u16(data)?;
    let mut values = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        match take_u8(data)? {
            b't' | b'b' => {
                let length = take_u32(data)? as usize;
                need(data, length)?;
                let value = data.split_to(length);
                values.push(Some(String::from_utf8(value.to_vec()).map_err(|_| StreamError::NotUtf8("value"))?));
            }
            // 'n': NULL; 'u': an unchanged TOASTed value (updates only).
            _ => values.push(None),
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    }

    fn relation(id: u32, namespace: &str, name: &str, columns: &[&str]) -> bytes::Bytes {
        let mut out = vec![b'R'];
        out.extend_from_slice(&id.to_be_bytes());
        string(&mut out, namespace);
        string(&mut out, name);
        out.push(b'd');
        out.extend_from_slice(&(columns.len() as u16).to_be_bytes());
        for column in columns {
            out.push(0);
            string(&mut out, column);
            out.extend_from_slice(&25u32.to_be_bytes());
            out.extend_from_slice(&(-1i32).to_be_bytes());
        }
        out.into()
    }

    fn insert(id: u32, values: &[Option<&str>]) -> bytes::Bytes {
        let mut out = vec![b'I'];
        out.extend_from_slice(&id.to_be_bytes());
        out.push(b'N');
        out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for value in values {
            match value {
                Some(text) => {
                    out.push(b't');
                    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
                None => out.push(b'n'),
            }
        }
        out.into()
    }

    #[test]
    fn a_transaction_s_outbox_rows_and_deliveries_are_decoded_and_other_tables_ignored() {
        let mut decoder = Decoder::new("t1_inventory");
        let outbox = ["seq", "id", "event_type", "version", "aggregate_type", "aggregate_id", "payload", "occurred_at_ms"];
        decoder.decode(relation(10, "t1_inventory", "outbox", &outbox)).unwrap();
        decoder.decode(relation(11, "t1_inventory", "outbox_deliveries", &["seq", "subscriber", "aggregate_key", "status", "attempts", "last_error"])).unwrap();
        // The same table name in another schema (another fragment's outbox on the same server).
        decoder.decode(relation(12, "t1_catalog", "outbox", &outbox)).unwrap();
        decoder.begin();
        assert!(decoder.in_transaction());
        let payload = r#"{"sku":"MUG","available":3}"#;
        decoder
            .decode(insert(10, &[Some("7"), Some("e-7"), Some("inventory.stock_changed"), Some("1"), Some("sku"), Some("MUG"), Some(payload), Some("1700")]))
            .unwrap();
        decoder.decode(insert(11, &[Some("7"), Some("catalog"), Some("sku:MUG"), Some("pending"), Some("0"), None])).unwrap();
        decoder.decode(insert(12, &[Some("9"), Some("x"), Some("catalog.x"), Some("1"), Some("p"), Some("1"), Some("{}"), Some("1")])).unwrap();
        let transaction = decoder.commit();
        assert!(!decoder.in_transaction());
        assert_eq!(transaction.deliveries, vec![Delivery { seq: 7, subscriber: ServiceName::CATALOG, aggregate_key: "sku:MUG".into() }]);
        assert_eq!(transaction.events.len(), 1);
        let event = &transaction.events[&7];
        assert_eq!(
            (event.id.as_str(), event.event_type.as_str(), event.version, event.payload.as_str(), event.occurred_at_ms),
            ("e-7", "inventory.stock_changed", 1, payload, 1700)
        );
    }

    #[test]
    fn truncated_or_unknown_messages_are_errors_not_panics() {
        let mut decoder = Decoder::new("s");
        let whole = relation(1, "s", "outbox", &["seq"]);
        for cut in 1..whole.len() {
            assert!(decoder.decode(whole.slice(..cut)).is_err(), "a relation cut at {cut}");
        }
        assert_eq!(decoder.decode(insert(99, &[Some("1")])), Err(StreamError::UnknownRelation(99)));
        decoder.decode(whole).unwrap();
        let row = insert(1, &[Some("12")]);
        for cut in 1..row.len() {
            assert!(decoder.decode(row.slice(..cut)).is_err(), "an insert cut at {cut}");
        }
        // An outbox row missing its columns is refused with the column's name.
        assert_eq!(decoder.decode(row), Err(StreamError::MissingColumn("id".into())));
    }

    #[test]
    fn sources_come_from_the_pools_url_and_name_objects_per_schema() {
        let source = Source::new("postgres://relay:p%40ss@db.internal:6543/shop?sslmode=disable", "tessera_inventory").unwrap();
        assert_eq!(
            (source.host.as_str(), source.port, source.user.as_str(), source.password.as_str(), source.database.as_str()),
            ("db.internal", 6543, "relay", "p@ss", "shop")
        );
        assert_eq!(source.slot(), "tessera_relay_tessera_inventory");
        assert_eq!(source.publication(), "tessera_outbox_tessera_inventory");
        assert!(!format!("{source:?}").contains("p@ss"));
        let long = Source::new("postgres://u@h/d", &"x".repeat(60)).unwrap();
        assert!(long.slot().len() <= 63 && long.slot().starts_with("tessera_relay_"));
        assert!(Source::new("not a url", "s").is_err());
        // TLS as the URL asks, `prefer` when it does not; the URL's authority before the deployment's.
        assert_eq!(source.tls.mode, SslMode::Disable);
        assert_eq!(long.tls.mode, SslMode::Prefer);
        let verified = Source::new("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/db-ca.pem", "s").unwrap();
        assert_eq!((verified.tls.mode, verified.tls.ca_pem_path.as_deref()), (SslMode::VerifyFull, Some(std::path::Path::new("/etc/db-ca.pem"))));
        let verified = verified.with_ca_file(Some(std::path::Path::new("/etc/site-ca.pem")));
        assert_eq!(verified.tls.ca_pem_path.as_deref(), Some(std::path::Path::new("/etc/db-ca.pem")));
        let deployment = Source::new("postgres://u@h/d?sslmode=verify-ca", "s").unwrap().with_ca_file(Some(std::path::Path::new("/etc/site-ca.pem")));
        assert_eq!((deployment.tls.mode, deployment.tls.ca_pem_path.as_deref()), (SslMode::VerifyCa, Some(std::path::Path::new("/etc/site-ca.pem"))));
        let odd = Source::new("postgres://u@h/d?sslmode=sometimes", "s").unwrap_err().to_string();
        assert!(odd.contains("\"sometimes\""), "{odd}");
    }
}
