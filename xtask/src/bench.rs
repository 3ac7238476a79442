//! `cargo xtask bench`: the numbers the closing notes report, measured side by side in one run.
//!
//! - build time of one fragment's bundle, cold (fresh target dir) and incremental (one source file touched);
//! - release bundle sizes per fragment: raw, gzip (level 9) and brotli (quality 11);
//! - bytes on the wire for a first visit to `/catalog`, uncompressed against gzip and brotli (`weight.rs`);
//! - navigation → hydrated and largest contentful paint in Chromium, warm and on an emulated slow first
//!   visit with and without compression (`end2end/bench-browser.mjs`);
//! - requests/s and latency of `/catalog` composed by the shell (in process, and over HTTP to a separate
//!   catalog process) against the same page served directly by the catalog process, all in one run
//!   against release binaries on loopback;
//! - the inventory's hot-SKU reservations/s and admin page latency with 10,000 SKUs (`bench_inventory`);
//! - the catalog's listing and search latency with 10,000 products (`bench_catalog`);
//! - checkouts/s end to end (`bench_checkout`);
//! - requests served and failed during a rolling redeploy of the catalog and of the cart
//!   (`end2end/bench-rollout.mjs`, the same code as the rollout test, on release binaries);
//! - events/s and commit-to-effect latency over NATS JetStream against HTTP, and checkouts/s with 1 and
//!   2 instances of every process, on PostgreSQL (`end2end/bench-scaleout.mjs`, the fault test's cluster).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_contracts::manifest::{FragmentManifest, MANIFEST_FILE};

use crate::bench_support::{free_port, load, start_server};
use crate::{build_fragment, cargo, fragments, run, setup, WasmProfile, Workspace};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of load per page variant.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Skip the cold/incremental build measurement (it needs a second, fresh target dir).
    #[arg(long)]
    skip_build_times: bool,
    /// Run only one part of the load benchmarks: `transfer` (bytes on the wire per encoding), `browser`
    /// (navigation → hydrated and LCP in Chromium, warm and on a slow first visit), `site`,
    /// `inventory`, `catalog`, `checkout`, `rollout`,
    /// `dev` (how long an edit takes to show in `cargo xtask dev`), `scaleout` (events over NATS
    /// against HTTP, checkouts/s with 1 and 2 instances of every process) or `events` (stock changes from
    /// commit to the catalog's effect on the embedded default, beside `--before`'s figures) or `soak`
    /// (the soak at 60 and 180 actions/s on SQLite and PostgreSQL, one table).
    #[arg(long)]
    only: Option<String>,
    /// An earlier commit's release build: for `events` its `tessera` binary, for `scaleout` the directory
    /// of its deployables' binaries. That part runs it too, on the same load, and prints both side by
    /// side (before, after).
    #[arg(long)]
    before: Option<PathBuf>,
    /// Minutes of each soak in `--only soak` (60 and 180 actions/s, SQLite and PostgreSQL).
    #[arg(long, default_value_t = 2)]
    soak_minutes: u64,
}

pub fn bench(workspace: &Workspace, args: BenchArgs) -> Result<()> {
    setup::ensure_wasm_target()?;
    setup::ensure_npm_packages(workspace)?;
    if !args.skip_build_times {
        build_times(workspace)?;
    }
    for fragment in fragments(workspace)? {
        build_fragment(workspace, &fragment, WasmProfile::Release)?;
    }
    sizes(workspace)?;
    throughput(workspace, &args)
}

