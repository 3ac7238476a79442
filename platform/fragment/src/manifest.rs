//! The fragment's build manifest at run time, and the hydration tags it yields.
//!
//! The manifest is re-read whenever its modification time changes, so deploying a new bundle into the site
//! dir switches pages to it without restarting anything, and a page always names assets that exist.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tessera_contracts::manifest::{AssetKind, FragmentManifest, MANIFEST_FILE};

/// Reads `<bundle_dir>/manifest.json`, caching it until the file changes.
pub struct ManifestStore {
    bundle_dir: PathBuf,
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, Arc<FragmentManifest>)>>,
}

impl ManifestStore {
    pub fn new(bundle_dir: PathBuf) -> ManifestStore {
        ManifestStore { path: bundle_dir.join(MANIFEST_FILE), bundle_dir, cached: Mutex::new(None) }
    }

    /// The fragment's bundle directory (`<site_dir>/<fragment>`).
    pub fn bundle_dir(&self) -> PathBuf {
        self.bundle_dir.clone()
    }

    /// The current manifest, or `None` when the fragment's bundle has not been built (pages then render
    /// without hydration, and a warning is logged).
    pub fn current(&self) -> Option<Arc<FragmentManifest>> {
        let modified = std::fs::metadata(&self.path).and_then(|meta| meta.modified()).ok();
        let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(modified) = modified else {
            tracing::warn!(path = %self.path.display(), "no fragment manifest: pages will not hydrate");
            *cached = None;
            return None;
        };
        if let Some((at, manifest)) = cached.as_ref() {
            if *at == modified {
                return Some(manifest.clone());
            }
        }
        let parsed = std::fs::read(&self.path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| serde_json::from_slice::<FragmentManifest>(&bytes).map_err(|error| error.to_string()));
        match parsed {
            Ok(manifest) if manifest.contract_version != tessera_contracts::CONTRACT_VERSION => {
                // A bundle built against other contracts would call APIs and read data this server does not
                // speak: serve the page without it rather than hydrate with it.
                tracing::error!(
                    path = %self.path.display(),
                    bundle = manifest.contract_version,
                    server = tessera_contracts::CONTRACT_VERSION,
                    "fragment bundle built against another contract version; pages will not hydrate"
                );
                *cached = None;
                None
            }
            Ok(manifest) => {
                let manifest = Arc::new(manifest);
                *cached = Some((modified, manifest.clone()));
                Some(manifest)
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "unreadable fragment manifest");
                // Keep serving the last good build rather than breaking hydration.
                cached.as_ref().map(|(_, manifest)| manifest.clone())
            }
        }
    }
}

/// URL and SRI of the fragment's stylesheet, when its bundle has one.
pub fn stylesheet(manifest: &FragmentManifest) -> Option<(String, String)> {
    let css = manifest.asset(AssetKind::Css)?;
    Some((manifest.url(css), css.integrity.clone()))
}

/// The page runtime inlined into every fragment page: island hydration, navigation inside the fragment,
/// refreshing a page's regions (see the file's own comment).
const ISLANDS_JS: &str = include_str!("islands.js");

/// What a page's `<head>` needs to load and hydrate one build (see [`hydration_tags`]).
pub struct HydrationTags {
    pub js_url: String,
    pub js_integrity: String,
    pub wasm_url: String,
    pub wasm_integrity: String,
    /// The inline module script.
    pub script: String,
}

/// The `<head>` tags that load and hydrate this exact build: a `modulepreload` with SRI for the JS glue, a
/// `preload` of the wasm (so it downloads while the page parses, not after the glue has run), and
/// a module script that fetches the wasm with SRI, calls the fragment's `hydrate` export (the islands'
/// shared root) and then hands the bundle to the page runtime ([`ISLANDS_JS`]), which hydrates each
/// island and keeps navigations under `prefix` inside the page.
///
/// Before hydrating, the script marks the page's API calls with its build and contract version and
/// reloads the page once if a server of another contract answers with the reload header (see
/// `tessera_contracts::RELOAD_HEADER`); a second refusal after that reload is left to the page's own error
/// handling, so a page never reloads in a loop.
pub fn hydration_tags(manifest: &FragmentManifest, prefix: &str) -> Option<HydrationTags> {
    let js = manifest.asset(AssetKind::Js)?;
    let wasm = manifest.asset(AssetKind::Wasm)?;
    let js_url = manifest.url(js);
    let wasm_url = manifest.url(wasm);
    let script = format!(
        "const tesseraFetch = window.fetch.bind(window);\n\
         window.fetch = async (input, init) => {{\n\
           const url = new URL(input instanceof Request ? input.url : String(input), location.href);\n\
           if (url.origin !== location.origin || !url.pathname.includes('/api/')) return tesseraFetch(input, init);\n\
           const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));\n\
           headers.set({build_header:?}, {build:?});\n\
           headers.set({contract_header:?}, {contract:?});\n\
           const response = await tesseraFetch(input, {{ ...init, headers }});\n\
           const key = 'tessera-reloaded:' + location.pathname;\n\
           if (response.headers.has({reload_header:?}) && !sessionStorage.getItem(key)) {{\n\
             sessionStorage.setItem(key, '1');\n\
             location.reload();\n\
           }}\n\
           return response;\n\
         }};\n\
         import init, * as bundle from {js:?};\n\
         {islands}\n\
         await init({{ module_or_path: fetch({wasm:?}, {{ integrity: {sri:?} }}) }});\n\
         bundle.hydrate();\n\
         tesseraPage(bundle, {prefix:?});\n\
         document.body.dataset.hydrated = \"true\";",
        // Without its comments and the `export` (it is inlined, not imported).
        islands = ISLANDS_JS
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("export function tesseraPage", "function tesseraPage"),
        js = js_url,
        wasm = wasm_url,
        sri = wasm.integrity,
        build_header = tessera_contracts::BUILD_HEADER,
        contract_header = tessera_contracts::CONTRACT_HEADER,
        reload_header = tessera_contracts::RELOAD_HEADER,
        build = manifest.build_id,
        contract = manifest.contract_version.to_string(),
    );
    Some(HydrationTags { js_url, js_integrity: js.integrity.clone(), wasm_url, wasm_integrity: wasm.integrity.clone(), script })
}
