//! `tessera-testing`: test support for every Tessera crate, a dev-dependency only.
//!
//! **One fragment alone** in its own crate's tests ([`Alone`]): served as its binary serves it — the same
//! host, router, layers, relays and background jobs, on a port of its own — against a database of its
//! own, with the rest of the site met only at the contract boundary:
//!
//! - **Signed-in users** carry an access token signed by a key of the test's own, which the fragment
//!   trusts as it trusts the shell's (the shell is not running).
//! - **Events in** are signed envelopes delivered to the fragment's inbox, as a producer's relay sends
//!   them ([`Alone::deliver`]); a forged one is refused as it would be in production.
//! - **Calls in** are signed service calls ([`Alone::service_client`]), as another fragment makes them.
//! - **Calls out** reach a [`Double`] of the other service: a small router the test writes to answer that
//!   service's contract paths, never a stand-in for anyone's database.
//!
//! The database is a fresh SQLite file, or a PostgreSQL schema of the test's own ([`Backend`]);
//! [`each_backend!`](crate::each_backend) makes one test case of each. Whole-site behaviour — what crosses
//! fragments — is tested in `site/tests/`, the shell's own in `platform/shell/tests/`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
pub use reqwest::StatusCode;
use shared_auth::keys::{KeyRing, TokenSigner};
use shared_auth::verify::InProcessJwks;
use shared_auth::{Role, SessionUser};
use tessera_contracts::events::{Envelope, Event};

use tessera_fragment::db::now_ms;
use tessera_fragment::fragment::Fragment;
use tessera_fragment::peers::ClearOnDrop;
use tessera_fragment::peers::Peers;
use tessera_fragment::service::ServiceClient;
use tessera_fragment::signature::{CallSigner, EventSigner};
use tessera_fragment::{init_executor, FragmentRuntime};
use tessera_host::assembly::{fragment_app, Host};
use tessera_host::pool::Remote;
use tessera_host::relay::{HttpTransport, Transport};
use tessera_host::serve::serve;
use tessera_host::Settings;

/// The events secret of a fragment under test (what its producers and it share).
pub const EVENTS_SECRET: &str = "fragment-test-events-secret-0123456789ab";
/// The service-call secret of a fragment under test.
pub const SERVICE_SECRET: &str = "fragment-test-service-secret-0123456789a";

/// Where a test's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The test PostgreSQL (`TESSERA_TEST_POSTGRES_URL`), if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty())
}

/// Whether PostgreSQL cases can run; says so on stderr when not. `cargo xtask test` sets the URL to the
/// local server, and under `CI=true` fails when that is missing, so a skip happens only in a plain
/// `cargo test` on a machine without PostgreSQL.
pub fn postgres_configured() -> bool {
    let configured = postgres_url().is_some();
    if !configured {
        eprintln!("TESSERA_TEST_POSTGRES_URL is not set: the PostgreSQL case is skipped");
    }
    configured
}

/// One test case per backend for `async fn name(backend: Backend)`: `name::sqlite` and
/// `name::postgres`, so the runner reports each (a SQLite failure does not hide the PostgreSQL result)
/// and `cargo test name::postgres` runs one. The test attribute is `#[tokio::test]` unless given first.
#[macro_export]
macro_rules! each_backend {
    ($name:ident) => {
        $crate::each_backend!(
            #[tokio::test]
            $name
        );
    };
    (#[$test:meta] $name:ident) => {
        mod $name {
            #[$test]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }

            #[$test]
            async fn postgres() {
                if $crate::postgres_configured() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        }
    };
}

/// The settings every test process starts from: a port of its own, its data and bundles under `dir`, a
/// PostgreSQL schema prefix of its own (`t<12 hex>_`) when on PostgreSQL, small pools, and no drain notice.
pub fn test_settings(dir: &std::path::Path, backend: Backend) -> Settings {
    let mut settings = Settings::default();
    settings.server.addr = "127.0.0.1:0".parse().expect("an address");
    settings.server.drain_notice_ms = 0;
    settings.server.drain_timeout_ms = 2_000;
    settings.store.data_dir = dir.join("data");
    settings.store.postgres_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(postgres_url().expect("TESSERA_TEST_POSTGRES_URL")),
    };
    settings.store.schema_prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.store.postgres_pool_size = 3;
    settings.site.site_dir = dir.join("site");
    settings
}

/// Another service, as the fragment under test reaches it: its name (`inventory`), the prefix it owns
/// and a router answering the contract paths the test needs.
pub struct Double {
    pub name: &'static str,
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
    pub url: String,
    /// No redirects followed, every request bounded (a hung fragment fails its test).
    pub client: reqwest::Client,
    pub runtime: FragmentRuntime,
    pub backend: Backend,
    pub settings: Settings,
    tokens: Arc<TokenSigner>,
    stop: Arc<tokio::sync::Notify>,
    background: Vec<tokio::task::JoinHandle<()>>,
    _teardown: ClearOnDrop,
    _data: tempfile::TempDir,
}

