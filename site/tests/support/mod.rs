//! Test harness: the real server on port 0 with a fresh data dir, on SQLite and (when
//! `TESSERA_TEST_POSTGRES_URL` is set) on PostgreSQL in schemas unique to the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use reqwest::StatusCode;
use tessera_host::settings::FragmentSettings;

use sqlx::AnyPool;
use tessera_fragment::db::StoreSettings;
use tessera_site::{Mode, ShellSettings};

// The one set of helpers every harness shares (requests, sign-in, cookies, waiting), and one test case
// per backend: the shell's and the fragments' own tests use the same.
#[allow(unused_imports)]
pub use tessera_testing::each_backend;
#[allow(unused_imports)]
pub use tessera_testing::web::{access_cookie, count, eventually, set_cookie, urlencode, Http, Session, ADMIN, PASSWORD, SHOPPER};
#[allow(unused_imports)]
pub use tessera_testing::{nats_url, postgres_configured, Backend, Served};

/// Events over NATS JetStream, in streams of this app's own (named after its schema prefix, which its
/// other instances share).
pub fn over_nats(settings: &mut ShellSettings) {
    settings.host.events.nats_url = Some(nats_url().expect("TESSERA_TEST_NATS_URL"));
    settings.host.events.nats_prefix = settings.host.store.schema_prefix.trim_end_matches('_').to_owned();
}

/// A running `tessera` process-in-a-task with its own data (dropped: drained, and its schemas dropped).
pub struct TestApp {
    pub addr: SocketAddr,
    /// The metrics listener, when `metrics_addr` was set.
    pub metrics_addr: Option<SocketAddr>,
    /// Requests to the app (`TestApp` derefs to it: `app.text(path, cookie)`, `app.login_as(…)`).
    pub http: Http,
    pub settings: ShellSettings,
    pub backend: Backend,
    pub served: Served,
}

/// Every schema the site's processes make.
const SERVICES: [&str; 5] = ["shell", "catalog", "cart", "inventory", "paysandbox"];

/// Options for [`spawn_with`].
#[derive(Default)]
pub struct Options {
    pub mode: Option<Mode>,
    pub fragments: BTreeMap<tessera_contracts::domain::ServiceName, FragmentSettings>,
    pub jwks_url: Option<String>,
    pub site_dir: Option<std::path::PathBuf>,
    pub demo: Option<bool>,
    /// Share another app's data (its SQLite files, or its PostgreSQL schemas): another instance of it.
    pub instance_of: Option<(std::path::PathBuf, String)>,
    /// Listen here instead of on a port the system picks.
    pub addr: Option<SocketAddr>,
    /// The site's public URL (default `http://127.0.0.1`).
    pub public_url: Option<String>,
    /// A fragment alone on another domain: the shell it signs its users in at.
    pub oidc_provider: Option<tessera_host::relying_party::OidcProviderSettings>,
    /// Last word on the settings.
    pub configure: Option<fn(&mut ShellSettings)>,
    /// On PostgreSQL: these schema names (`<prefix><service>`), each service connecting with its own
    /// URL (the roles `tessera db provision` made for that prefix).
    pub provisioned: Option<(String, BTreeMap<String, String>)>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(backend, Options::default()).await
}

