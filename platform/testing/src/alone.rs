//! One fragment alone in its own crate's tests: served as its binary serves it — the same host, router,
//! layers, relays and background jobs, on a port of its own — against a database of its own, with the
//! rest of the site met only at the contract boundary (see the crate's docs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use shared_auth::keys::{KeyRing, TokenSigner};
use shared_auth::verify::InProcessJwks;
use shared_auth::{Role, SessionUser};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::{Envelope, Event};
use tessera_fragment::db::now_ms;
use tessera_fragment::fragment::Fragment;
use tessera_fragment::peers::Peers;
use tessera_fragment::service::ServiceClient;
use tessera_fragment::signature::{CallSigner, EventSigner, KeyDirectory, ServiceKeys};
use tessera_fragment::{init_executor, FragmentRuntime};
use tessera_host::assembly::{fragment_app, Host};
use tessera_host::pool::Remote;
use tessera_host::relay::{DeliveryError, HttpTransport, Transport};
use tessera_host::serve::serve;
use tessera_host::Settings;

use crate::backend::{test_settings, Backend};
use crate::served::Served;
use crate::web::Http;

/// Another service, as the fragment under test reaches it: its name (`inventory`), the prefix it owns
/// and a router answering the contract paths the test needs.
pub struct Double {
    pub name: ServiceName,
    pub prefix: &'static str,
    pub router: Router,
}

/// How to start a fragment alone.
#[derive(Default)]
pub struct Options {
    /// Seed the fragment's demo data (with this many generated products beyond the classic eight).
    pub demo: Option<usize>,
    /// The other services it calls.
    pub doubles: Vec<Double>,
    /// Last word on the settings.
    pub configure: Option<fn(&mut Settings)>,
}

/// A fragment running alone for a test (see the module docs). Dropping it stops the fragment and
/// removes its PostgreSQL schema.
pub struct Alone {
    /// Requests to the fragment (`Alone` derefs to it: `alone.text(path, cookie)`, `alone.api(…)`).
    pub http: Http,
    pub runtime: FragmentRuntime,
    pub backend: Backend,
    pub settings: Settings,
    tokens: Arc<TokenSigner>,
    /// The keys of the other services the test speaks as, made on first use.
    others: Mutex<HashMap<ServiceName, EventSigner>>,
    _served: Served,
}

impl Alone {
    /// Starts `fragment` alone on `backend`.
    pub async fn start(fragment: &'static dyn Fragment, backend: Backend, options: Options) -> Alone {
        init_executor();
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut settings = test_settings(data.path(), backend);
        settings.site.demo = options.demo.is_some();
        settings.site.demo_extra_products = options.demo.unwrap_or(0);
        if let Some(configure) = options.configure {
            configure(&mut settings);
        }
        let login = &settings.login;
        let access_ttl = login.access_ttl_seconds.max(60);
        let tokens = Arc::new(TokenSigner::new(KeyRing::ephemeral(access_ttl), login.issuer.clone(), login.audience.clone(), access_ttl));
        let published = tokens.clone();
        let jwks = InProcessJwks(Arc::new(move || published.jwks()));
        let mut host = Host::new(&settings).expect("the host's settings");
        host.add_fragment(fragment, jwks).await.expect("the fragment's database and router");
        for double in options.doubles {
            host.add_service(double.name, double.prefix, double.router);
        }
        let started = host.start().await.expect("the fragment starts");
        let runtime = started.local[0].runtime.clone();
        let app = fragment_app(&started.local[0]);
        let app = tessera_host::security::protect_fragment(app, &tessera_host::security::Policy::for_fragment(&settings));
        let exposure = started.exposure();
        let running = serve(&settings.server, app, started.background, started.teardown, exposure).await.expect("the fragment listens");
        let served = Served::new(running, data, &settings.store, &[fragment.name().as_str()]);
        Alone { http: Http::new(format!("http://{}", served.running.addr)), runtime, backend, settings, tokens, others: Mutex::default(), _served: served }
    }

    /// The `Cookie` header of a signed-in user with these roles, as the shell forwards it: the token it
    /// mints for this fragment alone.
    pub fn cookie_of(&self, user: &SessionUser) -> String {
        self.cookie_for(user, self.runtime.name.as_str())
    }

