//! Test harness: the real server on port 0 with a fresh data dir, on SQLite and (when
//! `TESSERA_TEST_POSTGRES_URL` is set) on PostgreSQL in schemas unique to the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Response, StatusCode};
use std::time::Duration;
use tessera_host::settings::FragmentSettings;

use sqlx::AnyPool;
use tessera_fragment::db::StoreSettings;
use tessera_site::{Mode, ShellSettings};

pub const PASSWORD: &str = "tessera-demo";
pub const SHOPPER: &str = "shopper@example.com";
pub const ADMIN: &str = "admin@example.com";

// Where a test's data lives, and one test case per backend: the fragments' own tests use the same.
#[allow(unused_imports)]
pub use tessera_testing::each_backend;
#[allow(unused_imports)]
pub use tessera_testing::{postgres_configured, Backend};

/// The NATS server of the broker tests (`TESSERA_TEST_NATS_URL`), if any.
pub fn nats_url() -> Option<String> {
    std::env::var("TESSERA_TEST_NATS_URL").ok().filter(|url| !url.is_empty())
}

/// Events over NATS JetStream, in streams of this app's own (named after its schema prefix, which its
/// other instances share).
pub fn over_nats(settings: &mut ShellSettings) {
    settings.host.events.nats_url = Some(nats_url().expect("TESSERA_TEST_NATS_URL"));
    settings.host.events.nats_prefix = settings.host.store.schema_prefix.trim_end_matches('_').to_owned();
}

/// A running `tessera` process-in-a-task with its own data.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The metrics listener, when `metrics_addr` was set.
    pub metrics_addr: Option<SocketAddr>,
    pub url: String,
    pub client: reqwest::Client,
    pub settings: ShellSettings,
    pub backend: Backend,
    _data: tempfile::TempDir,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Starts a drain, as SIGTERM does.
    pub stop: std::sync::Arc<tokio::sync::Notify>,
    _teardown: tessera_fragment::peers::ClearOnDrop,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Options for [`spawn_with`].
#[derive(Default)]
pub struct Options {
    pub mode: Option<Mode>,
    pub fragments: BTreeMap<String, FragmentSettings>,
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
    if let Some(configure) = options.configure {
        configure(&mut settings);
    }
    let running = tessera_site::spawn(&settings, &options.mode.unwrap_or(tessera_site::Mode::Site)).await.expect("the server starts");
    // A bound on every request: a hung server fails its test instead of hanging the run.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(std::time::Duration::from_secs(30)).build().unwrap();
    TestApp {
        addr: running.addr,
        metrics_addr: running.metrics_addr,
        url: format!("http://{}", running.addr),
        client,
        settings,
        backend,
        _data: data,
        handle: running.handle,
        stop: running.stop,
        _teardown: running.teardown,
        background: running.background,
    }
}

impl TestApp {
    /// Stops the app's background work (its relays, sweepers, discovery) while it keeps serving: a test
    /// that drives a relay of its own on the app's outbox then has the only one.
    pub fn stop_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A graceful stop, not an abort: the server closes its kept-alive connections, so no connection
        // task (another test app's client may hold one open) keeps this app's pools alive after the test.
        self.stop.notify_one();
        for task in &self.background {
            task.abort();
        }
        if let (Backend::Postgres, Some(url)) = (self.backend, self.settings.host.store.postgres_url.clone()) {
            // Leave no schemas behind in the shared test database.
            let prefix = self.settings.host.store.schema_prefix.clone();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async move {
                    sqlx::any::install_default_drivers();
                    // Bounded: the aborted server's connections may still hold locks for a moment, and a
                    // cleanup must never hang the test run (at worst a schema is left behind).
                    let cleanup = async {
                        if let Ok(pool) = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await {
                            let _ = sqlx::query("SET lock_timeout = '3s'").execute(&pool).await;
                            for service in ["shell", "catalog", "cart", "inventory", "paysandbox"] {
                                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {prefix}{service} CASCADE")).execute(&pool).await;
                                // The streaming relay's publication (`tessera_host::cdc`), if it ran.
                                let _ = sqlx::query(&format!("DROP PUBLICATION IF EXISTS tessera_outbox_{prefix}{service}")).execute(&pool).await;
                            }
                            pool.close().await;
                        }
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), cleanup).await;
                });
            })
            .join();
        }
    }
}