fn build_times(workspace: &Workspace) -> Result<()> {
    let catalog = &crate::fragment_by_name(workspace, "catalog")?;
    let cold_target = workspace.target.join("bench-cold");
    let _ = std::fs::remove_dir_all(&cold_target);
    let cold = Workspace { root: workspace.root.clone(), target: cold_target.clone() };
    println!("bench: cold build of the catalog bundle in a fresh target dir (wasm-release, bindgen, wasm-opt)…");
    let started = Instant::now();
    build_fragment(&cold, catalog, WasmProfile::Release)?;
    let cold_seconds = started.elapsed().as_secs_f64();

    let source = workspace.root.join("fragments/catalog/src/lib.rs");
    let touch = || -> Result<()> {
        let file = std::fs::OpenOptions::new().append(true).open(&source)?;
        file.set_modified(std::time::SystemTime::now())?;
        Ok(())
    };
    touch()?;
    let started = Instant::now();
    build_fragment(&cold, catalog, WasmProfile::Release)?;
    let incremental_release = started.elapsed().as_secs_f64();
    touch()?;
    let started = Instant::now();
    build_fragment(&cold, catalog, WasmProfile::Dev)?;
    let dev_after_deps = started.elapsed().as_secs_f64();
    touch()?;
    let started = Instant::now();
    build_fragment(&cold, catalog, WasmProfile::Dev)?;
    let incremental_dev = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&cold_target);

    println!();
    println!("| catalog bundle build ({} cores)            | seconds |", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("|---------------------------------------------|--------:|");
    println!("| cold, release (fresh target dir)            | {cold_seconds:>7.1} |");
    println!("| incremental, release (lib.rs touched)       | {incremental_release:>7.1} |");
    println!("| dev, first build (deps of dev not yet built)| {dev_after_deps:>7.1} |");
    println!("| incremental, dev (lib.rs touched)           | {incremental_dev:>7.1} |");
    println!();
    Ok(())
}

fn sizes(workspace: &Workspace) -> Result<()> {
    println!("| release bundle | file | raw B | gzip -9 B | brotli 11 B |");
    println!("|---|---|--:|--:|--:|");
    for fragment in fragments(workspace)? {
        let bundle = workspace.site_dir().join(&fragment.name);
        let manifest: FragmentManifest = serde_json::from_slice(&std::fs::read(bundle.join(MANIFEST_FILE))?)?;
        let mut totals = (0, 0, 0);
        for asset in &manifest.assets {
            // The variants the release build wrote beside each file: what the server sends.
            let (raw, gzip, brotli) = crate::weight::encoded_sizes(&bundle.join(&asset.path))?;
            totals = (totals.0 + raw, totals.1 + gzip, totals.2 + brotli);
            println!("| {} | {:?} | {raw} | {gzip} | {brotli} |", fragment.name, asset.kind);
        }
        println!("| {} | **total** | {} | {} | {} |", fragment.name, totals.0, totals.1, totals.2);
    }
    println!();
    Ok(())
}

