//! `cargo xtask soak --minutes N`: the whole site under a steady, mixed load for a long while, to find
//! what short benchmarks cannot — errors that need time (expired tokens, rotated refresh cookies, held
//! stock running out, lapsing holds, growing tables) and memory that only goes up.
//!
//! The release `tessera` binary serves the demo site on SQLite (the embedded default; `--postgres` uses
//! `TESSERA_TEST_POSTGRES_URL`). Registered shoppers and one staff member act at a fixed rate (open loop:
//! an action starts every `1/rate` seconds on a shopper who is idle, whatever the server's speed): browse
//! the listing and categories, search, open products, the home page and the cart, add to cart, check out
//! and pay at the sandbox until the order reads paid, and staff receive stock and read the stock pages.
//! Every response updates its user's cookies (the access token expires every few minutes and the refresh
//! token rotates, as in a browser).
//!
//! Reported: requests, 4xx and 5xx and p50/p99 per route; the server's resident memory each minute and
//! its slope after a warm-up. The soak fails on any 5xx or transport error, and when memory keeps growing
//! (after the first third, by more than 1 % of its level per minute).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench_support::{free_port, start_server};
use crate::{build_fragment, cargo, fragments, run, setup, WasmProfile, Workspace};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Actions started per second (each one to a few requests).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Registered shoppers taking turns (at most 20: registrations are throttled per address).
    #[arg(long, default_value_t = 16)]
    shoppers: usize,
    /// Run on PostgreSQL (`TESSERA_TEST_POSTGRES_URL`) instead of SQLite.
    #[arg(long)]
    postgres: bool,
}

/// A user's cookies, kept the way a browser keeps them.
#[derive(Default)]
struct Jar(Mutex<BTreeMap<String, String>>);

impl Jar {
    fn header(&self) -> String {
        self.0.lock().unwrap().iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    fn update(&self, response: &reqwest::Response) {
        let mut cookies = self.0.lock().unwrap();
        for value in response.headers().get_all("set-cookie").iter().filter_map(|value| value.to_str().ok()) {
            let pair = value.split(';').next().unwrap_or_default();
            let Some((name, cookie)) = pair.split_once('=') else { continue };
            let expired = value.to_ascii_lowercase().contains("max-age=0");
            if expired || cookie.is_empty() {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_owned(), cookie.to_owned());
            }
        }
    }
}

/// What one route saw.
#[derive(Default)]
struct RouteStats {
    latencies: Vec<Duration>,
    client_errors: usize,
    server_errors: usize,
    transport_errors: usize,
    first_failure: Option<String>,
}

#[derive(Default)]
struct Stats(Mutex<BTreeMap<&'static str, RouteStats>>);

impl Stats {
    fn record(&self, route: &'static str, started: Instant, outcome: &std::result::Result<u16, String>) {
        let mut routes = self.0.lock().unwrap();
        let stats = routes.entry(route).or_default();
        stats.latencies.push(started.elapsed());
        match outcome {
            Ok(status) if *status >= 500 => {
                stats.server_errors += 1;
                stats.first_failure.get_or_insert(format!("answered {status}"));
            }
            Ok(status) if *status >= 400 => stats.client_errors += 1,
            Ok(_) => {}
            Err(error) => {
                stats.transport_errors += 1;
                stats.first_failure.get_or_insert(error.clone());
            }
        }
    }
}

/// One user of the site: a client, its cookies, and whether an action of theirs is running.
struct User {
    client: reqwest::Client,
    url: String,
    jar: Jar,
    busy: std::sync::atomic::AtomicBool,
    stats: Arc<Stats>,
}

enum Body {
    None,
    Form(String),
}

impl User {
    /// One request as the user's browser would send it; records it under `route`.
    async fn request(&self, route: &'static str, method: reqwest::Method, path: &str, body: Body) -> Result<(u16, String)> {
        let started = Instant::now();
        let mut request = self.client.request(method, format!("{}{path}", self.url)).header("cookie", self.jar.header());
        if let Body::Form(form) = body {
            request = request.header("content-type", "application/x-www-form-urlencoded").body(form);
        }
        let failure = match request.send().await {
            Ok(response) => {
                self.jar.update(&response);
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(text) => {
                        self.stats.record(route, started, &Ok(status));
                        return Ok((status, text));
                    }
                    Err(error) => format!("reading the answer: {error}"),
                }
            }
            Err(error) => error.to_string(),
        };
        self.stats.record(route, started, &Err(failure.clone()));
        bail!("{route}: {failure}")
    }

    async fn get(&self, route: &'static str, path: &str) -> Result<(u16, String)> {
        self.request(route, reqwest::Method::GET, path, Body::None).await
    }

    async fn post(&self, route: &'static str, path: &str, form: String) -> Result<(u16, serde_json::Value)> {
        let (status, text) = self.request(route, reqwest::Method::POST, path, Body::Form(form)).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)))
    }
}

