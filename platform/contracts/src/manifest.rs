//! The fragment manifest: what `cargo xtask build` writes beside each fragment's bundle and what the
//! server reads at run time to reference the exact assets it serves.

use serde::{Deserialize, Serialize};

/// File name of the manifest inside a fragment's site directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The attribute that marks a fragment's markup: its pages' `<body>` and its widgets' root element. A
/// fragment's stylesheet applies inside elements that carry it with the fragment's name, and nowhere
/// else (not in the chrome, not in another fragment's markup).
pub const FRAGMENT_ATTRIBUTE: &str = "data-fragment";

/// `<site>/<fragment>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentManifest {
    /// Fragment name, e.g. `catalog`.
    pub name: String,
    /// Crate version of the fragment.
    pub version: String,
    /// Hash over every asset: changes whenever any byte of the bundle changes.
    pub build_id: String,
    /// URL prefix the fragment owns, e.g. `/catalog`.
    pub route_prefix: String,
    /// [`crate::CONTRACT_VERSION`] the fragment was built against.
    pub contract_version: u32,
    /// Cargo profile of the wasm build (`dev` or `wasm-release`).
    pub profile: String,
    /// Every file of the bundle.
    pub assets: Vec<ManifestAsset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAsset {
    /// What the file is.
    pub kind: AssetKind,
    /// Path relative to the fragment's site directory, e.g. `pkg/catalog-1a2b3c4d5e6f7a8b.js`; served at
    /// `<route_prefix>/<path>`.
    pub path: String,
    /// Subresource-integrity value, `sha384-<base64>`.
    pub integrity: String,
    /// Size in bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// wasm-bindgen's ES module glue.
    Js,
    /// The fragment's WebAssembly module.
    Wasm,
    /// The fragment's own stylesheet, scoped at build time to its pages and widgets.
    Css,
}

impl FragmentManifest {
    /// The first asset of a kind.
    pub fn asset(&self, kind: AssetKind) -> Option<&ManifestAsset> {
        self.assets.iter().find(|asset| asset.kind == kind)
    }

    /// Public URL of an asset.
    pub fn url(&self, asset: &ManifestAsset) -> String {
        format!("{}/{}", self.route_prefix.trim_end_matches('/'), asset.path)
    }
}
