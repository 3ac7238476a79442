//! Independent delivery, in process: fragments the shell learns from their own description, several
//! instances per fragment with one stopping under load, contracts refused at the shell, and pages of
//! another contract asked to reload. (The same across real processes, with builds replaced one after the
//! other, is the browser suite's rollout test.)

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{Html, IntoResponse};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use support::{each_backend, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD};
use tessera_contracts::descriptor::NavEntry;
use tessera_contracts::events::Event;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{BoxFuture, Fragment, SeedError};
use tessera_fragment::runtime::Subscriptions;
use tessera_fragment::subscriptions::HandlerError;
use tessera_fragment::FragmentRuntime;
use tessera_host::settings::FragmentSettings;
use tessera_site::Mode;

static NO_TABLES: Migrator = Migrator::DEFAULT;
static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NO_TABLES, postgres: &NO_TABLES };

/// A fourth fragment, used only by these tests: the shell was never built with it. The outdated one was
/// built against another version of inventory's stock event.
struct Guestbook {
    outdated: bool,
}

static GUESTBOOK: Guestbook = Guestbook { outdated: false };
static OUTDATED_GUESTBOOK: Guestbook = Guestbook { outdated: true };

impl Fragment for Guestbook {
    fn name(&self) -> &'static str {
        "guestbook"
    }
    fn prefix(&self) -> &'static str {
        "/guestbook"
    }
    fn title(&self) -> &'static str {
        "Guestbook"
    }
    fn nav(&self) -> Option<NavEntry> {
        Some(NavEntry { label: "Guestbook".into(), role: None })
    }
    fn migrations(&self) -> &'static Migrations {
        &NO_MIGRATIONS
    }
    fn router(&self, _runtime: FragmentRuntime) -> axum::Router {
        let page = || async {
            Html(format!(
                "<!DOCTYPE html><html><head><title>Guestbook</title></head><body><header id=\"{}\"></header><main><h1>Sign the guestbook</h1></main></body></html>",
                tessera_contracts::CHROME_SLOT_ID
            ))
            .into_response()
        };
        axum::Router::new().route("/guestbook", axum::routing::get(page))
    }
    fn seed_demo<'a>(&'a self, _runtime: &'a FragmentRuntime, _extra: usize) -> BoxFuture<'a, Result<(), SeedError>> {
        Box::pin(async { Ok(()) })
    }
    fn subscriptions(&self) -> Subscriptions {
        if !self.outdated {
            return Subscriptions::new();
        }
        Subscriptions::new().on::<StockChangedV2>(|_, _, _, _| Box::pin(async { Err(HandlerError::Refused("never".into())) }))
    }
}

/// `inventory.stock_changed` in a version inventory does not write.
#[derive(Serialize, Deserialize)]
struct StockChangedV2 {
    sku: String,
}

impl Event for StockChangedV2 {
    const TYPE: &'static str = "inventory.stock_changed";
    const VERSION: u32 = 2;
    const AGGREGATE: &'static str = "sku";
    fn aggregate_id(&self) -> String {
        self.sku.clone()
    }
}

/// Serves `fragment` alone on a free port, the way its own binary would; returns its base URL.
async fn serve_alone(fragment: &'static dyn Fragment, data: &tempfile::TempDir) -> (String, tessera_host::Running) {
    let mut settings = tessera_testing::test_settings(data.path(), tessera_testing::Backend::Sqlite);
    settings.login.public_url = "http://127.0.0.1".into();
    let running = tessera_host::binary::run_fragment(&settings, fragment, None).await.expect("the fragment starts");
    (format!("http://{}", running.addr), running)
}

fn upstreams(list: &[&str]) -> std::collections::BTreeMap<String, FragmentSettings> {
    let mut fragments = std::collections::BTreeMap::new();
    fragments.insert("guestbook".to_owned(), FragmentSettings { upstreams: Some(list.join(",")), ..FragmentSettings::default() });
    fragments
}

fn fast_checks(settings: &mut tessera_site::ShellSettings) {
    settings.registry.health_interval_ms = 100;
    settings.host.server.drain_notice_ms = 400;
}