    /// The `Cookie` header of the token the shell would mint for `fragment` (another one: what that
    /// fragment could replay here).
    pub fn cookie_for(&self, user: &SessionUser, fragment: &str) -> String {
        let claims = self.tokens.access_claims(user, &uuid::Uuid::new_v4().to_string());
        let token = self.tokens.fragment_token(&claims, fragment).expect("a signed token");
        format!("{}={token}", self.settings.login.cookie_policy().access_name())
    }

    /// The `Cookie` header of the site's own token for this user (what only the shell accepts): a
    /// fragment takes it as a guest's.
    pub fn site_cookie_of(&self, user: &SessionUser) -> String {
        let token = self.tokens.issue_access_token(user, &uuid::Uuid::new_v4().to_string()).expect("a signed token");
        format!("{}={token}", self.settings.login.cookie_policy().access_name())
    }

    /// A user of the test's making: `id` doubles as the e-mail's local part.
    pub fn user(id: &str, roles: &[Role]) -> SessionUser {
        SessionUser { id: id.to_owned(), email: format!("{id}@example.com"), name: format!("User {id}"), roles: roles.to_vec() }
    }

    /// The signer of another service as the fragment knows it: keys of the test's making, whose public
    /// halves the fragment's process has learned, as discovery would have learned them from that
    /// service's description.
    pub fn signer_of(&self, service: ServiceName) -> EventSigner {
        let mut others = self.others.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        others
            .entry(service.clone())
            .or_insert_with(|| {
                let signer = Alone::stranger(service.clone());
                self.runtime.events.signer.directory().learn(&service, &signer.public_keys());
                signer
            })
            .clone()
    }

    /// A signer calling itself `service` whose keys the fragment has never learned (a forger's).
    pub fn stranger(service: ServiceName) -> EventSigner {
        EventSigner::new(Arc::new(ServiceKeys::generate(service)), Arc::new(KeyDirectory::default()))
    }

    /// Delivers `event` from `producer` to the fragment's inbox, signed with that producer's keys, as
    /// its relay would: `Err` with the refusal.
    pub async fn deliver<E: Event>(&self, producer: ServiceName, event: &E, sequence: i64) -> Result<(), DeliveryError> {
        let signer = self.signer_of(producer.clone());
        self.deliver_signed(&signer, producer, event, sequence).await
    }

    /// Delivers `event` as coming from `producer`, signed by `signer` (which may be another service's, or a
    /// stranger's): `Err` with the refusal.
    pub async fn deliver_signed<E: Event>(&self, signer: &EventSigner, producer: ServiceName, event: &E, sequence: i64) -> Result<(), DeliveryError> {
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: E::TYPE.into(),
            version: E::VERSION,
            aggregate_type: E::AGGREGATE.into(),
            aggregate_id: event.aggregate_id(),
            sequence,
            occurred_at_ms: now_ms(),
            producer: producer.clone(),
            payload: serde_json::to_value(event).expect("an event is JSON"),
        };
        let peers = Arc::new(Peers::default());
        peers.set(self.runtime.name.clone(), Remote::at(self.runtime.prefix, vec![self.http.url.clone()]));
        HttpTransport::new(signer.clone(), peers).deliver(&self.runtime.name, &envelope).await
    }

    /// A client of this fragment's service API, as `caller` (another fragment) would sign its calls.
    pub fn service_client(&self, caller: ServiceName) -> ServiceClient {
        self.service_client_signed(CallSigner::keyed(self.signer_of(caller)))
    }

    /// A client of this fragment's service API whose calls `signer` signs.
    pub fn service_client_signed(&self, signer: CallSigner) -> ServiceClient {
        let target = Remote::at(self.runtime.prefix, vec![self.http.url.clone()]);
        ServiceClient::new(self.runtime.name.clone(), signer, target, Duration::from_secs(30))
    }

    /// The event types in the fragment's outbox, oldest first: what it announced.
    pub async fn announced(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT event_type, aggregate_id FROM outbox ORDER BY seq").fetch_all(&self.runtime.db).await.expect("the outbox")
    }
}

impl std::ops::Deref for Alone {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}
