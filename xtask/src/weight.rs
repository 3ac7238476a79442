//! What the browser downloads: compressed variants of the bundle files, the per-fragment size budgets
//! that fail `cargo xtask test`, and the `transfer` benchmark (bytes on the wire per encoding).
//!
//! Bundle files are content-hashed and never change, so they are compressed once, at the highest levels
//! (brotli 11, gzip 9), when the release bundle is written: `<file>.br` and `<file>.gz` beside each file,
//! which the fragment's asset service picks by `Accept-Encoding`. Budgets are brotli bytes, what a
//! browser actually moves, declared by each fragment in its own `Cargo.toml`
//! (`[package.metadata.tessera] budget-brotli-bytes`), so the team that grows a bundle is the one that
//! sees the failure and decides.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tessera_contracts::manifest::{FragmentManifest, MANIFEST_FILE};

use crate::{FragmentCrate, WasmProfile, Workspace};

/// An encoder of a whole file.
type Encode = fn(&[u8]) -> Result<Vec<u8>>;

/// The encodings written beside every bundle file, by file suffix.
const VARIANTS: [(&str, Encode); 2] = [("br", brotli), ("gz", gzip)];

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn brotli(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut output = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, ..Default::default() };
    brotli::BrotliCompress(&mut std::io::Cursor::new(bytes), &mut output, &params)?;
    Ok(output)
}

/// Writes `<file>.br` and `<file>.gz` beside `file` (whose name carries its content hash). A variant that
/// exists is kept: same name, same content. Each is written under a temporary name and renamed, so a
/// server never serves half a file.
pub fn write_variants(file: &Path) -> Result<()> {
    let mut bytes = None;
    for (suffix, encode) in VARIANTS {
        let variant = variant_path(file, suffix);
        if variant.exists() {
            continue;
        }
        let plain = match &bytes {
            Some(plain) => plain,
            None => bytes.insert(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
        };
        let temporary = variant_path(file, &format!("{suffix}.tmp"));
        std::fs::write(&temporary, encode(plain)?)?;
        std::fs::rename(&temporary, &variant)?;
    }
    Ok(())
}

fn variant_path(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    file.with_file_name(name)
}

/// A bundle file's size raw, as gzip and as brotli: its variants' sizes, written first if missing.
pub fn encoded_sizes(file: &Path) -> Result<(u64, u64, u64)> {
    write_variants(file)?;
    let len = |path: &Path| std::fs::metadata(path).map(|metadata| metadata.len()).with_context(|| format!("reading {}", path.display()));
    Ok((len(file)?, len(&variant_path(file, "gz"))?, len(&variant_path(file, "br"))?))
}

/// The bundle file a name in `pkg/` belongs to: itself, or the file a compressed variant was made from.
pub fn base_name(name: &str) -> &str {
    VARIANTS.iter().find_map(|(suffix, _)| name.strip_suffix(suffix).and_then(|rest| rest.strip_suffix('.'))).unwrap_or(name)
}

/// One fragment's release bundle against its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weight {
    pub fragment: String,
    pub raw: u64,
    pub brotli: u64,
    pub budget: Option<u64>,
    /// The `Cargo.toml` that declares the budget (named in a failure).
    pub manifest: PathBuf,
}

impl Weight {
    fn verdict(&self) -> Option<String> {
        match self.budget {
            None => Some(format!(
                "the {} fragment declares no size budget: add `budget-brotli-bytes = <bytes>` under [package.metadata.tessera] in {}",
                self.fragment,
                self.manifest.display()
            )),
            Some(budget) if self.brotli > budget => Some(format!(
                "the {} bundle is {} B brotli, over its budget of {budget} B by {} B: make it smaller, or raise `budget-brotli-bytes` in {} if the growth is worth it",
                self.fragment,
                self.brotli,
                self.brotli - budget,
                self.manifest.display()
            )),
            Some(_) => None,
        }
    }
}

