//! `cargo xtask dev <fragment>`: one team's loop. It builds and runs only that fragment (its own binary and
//! an unoptimised bundle) on its own port, beside a site on :3000 that has everything else, and rebuilds
//! and restarts only the fragment when its sources change. The site keeps running untouched.
//!
//! The site is the all-in-one `tessera`, started here unless one already answers on the site address,
//! with `TESSERA_FRAGMENTS__<NAME>__UPSTREAMS` pointing at the fragment's port: the shell then sends the
//! fragment's prefix there, and the site's own services deliver events to it once it describes itself. The
//! fragment verifies logins with the site's JWKS and reaches the other services through the site.
//! Restarting drains the old process first (SIGTERM), so the page reloads onto the new build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::{build_binaries, build_fragment, build_fragment_binary, fragment_by_name, fragments, setup, FragmentCrate, WasmProfile, Workspace};

/// The shared secrets of the dev site and the fragment, one per relationship; dev only (a real deployment
/// generates its own, see `tessera_fragment::secrets`). Signing keys need no sharing: each process makes its
/// own, and the other learns its public half from its description.
const DEV_SECRETS: [(&str, &str); 3] = [
    ("TESSERA_PAYMENT_API_SECRET", "tessera-dev-payment-api-secret-not-for-production"),
    ("TESSERA_PAYMENT_WEBHOOK_SECRETS", "tessera-dev-webhook-secret-not-for-production"),
    ("TESSERA_KEY_ENCRYPTION_KEY", "tessera-dev-key-encryption-key-not-for-production"),
];

#[derive(clap::Args)]
pub struct DevArgs {
    /// The fragment to work on (catalog, cart, inventory, …).
    fragment: String,
    /// Port of the fragment process.
    #[arg(long, default_value_t = 3101)]
    port: u16,
    /// Address of the site (started here unless something already listens there).
    #[arg(long, default_value = "127.0.0.1:3000")]
    site: String,
    /// Stop after this many restarts (0: run until Ctrl-C). For scripted measurements.
    #[arg(long, default_value_t = 0)]
    restarts: usize,
}

/// A child process stopped with SIGTERM (so it drains) when dropped.
struct Process(Child);

impl Process {
    fn terminate(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn answers(url: &str) -> bool {
    let Ok(address) = url.trim_start_matches("http://").parse::<std::net::SocketAddr>() else { return false };
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

fn ready(base: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        matches!(client.get(format!("{base}/readyz")).timeout(Duration::from_secs(1)).send().await, Ok(response) if response.status().is_success())
    })
}

fn wait_ready(base: &str, child: &mut Child, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the process exited with {status} before it was ready");
        }
        if ready(base) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{base} was not ready after {timeout:?}")
}

/// The newest modification time among the files a fragment's build depends on (its crate, and the shared
/// crates it links).
fn newest_source(dirs: &[PathBuf]) -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target" && name != "node_modules") {
                    walk(&path, newest);
                }
            } else if let Ok(modified) = entry.metadata().and_then(|meta| meta.modified()) {
                *newest = (*newest).max(modified);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for dir in dirs {
        walk(dir, &mut newest);
    }
    newest
}

/// Starts the fragment's binary; `others` are the fragments the site serves.
fn start_fragment(workspace: &Workspace, fragment: &FragmentCrate, others: &[FragmentCrate], binary: &Path, args: &DevArgs, site_url: &str) -> Result<Process> {
    let data = workspace.root.join("data").join(format!("dev-{}", fragment.name));
    let mut command = Command::new(binary);
    command
        .arg("--demo")
        .env("TESSERA_ADDR", format!("127.0.0.1:{}", args.port))
        .env("TESSERA_PUBLIC_URL", site_url)
        .env("TESSERA_DATA_DIR", &data)
        .env("TESSERA_SITE_DIR", workspace.site_dir())
        .envs(DEV_SECRETS)
        .env("TESSERA_PAYMENT_URL", site_url)
        .env("TESSERA_DRAIN_NOTICE_MS", "300")
        .stdin(Stdio::null());
    // Every other fragment, and the payment provider, live in the site.
    for other in others {
        command.env(format!("TESSERA_FRAGMENTS__{}__UPSTREAMS", other.name.to_uppercase()), site_url);
    }
    Ok(Process(command.spawn().with_context(|| format!("starting {}", binary.display()))?))
}