/// A sign-in attempt as a proxy would forward it, for the client at `client` (the leftmost entry is what
/// the client itself wrote, which an app that trusts the proxy must ignore).
pub async fn sign_in_from(app: &TestApp, client: &str, email: &str, password: &str) -> StatusCode {
    let body = format!("email={}&password={}", urlencode(email), urlencode(password));
    let response = app
        .client
        .post(format!("{}/login", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://127.0.0.1")
        .header("x-forwarded-for", format!("6.6.6.6, {client}"))
        .body(body)
        .send()
        .await
        .unwrap();
    response.status()
}

/// The `name=value` part of the access cookie in a response, if it sets one.
pub fn access_cookie(response: &Response) -> Option<String> {
    set_cookie(response, "tessera_access")
}

/// The `name=value` part of a cookie a response sets to a non-empty value.
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap().to_owned())
        .find(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).is_some_and(|value| !value.is_empty()))
}

/// Both session cookies of a sign-in, as `name=value`.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

impl Session {
    /// The `Cookie` header a browser would send.
    pub fn both(&self) -> String {
        format!("{}; {}", self.access, self.refresh)
    }
}

impl TestApp {
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post_form(&self, path: &str, body: impl Into<String>, cookie: Option<&str>) -> Response {
        let mut request = self.client.post(format!("{}{path}", self.url)).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.into());
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    pub async fn text(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let response = self.get(path, cookie).await;
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// Signs in through the login form and returns the cookie to send back.
    pub async fn login_as(&self, email: &str, password: &str) -> String {
        let body = format!("email={}&password={}", urlencode(email), urlencode(password));
        let response = self.post_form("/login", body, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {email} failed");
        access_cookie(&response).expect("login sets the access cookie")
    }

    /// Signs in and returns both cookies.
    pub async fn sign_in(&self, email: &str, password: &str) -> Session {
        let body = format!("email={}&password={}", urlencode(email), urlencode(password));
        let response = self.post_form("/login", body, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {email} failed");
        Session {
            access: set_cookie(&response, "tessera_access").expect("an access cookie"),
            refresh: set_cookie(&response, "tessera_refresh").expect("a refresh cookie"),
        }
    }

    /// Whether the catalog (through the shell) sees a signed-in user with these cookies.
    pub async fn catalog_user(&self, cookie: &str) -> Option<String> {
        let (_, html) = self.text("/catalog", Some(cookie)).await;
        let start = html.find("Signed in as <strong>")? + "Signed in as <strong>".len();
        Some(html[start..start + html[start..].find("</strong>")?].to_owned())
    }

    /// Registers a new shopper and returns the cookie.
    pub async fn register(&self, email: &str, name: &str, password: &str) -> String {
        let body = format!("email={}&name={}&password={}", urlencode(email), urlencode(name), urlencode(password));
        let response = self.post_form("/register", body, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "registration of {email} failed");
        access_cookie(&response).expect("registration signs in")
    }

    /// The badge count the cart reports for this cookie.
    pub async fn cart_count(&self, cookie: Option<&str>) -> i64 {
        let response = self.get("/cart/api/summary", cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<serde_json::Value>().await.unwrap()["item_count"].as_i64().unwrap()
    }
}

/// Calls a server function (form-encoded) and returns the status and the JSON answer (or the text).
pub async fn api(app: &TestApp, path: &str, body: &str, cookie: Option<&str>) -> (StatusCode, serde_json::Value) {
    let response = app.post_form(path, body.to_owned(), cookie).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
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

pub async fn count(db: &AnyPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

/// Polls until `check` holds (events are asynchronous), failing after a generous bound.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