/// `TESSERA_TEST_LOG=warn` (an env filter) prints the servers' logs while a test runs.
fn init_logging() {
    if let Ok(filter) = std::env::var("TESSERA_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
}

pub async fn spawn_with(backend: Backend, options: Options) -> TestApp {
    init_logging();
    let data = tempfile::tempdir().expect("a temp dir");
    let mut settings = ShellSettings { host: tessera_testing::test_settings(data.path(), backend), ..ShellSettings::default() };
    let host = &mut settings.host;
    if let Some(site_dir) = options.site_dir {
        host.site.site_dir = site_dir;
    }
    host.login.public_url = options.public_url.unwrap_or_else(|| "http://127.0.0.1".into());
    host.login.jwks_url = options.jwks_url;
    host.site.oidc_provider = options.oidc_provider;
    host.site.fragments = options.fragments;
    host.site.demo = options.demo.unwrap_or(true);
    // The classic eight products: fast to seed; catalog tests that need more say so in `configure`.
    host.site.demo_extra_products = 0;
    if let Some(addr) = options.addr {
        settings.host.server.addr = addr;
    }
    if let Some((data_dir, schema_prefix)) = options.instance_of {
        settings.host.store.data_dir = data_dir;
        settings.host.store.schema_prefix = schema_prefix;
    }
    if let Some((schema_prefix, urls)) = options.provisioned {
        settings.host.store.schema_prefix = schema_prefix;
        settings.host.store.postgres_urls = urls;
    }
    if let Some(configure) = options.configure {
        configure(&mut settings);
    }
    let running = tessera_site::spawn(&settings, &options.mode.unwrap_or(tessera_site::Mode::Site)).await.expect("the server starts");
    let (addr, metrics_addr) = (running.addr, running.metrics_addr);
    let served = Served::new(running, data, &settings.host.store, &SERVICES);
    TestApp { addr, metrics_addr, http: Http::new(format!("http://{addr}")), settings, backend, served }
}

impl TestApp {
    /// Whether the catalog (through the shell) sees a signed-in user with these cookies.
    pub async fn catalog_user(&self, cookie: &str) -> Option<String> {
        let (_, html) = self.text("/catalog", Some(cookie)).await;
        let start = html.find("Signed in as <strong>")? + "Signed in as <strong>".len();
        Some(html[start..start + html[start..].find("</strong>")?].to_owned())
    }

    /// The badge count the cart reports for this cookie.
    pub async fn cart_count(&self, cookie: Option<&str>) -> i64 {
        let response = self.get("/cart/api/summary", cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<serde_json::Value>().await.unwrap()["item_count"].as_i64().unwrap()
    }
}

impl std::ops::Deref for TestApp {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

/// Runs `sql` on `db`: `Ok`, or the refusal's SQLSTATE and message (`42501`: permission denied).
pub async fn sqlstate(db: &AnyPool, sql: &str) -> Result<(), (String, String)> {
    match sqlx::query(sql).execute(db).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) => Err((error.code().unwrap_or_default().into_owned(), error.message().to_owned())),
        Err(other) => Err((String::new(), other.to_string())),
    }
}

/// A schema prefix no other test uses (`t<12 hex>_`).
pub fn fresh_schema_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `tessera db provision`'s roles for every service of the site under `prefix` on the test PostgreSQL:
/// each service's URL, by name (what [`Options::provisioned`] takes). The app's teardown drops them.
pub async fn provision_roles(prefix: &str, replication: bool) -> BTreeMap<String, String> {
    let admin_url = tessera_testing::postgres_url().expect("TESSERA_TEST_POSTGRES_URL");
    let store = StoreSettings { schema_prefix: prefix.to_owned(), ..StoreSettings::default() };
    let services = tessera_site::app::services();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let made = tessera_host::provision::provision(&admin_url, &store, &names, replication).await.expect("the roles are provisioned");
    made.into_iter().map(|one| (one.service, one.url)).collect()
}

pub fn store(app: &TestApp) -> StoreSettings {
    StoreSettings { postgres_pool_size: 2, ..app.settings.host.store.clone() }
}

/// A service's database, opened beside the running app (as an operator's tool would).
pub async fn database(app: &TestApp, service: &str) -> AnyPool {
    if service == "shell" {
        let (sqlite, postgres) = tessera_shell::migrators();
        return store(app).open("shell", &tessera_fragment::db::Migrations { sqlite, postgres }).await.unwrap();
    }
    if service == "paysandbox" {
        return store(app).open(tessera_paysandbox::NAME, &tessera_paysandbox::MIGRATIONS).await.unwrap();
    }
    let migrations = match service {
        "inventory" => &tessera_inventory::server::MIGRATIONS,
        "catalog" => &tessera_catalog::server::MIGRATIONS,
        "cart" => &tessera_cart::server::MIGRATIONS,
        other => panic!("no {other}"),
    };
    store(app).open_fragment(service, migrations).await.unwrap()
}

/// The event signer of `service` as this app's process holds it: the key that process generated in its
/// data dir (what a test relay or a test "other service" signs with to be believed).
pub fn signer_of(app: &TestApp, service: tessera_contracts::domain::ServiceName) -> tessera_fragment::signature::EventSigner {
    use tessera_fragment::signature::{EventSigner, ServiceKeys};
    let path = app.settings.host.store.data_dir.join("keys").join(format!("{service}.ed25519"));
    let document = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    EventSigner::new(std::sync::Arc::new(ServiceKeys::from_pkcs8(service, &[document]).expect("an Ed25519 key")), std::sync::Arc::default())
}