#[tokio::test]
async fn a_fragment_the_shell_was_never_built_with_is_served_from_its_description() {
    let data = tempfile::tempdir().unwrap();
    let (guestbook, _running) = serve_alone(&GUESTBOOK, &data).await;
    let site = spawn_with(Backend::Sqlite, Options { fragments: upstreams(&[&guestbook]), configure: Some(fast_checks), ..Options::default() }).await;

    let (status, html) = site.text("/guestbook", None).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Sign the guestbook"), "{html}");
    // Composed like any fragment: the chrome in its slot, with a navigation link to it.
    assert_eq!(html.matches("id=\"tessera-chrome\"").count(), 1);
    assert!(html.contains("href=\"/guestbook\""), "the navigation names the new fragment: {html}");
    let (_, home) = site.text("/", None).await;
    assert!(home.contains("href=\"/guestbook\""));

    // Its description is what the shell read.
    let descriptors: serde_json::Value = reqwest::get(format!("{guestbook}/.well-known/tessera-fragments")).await.unwrap().json().await.unwrap();
    let descriptor = &descriptors[0];
    assert_eq!(descriptor["prefix"], "/guestbook");
    assert_eq!(descriptor["contract_version"], tessera_contracts::CONTRACT_VERSION);

    // Site admins see it, its instance and its health.
    let admin = site.login_as(ADMIN, PASSWORD).await;
    let (status, page) = site.text("/admin/fragments", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("data-instance=\"{guestbook}/\" data-ready=\"true\"")), "{page}");
    let (status, _) = site.text("/admin/fragments", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "anonymous visitors are sent to sign in");
}

#[tokio::test]
async fn an_instance_with_incompatible_contracts_is_refused_with_the_fallback_page_and_a_reason() {
    let data = tempfile::tempdir().unwrap();
    let (guestbook, _running) = serve_alone(&OUTDATED_GUESTBOOK, &data).await;
    let site = spawn_with(Backend::Sqlite, Options { fragments: upstreams(&[&guestbook]), configure: Some(fast_checks), ..Options::default() }).await;
    let (status, html) = site.text("/guestbook", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(html.contains("data-testid=\"fragment-fallback\""));
    let admin = site.login_as(ADMIN, PASSWORD).await;
    let (_, page) = site.text("/admin/fragments", Some(&admin)).await;
    assert!(page.contains("consumes inventory.stock_changed v2 but inventory publishes v1"), "{page}");
    assert!(page.contains("data-ready=\"false\""), "{page}");
}

/// Requests `path` through `site` from `workers` loops until `stop` is set; returns the statuses seen.
fn load(site: &TestApp, path: &'static str, workers: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<(u16, bool)>>> {
    (0..workers)
        .map(|_| {
            let (client, url, stop) = (site.client.clone(), format!("{}{path}", site.url), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let fallback = response.text().await.unwrap_or_default().contains("fragment-fallback");
                            seen.push((status, fallback));
                        }
                        Err(_) => seen.push((0, false)),
                    }
                }
                seen
            })
        })
        .collect()
}