pub fn dev(workspace: &Workspace, args: DevArgs) -> Result<()> {
    let fragment = fragment_by_name(workspace, &args.fragment)?;
    let others: Vec<FragmentCrate> = fragments(workspace)?.into_iter().filter(|other| other.name != fragment.name).collect();
    setup::ensure_wasm_target()?;
    let site_url = format!("http://{}", args.site);
    let fragment_url = format!("http://127.0.0.1:{}", args.port);

    println!("xtask dev: building the {} bundle (dev) and tessera-{}…", fragment.name, fragment.name);
    build_fragment(workspace, &fragment, WasmProfile::Dev)?;
    let binary = build_fragment_binary(workspace, &fragment, false)?;

    let _site = if answers(&args.site) {
        println!("xtask dev: using the site already running on {site_url} (it must send {} to {fragment_url}).", fragment.prefix);
        None
    } else {
        println!("xtask dev: starting the rest of the site on {site_url}…");
        for other in &others {
            if !workspace.site_dir().join(&other.name).join(tessera_contracts::manifest::MANIFEST_FILE).exists() {
                build_fragment(workspace, other, WasmProfile::Dev)?;
            }
        }
        build_binaries(workspace, false)?;
        let mut command = Command::new(workspace.server_binary(false));
        command
            .args(["serve", "--demo"])
            .env("TESSERA_ADDR", &args.site)
            .env("TESSERA_PUBLIC_URL", &site_url)
            .env("TESSERA_DATA_DIR", workspace.root.join("data").join("dev-site"))
            .env("TESSERA_SITE_DIR", workspace.site_dir())
            .envs(DEV_SECRETS)
            .env(format!("TESSERA_FRAGMENTS__{}__UPSTREAMS", fragment.name.to_uppercase()), &fragment_url)
            .stdin(Stdio::null());
        let mut site = Process(command.spawn().context("starting the site")?);
        wait_ready(&site_url, &mut site.0, Duration::from_secs(120))?;
        Some(site)
    };

    let mut running = start_fragment(workspace, &fragment, &others, &binary, &args, &site_url)?;
    wait_ready(&fragment_url, &mut running.0, Duration::from_secs(60))?;
    let watched: Vec<PathBuf> = [
        fragment.dir.clone(),
        workspace.root.join("platform/fragment"),
        workspace.root.join("platform/host"),
        workspace.root.join("platform/contracts"),
        workspace.root.join("platform/shared-auth"),
    ]
    .into_iter()
    .filter(|dir| dir.is_dir())
    .collect();
    let mut seen = newest_source(&watched);
    // Only now: a change saved from here on is seen (the line tells scripts they may edit).
    println!("xtask dev: {} is served from {fragment_url} at {site_url}{}; watching its sources (Ctrl-C stops).", fragment.name, fragment.prefix);

    let mut restarts = 0;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let newest = newest_source(&watched);
        if newest <= seen {
            continue;
        }
        seen = newest;
        let changed = Instant::now();
        println!("xtask dev: a source changed; rebuilding {}…", fragment.name);
        let built = build_fragment(workspace, &fragment, WasmProfile::Dev).and_then(|_| build_fragment_binary(workspace, &fragment, false));
        let built_in = changed.elapsed();
        if let Err(error) = built {
            println!("xtask dev: the build failed; the running {} stays as it was.\n{error:#}", fragment.name);
            continue;
        }
        running.terminate();
        running = start_fragment(workspace, &fragment, &others, &binary, &args, &site_url)?;
        wait_ready(&fragment_url, &mut running.0, Duration::from_secs(60))?;
        println!(
            "xtask dev: the edit is live after {:.1} s (build {:.1} s, restart {:.1} s).",
            changed.elapsed().as_secs_f64(),
            built_in.as_secs_f64(),
            (changed.elapsed() - built_in).as_secs_f64()
        );
        restarts += 1;
        if args.restarts > 0 && restarts >= args.restarts {
            return Ok(());
        }
    }
}