/// Sequential sign-ins with the right password: the argon2id verification dominates.
async fn login_latency(shell_url: &str) -> Result<()> {
    const SIGN_INS: usize = 40;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut latencies = Vec::with_capacity(SIGN_INS);
    for _ in 0..SIGN_INS {
        let started = Instant::now();
        let response = client
            .post(format!("{shell_url}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("email=shopper%40example.com&password={}", tessera_contracts::demo::PASSWORD))
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::SEE_OTHER {
            bail!("sign-in answered {}", response.status());
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("| sign-in, argon2id m=19456 KiB t=2 p=1 (OWASP minimum), {SIGN_INS} sequential, release | p50 ms | p90 ms | max ms |");
    println!("|---|--:|--:|--:|");
    println!(
        "| POST /login, right password (session + tokens issued) | {:.1} | {:.1} | {:.1} |",
        ms(latencies[SIGN_INS / 2]),
        ms(latencies[SIGN_INS * 9 / 10]),
        ms(latencies[SIGN_INS - 1])
    );
    Ok(())
}

/// What [`event_figures`] measured.
struct EventFigures {
    committed: Duration,
    consumed: Duration,
    burst: serde_json::Value,
    steady: serde_json::Value,
}

const EVENT_CHANGES: usize = 2000;
const EVENT_CONCURRENCY: usize = 16;
const EVENT_SEQUENTIAL: usize = 200;

/// Stock changes through the real path: admin server function → inventory transaction with its outbox
/// row → relay → signed delivery → catalog inbox and projection, all on SQLite in one process.
async fn event_throughput(shell_url: &str) -> Result<()> {
    let figures = event_figures(shell_url).await?;
    print_event_figures(&[("", figures)]);
    Ok(())
}

/// The events table, a column per run.
fn print_event_figures(runs: &[(&str, EventFigures)]) {
    let columns: Vec<&str> = runs.iter().map(|(label, _)| if label.is_empty() { "value" } else { label }).collect();
    let row = |what: String, cell: &dyn Fn(&EventFigures) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, figures)| cell(figures)).collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    println!();
    println!("| events: {EVENT_CHANGES} stock changes, {EVENT_CONCURRENCY} concurrent admins, SQLite, one process, release | {} |", columns.join(" | "));
    println!("|---|{}", "--:|".repeat(columns.len()));
    row("all committed (outbox rows written) after".into(), &|f| format!("{:.2} s", f.committed.as_secs_f64()));
    row("all applied by the catalog (inbox + projection) after".into(), &|f| format!("{:.2} s", f.consumed.as_secs_f64()));
    row("events/s, commit to consumer effect".into(), &|f| format!("{:.0}", EVENT_CHANGES as f64 / f.consumed.as_secs_f64()));
    row("commit → effect latency during the burst, p50 / p99 / max".into(), &|f| format!("{} / {} / {} ms", f.burst["p50"], f.burst["p99"], f.burst["max"]));
    row(format!("commit → effect latency, {EVENT_SEQUENTIAL} changes one at a time, p50 / p99 / max"), &|f| {
        format!("{} / {} / {} ms", f.steady["p50"], f.steady["p99"], f.steady["max"])
    });
}

/// `--only events`: [`event_figures`] on a fresh embedded site of each binary, one after the other,
/// printed side by side.
fn events_before_after(binary: &Path, before: Option<&Path>, site: &Path, data: &dyn Fn(&str) -> PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut runs = Vec::new();
    for (label, binary) in before.map(|before| ("before", before)).into_iter().chain([("after", binary)]) {
        println!("bench: events, {label}: {}", binary.display());
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let env = [("TESSERA_PUBLIC_URL", url.clone()), ("TESSERA_DEMO_EXTRA_PRODUCTS", "0".to_owned())];
        let server = start_server(binary, site, &data(&format!("events-{label}")), port, &env, &["--demo"])?;
        let figures = runtime.block_on(event_figures(&url))?;
        drop(server);
        runs.push((label, figures));
    }
    print_event_figures(&runs);
    Ok(())
}

/// Runs the events load against the site at `shell_url` and reads the catalog's own figures.
async fn event_figures(shell_url: &str) -> Result<EventFigures> {
    const CHANGES: usize = EVENT_CHANGES;
    const CONCURRENCY: usize = EVENT_CONCURRENCY;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let cookie = crate::bench_support::sign_in_admin(&client, shell_url).await?;
    let status = |client: reqwest::Client, cookie: String| {
        let url = format!("{shell_url}/catalog/events/status");
        async move {
            let status: serde_json::Value = client.get(url).header("cookie", cookie).send().await?.json().await?;
            anyhow::Ok(status)
        }
    };
    let skus: Vec<&str> = tessera_contracts::demo::PRODUCTS.iter().map(|product| product.sku).collect();
    // Steady state first: one change at a time, so the latency is the platform's, not a queue's.
    const SEQUENTIAL: usize = EVENT_SEQUENTIAL;
    for n in 0..SEQUENTIAL {
        let response = client
            .post(format!("{shell_url}/admin/inventory/api/adjust_stock"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("sku={}&delta=1", skus[n % skus.len()]))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("adjust_stock answered {}", response.status());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = status(client.clone(), cookie.clone()).await?;
    let before = steady["received"].as_i64().unwrap_or_default();
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let client = client.clone();
            let cookie = cookie.clone();
            let url = format!("{shell_url}/admin/inventory/api/adjust_stock");
            let skus = skus.clone();
            tokio::spawn(async move {
                for n in (worker..CHANGES).step_by(CONCURRENCY) {
                    // Receipts only: concurrent removals could meet an empty shelf (a 409, correctly).
                    let body = format!("sku={}&delta=1", skus[n % skus.len()]);
                    let response =
                        client.post(&url).header("cookie", &cookie).header("content-type", "application/x-www-form-urlencoded").body(body).send().await?;
                    if !response.status().is_success() {
                        bail!("adjust_stock answered {}", response.status());
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let committed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let current = status(client.clone(), cookie.clone()).await?;
        if current["received"].as_i64().unwrap_or_default() >= before + CHANGES as i64 {
            break current;
        }
        if Instant::now() > deadline {
            bail!("the catalog received only {} of {CHANGES} events", current["received"].as_i64().unwrap_or_default() - before);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let consumed = started.elapsed();
    Ok(EventFigures { committed, consumed, burst: last["latency_ms"].clone(), steady: steady["latency_ms"].clone() })
}

fn throughput(workspace: &Workspace, args: &BenchArgs) -> Result<()> {
    println!("bench: building the release server…");
    run(cargo(workspace).args(["build", "--release", "--package", "tessera-site", "--bin", "tessera"]))?;
    let binary = workspace.server_binary(true);
    let site = workspace.site_dir();
    let scratch = workspace.target.join("bench-data");
    let _ = std::fs::remove_dir_all(&scratch);
    let data = |name: &str| -> PathBuf { scratch.join(name) };

    let part = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    if part("transfer") {
        crate::weight::transfer(&binary, &site, &scratch)?;
    }
    if part("browser") {
        browser(workspace, &binary, &site)?;
    }
    if part("site") {
        site_benches(&binary, &site, &data, args)?;
    }
    if part("inventory") {
        crate::bench_inventory::inventory(&binary, &site, &scratch, args.seconds)?;
    }
    if part("catalog") {
        crate::bench_catalog::catalog(&binary, &site, &scratch, args.seconds, args.concurrency)?;
    }
    if part("checkout") {
        crate::bench_checkout::checkout(&binary, &site, &scratch, args.seconds)?;
    }
    if part("rollout") {
        rollout(workspace, args.seconds)?;
    }
    if part("dev") {
        dev_loop(workspace)?;
    }
    if part("scaleout") {
        scaleout(workspace, args.seconds, args.before.as_deref().filter(|_| args.only.as_deref() == Some("scaleout")))?;
    }
    if args.only.as_deref() == Some("soak") {
        crate::soak::bench_figures(workspace, args.soak_minutes)?;
    }
    if args.only.as_deref() == Some("events") {
        events_before_after(&binary, args.before.as_deref(), &site, &data)?;
    }
    println!();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// How soon pages are interactive in Chromium (`end2end/bench-browser.mjs`, the release binary).
fn browser(workspace: &Workspace, binary: &Path, site: &Path) -> Result<()> {
    setup::ensure_chromium()?;
    println!();
    run(Command::new("node").arg("bench-browser.mjs").env("TESSERA_BIN", binary).env("TESSERA_SITE_DIR", site).current_dir(workspace.end2end()))
}

/// Requests served and failed while two instances of the catalog, then of the cart, are replaced one
/// after the other by another build (`end2end/bench-rollout.mjs`, release binaries of each deployable).
fn rollout(workspace: &Workspace, seconds: u64) -> Result<()> {
    println!("bench: building the release binaries of every deployable…");
    crate::build_binaries(workspace, true)?;
    println!();
    run(Command::new("node")
        .arg("bench-rollout.mjs")
        .arg(workspace.binary("", true))
        .arg(workspace.site_dir())
        .arg(seconds.max(2).to_string())
        .current_dir(workspace.end2end()))
}

/// Events over HTTP (polling and CDC relays) and NATS, and checkouts/s with 1 and 2 instances of every process, on PostgreSQL
/// and NATS (`TESSERA_TEST_POSTGRES_URL`, `TESSERA_TEST_NATS_URL`, the local servers by default),
/// release binaries (`end2end/bench-scaleout.mjs`).
fn scaleout(workspace: &Workspace, seconds: u64, before: Option<&Path>) -> Result<()> {
    println!("bench: building the release binaries of every deployable…");
    crate::build_binaries(workspace, true)?;
    let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nats = std::env::var("TESSERA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    println!();
    let mut command = Command::new("node");
    command.arg("bench-scaleout.mjs").arg(workspace.binary("", true)).arg(workspace.site_dir()).arg(seconds.max(2).to_string()).arg(postgres).arg(nats);
    if let Some(before) = before {
        command.arg(before);
    }
    run(command.current_dir(workspace.end2end()))
}

/// How long an edit takes to show in `cargo xtask dev catalog`: runs the dev loop on free ports, touches a
/// catalog source file once the loop watches, and reads the loop's own measurement (change seen → new
/// process ready: rebuild of the dev bundle and `tessera-catalog`, drain, start).
fn dev_loop(workspace: &Workspace) -> Result<()> {
    use std::io::BufRead;
    let (fragment_port, site_port) = (free_port()?, free_port()?);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["dev", "catalog", "--restarts", "1", "--port", &fragment_port.to_string(), "--site", &format!("127.0.0.1:{site_port}")])
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &workspace.target)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo xtask dev")?;
    let stdout = child.stdout.take().context("the dev loop's output")?;
    let source = workspace.root.join("fragments/catalog/src/pages.rs");
    let mut live = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if line.contains("watching its sources") {
            // A save a moment later, as a person would make it (and past any coarse mtime granularity).
            std::thread::sleep(Duration::from_secs(1));
            std::fs::OpenOptions::new().append(true).open(&source)?.set_modified(std::time::SystemTime::now())?;
        }
        if let Some(rest) = line.split("the edit is live after ").nth(1) {
            live = Some(rest.trim_end_matches('.').to_owned());
        }
    }
    let status = child.wait()?;
    let live = live.with_context(|| format!("the dev loop ended ({status}) before an edit went live"))?;
    println!();
    println!("| cargo xtask dev catalog, 2 cores, warm target dir | from save to live at the site |");
    println!("|---|---|");
    println!("| a catalog source file saved (pages.rs) | {live} |");
    Ok(())
}

/// Sign-in latency, events/s and `/catalog` composed vs direct, on the classic eight demo products (so the
/// figures compare with earlier runs; the catalog bench covers a large catalogue).
fn site_benches(binary: &Path, site: &Path, data: &dyn Fn(&str) -> PathBuf, args: &BenchArgs) -> Result<()> {
    let binary = binary.to_path_buf();
    let site = site.to_path_buf();
    let small = ("TESSERA_DEMO_EXTRA_PRODUCTS", "0".to_owned());
    let (site_port, catalog_port, remote_shell_port) = (free_port()?, free_port()?, free_port()?);
    let shell_url = format!("http://127.0.0.1:{site_port}");
    let _site = start_server(&binary, &site, &data("site"), site_port, &[("TESSERA_PUBLIC_URL", shell_url.clone()), small.clone()], &["--demo"])?;
    let _catalog = start_server(
        &binary,
        &site,
        &data("catalog"),
        catalog_port,
        &[("TESSERA_JWKS_URL", format!("{shell_url}/.well-known/jwks.json")), small.clone()],
        &["--demo", "--fragment", "catalog"],
    )?;
    let _remote_shell = start_server(
        &binary,
        &site,
        &data("remote-shell"),
        remote_shell_port,
        &[("TESSERA_FRAGMENTS__CATALOG__UPSTREAM", format!("http://127.0.0.1:{catalog_port}")), small],
        &["--demo"],
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(login_latency(&shell_url))?;
    runtime.block_on(event_throughput(&shell_url))?;
    let duration = Duration::from_secs(args.seconds);
    let variants = [
        ("direct: catalog process serves /catalog", format!("http://127.0.0.1:{catalog_port}/catalog")),
        ("composed: shell + in-process catalog", format!("{shell_url}/catalog")),
        ("composed: shell → catalog over HTTP", format!("http://127.0.0.1:{remote_shell_port}/catalog")),
    ];
    println!();
    println!(
        "| /catalog, {} connections, {} s each, release build, load generator on the same {} cores | req/s | p50 ms | p99 ms | errors |",
        args.concurrency,
        args.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("|---|--:|--:|--:|--:|");
    for (label, url) in variants {
        // Warm up connections and caches first.
        runtime.block_on(load(url.clone(), args.concurrency, Duration::from_millis(500), None));
        let result = runtime.block_on(load(url, args.concurrency, duration, None));
        crate::bench_support::print_row(label, &result);
    }
    println!();
    Ok(())
}
