//! The inventory's numbers: soft reservations per second on one hot SKU (and that none oversold), and
//! how long the admin stock pages take to render with 10,000 SKUs. Run against a release site process on
//! SQLite, and on PostgreSQL too when `TESSERA_TEST_POSTGRES_URL` is set, side by side.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::bench_support::{free_port, load, print_row, sign_in_admin, start_server, LoadResult};

const HOT_UNITS: i64 = 3_000;
const HOT_ATTEMPTS: usize = 4_000;
const HOT_CONCURRENCY: usize = 32;
const SKUS: usize = 10_000;

/// The cart's signing key in the benchmark: the server is given it (`TESSERA_SERVICE_KEYS__CART`), and the
/// benchmark signs its reservation calls with it as the cart would.
struct CartKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    kid: String,
}

impl CartKey {
    fn new() -> Result<CartKey> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|_| anyhow::anyhow!("no randomness"))?.as_ref().to_vec();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| anyhow::anyhow!("a key just made"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref())[..16].to_owned();
        Ok(CartKey { pkcs8, pair, kid })
    }

    /// Headers of a signed service call (the format of `tessera_fragment::signature::CallSigner::sign`).
    fn signed(&self, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut message = format!("tessera-call\n{timestamp}.cart.POST {path}\n").into_bytes();
        message.extend_from_slice(body);
        let signature = STANDARD.encode(self.pair.sign(&message).as_ref());
        vec![
            ("x-tessera-event-producer", "cart".to_owned()),
            ("x-tessera-event-timestamp", timestamp.to_string()),
            ("x-tessera-event-signature", format!("ed25519={}.{signature}", self.kid)),
        ]
    }
}

