//! What every benchmark shares: starting a release server on a free port, a steady GET load with its
//! latency percentiles, signing in the demo admin, printing a table row, and dropping the PostgreSQL
//! schemas a run made. The benchmarks (`bench`, `bench_*`, `weight`) import from here, never from each
//! other.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Best effort: drops the PostgreSQL schemas a benchmark made under `prefix` (nothing else uses it).
pub(crate) fn drop_bench_schemas(url: &str, prefix: &str) {
    for service in ["shell", "catalog", "cart", "inventory", "paysandbox"] {
        let _ = Command::new("psql").args([url, "-q", "-c", &format!("DROP SCHEMA IF EXISTS {prefix}{service} CASCADE")]).output();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process that is killed when dropped.
pub(crate) struct Server(Child);

impl Server {
    /// The server's process id (the soak samples its memory).
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_server(binary: &Path, site: &Path, data: &Path, port: u16, extra: &[(&str, String)], args: &[&str]) -> Result<Server> {
    // The server logs to stdout; keep it beside its data for when a run goes wrong.
    std::fs::create_dir_all(data)?;
    let log = std::fs::File::create(data.join("server.log"))?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(args)
        .env("TESSERA_ADDR", format!("127.0.0.1:{port}"))
        .env("TESSERA_DATA_DIR", data)
        .env("TESSERA_SITE_DIR", site)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::from(log));
    for (key, value) in extra {
        command.env(key, value);
    }
    let server = Server(command.spawn().context("starting tessera")?);
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("tessera did not start listening on port {port}")
}

pub(crate) struct LoadResult {
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    pub(crate) seconds: f64,
    pub(crate) latencies: Vec<Duration>,
}

impl LoadResult {
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }
}

/// GETs `url` from `concurrency` connections for `duration`, with `cookie` if given.
pub(crate) async fn load(url: String, concurrency: usize, duration: Duration, cookie: Option<String>) -> LoadResult {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("an HTTP client");
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..concurrency).map(|_| {
        let client = client.clone();
        let url = url.clone();
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let mut request = client.get(&url);
                if let Some(cookie) = &cookie {
                    request = request.header("cookie", cookie);
                }
                let ok = match request.send().await {
                    Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        })
    });
    // Spawn every worker now: a lazy iterator would start each one only after the previous finished.
    let workers: Vec<_> = workers.collect();
    let mut result = LoadResult { requests: 0, errors: 0, seconds: 0.0, latencies: Vec::new() };
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            result.requests += latencies.len();
            result.errors += errors;
            result.latencies.extend(latencies);
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.latencies.sort();
    result
}

/// Signs in the demo admin; returns the `Cookie` header to send.
pub(crate) async fn sign_in_admin(client: &reqwest::Client, url: &str) -> Result<String> {
    let login = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email=admin%40example.com&password={}", tessera_contracts::demo::PASSWORD))
        .send()
        .await?;
    session_cookie(&login).with_context(|| format!("the admin sign-in failed: {}", login.status()))
}

/// The `Cookie` header that sends back every cookie a response set (a sign-in's session).
pub(crate) fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().to_owned())
        .collect();
    (!cookies.is_empty()).then(|| cookies.join("; "))
}

/// One table row: requests/s, p50, p99, errors.
pub(crate) fn print_row(label: &str, result: &LoadResult) {
    println!(
        "| {label} | {:.0} | {:.2} | {:.2} | {} |",
        result.requests as f64 / result.seconds,
        result.percentile(0.50),
        result.percentile(0.99),
        result.errors
    );
}
