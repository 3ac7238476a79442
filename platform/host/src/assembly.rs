//! Assembling a Tessera process, whatever it contains: one fragment (`tessera-catalog`), the shell with
//! none (`tessera-shell`), or the shell with every fragment (`tessera`).
//!
//! [`Host`] opens each local fragment's database, builds its runtime and router, and connects the
//! services to each other: in process when they run here, over HTTP (several instances each,
//! `crate::pool`) when they are configured as upstreams. Which services a fragment's events go to comes
//! from the consumers' subscriptions: of the local fragments directly, of the others from their published
//! description, read at start and again every few seconds (`crate::discovery`). [`Host::start`] starts
//! the relays (`crate::relay`, over HTTP or `crate::broker`, fed by polling or `crate::cdc`), the
//! fragments' jobs and the event retention, and seeds demo data; `crate::serve` then serves the result.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use shared_auth::verify::{JwksSource, Verifier};
use tessera_contracts::descriptor::{FragmentDescriptor, DESCRIPTOR_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_fragment::db::{now_ms, Backend};
use tessera_fragment::event_admin::{prune, Retention};
use tessera_fragment::fragment::{describe, publishes, Fragment};
use tessera_fragment::lease::once_per_period;
use tessera_fragment::manifest::ManifestStore;
use tessera_fragment::outbox::Outbox;
use tessera_fragment::peers::{ClearOnDrop, Peers, Target};
use tessera_fragment::runtime::{FragmentEvents, FragmentRuntime};
use tessera_fragment::secrets::Secrets;
use tessera_fragment::signature::{EventSigner, KeyDirectory};
use tessera_fragment::timing;
use tower_http::catch_panic::CatchPanicLayer;

use crate::broker::{self, producer_of, Broker, BrokerTransport};
use crate::cdc;
use crate::discovery::Discovery;
use crate::error::HostError;
use crate::login::fragment_verifier_settings;
use crate::metrics;
use crate::pool::{Clients, Pool, Remote};
use crate::relay::{HttpTransport, OutboxRelay, Relay, Transport};
use crate::serve::Exposure;
use crate::settings::Settings;

/// A fragment running in this process.
#[derive(Clone)]
pub struct Local {
    pub fragment: &'static dyn Fragment,
    pub runtime: FragmentRuntime,
    /// Its router, with panics turned into 500s (and so into the shell's fallback page).
    pub router: Router,
}

/// The services of one process, being assembled.
pub struct Host {
    pub settings: Settings,
    /// The deployment's shared secrets (`tessera_fragment::secrets`): each loaded when a part of the process first
    /// needs it, so a process holds only the secrets of what it runs.
    pub secrets: Arc<Secrets>,
    /// Routes to every service this process knows, shared by all services in it.
    pub peers: Arc<Peers>,
    /// The public signing keys every service of this process verifies events and calls with: its own
    /// services' (trusted as they are built) and the others' (learned by discovery).
    pub keys: Arc<KeyDirectory>,
    /// The process's one pair of HTTP clients: every route to another process shares its connections.
    pub clients: Clients,
    /// The certificate authorities its outbound connections trust (`crate::tls`).
    pub roots: crate::tls::Roots,
    pub local: Vec<Local>,
    /// Background tasks started so far.
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

impl Host {
    /// A host with the deployment's secrets (configured ones are checked now; see
    /// `tessera_fragment::secrets`).
    pub fn new(settings: &Settings) -> Result<Host, HostError> {
        let secrets = Arc::new(Secrets::new(&settings.secrets, &settings.store.data_dir)?);
        let roots = crate::tls::Roots::from_setting(settings.server.tls_ca_file.as_deref())?;
        let clients = Clients::with_roots(&roots);
        let peers = Arc::new(Peers::default());
        if let Some(base) = &settings.site.payment_url {
            // Comma-separated: several processes serve the provider (every shell replica does).
            let bases: Vec<String> = base.split(',').map(str::to_owned).collect();
            peers.set(ServiceName::PAYMENTS, Remote::target(tessera_contracts::payments::SANDBOX_PREFIX, Arc::new(Pool::of(&bases)), &clients));
        }
        Ok(Host { settings: settings.clone(), secrets, peers, keys: Arc::default(), clients, roots, local: Vec::new(), background: Vec::new() })
    }

    /// Opens `fragment`'s database, builds its runtime and router, and makes it reachable in process.
    /// `jwks` is where it finds the shell's public keys.
    pub async fn add_fragment(&mut self, fragment: &'static dyn Fragment, jwks: impl JwksSource) -> Result<&Local, HostError> {
        let settings = &self.settings;
        // Event types are named after their producer (`<producer>.<what happened>`): a broker's streams
        // and a consumer's choice of stream rely on it.
        if let Some((event_type, _)) = fragment.publishes().iter().find(|(event_type, _)| producer_of(event_type) != Some(fragment.name())) {
            return Err(HostError::Config(format!("{} publishes {event_type:?}, which is not named {}.<event>", fragment.name(), fragment.name())));
        }
        let db = settings.store.open_fragment(fragment.name().as_str(), fragment.migrations()).await?;
        let subscriptions = fragment.subscriptions();
        let runtime = FragmentRuntime {
            name: fragment.name(),
            prefix: fragment.prefix(),
            db,
            verifier: Verifier::new(fragment_verifier_settings(&settings.login, fragment.name().as_str()), jwks),
            manifests: Arc::new(ManifestStore::new(FragmentRuntime::bundle_dir(&settings.site.site_dir, fragment.name().as_str()))),
            csrf: Arc::new(settings.login.csrf_policy()),
            events: Arc::new(FragmentEvents {
                outbox: Outbox::new(fragment.name()),
                signer: EventSigner::new(self.secrets.service_keys(&fragment.name())?, self.keys.clone()),
                subscriptions,
                max_age_ms: settings.events.retention().inbox_ms,
                max_lag_ms: settings.events.events_max_lag_ms,
            }),
            peers: self.peers.clone(),
            secrets: self.secrets.clone(),
            secure_cookies: settings.login.secure_cookies(),
        };
        // Timed as a whole: the routes a fragment adds to the SDK's are pages too (`tessera_fragment::timing`).
        let router = fragment.router(runtime.clone()).layer(axum::middleware::from_fn(timing::middleware)).layer(CatchPanicLayer::new());
        self.peers.set(fragment.name(), Target::in_process(fragment.prefix(), router.clone()));
        self.local.push(Local { fragment, runtime, router });
        Ok(self.local.last().expect("just pushed"))
    }

    /// Makes another service of this process (the sandbox payment provider) reachable by `name`.
    pub fn add_service(&mut self, name: ServiceName, prefix: &str, router: Router) {
        self.peers.set(name, Target::in_process(prefix, router));
    }

    /// The fragment of this process called `name`.
    pub fn local(&self, name: &ServiceName) -> Option<&Local> {
        self.local.iter().find(|local| &local.fragment.name() == name)
    }

    /// Connects the services and starts them: local consumers subscribe to local producers; services
    /// configured as upstreams are discovered (now, and every few seconds in the background); every
    /// producer's relay and every fragment's background jobs start; then demo data is seeded if asked
    /// (after the relays, so the seed's events flow).
    pub async fn start(mut self) -> Result<Started, HostError> {
        let events = &self.settings.events;
        let broker = match &events.nats_url {
            Some(url) => Some(Broker::connect(url, &events.nats_prefix, self.roots.file()).await?.with_replicas(events.nats_replicas)),
            None => None,
        };
        if broker.is_some() {
            for producer in &self.local {
                producer.runtime.events.outbox.use_broker();
            }
        }
        let streamed = events.outbox_relay == OutboxRelay::Cdc;
        if streamed {
            if self.settings.store.backend() == Backend::Sqlite {
                return Err(HostError::Config("TESSERA_OUTBOX_RELAY=cdc reads PostgreSQL's logical replication stream: set TESSERA_POSTGRES_URL too".into()));
            }
            for producer in self.local.iter().filter(|local| !local.fragment.publishes().is_empty()) {
                let name = producer.fragment.name();
                if let Some(url) = self.settings.store.postgres_url_of(name.as_str())? {
                    cdc::Source::new(url, "")?;
                }
                cdc::check_server(&producer.runtime.db).await?;
                producer.runtime.events.outbox.use_stream();
            }
        }
        for producer in &self.local {
            producer.runtime.events.outbox.load_subscriptions(&producer.runtime.db).await.map_err(HostError::Subscriptions)?;
        }
        for consumer in &self.local {
            for (event_type, _) in consumer.runtime.events.subscriptions.types() {
                for producer in self.local.iter().filter(|producer| publishes(producer.fragment, event_type)) {
                    let outbox = &producer.runtime.events.outbox;
                    outbox.subscribe(&producer.runtime.db, event_type, &consumer.fragment.name()).await.map_err(HostError::Subscriptions)?;
                }
            }
        }
        let local = self.local.iter().map(|local| (local.fragment, local.runtime.clone())).collect();
        let discovery = Discovery::new(&self.settings, local, self.peers.clone(), self.keys.clone(), &self.clients);
        let complete = discovery.run_once().await;
        self.background.push(tokio::spawn(discovery.run(complete)));
        for local in self.local.iter().filter(|local| !local.fragment.publishes().is_empty()) {
            let transport: Arc<dyn Transport> = match &broker {
                Some(broker) => Arc::new(BrokerTransport::new(broker.clone(), local.fragment.name(), local.runtime.events.signer.clone())),
                None => Arc::new(HttpTransport::new(local.runtime.events.signer.clone(), self.peers.clone())),
            };
            let relay = Relay::new(local.runtime.db.clone(), &local.runtime.events.outbox, transport, self.settings.events.relay());
            let store = &self.settings.store;
            let task = match (store.postgres_url_of(local.fragment.name().as_str())?, streamed) {
                (Some(url), true) => {
                    let source = cdc::Source::new(url, &store.schema_of(local.fragment.name().as_str()))?.with_ca_file(self.roots.file());
                    cdc::StreamingRelay::new(relay, local.runtime.db.clone(), source, local.fragment.name()).spawn()
                }
                _ => relay.spawn(),
            };
            self.background.push(task);
        }
        if let Some(broker) = &broker {
            let runtimes: Vec<FragmentRuntime> = self.local.iter().map(|local| local.runtime.clone()).collect();
            self.background.extend(broker::spawn_all(broker, &runtimes, self.settings.events.events_max_attempts, self.settings.events.events_base_backoff_ms));
        }
        for local in &self.local {
            self.background.extend(local.fragment.background(&local.runtime));
            self.background.push(spawn_event_retention(local.runtime.db.clone(), self.settings.events.retention()));
        }
        if self.settings.site.demo {
            let store = &self.settings.store;
            for local in &self.local {
                // Instances starting together seed once: the others wait, then find the data there.
                let lock = store.start_lock(local.fragment.name().as_str()).await?;
                let seeded = local.fragment.seed_demo(&local.runtime, self.settings.site.demo_extra_products).await;
                lock.release().await;
                seeded.map_err(|source| HostError::Seed { fragment: local.fragment.name(), source })?;
            }
        }
        Ok(Started {
            local: self.local,
            background: self.background,
            secrets: self.secrets,
            clients: self.clients,
            roots: self.roots,
            teardown: ClearOnDrop::new(self.peers.clone()),
        })
    }
}

/// A started process's services.
pub struct Started {
    pub local: Vec<Local>,
    pub background: Vec<tokio::task::JoinHandle<()>>,
    pub secrets: Arc<Secrets>,
    pub clients: Clients,
    pub roots: crate::tls::Roots,
    /// Breaks the services' reference cycle when the process stops (see `ClearOnDrop`).
    pub teardown: ClearOnDrop,
}

impl Started {
    /// What a scrape of this process's metrics reads (its fragments' event tables).
    pub fn exposure(&self) -> Exposure {
        let producers = self.local.iter().map(|local| (local.fragment.name(), local.runtime.db.clone())).collect();
        let max_lag_ms = self.local.first().map_or(crate::relay::EventSettings::default().events_max_lag_ms, |local| local.runtime.events.max_lag_ms);
        Exposure { scrape: metrics::Scrape::new(producers, max_lag_ms) }
    }
}

/// `GET /.well-known/tessera-fragments` for the fragments of this process.
pub fn descriptors_route(local: &[Local]) -> Router {
    let described: Arc<Vec<Local>> = Arc::new(local.to_vec());
    Router::new().route(
        DESCRIPTOR_PATH,
        get(move || {
            let list: Vec<FragmentDescriptor> = described.iter().map(|local| describe(local.fragment, &local.runtime)).collect();
            async move { axum::Json(list) }
        }),
    )
}

/// The router of a process that serves one fragment alone: its routes, and its description.
pub fn fragment_app(local: &Local) -> Router {
    local.router.clone().merge(descriptors_route(std::slice::from_ref(local)))
}

/// How often a fragment's old event rows are pruned (one instance per period).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Prunes a fragment's event tables every hour, from now on (`tessera_fragment::event_admin::prune`).
fn spawn_event_retention(db: sqlx::AnyPool, retention: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RETENTION_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let pass = prune(&db, retention, now_ms());
            match once_per_period(&db, "event-retention", RETENTION_EVERY, pass).await {
                Ok(Some(Ok((events, inbox)))) if events + inbox > 0 => tracing::info!(events, inbox, "pruned old event rows"),
                Ok(Some(Err(error))) | Err(error) => tracing::warn!(%error, "pruning old event rows failed"),
                Ok(_) => {}
            }
        }
    })
}
