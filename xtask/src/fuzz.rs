//! `cargo xtask fuzz`: coverage-guided fuzzing with libFuzzer, what `cargo fuzz run` does, without
//! installing cargo-fuzz or a nightly toolchain.
//!
//! Fuzz crates live beside what they fuzz (`platform/shared-auth/fuzz`, `platform/fragment/fuzz`, `fragments/catalog/fuzz`),
//! marked `[package.metadata] cargo-fuzz = true`; each binary is one target, built against
//! `libfuzzer-sys` (libFuzzer compiled from source by its build script). The build passes the same
//! SanitizerCoverage flags cargo-fuzz passes (all stable `-C` options) for the host triple named
//! explicitly, so build scripts and proc macros stay uninstrumented, into `<target>/fuzz` so the
//! instrumented dependencies never evict the normal build's. No AddressSanitizer: that needs nightly, and
//! the fuzzed code is safe Rust — the targets look for panics and broken invariants, which they assert.
//!
//! Corpora: `<crate>/fuzz/corpus/<target>/` holds small committed seeds; a run reads them and writes
//! what it finds to `<target>/fuzz/corpus/<target>/` (never into the checkout), and crashes to
//! `<target>/fuzz/artifacts/<target>/`. `--merge` keeps only the inputs that add coverage back in the
//! committed corpus. `cargo xtask test` runs every target briefly over its seeds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, run, Workspace};

/// The flags cargo-fuzz passes to instrument code for libFuzzer.
const INSTRUMENTATION: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Only this target (`token`, `cookie`, `webhook_signature`, `service_call`, `event_envelope`,
    /// `listing_query`); every target otherwise.
    #[arg(long)]
    pub target: Option<String>,
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Afterwards, keep in the committed corpus only the inputs that add coverage (`-merge=1`).
    #[arg(long)]
    pub merge: bool,
}

/// One fuzz target: a binary of a fuzz crate.
#[derive(Debug, Clone)]
pub struct FuzzTarget {
    pub name: String,
    pub package: String,
    /// The fuzz crate's directory (`<crate>/fuzz`).
    pub dir: PathBuf,
}

impl FuzzTarget {
    fn committed_corpus(&self) -> PathBuf {
        self.dir.join("corpus").join(&self.name)
    }
}

/// What a run found.
#[derive(Debug)]
pub struct FuzzReport {
    pub target: String,
    pub seconds: f64,
    pub executions: u64,
    pub corpus_inputs: usize,
    pub crash: Option<PathBuf>,
}

/// Every fuzz target of the workspace, from `cargo metadata`.
pub fn targets(workspace: &Workspace) -> Result<Vec<FuzzTarget>> {
    let output = cargo(workspace).args(["metadata", "--no-deps", "--format-version", "1"]).output().context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if package["metadata"]["cargo-fuzz"].as_bool() != Some(true) {
            continue;
        }
        let dir = Path::new(package["manifest_path"].as_str().context("a manifest path")?).parent().context("a crate dir")?.to_path_buf();
        for target in package["targets"].as_array().into_iter().flatten() {
            if target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin")) {
                let name = target["name"].as_str().context("a target name")?.to_owned();
                found.push(FuzzTarget { name, package: package["name"].as_str().context("a package name")?.to_owned(), dir: dir.clone() });
            }
        }
    }
    Ok(found)
}

fn host_triple() -> Result<String> {
    let output = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&output.stdout).lines().find_map(|line| line.strip_prefix("host: ").map(str::to_owned)).context("rustc -vV names no host")
}

fn fuzz_target_dir(workspace: &Workspace) -> PathBuf {
    workspace.target.join("fuzz")
}