/// What the site offers to act on: product pages, categories, SKUs, search words.
struct Catalogue {
    products: Vec<String>,
    categories: Vec<String>,
    skus: Vec<String>,
}

const WORDS: [&str; 8] = ["mug", "blue", "tee", "pen", "bag", "stone", "canvas", "organic"];

/// Every `href="<prefix>…"` in a page, without duplicates.
fn links(html: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.starts_with(prefix) && !href.contains('?'))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A small xorshift generator: the mix only needs to be varied, and xtask has no `rand`.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Browse,
    Category,
    Search,
    Product,
    Home,
    CartPage,
    Add,
    Checkout,
    Receive,
    StockPages,
}

/// The mix, by weight: mostly reading, some buying, a little staff work.
const MIX: [(Action, usize); 10] = [
    (Action::Browse, 20),
    (Action::Category, 8),
    (Action::Search, 14),
    (Action::Product, 20),
    (Action::Home, 8),
    (Action::CartPage, 6),
    (Action::Add, 10),
    (Action::Checkout, 6),
    (Action::Receive, 4),
    (Action::StockPages, 4),
];

/// The action of the mix at `roll` (below the weights' sum).
fn pick_action(mut roll: usize) -> Action {
    for (action, weight) in MIX {
        if roll < weight {
            return action;
        }
        roll -= weight;
    }
    Action::Browse
}

async fn act(action: Action, user: &User, catalogue: &Catalogue, roll: usize) -> Result<()> {
    let pick = |list: &[String]| list[roll % list.len()].clone();
    match action {
        Action::Browse => {
            user.get("GET /catalog", &format!("/catalog?page={}", 1 + roll % 5)).await?;
        }
        Action::Category => {
            user.get("GET /catalog/c/{slug}", &pick(&catalogue.categories)).await?;
        }
        Action::Search => {
            user.get("GET /catalog?q=", &format!("/catalog?q={}&sort=relevance", WORDS[roll % WORDS.len()])).await?;
        }
        Action::Product => {
            user.get("GET /catalog/p/{id}", &pick(&catalogue.products)).await?;
        }
        Action::Home => {
            user.get("GET /", "/").await?;
        }
        Action::CartPage => {
            user.get("GET /cart", "/cart").await?;
        }
        Action::Add => {
            let sku = pick(&catalogue.skus);
            user.post("POST /cart/api/add_item", "/cart/api/add_item", format!("sku={sku}&quantity=1")).await?;
        }
        Action::Checkout => checkout(user, &pick(&catalogue.skus)).await?,
        Action::Receive => {
            let sku = pick(&catalogue.skus);
            let form = format!("sku={sku}&movement=receive&quantity=5&new_sku=false");
            user.post("POST /admin/inventory/api/record_movement", "/admin/inventory/api/record_movement", form).await?;
        }
        Action::StockPages => {
            user.get("GET /admin/inventory", &format!("/admin/inventory?page={}", 1 + roll % 3)).await?;
            user.get("GET /admin/inventory/sku/{sku}", &format!("/admin/inventory/sku/{}", pick(&catalogue.skus))).await?;
        }
    }
    Ok(())
}