each_backend!(an_instance_that_stops_under_load_loses_no_request);
async fn an_instance_that_stops_under_load_loses_no_request(backend: Backend) {
    let mut catalog_one =
        spawn_with(backend, Options { mode: Some(Mode::Fragment("catalog".into())), configure: Some(fast_checks), ..Options::default() }).await;
    let shared = Some((catalog_one.settings.host.store.data_dir.clone(), catalog_one.settings.host.store.schema_prefix.clone()));
    let catalog_two =
        spawn_with(backend, Options { mode: Some(Mode::Fragment("catalog".into())), instance_of: shared, configure: Some(fast_checks), ..Options::default() })
            .await;
    let mut fragments = std::collections::BTreeMap::new();
    let both = format!("{},{}", catalog_one.url, catalog_two.url);
    fragments.insert("catalog".to_owned(), FragmentSettings { upstreams: Some(both), ..FragmentSettings::default() });
    let site = spawn_with(backend, Options { fragments, configure: Some(fast_checks), ..Options::default() }).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders = load(&site, "/catalog", 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM, as Kubernetes sends it: not ready at once, still serving, then gone.
    catalog_one.stop.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = site.client.get(format!("{}/readyz", catalog_one.url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{backend:?}: a draining instance says it is not ready");
    let served = site.client.get(format!("{}/catalog", catalog_one.url)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK, "{backend:?}: ... and still serves while balancers notice");
    tokio::time::timeout(Duration::from_secs(10), &mut catalog_one.handle).await.expect("the instance exits after draining").unwrap().unwrap();
    assert!(site.client.get(format!("{}/readyz", catalog_one.url)).send().await.is_err(), "{backend:?}: gone");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for loader in loaders {
        seen.extend(loader.await.unwrap());
    }
    let failed = seen.iter().filter(|(status, fallback)| *status != 200 || *fallback).count();
    assert!(seen.len() > 20, "{backend:?}: the load ran ({} requests)", seen.len());
    assert_eq!(
        failed,
        0,
        "{backend:?}: {failed} of {} requests failed: {:?}",
        seen.len(),
        seen.iter().filter(|(s, f)| *s != 200 || *f).take(5).collect::<Vec<_>>()
    );

    // The shell took the stopped instance out of rotation, and says so.
    let admin = site.login_as(ADMIN, PASSWORD).await;
    let (_, page) = site.text("/admin/fragments", Some(&admin)).await;
    assert!(page.contains(&format!("data-instance=\"{}/\" data-ready=\"false\"", catalog_one.url)), "{page}");
    assert!(page.contains(&format!("data-instance=\"{}/\" data-ready=\"true\"", catalog_two.url)), "{page}");
}

#[tokio::test]
async fn a_page_of_another_contract_is_asked_to_reload_and_one_of_another_build_is_served() {
    let site = spawn_with(Backend::Sqlite, Options::default()).await;
    let call = |contract: &'static str, build: &'static str| {
        site.client
            .post(format!("{}/catalog/api/search_products", site.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(tessera_contracts::CONTRACT_HEADER, contract)
            .header(tessera_contracts::BUILD_HEADER, build)
            .send()
    };
    // Same contract, another build (a page rendered before a compatible redeploy): it works.
    let current = tessera_contracts::CONTRACT_VERSION.to_string().leak();
    let response = call(current, "0123456789abcdef").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(tessera_contracts::RELOAD_HEADER).is_none());
    // Another contract: a clear refusal the page turns into one reload, never a silent wrong answer.
    let response = call("999", "0123456789abcdef").await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers().get(tessera_contracts::RELOAD_HEADER).unwrap(), "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.to_string().contains("another version of the site"), "{body}");
}

#[tokio::test]
async fn every_process_answers_health_and_readiness() {
    fn with_notice(settings: &mut tessera_site::ShellSettings) {
        settings.host.server.drain_notice_ms = 2_000;
    }
    let site = spawn_with(Backend::Sqlite, Options { configure: Some(with_notice), ..Options::default() }).await;
    let catalog = spawn_with(Backend::Sqlite, Options { mode: Some(Mode::Fragment("catalog".into())), ..Options::default() }).await;
    for app in [&site, &catalog] {
        for path in ["/healthz", "/readyz"] {
            let (status, _) = app.text(path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }
    site.stop.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = site.text("/readyz", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "draining"));
    let (status, _) = site.text("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "alive while draining");
}

#[test]
fn every_fragment_crate_declares_the_name_and_prefix_its_code_owns() {
    // `cargo xtask` builds what `[package.metadata.tessera]` declares; the server serves what the code says.
    for fragment in tessera_site::FRAGMENTS {
        let path = format!("{}/../fragments/{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"), fragment.name());
        let manifest = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert!(manifest.contains("[package.metadata.tessera]"), "{path}");
        assert!(manifest.contains(&format!("fragment = \"{}\"", fragment.name())), "{path}");
        assert!(manifest.contains(&format!("prefix = \"{}\"", fragment.prefix())), "{path}");
    }
}
