//! The registry: fragments the shell learns from their own description, several instances per fragment
//! with one stopping under load, contracts refused at the shell, and health and readiness while draining.
//! (The same across real processes, with builds replaced one after the other, is the browser suite's
//! rollout test.)

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{Html, IntoResponse};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use support::{each_backend, spawn_fragment_alone, spawn_fragment_alone_with, spawn_with, Backend, Options, TestShell, ADMIN, PASSWORD};
use tessera_contracts::descriptor::NavEntry;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Event;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{BoxFuture, Fragment, SeedError};
use tessera_fragment::runtime::Subscriptions;
use tessera_fragment::subscriptions::HandlerError;
use tessera_fragment::FragmentRuntime;
use tessera_host::settings::FragmentSettings;

static NO_TABLES: Migrator = Migrator::DEFAULT;
static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NO_TABLES, postgres: &NO_TABLES };

/// A fourth fragment, used only by these tests: the shell was never built with it. The outdated one was
/// built against another version of inventory's stock event.
struct Guestbook {
    outdated: bool,
    /// Where it says it is: an impostor claims another fragment's prefix.
    prefix: &'static str,
}

static GUESTBOOK: Guestbook = Guestbook { outdated: false, prefix: "/guestbook" };
static OUTDATED_GUESTBOOK: Guestbook = Guestbook { outdated: true, prefix: "/guestbook" };
static IMPOSTOR_GUESTBOOK: Guestbook = Guestbook { outdated: false, prefix: "/catalog" };

impl Fragment for Guestbook {
    fn name(&self) -> ServiceName {
        ServiceName::of("guestbook")
    }
    fn prefix(&self) -> &'static str {
        self.prefix
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
        axum::Router::new().route(self.prefix, axum::routing::get(page))
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

fn upstreams(list: &[&str]) -> std::collections::BTreeMap<ServiceName, FragmentSettings> {
    let mut fragments = std::collections::BTreeMap::new();
    fragments.insert(ServiceName::parse("guestbook").unwrap(), FragmentSettings { upstreams: Some(list.join(",")), ..FragmentSettings::default() });
    fragments
}

fn fast_checks(settings: &mut tessera_shell::settings::ShellSettings) {
    settings.registry.health_interval_ms = 100;
    settings.host.server.drain_notice_ms = 400;
}

#[tokio::test]
async fn a_fragment_the_shell_was_never_built_with_is_served_from_its_description() {
    let keys = support::spawn_shell(Backend::Sqlite).await;
    let alone = spawn_fragment_alone(&GUESTBOOK, &keys).await;
    let guestbook = alone.url.clone();
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
    let keys = support::spawn_shell(Backend::Sqlite).await;
    let alone = spawn_fragment_alone(&OUTDATED_GUESTBOOK, &keys).await;
    let guestbook = alone.url.clone();
    let site = spawn_with(Backend::Sqlite, Options { fragments: upstreams(&[&guestbook]), configure: Some(fast_checks), ..Options::default() }).await;
    let (status, html) = site.text("/guestbook", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(html.contains("data-testid=\"fragment-fallback\""));
    let admin = site.login_as(ADMIN, PASSWORD).await;
    let (_, page) = site.text("/admin/fragments", Some(&admin)).await;
    assert!(page.contains("consumes inventory.stock_changed v2 but inventory publishes v1"), "{page}");
    assert!(page.contains("data-ready=\"false\""), "{page}");
}

#[tokio::test]
async fn a_description_cannot_claim_another_fragments_prefix() {
    let keys = support::spawn_shell(Backend::Sqlite).await;
    let alone = spawn_fragment_alone(&IMPOSTOR_GUESTBOOK, &keys).await;
    let site = spawn_with(Backend::Sqlite, Options { fragments: upstreams(&[&alone.url]), configure: Some(fast_checks), ..Options::default() }).await;
    // The catalog's addresses stay the catalog's.
    let (status, html) = site.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("Sign the guestbook"), "the impostor answered for /catalog: {html}");
    // The guestbook is routed where the site says, and refused there, saying why.
    let (status, html) = site.text("/guestbook", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    let admin = site.login_as(ADMIN, PASSWORD).await;
    let (_, page) = site.text("/admin/fragments", Some(&admin)).await;
    assert!(page.contains(r#"describes itself at "/catalog", but this site routes "/guestbook" to it"#), "{page}");
}

/// Requests `path` through `site` from `workers` loops until `stop` is set; returns the statuses seen.
fn load(site: &TestShell, path: &'static str, workers: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<(u16, bool)>>> {
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
    let keys = support::spawn_shell(backend).await;
    let with_notice = |settings: &mut tessera_host::Settings| settings.server.drain_notice_ms = 400;
    let mut catalog_one = spawn_fragment_alone_with(&support::probe::CATALOG, &keys, with_notice).await;
    let catalog_two = spawn_fragment_alone_with(&support::probe::CATALOG, &keys, with_notice).await;
    let mut fragments = std::collections::BTreeMap::new();
    let both = format!("{},{}", catalog_one.url, catalog_two.url);
    fragments.insert(ServiceName::parse("catalog").unwrap(), FragmentSettings { upstreams: Some(both), ..FragmentSettings::default() });
    let site = spawn_with(backend, Options { fragments, configure: Some(fast_checks), ..Options::default() }).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders = load(&site, "/catalog", 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM, as Kubernetes sends it: not ready at once, still serving, then gone.
    catalog_one.served.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = site.client.get(format!("{}/readyz", catalog_one.url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{backend:?}: a draining instance says it is not ready");
    let served = site.client.get(format!("{}/catalog", catalog_one.url)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK, "{backend:?}: ... and still serves while balancers notice");
    tokio::time::timeout(Duration::from_secs(10), &mut catalog_one.served.running.handle).await.expect("the instance exits after draining").unwrap().unwrap();
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
async fn every_process_answers_health_and_readiness() {
    fn with_notice(settings: &mut tessera_shell::settings::ShellSettings) {
        settings.host.server.drain_notice_ms = 2_000;
    }
    let site = spawn_with(Backend::Sqlite, Options { configure: Some(with_notice), ..Options::default() }).await;
    let catalog = spawn_fragment_alone(&support::probe::CATALOG, &site).await;
    for app in [&site.http, &catalog.http] {
        for path in ["/healthz", "/readyz"] {
            let (status, _) = app.text(path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }
    site.served.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = site.text("/readyz", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "draining"));
    let (status, _) = site.text("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "alive while draining");
}
