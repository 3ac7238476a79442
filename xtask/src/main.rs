//! `cargo xtask build|run|test|bench`: Tessera's build pipeline, with nothing downloaded but crates and
//! npm packages.
//!
//! What cargo-leptos would do, done by hand so it works offline and in one shared target dir:
//! 1. `cargo rustc --crate-type cdylib --target wasm32-unknown-unknown --features hydrate` per fragment
//!    (the fragment crates are plain rlibs otherwise, so the server build never links a cdylib);
//! 2. wasm-bindgen through `wasm-bindgen-cli-support`, pinned to the exact version of the `wasm-bindgen`
//!    crate by the workspace lockfile (a mismatch is a hard error at run time);
//! 3. for release bundles, `wasm-opt -Oz` from npm's `binaryen` (Debian's binaryen 108 emits wasm that
//!    fails at run time);
//! 4. content-hashed file names and a `manifest.json` per fragment (SRI sha384 per asset) in
//!    `<target>/site/<fragment>/`, which the server reads at run time;
//! 5. for release bundles, brotli and gzip variants beside every file (`weight.rs`), which the server
//!    picks by `Accept-Encoding`, and in `cargo xtask test` each fragment's brotli size against the budget
//!    its `Cargo.toml` declares (`budget-brotli-bytes`).
//!
//! Fragments are not listed here: every workspace crate with `[package.metadata.tessera]` is one
//! ([`fragments`]), built as a bundle and as its own binary `tessera-<fragment>`.
//!
//! Layout: `main.rs` (commands, the bundle pipeline, the binaries), `layering.rs` (who may depend on
//! whom: fragments on the SDK, contracts and shared-auth only), `setup.rs` (installing what is missing:
//! the wasm target, npm packages, Chromium), `bench*.rs` (build times, bundle sizes, throughput, rollouts),
//! `dev.rs` (one team's build-run-watch loop beside the rest of the site), `fuzz.rs` (coverage-guided
//! fuzzing with libFuzzer, the way cargo-fuzz does it), `soak.rs` (minutes of mixed load: errors, latency,
//! memory), `weight.rs` (compressed variants, size budgets, bytes on the wire).

mod bench;
mod bench_catalog;
mod bench_checkout;
mod bench_inventory;
mod bench_support;
mod dev;
mod fuzz;
mod layering;
mod setup;
mod soak;
mod styles;
mod weight;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256, Sha384};
use tessera_contracts::manifest::{AssetKind, FragmentManifest, ManifestAsset, MANIFEST_FILE};

/// A fragment crate and the prefix it owns: every workspace package with `[package.metadata.tessera]`
/// (`fragment`, `prefix`). Nothing here lists fragments by hand; a new fragment crate is built, tested and
/// benchmarked by declaring itself there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentCrate {
    pub name: String,
    pub package: String,
    pub prefix: String,
    /// The crate's directory.
    pub dir: PathBuf,
    /// Most brotli bytes its release bundle (js + wasm + css) may weigh (`budget-brotli-bytes`).
    pub budget: Option<u64>,
}

impl FragmentCrate {
    /// The fragment's own binary.
    pub fn binary(&self) -> String {
        format!("tessera-{}", self.name)
    }

    /// The package that builds [`FragmentCrate::binary`]: `bin/` beside the fragment's crate, where the
    /// fragment meets the process host (the fragment crate itself never depends on the host).
    pub fn binary_package(&self) -> String {
        format!("{}-bin", self.package)
    }

    /// The fragment's own stylesheet (`style.css` beside its `Cargo.toml`), if it has one.
    pub fn stylesheet(&self) -> PathBuf {
        self.dir.join("style.css")
    }
}

