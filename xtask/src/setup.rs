//! Installing what a fresh machine lacks (rustup target, npm packages, Debian's Chromium) and the checks
//! that must fail loudly in CI (PostgreSQL).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, Workspace};

/// `rustup target add wasm32-unknown-unknown` unless it is installed.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(output) if String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == "wasm32-unknown-unknown") => Ok(()),
        Ok(_) => {
            println!("xtask: installing the wasm32-unknown-unknown target");
            run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
        }
        Err(error) => bail!("rustup is needed to add the wasm32 target: {error}"),
    }
}

/// `rustup component add rustfmt clippy` unless both answer (the minimal rustup profile has neither).
pub fn ensure_lint_tools() -> Result<()> {
    let answers = |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|output| output.status.success());
    if answers("fmt") && answers("clippy") {
        return Ok(());
    }
    println!("xtask: installing rustfmt and clippy");
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

/// `npm ci` in `end2end/` when its packages (playwright-core, binaryen) are missing or stale.
pub fn ensure_npm_packages(workspace: &Workspace) -> Result<()> {
    let dir = workspace.end2end();
    let installed = dir.join("node_modules").join(".package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (std::fs::metadata(&installed), std::fs::metadata(&lock)) {
        (Ok(installed), Ok(lock)) => installed.modified()? >= lock.modified()?,
        _ => false,
    };
    if !fresh {
        println!("xtask: installing npm packages in end2end/");
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))?;
    }
    Ok(())
}

/// Optimises a wasm file in place with npm's binaryen (`wasm-opt -Oz`).
pub fn wasm_opt(workspace: &Workspace, wasm: &Path) -> Result<()> {
    let wasm_opt = workspace.end2end().join("node_modules").join("binaryen").join("bin").join("wasm-opt");
    if !wasm_opt.exists() {
        bail!("{} is missing; run `npm ci` in end2end/", wasm_opt.display());
    }
    let optimised = wasm.with_extension("opt.wasm");
    // The features rustc enables by default for wasm32-unknown-unknown, so wasm-opt accepts the module.
    run(Command::new("node").arg(&wasm_opt).arg(wasm).arg("-o").arg(&optimised).args([
        "-Oz",
        "--enable-bulk-memory",
        "--enable-nontrapping-float-to-int",
        "--enable-sign-ext",
        "--enable-mutable-globals",
        "--enable-reference-types",
        "--enable-multivalue",
    ]))?;
    std::fs::rename(&optimised, wasm).context("replacing the wasm with its optimised version")?;
    Ok(())
}

/// Debian's Chromium for the browser tests (never a downloaded browser build).
pub fn ensure_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    println!("xtask: installing Debian's chromium package");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends", "chromium"]).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// With `CI=true`, PostgreSQL tests are mandatory: the URL must be set and the server reachable.
/// Whether something listens at `address` (`host:port`), within three seconds.
fn reachable(address: &str) -> bool {
    std::net::ToSocketAddrs::to_socket_addrs(address)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)).is_ok())
}

/// The NATS server of the broker tests: with `CI=true` it must be configured and reachable (the tests
/// fail rather than skip); otherwise they are skipped when `TESSERA_TEST_NATS_URL` is unset.
pub fn check_test_nats() -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    match std::env::var("TESSERA_TEST_NATS_URL").ok().filter(|url| !url.is_empty()) {
        None if ci => bail!("CI=true but TESSERA_TEST_NATS_URL is not set: the NATS JetStream tests must run in CI"),
        None => {
            println!("xtask: TESSERA_TEST_NATS_URL is not set; events are tested over HTTP only");
            Ok(())
        }
        Some(url) => {
            let parsed = url::Url::parse(&url).context("TESSERA_TEST_NATS_URL is not a URL")?;
            let address = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(4222));
            if !reachable(&address) {
                bail!("NATS at {address} (TESSERA_TEST_NATS_URL) is not reachable");
            }
            println!("xtask: events are also tested over NATS JetStream at {address}");
            Ok(())
        }
    }
}

pub fn check_test_postgres() -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    let url = std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty());
    match url {
        None if ci => bail!("CI=true but TESSERA_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI"),
        None => {
            println!("xtask: TESSERA_TEST_POSTGRES_URL is not set; integration tests run on SQLite only");
            Ok(())
        }
        Some(url) => {
            let parsed = url::Url::parse(&url).context("TESSERA_TEST_POSTGRES_URL is not a URL")?;
            let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
            let port = parsed.port().unwrap_or(5432);
            let address = format!("{host}:{port}");
            if !reachable(&address) {
                bail!("PostgreSQL at {address} (TESSERA_TEST_POSTGRES_URL) is not reachable");
            }
            println!("xtask: integration tests also run on PostgreSQL at {address}");
            Ok(())
        }
    }
}