/// Receives `quantity` of each SKU (new to the inventory) through the admin server function.
async fn stock(client: &reqwest::Client, url: &str, cookie: &str, skus: Vec<String>, quantity: i64, concurrency: usize) -> Result<()> {
    let skus = std::sync::Arc::new(skus);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, cookie, skus) = (client.clone(), cookie.to_owned(), skus.clone());
            let url = format!("{url}/admin/inventory/api/record_movement");
            tokio::spawn(async move {
                for sku in skus.iter().skip(worker).step_by(concurrency) {
                    let body = format!("sku={sku}&movement=receive&quantity={quantity}&new_sku=true");
                    let response =
                        client.post(&url).header("cookie", &cookie).header("content-type", "application/x-www-form-urlencoded").body(body).send().await?;
                    if !response.status().is_success() {
                        bail!("receiving {sku} answered {}", response.status());
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

struct HotResult {
    seconds: f64,
    won: usize,
    short: usize,
    other: usize,
    latencies: Vec<Duration>,
}

/// `HOT_ATTEMPTS` one-unit soft reservations of one SKU holding `HOT_UNITS`, `HOT_CONCURRENCY` at a time.
async fn hot_sku(client: &reqwest::Client, url: &str, key: std::sync::Arc<CartKey>) -> Result<HotResult> {
    let path = tessera_contracts::inventory::RESERVATIONS_PATH;
    let started = Instant::now();
    let workers: Vec<_> = (0..HOT_CONCURRENCY)
        .map(|worker| {
            let (client, key) = (client.clone(), key.clone());
            let url = format!("{url}{path}");
            tokio::spawn(async move {
                let (mut won, mut short, mut other, mut latencies) = (0, 0, 0, Vec::new());
                for n in (worker..HOT_ATTEMPTS).step_by(HOT_CONCURRENCY) {
                    let body = serde_json::to_vec(&serde_json::json!({
                        "idempotency_key": format!("bench-{n}"), "owner": format!("shopper-{n}"),
                        "lines": [{"sku": "HOT-SKU", "quantity": 1}], "ttl_seconds": 900,
                    }))?;
                    let mut request = client.post(&url).header("content-type", "application/json");
                    for (name, value) in key.signed(path, &body) {
                        request = request.header(name, value);
                    }
                    let sent = Instant::now();
                    let response = request.body(body).send().await?;
                    latencies.push(sent.elapsed());
                    match response.status().as_u16() {
                        201 => won += 1,
                        409 if response.text().await?.contains("insufficient_stock") => short += 1,
                        _ => other += 1,
                    }
                }
                anyhow::Ok((won, short, other, latencies))
            })
        })
        .collect();
    let mut result = HotResult { seconds: 0.0, won: 0, short: 0, other: 0, latencies: Vec::new() };
    for worker in workers {
        let (won, short, other, latencies) = worker.await??;
        result.won += won;
        result.short += short;
        result.other += other;
        result.latencies.extend(latencies);
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.latencies.sort();
    Ok(result)
}

/// `tessera inventory verify` on the benchmark's database.
fn verify(binary: &Path, data: &Path, extra: &[(&str, String)]) -> Result<String> {
    let mut command = Command::new(binary);
    command.args(["inventory", "verify"]).env("TESSERA_DATA_DIR", data).env("TESSERA_LOG", "error");
    for (key, value) in extra {
        command.env(key, value);
    }
    let output = command.output().context("running tessera inventory verify")?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        bail!("inventory invariants broken after the benchmark: {text}");
    }
    Ok(text)
}

/// Runs the inventory benchmarks on every configured backend and prints one table per measurement.
pub fn inventory(binary: &Path, site: &Path, scratch: &Path, seconds: u64) -> Result<()> {
    let mut backends: Vec<(&str, Vec<(&str, String)>)> = vec![("SQLite", Vec::new())];
    let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty());
    let prefix = format!("tessera_bench_{}_", std::process::id());
    if let Some(url) = &postgres {
        backends.push(("PostgreSQL", vec![("TESSERA_POSTGRES_URL", url.clone()), ("TESSERA_SCHEMA_PREFIX", prefix.clone())]));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(64).build()?;
    let mut hot_rows = Vec::new();
    let mut page_rows = Vec::new();
    for (label, backend) in &backends {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let data = scratch.join(format!("inventory-{}", label.to_lowercase()));
        let mut env = backend.clone();
        let key = std::sync::Arc::new(CartKey::new()?);
        env.push(("TESSERA_SERVICE_KEYS__CART", STANDARD.encode(&key.pkcs8)));
        env.push(("TESSERA_PUBLIC_URL", url.clone()));
        let server = start_server(binary, site, &data, port, &env, &["--demo"])?;
        println!("bench: inventory on {label}: one hot SKU, then {SKUS} SKUs…");
        let hot = runtime.block_on(async {
            let cookie = sign_in_admin(&client, &url).await?;
            stock(&client, &url, &cookie, vec!["HOT-SKU".to_owned()], HOT_UNITS, 1).await?;
            hot_sku(&client, &url, key).await
        })?;
        let checked = verify(binary, &data, backend)?;
        if hot.won as i64 != HOT_UNITS || hot.other != 0 {
            bail!("{label}: {} reservations won for {HOT_UNITS} units ({} other answers)", hot.won, hot.other);
        }
        hot_rows.push((label.to_string(), hot, checked));

        let pages = runtime.block_on(admin_pages(&client, &url, seconds))?;
        page_rows.push((label.to_string(), pages));
        drop(server);
    }
    if postgres.is_some() {
        crate::bench_support::drop_bench_schemas(&postgres.unwrap_or_default(), &prefix);
    }
    print_tables(&hot_rows, &page_rows, seconds);
    Ok(())
}

/// Each admin page's figures: the time seeding took, then (page, result) per page.
type PageRows = (Duration, Vec<(&'static str, LoadResult)>);

/// Seeds the SKUs through the admin API, then loads each admin page for `seconds`.
async fn admin_pages(client: &reqwest::Client, url: &str, seconds: u64) -> Result<PageRows> {
    let cookie = sign_in_admin(client, url).await?;
    let skus: Vec<String> = (0..SKUS).map(|n| format!("BENCH-{n:05}")).collect();
    let started = Instant::now();
    stock(client, url, &cookie, skus, 1 + (SKUS as i64 % 40), 16).await?;
    let seeded = started.elapsed();
    // A fresh sign-in: the page loads below send this cookie unchanged for their whole run.
    let cookie = sign_in_admin(client, url).await?;
    let mut rows = Vec::new();
    for (what, path) in [
        ("stock table, page 1 by SKU", "/admin/inventory"),
        ("stock table, sorted by available, page 100", "/admin/inventory?sort=available&desc=true&page=100"),
        ("stock table, search + low-stock filter", "/admin/inventory?q=BENCH-09&low=true"),
        ("SKU page (ledger, chart, forms)", "/admin/inventory/sku/BENCH-04242"),
    ] {
        let target = format!("{url}{path}");
        load(target.clone(), 4, Duration::from_millis(300), Some(cookie.clone())).await;
        rows.push((what, load(target, 4, Duration::from_secs(seconds), Some(cookie.clone())).await));
    }
    Ok((seeded, rows))
}

/// The hot-SKU table (with `tessera inventory verify` afterwards) and the admin pages' table.
fn print_tables(hot_rows: &[(String, HotResult, String)], page_rows: &[(String, PageRows)], seconds: u64) {
    println!();
    println!("| hot SKU: {HOT_ATTEMPTS} one-unit soft reservations of {HOT_UNITS} units, {HOT_CONCURRENCY} concurrent signed calls, release | attempts/s | p50 ms | p99 ms | won | refused (insufficient) | oversold |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (label, hot, _) in hot_rows {
        let percentile = |p: f64| hot.latencies[((hot.latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
        println!(
            "| {label} | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
            HOT_ATTEMPTS as f64 / hot.seconds,
            percentile(0.5),
            percentile(0.99),
            hot.won,
            hot.short,
            hot.won as i64 - HOT_UNITS.min(hot.won as i64)
        );
    }
    for (label, _, checked) in hot_rows {
        println!("| {label}: `tessera inventory verify` afterwards | {checked} |||||");
    }
    println!();
    println!("| admin pages with {SKUS} SKUs (+ demo), 4 connections, {seconds} s each, release | req/s | p50 ms | p99 ms | errors |");
    println!("|---|--:|--:|--:|--:|");
    for (label, (seeded, rows)) in page_rows {
        for (what, result) in rows {
            print_row(&format!("{label}: {what}"), result);
        }
        println!("| {label}: seeding {SKUS} SKUs through the admin API (16 concurrent) took | {:.1} s ||||", seeded.as_secs_f64());
    }
}