/// The fragment crates of the workspace, in the order `cargo metadata` lists them.
pub fn fragments(workspace: &Workspace) -> Result<Vec<FragmentCrate>> {
    let output = cargo(workspace).args(["metadata", "--no-deps", "--format-version", "1"]).output().context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let tessera = &package["metadata"]["tessera"];
        if let (Some(name), Some(prefix)) = (tessera["fragment"].as_str(), tessera["prefix"].as_str()) {
            let dir = Path::new(package["manifest_path"].as_str().context("a manifest path")?).parent().context("a crate dir")?.to_path_buf();
            let package = package["name"].as_str().context("a package name")?.to_owned();
            let budget = tessera["budget-brotli-bytes"].as_u64();
            found.push(FragmentCrate { name: name.to_owned(), package, prefix: prefix.to_owned(), dir, budget });
        }
    }
    if found.is_empty() {
        bail!("no workspace package declares [package.metadata.tessera] fragment and prefix");
    }
    Ok(found)
}

#[derive(Parser)]
#[command(name = "xtask", about = "Tessera's build pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every binary and every fragment's wasm bundle, or exactly one fragment's binary and bundle.
    Build {
        /// Build only this fragment: `tessera-<fragment>` (release) and its bundle, what its team deploys.
        #[arg(long)]
        fragment: Option<String>,
        /// Unoptimised wasm (fast to build, large), without wasm-opt; with --fragment, a debug binary too.
        #[arg(long)]
        dev: bool,
    },
    /// Build everything and serve the whole site with demo data on http://127.0.0.1:3000.
    Run {
        /// Unoptimised wasm bundles.
        #[arg(long)]
        dev: bool,
    },
    /// Run every test: unit, integration (SQLite, and PostgreSQL when configured) and browser tests.
    Test {
        /// Skip the browser tests.
        #[arg(long)]
        no_browser: bool,
    },
    /// Measure build times, bundle sizes and composed-vs-direct page throughput.
    Bench(bench::BenchArgs),
    /// Work on one fragment: build and run only it beside the rest of the site on :3000, and rebuild and
    /// restart it when its sources change.
    Dev(dev::DevArgs),
    /// Coverage-guided fuzzing of the parsers and verifiers that take untrusted input (libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// The whole site under a steady mixed load for minutes: 5xx, latency per route, memory over time.
    Soak(soak::SoakArgs),
    /// Check the workspace's layering: fragments depend on the SDK, contracts and shared-auth only.
    Layering,
    /// Write docs/settings.md, the reference of every setting, from the settings' definitions.
    Settings,
}

/// Paths of this checkout.
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Workspace {
    fn locate() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| if dir.is_absolute() { dir } else { root.join(dir) })
            .unwrap_or_else(|| root.join("target"));
        Workspace { root, target }
    }

    pub fn site_dir(&self) -> PathBuf {
        self.target.join("site")
    }

    pub fn server_binary(&self, release: bool) -> PathBuf {
        self.binary("tessera", release)
    }

    /// A binary of the workspace (`tessera`, `tessera-shell`, `tessera-catalog`, …).
    pub fn binary(&self, name: &str, release: bool) -> PathBuf {
        self.target.join(if release { "release" } else { "debug" }).join(name)
    }

    pub fn end2end(&self) -> PathBuf {
        self.root.join("end2end")
    }
}

/// Runs a command, failing with its command line when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

pub fn cargo(workspace: &Workspace) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(&workspace.root).env("CARGO_TARGET_DIR", &workspace.target);
    command
}

/// Which wasm build.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WasmProfile {
    Dev,
    Release,
}

impl WasmProfile {
    fn cargo_profile(self) -> &'static str {
        match self {
            WasmProfile::Dev => "dev",
            WasmProfile::Release => "wasm-release",
        }
    }

    fn target_subdir(self) -> &'static str {
        match self {
            WasmProfile::Dev => "debug",
            WasmProfile::Release => "wasm-release",
        }
    }
}

fn fragment_by_name(workspace: &Workspace, name: &str) -> Result<FragmentCrate> {
    let all = fragments(workspace)?;
    let names: Vec<String> = all.iter().map(|fragment| fragment.name.clone()).collect();
    all.into_iter().find(|fragment| fragment.name == name).with_context(|| format!("no fragment called {name:?}; there are {}", names.join(", ")))
}