/// libFuzzer is C++: a machine with only a C compiler gets Debian's g++.
fn ensure_cxx() -> Result<()> {
    let answers = |compiler: &str| Command::new(compiler).arg("--version").output().is_ok_and(|output| output.status.success());
    if answers("c++") || answers("g++") {
        return Ok(());
    }
    println!("xtask: installing Debian's g++ (libFuzzer is C++)");
    run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends", "g++"]).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Builds the instrumented targets and returns where their binaries are.
pub fn build(workspace: &Workspace, targets: &[FuzzTarget]) -> Result<PathBuf> {
    ensure_cxx()?;
    let triple = host_triple()?;
    let mut command = cargo(workspace);
    command.env("CARGO_TARGET_DIR", fuzz_target_dir(workspace)).env("RUSTFLAGS", INSTRUMENTATION.join(" "));
    command.args(["build", "--profile", "fuzz", "--target", &triple]);
    let mut packages: Vec<&str> = targets.iter().map(|target| target.package.as_str()).collect();
    packages.dedup();
    for package in packages {
        command.args(["--package", package]);
    }
    for target in targets {
        command.args(["--bin", &target.name]);
    }
    let started = Instant::now();
    println!("xtask: building {} fuzz targets (instrumented, {})…", targets.len(), fuzz_target_dir(workspace).display());
    run(&mut command)?;
    println!("xtask: fuzz targets built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(fuzz_target_dir(workspace).join(triple).join("fuzz"))
}

/// Runs one target for `seconds` over its committed seeds; a crash is an error naming the input.
pub fn run_target(workspace: &Workspace, binaries: &Path, target: &FuzzTarget, seconds: u64) -> Result<FuzzReport> {
    let scratch = fuzz_target_dir(workspace).join("corpus").join(&target.name);
    let artifacts = fuzz_target_dir(workspace).join("artifacts").join(&target.name);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    std::fs::create_dir_all(target.committed_corpus())?;
    let started = Instant::now();
    let output = Command::new(binaries.join(&target.name))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // Inputs are texts and small structures; longer ones only slow the search.
        .arg("-max_len=4096")
        .arg("-timeout=10")
        .arg(&scratch)
        .arg(target.committed_corpus())
        .output()
        .with_context(|| format!("running fuzz target {}", target.name))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let stat = |name: &str| log.lines().find_map(|line| line.strip_prefix(name).map(|rest| rest.trim_start_matches(':').trim().to_owned()));
    let executions = stat("stat::number_of_executed_units").and_then(|value| value.parse().ok()).unwrap_or(0);
    let crash = log.lines().find_map(|line| line.split_once("Test unit written to ").map(|(_, path)| PathBuf::from(path.trim())));
    let corpus_inputs = std::fs::read_dir(&scratch).map(|entries| entries.count()).unwrap_or(0) + std::fs::read_dir(target.committed_corpus())?.count();
    let report = FuzzReport { target: target.name.clone(), seconds: started.elapsed().as_secs_f64(), executions, corpus_inputs, crash };
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "fuzz target {} failed after {} executions{}:\n{}\nreproduce: {} <input>",
            target.name,
            report.executions,
            report.crash.as_ref().map(|path| format!(", input saved to {}", path.display())).unwrap_or_default(),
            tail.join("\n"),
            binaries.join(&target.name).display()
        );
    }
    Ok(report)
}

/// Keeps in the committed corpus only the inputs (seeds and found ones) that add coverage.
fn merge(binaries: &Path, workspace: &Workspace, target: &FuzzTarget) -> Result<usize> {
    let committed = target.committed_corpus();
    let merged = fuzz_target_dir(workspace).join("merged").join(&target.name);
    let _ = std::fs::remove_dir_all(&merged);
    std::fs::create_dir_all(&merged)?;
    let scratch = fuzz_target_dir(workspace).join("corpus").join(&target.name);
    let output = Command::new(binaries.join(&target.name)).arg("-merge=1").arg("-max_len=4096").arg(&merged).arg(&committed).arg(&scratch).output()?;
    if !output.status.success() {
        bail!("merging the {} corpus failed:\n{}", target.name, String::from_utf8_lossy(&output.stderr));
    }
    std::fs::remove_dir_all(&committed)?;
    std::fs::create_dir_all(&committed)?;
    let mut kept = 0;
    for entry in std::fs::read_dir(&merged)? {
        let entry = entry?;
        std::fs::copy(entry.path(), committed.join(entry.file_name()))?;
        kept += 1;
    }
    Ok(kept)
}

/// Builds the targets (all, or `--target`), runs each, and prints a table of what they did.
pub fn fuzz(workspace: &Workspace, args: &FuzzArgs) -> Result<Vec<FuzzReport>> {
    let mut targets = targets(workspace)?;
    if let Some(only) = &args.target {
        let names: Vec<String> = targets.iter().map(|target| target.name.clone()).collect();
        targets.retain(|target| &target.name == only);
        if targets.is_empty() {
            bail!("no fuzz target called {only:?}; there are {}", names.join(", "));
        }
    }
    let binaries = build(workspace, &targets)?;
    let mut reports = Vec::new();
    for target in &targets {
        println!("xtask: fuzzing {} for {} s…", target.name, args.seconds);
        let report = run_target(workspace, &binaries, target, args.seconds)?;
        println!(
            "xtask: {}: {} executions in {:.0} s ({:.0}/s), {} corpus inputs, no crash",
            report.target,
            report.executions,
            report.seconds,
            report.executions as f64 / report.seconds.max(0.001),
            report.corpus_inputs
        );
        if args.merge {
            println!("xtask: {}: {} inputs kept in {}", target.name, merge(&binaries, workspace, target)?, target.committed_corpus().display());
        }
        reports.push(report);
    }
    println!("\n| target | seconds | executions | executions/s | corpus | findings |\n|---|--:|--:|--:|--:|---|");
    for report in &reports {
        println!(
            "| {} | {:.0} | {} | {:.0} | {} | none |",
            report.target,
            report.seconds,
            report.executions,
            report.executions as f64 / report.seconds.max(0.001),
            report.corpus_inputs
        );
    }
    Ok(reports)
}