/// Add, place, pay at the sandbox, and wait until the order reads paid (the webhook arrived).
async fn checkout(user: &User, sku: &str) -> Result<()> {
    let (status, _) = user.post("POST /cart/api/add_item", "/cart/api/add_item", format!("sku={sku}&quantity=1")).await?;
    if status != 200 {
        return Ok(()); // Out of stock or a full cart: a 4xx the mix counts; nothing to check out.
    }
    let (status, form) = user.post("POST /cart/api/checkout", "/cart/api/checkout", String::new()).await?;
    let Some(key) = form["key"].as_str().filter(|_| status == 200) else { return Ok(()) };
    let address = "name=Soak+Shopper&street=1+Long+Lane&city=Berlin&postcode=10115&country=DE&shipping=standard";
    let (status, placed) = user.post("POST /cart/api/place_order", "/cart/api/place_order", format!("key={key}&{address}")).await?;
    let (Some(pay_url), Some(order_id)) = (placed["pay_url"].as_str(), placed["order_id"].as_str()) else {
        if status < 500 {
            return Ok(()); // Refused (stock went meanwhile): the cart says why, in a 4xx.
        }
        bail!("placing an order answered {status}: {placed}");
    };
    let (pay_url, order_id) = (pay_url.to_owned(), order_id.to_owned());
    user.request("POST /sandbox-pay/pay/{id}", reqwest::Method::POST, &pay_url, Body::Form("card_number=4242424242424242&expiry=12%2F39&cvc=123".into()))
        .await?;
    let started = Instant::now();
    loop {
        let (_, order) = user.post("POST /cart/api/order", "/cart/api/order", format!("id={order_id}")).await?;
        if order["status"] == "Paid" {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("order {order_id} not paid after 60 s: {order}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of a process, in KiB (`VmRSS` in `/proc/<pid>/status`).
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")).and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Least-squares slope of `samples` (KiB per sample interval).
fn slope(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = samples.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = samples.iter().map(|(_, y)| *y as f64).sum::<f64>() / n;
    let covariance: f64 = samples.iter().map(|(x, y)| (x - mean_x) * (*y as f64 - mean_y)).sum();
    let variance: f64 = samples.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

pub fn soak(workspace: &Workspace, args: &SoakArgs) -> Result<()> {
    soak_once(workspace, args)?.verdict()
}

/// One soak (building what it needs first), its figures printed and returned.
pub fn soak_once(workspace: &Workspace, args: &SoakArgs) -> Result<Summary> {
    setup::ensure_wasm_target()?;
    setup::ensure_npm_packages(workspace)?;
    for fragment in fragments(workspace)? {
        build_fragment(workspace, &fragment, WasmProfile::Release)?;
    }
    println!("soak: building the release server…");
    run(cargo(workspace).args(["build", "--release", "--package", "tessera-site", "--bin", "tessera"]))?;
    let scratch = workspace.target.join("soak-data");
    let _ = std::fs::remove_dir_all(&scratch);
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut env = vec![("TESSERA_PUBLIC_URL", url.clone())];
    if args.postgres {
        let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").context("--postgres needs TESSERA_TEST_POSTGRES_URL")?;
        env.push(("TESSERA_POSTGRES_URL", postgres));
        env.push(("TESSERA_SCHEMA_PREFIX", format!("soak{}_", std::process::id())));
    }
    let server = start_server(&workspace.server_binary(true), &workspace.site_dir(), &scratch, port, &env, &["--demo"])?;
    let pid = server.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(drive(&url, pid, args));
    if args.postgres {
        crate::bench_support::drop_bench_schemas(&std::env::var("TESSERA_TEST_POSTGRES_URL")?, &format!("soak{}_", std::process::id()));
    }
    drop(server);
    outcome
}

/// `cargo xtask bench --only soak`: the soak at three and nine times its default rate (60 and 180
/// actions/s), on SQLite and on PostgreSQL (when `TESSERA_TEST_POSTGRES_URL` is set), `minutes` each,
/// in one table.
pub fn bench_figures(workspace: &Workspace, minutes: u64) -> Result<()> {
    let mut runs = Vec::new();
    let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty());
    if !postgres {
        println!("bench: TESSERA_TEST_POSTGRES_URL is not set: the soak runs on SQLite only");
    }
    for on_postgres in [false, true].into_iter().filter(|&on_postgres| postgres || !on_postgres) {
        for rate in [60.0, 180.0] {
            let args = SoakArgs { minutes, rate, shoppers: 16, postgres: on_postgres };
            let summary = soak_once(workspace, &args)?;
            runs.push((if on_postgres { "PostgreSQL" } else { "SQLite" }, rate, summary));
        }
    }
    println!();
    println!("| soak, {minutes} min each, release `tessera --demo`, 16 shoppers + 1 staff | requests/s | 4xx | 5xx + transport | failed actions | slowest route, p99 | memory slope |");
    println!("|---|--:|--:|--:|--:|---|--:|");
    for (backend, rate, summary) in &runs {
        println!(
            "| {backend}, {rate:.0} actions/s | {:.1} | {} | {} | {} | {} {:.0} ms | {} |",
            summary.requests as f64 / summary.elapsed.max(1.0),
            summary.client_errors,
            summary.server_errors,
            summary.failed_actions,
            summary.slowest.0,
            summary.slowest.1,
            summary.memory_slope_percent.map_or("(needs 3 min)".to_owned(), |slope| format!("{slope:+.2} %/min"))
        );
        for failure in &summary.first_failures {
            println!("|   failed: {failure} |||||||");
        }
    }
    Ok(())
}

async fn drive(url: &str, pid: u32, args: &SoakArgs) -> Result<Summary> {
    let stats = Arc::new(Stats::default());
    let crowd = assemble(url, pid, args, &stats).await?;
    let minutes = args.minutes.max(1);
    println!("soak: {} shoppers and one staff member, {:.0} actions/s for {minutes} min against {url} (pid {pid})…", crowd.shoppers.len(), args.rate);
    let run = load(&crowd, pid, minutes, args.rate).await;
    Ok(report(&stats, &run, minutes))
}

/// Who acts in a soak: one staff member, the shoppers, and what they browse.
struct Crowd {
    staff: Arc<User>,
    shoppers: Vec<Arc<User>>,
    catalogue: Arc<Catalogue>,
}

/// Waits for the demo data, signs the staff member in, stocks every SKU the shoppers buy and registers
/// the shoppers.
async fn assemble(url: &str, pid: u32, args: &SoakArgs, stats: &Arc<Stats>) -> Result<Crowd> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(30)).build()?;
    let user = |stats: &Arc<Stats>| User { client: client.clone(), url: url.to_owned(), jar: Jar::default(), busy: false.into(), stats: stats.clone() };
    // Wait until the demo data is there (the seed runs at start).
    let probe = user(&Arc::new(Stats::default()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let listing = loop {
        if let Ok((200, html)) = probe.get("probe", "/catalog").await {
            if html.contains("/catalog/p/") {
                break html;
            }
        }
        if Instant::now() > deadline {
            bail!("the site never listed its products");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let staff = Arc::new(user(stats));
    let (status, _) = staff
        .request(
            "POST /login",
            reqwest::Method::POST,
            "/login",
            Body::Form(format!("email=admin%40example.com&password={}", tessera_contracts::demo::PASSWORD)),
        )
        .await?;
    if status != 303 {
        bail!("the staff sign-in answered {status}");
    }
    let catalogue = Arc::new(Catalogue {
        products: links(&listing, "/catalog/p/"),
        categories: links(&listing, "/catalog/c/"),
        // The classic products' SKUs (every demo has them); generated ones come and go with settings.
        skus: tessera_contracts::demo::PRODUCTS.iter().map(|product| product.sku.to_owned()).collect(),
    });
    if catalogue.products.is_empty() || catalogue.categories.is_empty() {
        bail!("the listing links no products or categories");
    }
    // Plenty of every SKU the shoppers buy, so a checkout fails only for a reason worth seeing.
    for sku in &catalogue.skus {
        staff
            .post(
                "POST /admin/inventory/api/record_movement",
                "/admin/inventory/api/record_movement",
                format!("sku={sku}&movement=receive&quantity=5000&new_sku=false"),
            )
            .await?;
    }
    let mut shoppers = Vec::new();
    for n in 0..args.shoppers.min(20) {
        let shopper = user(stats);
        let form = format!("email=soak{n}-{pid}%40example.com&name=Soak+{n}&password=soak-password-{n}");
        let (status, _) = shopper.request("POST /register", reqwest::Method::POST, "/register", Body::Form(form)).await?;
        if status != 303 {
            bail!("registering shopper {n} answered {status}");
        }
        shoppers.push(Arc::new(shopper));
    }
    Ok(Crowd { staff, shoppers, catalogue })
}

/// What a soak's load did, beside the per-route figures in `Stats`.
struct Run {
    elapsed: f64,
    /// Actions skipped because their user was still busy with the last one.
    missed: usize,
    failures: Vec<String>,
    /// (minute, resident KiB) of the server.
    memory: Vec<(f64, u64)>,
}

/// Acts at `rate` actions a second for `minutes` (open loop: one action at a time per user), sampling
/// the server's resident memory every minute.
async fn load(crowd: &Crowd, pid: u32, minutes: u64, rate: f64) -> Run {
    let Crowd { staff, shoppers, catalogue } = crowd;
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let memory = Arc::new(Mutex::new(vec![(0.0, resident_kib(pid).unwrap_or(0))]));
    let sampler = {
        let memory = memory.clone();
        tokio::spawn(async move {
            for minute in 1..=minutes {
                tokio::time::sleep_until((started + Duration::from_secs(minute * 60)).into()).await;
                let kib = resident_kib(pid).unwrap_or(0);
                memory.lock().unwrap().push((minute as f64, kib));
                println!("soak: minute {minute}: resident memory {:.1} MiB", kib as f64 / 1024.0);
            }
        })
    };
    let total_weight: usize = MIX.iter().map(|(_, weight)| weight).sum();
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ pid as u64);
    let (missed, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let mut tasks = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        interval.tick().await;
        let action = pick_action(dice.below(total_weight));
        let staff_action = matches!(action, Action::Receive | Action::StockPages);
        let who = if staff_action { staff.clone() } else { shoppers[dice.below(shoppers.len())].clone() };
        // One action at a time per user, like a person in one tab.
        if who.busy.swap(true, Ordering::SeqCst) {
            missed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (catalogue, failures, roll) = (catalogue.clone(), failures.clone(), dice.below(1 << 20));
        tasks.push(tokio::spawn(async move {
            if let Err(error) = act(action, &who, &catalogue, roll).await {
                failures.lock().unwrap().push(format!("{action:?}: {error:#}"));
            }
            who.busy.store(false, Ordering::SeqCst);
        }));
        tasks.retain(|task| !task.is_finished());
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = sampler.await;
    let elapsed = started.elapsed().as_secs_f64();

    let memory = memory.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    Run { elapsed, missed: missed.load(Ordering::Relaxed), failures, memory }
}

/// A soak's outcome in figures.
pub struct Summary {
    elapsed: f64,
    requests: usize,
    client_errors: usize,
    /// 5xx answers and transport errors.
    server_errors: usize,
    failed_actions: usize,
    first_failures: Vec<String>,
    /// The route with the highest p99, and that p99 in milliseconds.
    slowest: (&'static str, f64),
    /// Growth after the warm-up, % of the level per minute (none with fewer than three samples).
    memory_slope_percent: Option<f64>,
}

impl Summary {
    /// The soak passes with no 5xx, no failed action, and memory level (growing by at most 1 % of its
    /// level per minute after the warm-up).
    pub fn verdict(&self) -> Result<()> {
        if self.server_errors > 0 || self.failed_actions > 0 {
            bail!("{} 5xx or transport errors and {} failed actions", self.server_errors, self.failed_actions);
        }
        if let Some(slope) = self.memory_slope_percent.filter(|slope| *slope > 1.0) {
            bail!("resident memory keeps growing: {slope:+.2} %/min after the warm-up");
        }
        println!("soak: no 5xx, no failed action, memory level");
        Ok(())
    }
}

/// Prints the routes' figures and the memory curve, and sums them up.
fn report(stats: &Stats, run: &Run, minutes: u64) -> Summary {
    let Run { elapsed, missed, failures, memory: samples } = run;
    let elapsed = *elapsed;
    let routes = std::mem::take(&mut *stats.0.lock().unwrap());
    let (mut total, mut client_errors, mut server_errors) = (0, 0, 0);
    let mut slowest = ("none", 0.0);
    println!();
    println!("| route | requests | 4xx | 5xx | p50 ms | p99 ms |");
    println!("|---|--:|--:|--:|--:|--:|");
    for (route, mut route_stats) in routes {
        route_stats.latencies.sort();
        total += route_stats.latencies.len();
        client_errors += route_stats.client_errors;
        server_errors += route_stats.server_errors + route_stats.transport_errors;
        let p99 = percentile(&route_stats.latencies, 0.99);
        // Of the routes a soak exercises (not the few logins at its start).
        if p99 > slowest.1 && route_stats.latencies.len() >= 20 {
            slowest = (route, p99);
        }
        println!(
            "| {route} | {} | {} | {} | {:.1} | {p99:.1} |",
            route_stats.latencies.len(),
            route_stats.client_errors,
            route_stats.server_errors + route_stats.transport_errors,
            percentile(&route_stats.latencies, 0.5),
        );
        if let Some(failure) = &route_stats.first_failure {
            println!("|   first failure: {failure} | | | | | |");
        }
    }
    println!();
    println!("{total} requests in {elapsed:.0} s ({:.1}/s); {} actions skipped because their user was still busy", total as f64 / elapsed, missed);
    println!();
    println!("| minute | resident MiB |");
    println!("|--:|--:|");
    for (minute, kib) in samples {
        println!("| {minute:.0} | {:.1} |", *kib as f64 / 1024.0);
    }
    // After a warm-up third (caches, pools and the allocator settle), memory should stay level.
    let settled: Vec<(f64, u64)> = samples.iter().copied().filter(|(minute, _)| *minute >= (minutes as f64 / 3.0).ceil().max(1.0)).collect();
    let level = settled.iter().map(|(_, kib)| *kib as f64).sum::<f64>() / settled.len().max(1) as f64;
    let growth = slope(&settled);
    println!();
    println!(
        "memory after the warm-up: {:.1} MiB on average, slope {:+.2} MiB/min ({:+.2} %/min)",
        level / 1024.0,
        growth / 1024.0,
        100.0 * growth / level.max(1.0)
    );
    for failure in failures.iter().take(10) {
        println!("soak: failed action: {failure}");
    }
    Summary {
        elapsed,
        requests: total,
        client_errors,
        server_errors,
        failed_actions: failures.len(),
        first_failures: failures.iter().take(3).cloned().collect(),
        slowest,
        memory_slope_percent: (settled.len() >= 3).then(|| 100.0 * growth / level.max(1.0)),
    }
}