fn hex16(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn sri(bytes: &[u8]) -> String {
    format!("sha384-{}", base64::engine::general_purpose::STANDARD.encode(Sha384::digest(bytes)))
}

/// Compiles one fragment to wasm (no bindgen yet).
pub fn compile_fragment_wasm(workspace: &Workspace, fragment: &FragmentCrate, profile: WasmProfile) -> Result<PathBuf> {
    // Cargo's own progress shows (a first build takes minutes); it prints nothing when nothing changed.
    println!("xtask: compiling the {} fragment to wasm ({} profile)…", fragment.name, profile.cargo_profile());
    run(cargo(workspace).args([
        "rustc",
        "--package",
        &fragment.package,
        "--lib",
        "--crate-type",
        "cdylib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        profile.cargo_profile(),
        "--no-default-features",
        "--features",
        "hydrate",
    ]))?;
    Ok(workspace.target.join("wasm32-unknown-unknown").join(profile.target_subdir()).join(format!("{}.wasm", fragment.package.replace('-', "_"))))
}

/// Builds one fragment's bundle into `<site>/<name>/` and returns its manifest.
pub fn build_fragment(workspace: &Workspace, fragment: &FragmentCrate, profile: WasmProfile) -> Result<FragmentManifest> {
    let started = Instant::now();
    let wasm = compile_fragment_wasm(workspace, fragment, profile)?;
    let (js, wasm) = bindgen(workspace, fragment, profile, &wasm)?;

    let bundle_dir = workspace.site_dir().join(&fragment.name);
    let pkg_dir = bundle_dir.join("pkg");
    std::fs::create_dir_all(&pkg_dir)?;
    let js_name = format!("pkg/{}-{}.js", fragment.name, hex16(&js));
    let wasm_name = format!("pkg/{}-{}_bg.wasm", fragment.name, hex16(&wasm));
    std::fs::write(bundle_dir.join(&js_name), &js)?;
    std::fs::write(bundle_dir.join(&wasm_name), &wasm)?;
    let mut assets = vec![
        ManifestAsset { kind: AssetKind::Js, path: js_name, integrity: sri(&js), bytes: js.len() as u64 },
        ManifestAsset { kind: AssetKind::Wasm, path: wasm_name, integrity: sri(&wasm), bytes: wasm.len() as u64 },
    ];
    let css = write_stylesheet(fragment, &bundle_dir, &mut assets)?;
    // Before the manifest names the files: a server never lists a file whose variants are still missing.
    if profile == WasmProfile::Release {
        for asset in &assets {
            weight::write_variants(&bundle_dir.join(&asset.path))?;
        }
    }
    let build_id = hex16(&[js.as_slice(), wasm.as_slice(), css.as_slice()].concat());
    let manifest = FragmentManifest {
        name: fragment.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build_id,
        route_prefix: fragment.prefix.clone(),
        contract_version: tessera_contracts::CONTRACT_VERSION,
        profile: profile.cargo_profile().to_owned(),
        assets,
    };
    let previous = read_manifest(&bundle_dir);
    // Write then rename: a server reading the manifest never sees half a file.
    let manifest_path = bundle_dir.join(MANIFEST_FILE);
    let temporary = bundle_dir.join(format!("{MANIFEST_FILE}.tmp"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&temporary, &manifest_path)?;
    prune_bundle(&bundle_dir, &manifest, previous.as_ref())?;
    println!(
        "xtask: {} bundle {} ({} profile): js {} B, wasm {} B, in {:.1} s",
        fragment.name,
        manifest.build_id,
        profile.cargo_profile(),
        js.len(),
        wasm.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(manifest)
}

/// The fragment's JS glue and wasm after wasm-bindgen (and wasm-opt for a release). Both are
/// deterministic: when cargo's output did not change, their last output is reused.
fn bindgen(workspace: &Workspace, fragment: &FragmentCrate, profile: WasmProfile, wasm: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bindgen_dir = workspace.target.join("xtask").join("bindgen").join(&fragment.name).join(profile.cargo_profile());
    let js_path = bindgen_dir.join(format!("{}.js", fragment.name));
    let wasm_path = bindgen_dir.join(format!("{}_bg.wasm", fragment.name));
    // bindgen and wasm-opt are deterministic: when cargo's output did not change, reuse their output.
    let input_hash = hex16(&std::fs::read(wasm)?);
    let stamp = bindgen_dir.join("input.hash");
    let reusable = std::fs::read_to_string(&stamp).is_ok_and(|hash| hash == input_hash) && js_path.exists() && wasm_path.exists();
    if !reusable {
        let _ = std::fs::remove_dir_all(&bindgen_dir);
        std::fs::create_dir_all(&bindgen_dir)?;
        wasm_bindgen_cli_support::Bindgen::new()
            .input_path(wasm)
            .out_name(&fragment.name)
            .web(true)?
            .typescript(false)
            .omit_default_module_path(true)
            .generate(&bindgen_dir)
            .map_err(|error| anyhow::anyhow!("wasm-bindgen on {}: {error:#}", wasm.display()))?;
        if profile == WasmProfile::Release {
            setup::wasm_opt(workspace, &wasm_path)?;
        }
        std::fs::write(&stamp, &input_hash)?;
    }
    Ok((std::fs::read(&js_path)?, std::fs::read(&wasm_path)?))
}

/// Writes the fragment's own stylesheet, when it has one: scoped to its markup (`styles`), hashed like
/// the rest, and listed in `assets`. Returns its bytes (empty without one).
fn write_stylesheet(fragment: &FragmentCrate, bundle_dir: &Path, assets: &mut Vec<ManifestAsset>) -> Result<Vec<u8>> {
    match std::fs::read_to_string(fragment.stylesheet()) {
        Ok(source) => {
            let css = styles::scoped(&fragment.name, &source).with_context(|| format!("{}", fragment.stylesheet().display()))?.into_bytes();
            let css_name = format!("pkg/{}-{}.css", fragment.name, hex16(&css));
            std::fs::write(bundle_dir.join(&css_name), &css)?;
            assets.push(ManifestAsset { kind: AssetKind::Css, path: css_name, integrity: sri(&css), bytes: css.len() as u64 });
            Ok(css)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).with_context(|| format!("reading {}", fragment.stylesheet().display())),
    }
}

fn read_manifest(bundle_dir: &Path) -> Option<FragmentManifest> {
    serde_json::from_slice(&std::fs::read(bundle_dir.join(MANIFEST_FILE)).ok()?).ok()
}

/// Keeps the files of the new and the previous build (pages already in browsers still load theirs), with
/// their compressed variants, and removes older ones.
fn prune_bundle(bundle_dir: &Path, current: &FragmentManifest, previous: Option<&FragmentManifest>) -> Result<()> {
    let keep: Vec<&str> = current.assets.iter().chain(previous.into_iter().flat_map(|m| m.assets.iter())).map(|a| a.path.as_str()).collect();
    for entry in std::fs::read_dir(bundle_dir.join("pkg"))? {
        let entry = entry?;
        let relative = format!("pkg/{}", weight::base_name(&entry.file_name().to_string_lossy()));
        if !keep.contains(&relative.as_str()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Builds every deployable: the all-in-one `tessera`, `tessera-shell`, `tessera-paysandbox` and each
/// fragment's binary, in one cargo invocation (one feature resolution, so nothing is compiled twice).
pub fn build_binaries(workspace: &Workspace, release: bool) -> Result<()> {
    println!("xtask: building the server binaries ({})…", if release { "release" } else { "debug" });
    let mut command = cargo(workspace);
    command.args(["build", "--package", "tessera-site", "--package", "tessera-shell", "--package", "tessera-paysandbox"]);
    for fragment in fragments(workspace)? {
        command.args(["--package", &fragment.binary_package()]);
    }
    command.arg("--bins");
    if release {
        command.arg("--release");
    }
    run(&mut command)
}

/// One fragment's own binary, alone: what its team deploys.
fn build_fragment_binary(workspace: &Workspace, fragment: &FragmentCrate, release: bool) -> Result<PathBuf> {
    let mut command = cargo(workspace);
    println!("xtask: building {} ({})…", fragment.binary(), if release { "release" } else { "debug" });
    command.args(["build", "--package", &fragment.binary_package(), "--bin", &fragment.binary()]);
    if release {
        command.arg("--release");
    }
    run(&mut command)?;
    Ok(workspace.binary(&fragment.binary(), release))
}

/// Builds bundles and binaries: everything, or exactly one fragment's binary and bundle.
fn build(workspace: &Workspace, only: Option<&str>, profile: WasmProfile) -> Result<()> {
    setup::ensure_wasm_target()?;
    if profile == WasmProfile::Release {
        setup::ensure_npm_packages(workspace)?;
    }
    match only {
        Some(name) => {
            let fragment = fragment_by_name(workspace, name)?;
            build_fragment(workspace, &fragment, profile)?;
            // What the team deploys: an optimised binary beside the optimised bundle (`--dev`: both not).
            let binary = build_fragment_binary(workspace, &fragment, profile == WasmProfile::Release)?;
            println!("xtask: {} binary {}", fragment.name, binary.display());
        }
        None => {
            for fragment in fragments(workspace)? {
                build_fragment(workspace, &fragment, profile)?;
            }
            build_binaries(workspace, false)?;
        }
    }
    Ok(())
}

fn run_site(workspace: &Workspace, profile: WasmProfile) -> Result<()> {
    build(workspace, None, profile)?;
    let addr = std::env::var("TESSERA_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let data_dir = std::env::var("TESSERA_DATA_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.root.join("data"));
    println!();
    println!("Tessera is starting on http://{addr}");
    println!("  data dir: {}", data_dir.display());
    println!("  demo accounts (password \"{}\"):", tessera_contracts::demo::PASSWORD);
    for (email, name, roles) in tessera_contracts::demo::ACCOUNTS {
        println!("    {email:<22} {name:<12} {}", roles.join(", "));
    }
    println!("  stop with Ctrl-C");
    println!();
    let mut command = Command::new(workspace.server_binary(false));
    command
        .args(["serve", "--demo"])
        .env("TESSERA_ADDR", &addr)
        .env("TESSERA_PUBLIC_URL", format!("http://{addr}"))
        .env("TESSERA_DATA_DIR", &data_dir)
        .env("TESSERA_SITE_DIR", workspace.site_dir())
        .current_dir(&workspace.root);
    run(&mut command)
}

/// Writes `docs/settings.md` from the settings' own definitions: the test that holds the file to the code
/// (`platform/shell/tests/settings_reference.rs`), asked to write it instead.
fn write_settings_reference(workspace: &Workspace) -> Result<()> {
    let mut command = cargo(workspace);
    command.args(["test", "--package", "tessera-shell", "--test", "settings_reference", "--", "--exact", "the_settings_reference_is_what_the_code_says"]);
    run(command.env("TESSERA_WRITE_SETTINGS_REFERENCE", "1"))?;
    println!("xtask: wrote {}", workspace.root.join("docs/settings.md").display());
    Ok(())
}

/// How long `cargo xtask test` runs each fuzz target (the long runs are `cargo xtask fuzz`).
const FUZZ_SECONDS_IN_TESTS: u64 = 10;

fn test(workspace: &Workspace, browser: bool) -> Result<()> {
    let started = Instant::now();
    setup::check_test_postgres()?;
    setup::check_test_nats()?;
    if browser {
        setup::ensure_chromium()?;
    }
    // Formatting and lints first: they fail in seconds where the tests take minutes.
    setup::ensure_lint_tools()?;
    run(cargo(workspace).args(["fmt", "--all", "--check"]))?;
    run(cargo(workspace).args(["clippy", "--workspace", "--all-targets", "--features", "ssr", "--", "-D", "warnings"]))?;
    // Who may depend on whom (fragments on the SDK only): a broken rule fails before any test runs.
    layering::check(workspace)?;
    // One wasm build (release, as shipped) serves the browser tests; the server is built by `cargo test`.
    build(workspace, None, WasmProfile::Release)?;
    let weights = fragments(workspace)?.iter().map(|fragment| weight::measure(workspace, fragment)).collect::<Result<Vec<_>>>()?;
    weight::check_budgets(&weights)?;
    run(cargo(workspace).args(["test", "--workspace", "--no-fail-fast"]).env("TESSERA_SITE_DIR", workspace.site_dir()))?;
    // Every fuzz target briefly, over its committed seeds: a finding fails the run like a test.
    fuzz::fuzz(workspace, &fuzz::FuzzArgs { target: None, seconds: FUZZ_SECONDS_IN_TESTS, merge: false })?;
    if browser {
        let tests: Vec<PathBuf> = std::fs::read_dir(workspace.end2end().join("tests"))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
            .collect();
        let mut command = Command::new("node");
        command
            .arg("--test")
            .arg("--test-concurrency=1")
            .args(&tests)
            .current_dir(workspace.end2end())
            .env("TESSERA_BIN", workspace.server_binary(false))
            .env("TESSERA_BIN_DIR", workspace.binary("", false))
            .env("TESSERA_SITE_DIR", workspace.site_dir());
        run(&mut command)?;
    }
    println!("xtask: every test passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Checkouts that share one `CARGO_TARGET_DIR` (CI's cache, a second clone) share one `target/debug/xtask`,
/// and cargo, finding this checkout's build of it up to date, runs whichever checkout built it last: that
/// binary's paths (and code) are the other checkout's. `cargo run` says which checkout asked
/// (`CARGO_MANIFEST_DIR` at run time); when it is not the one compiled in, xtask is rebuilt here and run
/// again, once.
fn rerun_if_built_for_another_checkout() -> Result<()> {
    let Some(asked) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return Ok(());
    };
    if asked == Path::new(env!("CARGO_MANIFEST_DIR")) || std::env::var_os("TESSERA_XTASK_REBUILT").is_some() {
        return Ok(());
    }
    println!("xtask: this xtask was built in {}; rebuilding it for {}", env!("CARGO_MANIFEST_DIR"), asked.display());
    // A newer source file makes cargo rebuild the binary, which puts this checkout's build in place.
    std::fs::File::options().append(true).open(asked.join("src/main.rs"))?.set_modified(std::time::SystemTime::now())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .current_dir(asked.parent().unwrap_or(&asked))
        .env("TESSERA_XTASK_REBUILT", "1")
        .status()
        .context("rebuilding xtask")?;
    std::process::exit(status.code().unwrap_or(1));
}

fn main() -> Result<()> {
    rerun_if_built_for_another_checkout()?;
    let cli = Cli::parse();
    let workspace = Workspace::locate();
    let profile = |dev: bool| {
        if dev {
            WasmProfile::Dev
        } else {
            WasmProfile::Release
        }
    };
    match cli.command {
        Cmd::Build { fragment, dev } => build(&workspace, fragment.as_deref(), profile(dev)),
        Cmd::Run { dev } => run_site(&workspace, profile(dev)),
        Cmd::Test { no_browser } => test(&workspace, !no_browser),
        Cmd::Bench(args) => bench::bench(&workspace, args),
        Cmd::Dev(args) => dev::dev(&workspace, args),
        Cmd::Fuzz(args) => fuzz::fuzz(&workspace, &args).map(|_| ()),
        Cmd::Soak(args) => soak::soak(&workspace, &args),
        Cmd::Layering => layering::check(&workspace),
        Cmd::Settings => write_settings_reference(&workspace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sri_is_sha384_base64() {
        // Known value: sha384 of the empty string.
        assert_eq!(sri(b""), "sha384-OLBgp1GsljhM2TJ+sbHjaiH9txEUvgdDTAzHv2P24donTt6/529l+9Ua0vFImLlb");
        assert_eq!(hex16(b"abc").len(), 16);
    }

    #[test]
    fn pruning_keeps_current_and_previous_builds_only() {
        let dir = std::env::temp_dir().join(format!("xtask-prune-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        let asset = |path: &str| ManifestAsset { kind: AssetKind::Js, path: path.into(), integrity: String::new(), bytes: 0 };
        let manifest = |path: &str| FragmentManifest {
            name: "x".into(),
            version: "0".into(),
            build_id: "0".into(),
            route_prefix: "/x".into(),
            contract_version: 1,
            profile: "dev".into(),
            assets: vec![asset(path)],
        };
        for file in ["old.js", "previous.js", "current.js"] {
            std::fs::write(dir.join("pkg").join(file), b"x").unwrap();
        }
        prune_bundle(&dir, &manifest("pkg/current.js"), Some(&manifest("pkg/previous.js"))).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.join("pkg")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["current.js", "previous.js"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