impl Alone {
    /// Starts `fragment` alone on `backend`.
    pub async fn start(fragment: &'static dyn Fragment, backend: Backend, options: Options) -> Alone {
        init_executor();
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut settings = test_settings(data.path(), backend);
        settings.secrets.events_secret = Some(EVENTS_SECRET.into());
        settings.secrets.service_secret = Some(SERVICE_SECRET.into());
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
        let exposure = started.exposure(false);
        let running = serve(&settings.server, app, started.background, started.teardown, exposure).await.expect("the fragment listens");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(30)).build().expect("a client");
        Alone {
            url: format!("http://{}", running.addr),
            client,
            runtime,
            backend,
            settings,
            tokens,
            stop: running.stop,
            background: running.background,
            _teardown: running.teardown,
            _data: data,
        }
    }

    /// The `Cookie` header of a signed-in user with these roles (as the shell's login would set it).
    pub fn cookie_of(&self, user: &SessionUser) -> String {
        let token = self.tokens.issue_access_token(user, &uuid::Uuid::new_v4().to_string()).expect("a signed token");
        format!("{}={token}", self.settings.login.cookie_policy().access_name())
    }

    /// A user of the test's making: `id` doubles as the e-mail's local part.
    pub fn user(id: &str, roles: &[Role]) -> SessionUser {
        SessionUser { id: id.to_owned(), email: format!("{id}@example.com"), name: format!("User {id}"), roles: roles.to_vec() }
    }

    /// POSTs a form to a server function, as a page's island does.
    pub async fn post(&self, path: &str, form: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form.to_owned());
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("the fragment answers")
    }

    /// POSTs a form to a server function and reads the JSON answer.
    pub async fn call(&self, path: &str, form: &str, cookie: Option<&str>) -> (StatusCode, serde_json::Value) {
        let response = self.post(path, form, cookie).await;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// GETs a page and reads its HTML.
    pub async fn page(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.expect("the fragment answers");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// Delivers `event` from `producer` to the fragment's inbox, signed with `secret` (the deployment's
    /// events secret is [`EVENTS_SECRET`]), as the producer's relay would: `Err` with the refusal.
    pub async fn deliver<E: Event>(&self, producer: &'static str, event: &E, sequence: i64, secret: &str) -> Result<(), String> {
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: E::TYPE.into(),
            version: E::VERSION,
            aggregate_type: E::AGGREGATE.into(),
            aggregate_id: event.aggregate_id(),
            sequence,
            occurred_at_ms: now_ms(),
            producer: producer.into(),
            payload: serde_json::to_value(event).expect("an event is JSON"),
        };
        let peers = Arc::new(Peers::default());
        peers.set(self.runtime.name, Remote::at(self.runtime.prefix, vec![self.url.clone()]));
        HttpTransport::new(producer, EventSigner::new(&[secret.as_bytes().to_vec()]), peers).deliver(self.runtime.name, &envelope).await
    }

    /// A client of this fragment's service API, as `caller` (another fragment) would sign its calls.
    pub fn service_client(&self, caller: &'static str, secret: &str) -> ServiceClient {
        let target = Remote::at(self.runtime.prefix, vec![self.url.clone()]);
        ServiceClient::new(caller, self.runtime.name, CallSigner::new(&[secret.as_bytes().to_vec()]), target, Duration::from_secs(30))
    }

    /// The event types in the fragment's outbox, oldest first: what it announced.
    pub async fn announced(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT event_type, aggregate_id FROM outbox ORDER BY seq").fetch_all(&self.runtime.db).await.expect("the outbox")
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        self.stop.notify_one();
        for task in &self.background {
            task.abort();
        }
        if let (Backend::Postgres, Some(url)) = (self.backend, self.settings.store.postgres_url.clone()) {
            let schema = format!("{}{}", self.settings.store.schema_prefix, self.runtime.name);
            // On a thread of its own: a drop may run inside the test's runtime, which cannot block on itself.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async move {
                    sqlx::any::install_default_drivers();
                    let cleanup = async {
                        if let Ok(pool) = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await {
                            let _ = sqlx::query("SET lock_timeout = '3s'").execute(&pool).await;
                            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await;
                            pool.close().await;
                        }
                    };
                    // Bounded: at worst a schema is left behind, never a hung test run.
                    let _ = tokio::time::timeout(Duration::from_secs(15), cleanup).await;
                });
            })
            .join();
        }
    }
}
