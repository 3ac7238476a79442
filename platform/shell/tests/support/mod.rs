//! The shell's test harness: the real shell (`tessera_shell::site`) on port 0 with a fresh data dir, on
//! SQLite and (when `TESSERA_TEST_POSTGRES_URL` is set) on PostgreSQL in schemas unique to the test,
//! composing probe fragments ([`probe`]) instead of the real ones: the shell's tests hold the shell to the
//! fragment contract, and a fragment team's changes never break them. Requests, sign-in and cookies go
//! through the helpers every harness shares (`tessera_testing::web`).

#![allow(dead_code)]

pub mod probe;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use reqwest::StatusCode;
use sqlx::AnyPool;
use tessera_fragment::db::{Migrations, StoreSettings};
use tessera_fragment::fragment::Fragment;
use tessera_host::settings::FragmentSettings;
use tessera_shell::settings::ShellSettings;

#[allow(unused_imports)]
pub use tessera_testing::each_backend;
#[allow(unused_imports)]
pub use tessera_testing::web::{access_cookie, count, eventually, form, set_cookie, urlencode, Http, Jar, Session, ADMIN, PASSWORD, SHOPPER};
#[allow(unused_imports)]
pub use tessera_testing::{postgres_configured, Backend, Served};

/// Every schema a shell's process may make.
const SERVICES: [&str; 5] = ["shell", "catalog", "cart", "inventory", "paysandbox"];

/// A running shell with its own data (dropped: drained, and its schemas dropped).
pub struct TestShell {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Requests to the shell (`TestShell` derefs to it).
    pub http: Http,
    pub settings: ShellSettings,
    pub backend: Backend,
    pub served: Served,
}

/// How to start a shell.
pub struct Options {
    /// The fragments the shell runs in its own process (default: the three probes).
    pub contained: Vec<&'static dyn Fragment>,
    /// Fragments reached over HTTP.
    pub fragments: BTreeMap<tessera_contracts::domain::ServiceName, FragmentSettings>,
    /// Seed the demo accounts (default: yes).
    pub demo: bool,
    /// Share another shell's data: another replica of it.
    pub replica_of: Option<(std::path::PathBuf, String)>,
    /// Where the fragments' bundles are (default: an empty dir of the test's).
    pub site_dir: Option<std::path::PathBuf>,
    /// Last word on the settings.
    pub configure: Option<fn(&mut ShellSettings)>,
}

impl Default for Options {
    fn default() -> Options {
        Options { contained: probe::all(), fragments: BTreeMap::new(), demo: true, replica_of: None, site_dir: None, configure: None }
    }
}

pub async fn spawn_shell(backend: Backend) -> TestShell {
    spawn_with(backend, Options::default()).await
}

pub async fn spawn_with(backend: Backend, options: Options) -> TestShell {
    let data = tempfile::tempdir().expect("a temp dir");
    let mut settings = ShellSettings { host: tessera_testing::test_settings(data.path(), backend), ..ShellSettings::default() };
    settings.host.login.public_url = "http://127.0.0.1".into();
    settings.host.site.fragments = options.fragments;
    settings.host.site.demo = options.demo;
    if let Some(site_dir) = options.site_dir {
        settings.host.site.site_dir = site_dir;
    }
    if let Some((data_dir, schema_prefix)) = options.replica_of {
        settings.host.store.data_dir = data_dir;
        settings.host.store.schema_prefix = schema_prefix;
    }
    if let Some(configure) = options.configure {
        configure(&mut settings);
    }
    let running = tessera_shell::site::serve(&settings, &options.contained).await.expect("the shell starts");
    let (addr, metrics_addr) = (running.addr, running.metrics_addr);
    let served = Served::new(running, data, &settings.host.store, &SERVICES);
    TestShell { addr, metrics_addr, http: Http::new(format!("http://{addr}")), settings, backend, served }
}

impl std::ops::Deref for TestShell {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

/// Who a probe's page at `path` says is signed in with these cookies.
pub async fn signed_in_as(http: &Http, path: &str, cookie: &str) -> Option<String> {
    let (_, html) = http.text(path, Some(cookie)).await;
    let start = html.find("Signed in as <strong>")? + "Signed in as <strong>".len();
    Some(html[start..start + html[start..].find("</strong>")?].to_owned())
}

/// A probe fragment alone in a process of its own (as its binary would run), verifying logins with the
/// keys `shell` publishes.
pub struct FragmentAlone {
    pub http: Http,
    pub served: Served,
    pub settings: tessera_host::Settings,
    /// The probe's page.
    pub path: &'static str,
}

impl FragmentAlone {
    /// Who the probe's page sees with these cookies.
    pub async fn user(&self, cookie: &str) -> Option<String> {
        signed_in_as(&self.http, self.path, cookie).await
    }
}

impl std::ops::Deref for FragmentAlone {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

pub async fn spawn_fragment_alone(fragment: &'static dyn Fragment, shell: &TestShell) -> FragmentAlone {
    spawn_fragment_alone_with(fragment, shell, |_| {}).await
}

/// [`spawn_fragment_alone`] with the last word on its settings.
pub async fn spawn_fragment_alone_with(
    fragment: &'static dyn Fragment,
    shell: &TestShell,
    configure: impl FnOnce(&mut tessera_host::Settings),
) -> FragmentAlone {
    let data = tempfile::tempdir().expect("a temp dir");
    let mut settings = tessera_testing::test_settings(data.path(), Backend::Sqlite);
    settings.login.public_url = "http://127.0.0.1".into();
    settings.login.jwks_url = Some(format!("{}/.well-known/jwks.json", shell.url));
    configure(&mut settings);
    let running = tessera_host::binary::run_fragment(&settings, fragment, None).await.expect("the fragment starts");
    let http = Http::new(format!("http://{}", running.addr));
    let served = Served::new(running, data, &settings.store, &[fragment.name().as_str()]);
    FragmentAlone { http, served, settings, path: fragment.prefix() }
}

impl TestShell {
    /// Who the catalog probe (through the shell) sees with these cookies.
    pub async fn catalog_user(&self, cookie: &str) -> Option<String> {
        signed_in_as(&self.http, "/catalog", cookie).await
    }

    /// What the cart probe has counted for this cookie (its summary, which the shell's badge reads).
    pub async fn cart_count(&self, cookie: Option<&str>) -> i64 {
        let response = self.get("/cart/api/summary", cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<serde_json::Value>().await.unwrap()["item_count"].as_i64().unwrap()
    }

    /// The shell's database, opened beside the running shell (as an operator's tool would).
    pub async fn database(&self) -> AnyPool {
        let (sqlite, postgres) = tessera_shell::migrators();
        let store = StoreSettings { postgres_pool_size: 2, ..self.settings.host.store.clone() };
        store.open("shell", &Migrations { sqlite, postgres }).await.unwrap()
    }

    /// Where another replica finds this shell's data.
    pub fn data(&self) -> (std::path::PathBuf, String) {
        (self.settings.host.store.data_dir.clone(), self.settings.host.store.schema_prefix.clone())
    }
}

/// A plain HTTP server on a free port: what a fragment that misbehaves looks like to the shell.
pub async fn spawn_stub(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// An address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
