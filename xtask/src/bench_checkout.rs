//! Checkouts per second, end to end, on one machine: shoppers (each signed in) add an item, place the
//! order, pay at the sandbox provider's page, and wait until the cart reports the order paid (which
//! happens only when the provider's signed webhook has arrived). Against a release site process on
//! SQLite, and on PostgreSQL too when `TESSERA_TEST_POSTGRES_URL` is set, side by side.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench_support::{free_port, session_cookie, sign_in_admin, start_server};

const SKU: &str = "STK-RST-10";

/// One shopper's client with its cookies.
struct Shopper {
    client: reqwest::Client,
    url: String,
    cookie: String,
}

impl Shopper {
    async fn call(&self, path: &str, body: String) -> Result<(u16, serde_json::Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// One whole checkout; returns the time until the order read paid.
    async fn checkout(&self) -> Result<Duration> {
        let started = Instant::now();
        let (status, json) = self.call("/cart/api/add_item", format!("sku={SKU}&quantity=1")).await?;
        if status != 200 {
            bail!("add answered {status}: {json}");
        }
        let (_, form) = self.call("/cart/api/checkout", String::new()).await?;
        let key = form["key"].as_str().context("a checkout key")?;
        let address = "name=Bench+Shopper&street=1+Load+Lane&city=Berlin&postcode=10115&country=DE&shipping=standard";
        let (status, placed) = self.call("/cart/api/place_order", format!("key={key}&{address}")).await?;
        if status != 200 {
            bail!("placing answered {status}: {placed}");
        }
        let pay_url = placed["pay_url"].as_str().context("a payment page")?;
        let order_id = placed["order_id"].as_str().context("an order id")?.to_owned();
        let paid = self
            .client
            .post(format!("{}{pay_url}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("card_number=4242424242424242&expiry=12%2F39&cvc=123")
            .send()
            .await?;
        if paid.status().as_u16() != 303 {
            bail!("paying answered {}", paid.status());
        }
        loop {
            let (_, order) = self.call("/cart/api/order", format!("id={order_id}")).await?;
            if order["status"] == "Paid" {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("order {order_id} not paid after 30 s: {order}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn register(client: &reqwest::Client, url: &str, n: usize) -> Result<Shopper> {
    let response = client
        .post(format!("{url}/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email=bench{n}%40example.com&name=Bench+{n}&password=bench-password-{n}"))
        .send()
        .await?;
    let cookie = session_cookie(&response).with_context(|| format!("registering shopper {n} answered {}", response.status()))?;
    Ok(Shopper { client: client.clone(), url: url.to_owned(), cookie })
}

struct Outcome {
    checkouts: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

async fn run(url: String, shoppers: usize, duration: Duration) -> Result<Outcome> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let admin = sign_in_admin(&client, &url).await?;
    let receive = client
        .post(format!("{url}/admin/inventory/api/record_movement"))
        .header("cookie", admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("sku={SKU}&movement=receive&quantity=10000&new_sku=false"))
        .send()
        .await?;
    if !receive.status().is_success() {
        bail!("receiving stock answered {}: {}", receive.status(), receive.text().await?);
    }
    let mut all = Vec::with_capacity(shoppers);
    for n in 0..shoppers {
        all.push(register(&client, &url, n).await?);
    }
    // One warm-up checkout each.
    for shopper in &all {
        shopper.checkout().await?;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = all
        .into_iter()
        .map(|shopper| {
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
                while Instant::now() < deadline {
                    match shopper.checkout().await {
                        Ok(latency) => latencies.push(latency),
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert(error.to_string());
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut outcome = Outcome { checkouts: 0, errors: 0, seconds: 0.0, latencies: Vec::new(), first_error: None };
    for worker in workers {
        let (latencies, errors, first_error) = worker.await?;
        outcome.checkouts += latencies.len();
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.latencies.sort();
    Ok(outcome)
}

fn percentile(latencies: &[Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// The checkout benchmark: SQLite, then PostgreSQL when configured.
pub fn checkout(binary: &Path, site: &Path, scratch: &Path, seconds: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty());
    let mut backends = vec![("SQLite", None)];
    if let Some(url) = &postgres {
        backends.push(("PostgreSQL", Some(url.clone())));
    }
    println!();
    println!(
        "| checkouts end to end (add → place → pay at the sandbox → paid by webhook), release build, {} s, load generator on the same {} cores | shoppers | checkouts/s | p50 ms | p99 ms | errors |",
        seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for (name, extra) in backends {
        for shoppers in [1, 8, 32] {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let mut env: Vec<(&str, String)> = vec![
                ("TESSERA_PUBLIC_URL", url.clone()),
                ("TESSERA_DEMO_EXTRA_PRODUCTS", "0".into()),
                // Every shopper registers from the one loopback address: the per-address bound on
                // registrations (20 by default, against account farming) would refuse the 21st.
                ("TESSERA_REGISTRATION_MAX_PER_ADDRESS", (shoppers + 10).to_string()),
            ];
            // A fresh set of schemas per run, dropped afterwards.
            let prefix = format!("tessera_bench_{}_{shoppers}_", std::process::id());
            if let Some(postgres) = &extra {
                env.push(("TESSERA_POSTGRES_URL", postgres.clone()));
                env.push(("TESSERA_SCHEMA_PREFIX", prefix.clone()));
            }
            let data = scratch.join(format!("checkout-{name}-{shoppers}"));
            let server = start_server(binary, site, &data, port, &env, &["--demo"])?;
            let outcome = runtime.block_on(run(url, shoppers, Duration::from_secs(seconds)));
            drop(server);
            if let Some(postgres) = &extra {
                crate::bench_support::drop_bench_schemas(postgres, &prefix);
            }
            let outcome = outcome?;
            println!(
                "| {name} | {shoppers} | {:.1} | {:.0} | {:.0} | {} |",
                outcome.checkouts as f64 / outcome.seconds,
                percentile(&outcome.latencies, 0.5),
                percentile(&outcome.latencies, 0.99),
                outcome.errors
            );
            if let Some(error) = outcome.first_error {
                println!("  first error: {error}");
            }
        }
    }
    Ok(())
}