/// Measures a fragment's current release bundle: every file in its manifest, raw and as its `.br` variant.
pub fn measure(workspace: &Workspace, fragment: &FragmentCrate) -> Result<Weight> {
    let bundle = workspace.site_dir().join(&fragment.name);
    let manifest: FragmentManifest =
        serde_json::from_slice(&std::fs::read(bundle.join(MANIFEST_FILE)).with_context(|| format!("the {} bundle's manifest", fragment.name))?)?;
    if manifest.profile != WasmProfile::Release.cargo_profile() {
        bail!("the {} bundle was built with the {} profile; budgets apply to release bundles (cargo xtask build)", fragment.name, manifest.profile);
    }
    let (mut raw, mut brotli) = (0, 0);
    for asset in &manifest.assets {
        let (file_raw, _, file_brotli) = encoded_sizes(&bundle.join(&asset.path))?;
        raw += file_raw;
        brotli += file_brotli;
    }
    Ok(Weight { fragment: fragment.name.clone(), raw, brotli, budget: fragment.budget, manifest: fragment.dir.join("Cargo.toml") })
}

/// Prints every fragment's weight against its budget and fails naming each one over (or without) a budget.
pub fn check_budgets(weights: &[Weight]) -> Result<()> {
    println!("| fragment bundle (js + wasm + css) | raw B | brotli B | budget B | |");
    println!("|---|--:|--:|--:|---|");
    for weight in weights {
        let budget = weight.budget.map_or("none".to_owned(), |budget| budget.to_string());
        let mark = if weight.verdict().is_some() { "over" } else { "ok" };
        println!("| {} | {} | {} | {budget} | {mark} |", weight.fragment, weight.raw, weight.brotli);
    }
    let failures: Vec<String> = weights.iter().filter_map(Weight::verdict).collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// `cargo xtask bench --only transfer`: bytes on the wire for a first visit to `/catalog` and its parts,
/// as served uncompressed (what every response was before compression), as gzip and as brotli, from the
/// release server on loopback.
pub fn transfer(binary: &Path, site: &Path, scratch: &Path) -> Result<()> {
    let port = crate::bench_support::free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let _server = crate::bench_support::start_server(
        binary,
        site,
        &scratch.join("transfer"),
        port,
        &[("TESSERA_PUBLIC_URL", url.clone()), ("TESSERA_DEMO_EXTRA_PRODUCTS", "0".to_owned())],
        &["--demo"],
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // No decompression in this client: what it reads is what crossed the wire.
        let client = reqwest::Client::new();
        let page = client.get(format!("{url}/catalog")).send().await?.text().await?;
        let mut parts: Vec<(String, reqwest::RequestBuilder)> = vec![
            ("/catalog page (composed, streamed)".to_owned(), client.get(format!("{url}/catalog"))),
            ("/ home page".to_owned(), client.get(format!("{url}/"))),
            (
                "POST /catalog/api/search_products (JSON)".to_owned(),
                client
                    .post(format!("{url}/catalog/api/search_products"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(""),
            ),
        ];
        // The stylesheet and bundle files the page loads, from its own markup.
        for path in referenced_assets(&page) {
            parts.push((path.clone(), client.get(format!("{url}{path}"))));
        }
        println!("| first visit to /catalog | identity B | gzip B | brotli B | brotli vs identity |");
        println!("|---|--:|--:|--:|--:|");
        let mut totals = [0u64; 3];
        for (name, request) in parts {
            let mut sizes = [0u64; 3];
            for (index, encoding) in ["identity", "gzip", "br"].into_iter().enumerate() {
                let response = request.try_clone().context("a repeatable request")?.header("accept-encoding", encoding).send().await?;
                if !response.status().is_success() {
                    bail!("{name}: {}", response.status());
                }
                let served = response.headers().get("content-encoding").and_then(|value| value.to_str().ok()).unwrap_or("identity").to_owned();
                let bytes = response.bytes().await?.len() as u64;
                if encoding != "identity" && served != encoding && bytes > 256 {
                    bail!("{name}: asked for {encoding}, got {served} ({bytes} B)");
                }
                sizes[index] = bytes;
                totals[index] += bytes;
            }
            println!("| {name} | {} | {} | {} | {:.1}× smaller |", sizes[0], sizes[1], sizes[2], sizes[0] as f64 / sizes[2].max(1) as f64);
        }
        println!("| **total** | **{}** | **{}** | **{}** | **{:.1}× smaller** |", totals[0], totals[1], totals[2], totals[0] as f64 / totals[2].max(1) as f64);
        println!();
        Ok(())
    })
}

/// The same-origin stylesheet, script and wasm addresses a page names (`href`/`src` attributes and the
/// hydration script's wasm path), each once.
fn referenced_assets(page: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for piece in page.split(['"', '\'']) {
        let is_asset = piece.starts_with('/') && (piece.contains(".css") || piece.ends_with(".js") || piece.ends_with(".wasm"));
        if is_asset && !found.iter().any(|seen| seen == piece) {
            found.push(piece.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(brotli: u64, budget: Option<u64>) -> Weight {
        Weight { fragment: "catalog".into(), raw: brotli * 3, brotli, budget, manifest: PathBuf::from("fragments/catalog/Cargo.toml") }
    }

    #[test]
    fn budgets_fail_naming_the_bytes_and_where_to_change_them() {
        assert!(check_budgets(&[weight(100, Some(100)), weight(99, Some(100))]).is_ok());
        let error = check_budgets(&[weight(150, Some(100))]).unwrap_err().to_string();
        assert!(error.contains("150 B brotli") && error.contains("budget of 100 B by 50 B") && error.contains("fragments/catalog/Cargo.toml"), "{error}");
        let error = check_budgets(&[weight(10, None)]).unwrap_err().to_string();
        assert!(error.contains("declares no size budget") && error.contains("budget-brotli-bytes"), "{error}");
    }

    #[test]
    fn variants_decode_to_the_file_and_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog-0123456789abcdef_bg.wasm");
        let content: Vec<u8> = (0..20_000u32).flat_map(|n| (n % 251).to_le_bytes()).collect();
        std::fs::write(&file, &content).unwrap();
        write_variants(&file).unwrap();

        let mut decoded = Vec::new();
        brotli::BrotliDecompress(&mut std::fs::File::open(variant_path(&file, "br")).unwrap(), &mut decoded).unwrap();
        assert_eq!(decoded, content);
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(variant_path(&file, "gz")).unwrap()), &mut decoded).unwrap();
        assert_eq!(decoded, content);
        assert!(std::fs::metadata(variant_path(&file, "br")).unwrap().len() < content.len() as u64 / 4);

        // An existing variant is not rewritten (the name carries the content hash).
        std::fs::write(variant_path(&file, "gz"), b"kept").unwrap();
        write_variants(&file).unwrap();
        assert_eq!(std::fs::read(variant_path(&file, "gz")).unwrap(), b"kept");
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|name| !name.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn variants_belong_to_their_file() {
        assert_eq!(base_name("catalog-ab_bg.wasm.br"), "catalog-ab_bg.wasm");
        assert_eq!(base_name("catalog-ab.js.gz"), "catalog-ab.js");
        assert_eq!(base_name("catalog-ab.js"), "catalog-ab.js");
        assert_eq!(base_name("catalog-ab.jsbr"), "catalog-ab.jsbr");
    }

    #[test]
    fn finds_the_assets_a_page_loads() {
        let page = r#"<link rel="stylesheet" href="/style/tessera.css?v=1"><script type="module">import init from '/catalog/pkg/catalog-1.js'; init('/catalog/pkg/catalog-1_bg.wasm')</script><a href="/cart">"#;
        assert_eq!(referenced_assets(page), ["/style/tessera.css?v=1", "/catalog/pkg/catalog-1.js", "/catalog/pkg/catalog-1_bg.wasm"]);
    }
}
