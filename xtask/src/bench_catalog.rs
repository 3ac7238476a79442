//! The catalog's numbers: listing and search SSR latency and throughput with 10,000 products, on SQLite
//! and (when `TESSERA_TEST_POSTGRES_URL` is set) PostgreSQL, against the catalog process alone (so no
//! other service's work, such as inventory's seed events, runs beside the measurement).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bench_support::{free_port, load, print_row, start_server};

const PRODUCTS: usize = 10_000;

pub fn catalog(binary: &Path, site: &Path, scratch: &Path, seconds: u64, concurrency: usize) -> Result<()> {
    let mut backends: Vec<(&str, Vec<(&str, String)>)> = vec![("SQLite", Vec::new())];
    let postgres = std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty());
    let prefix = format!("tessera_bench_catalog_{}_", std::process::id());
    if let Some(url) = &postgres {
        backends.push(("PostgreSQL", vec![("TESSERA_POSTGRES_URL", url.clone()), ("TESSERA_SCHEMA_PREFIX", prefix.clone())]));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let mut startups = Vec::new();
    for (label, backend) in &backends {
        let port = free_port()?;
        let mut env = backend.clone();
        env.push(("TESSERA_DEMO_EXTRA_PRODUCTS", (PRODUCTS - tessera_contracts::demo::PRODUCTS.len()).to_string()));
        env.push(("TESSERA_JWKS_URL", "http://127.0.0.1:9/.well-known/jwks.json".to_owned()));
        println!("bench: catalog on {label}: seeding {PRODUCTS} products…");
        let started = Instant::now();
        let server = start_server(binary, site, &scratch.join(format!("catalog-{}", label.to_lowercase())), port, &env, &["--demo", "--fragment", "catalog"])?;
        let seeded = started.elapsed();
        let url = format!("http://127.0.0.1:{port}");
        let product = tessera_contracts::demo::catalog(20).pop().map(|p| p.id).unwrap_or_default();
        for (what, path) in [
            ("listing, page 1 by name", "/catalog".to_owned()),
            ("listing, page 400", "/catalog?page=400".to_owned()),
            ("category + price range, newest first", "/catalog/c/apparel?min=20&max=50&sort=newest".to_owned()),
            ("search, one word (\"mug\"), by relevance", "/catalog?q=mug".to_owned()),
            ("search, two words + sort by price", "/catalog?q=organic+tee&sort=price".to_owned()),
            ("product page (head, JSON-LD, variants)", format!("/catalog/p/{product}")),
        ] {
            let target = format!("{url}{path}");
            runtime.block_on(load(target.clone(), concurrency, Duration::from_millis(300), None));
            rows.push((format!("{label}: {what}"), runtime.block_on(load(target, concurrency, Duration::from_secs(seconds), None))));
        }
        startups.push((label.to_string(), seeded));
        drop(server);
    }
    if let Some(url) = postgres {
        let _ = Command::new("psql").args([url.as_str(), "-q", "-c", &format!("DROP SCHEMA IF EXISTS {prefix}catalog CASCADE")]).output();
    }
    println!();
    println!("| catalog SSR with {PRODUCTS} products, catalog process alone, {concurrency} connections, {seconds} s each, release | req/s | p50 ms | p99 ms | errors |");
    println!("|---|--:|--:|--:|--:|");
    for (label, result) in &rows {
        print_row(label, result);
    }
    for (label, seeded) in startups {
        println!("| {label}: start-up, seeding {PRODUCTS} products in one transaction | {:.1} s ||||", seeded.as_secs_f64());
    }
    Ok(())
}
