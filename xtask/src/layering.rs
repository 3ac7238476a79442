//! The layering rules of the workspace, checked on `cargo metadata` by `cargo xtask test` before any test
//! runs (and on their own by `cargo xtask layering`):
//!
//! - a **fragment crate** (`[package.metadata.tessera] fragment = …`) depends, among the workspace's
//!   crates, on the SDK (`tessera-fragment`), the contracts and `shared-auth` only; and nothing it links
//!   reaches another fragment, the process host, the shell, a provider or the site, however indirectly;
//! - the **SDK** never reaches the host, and the **contracts** and `shared-auth` reach no other crate of
//!   the workspace but the contracts.
//!
//! Only normal dependencies count: they are what a binary links. Dev-dependencies may use anything
//! (a fragment's tests run it through `tessera-testing`, which uses the host). A violation names the chain
//! of dependencies that leads to it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{bail, Context, Result};

use crate::{cargo, Workspace};

/// The workspace crates a fragment crate may depend on directly.
const FRAGMENT_MAY_USE: [&str; 3] = ["tessera-fragment", "tessera-contracts", "shared-auth"];
/// The platform crates that run processes, which no fragment (nor the SDK) may reach.
const HOST_SIDE: [&str; 3] = ["tessera-host", "tessera-shell", "tessera-site"];

/// Which packages a crate may not reach.
type Forbidden<'a> = &'a dyn Fn(&Package) -> bool;

/// A workspace package, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    name: String,
    /// Path of its directory relative to the workspace root (`fragments/catalog`).
    dir: String,
    fragment: bool,
    /// Workspace packages it depends on with a normal dependency.
    deps: Vec<String>,
}

impl Package {
    fn is_provider(&self) -> bool {
        self.dir.starts_with("providers/")
    }
}

/// What `cargo metadata` says of the workspace's own packages.
fn packages(metadata: &serde_json::Value, root: &str) -> Result<BTreeMap<String, Package>> {
    let members: BTreeSet<&str> = metadata["workspace_members"].as_array().context("workspace members")?.iter().filter_map(|id| id.as_str()).collect();
    let name_of: BTreeMap<&str, &str> =
        metadata["packages"].as_array().context("packages")?.iter().filter_map(|package| Some((package["id"].as_str()?, package["name"].as_str()?))).collect();
    let mut found = BTreeMap::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let id = package["id"].as_str().context("a package id")?;
        if !members.contains(id) {
            continue;
        }
        let name = package["name"].as_str().context("a package name")?.to_owned();
        let manifest = package["manifest_path"].as_str().context("a manifest path")?;
        let dir = manifest.strip_prefix(root).unwrap_or(manifest).trim_start_matches('/').trim_end_matches("Cargo.toml").trim_end_matches('/').to_owned();
        let fragment = package["metadata"]["tessera"]["fragment"].is_string();
        let node = metadata["resolve"]["nodes"].as_array().context("the resolved graph")?.iter().find(|node| node["id"] == id).context("a resolved node")?;
        let deps = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|dep| dep["dep_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null())))
            .filter_map(|dep| dep["pkg"].as_str())
            .filter(|dep| members.contains(dep))
            .filter_map(|dep| name_of.get(dep).map(|name| name.to_string()))
            .collect();
        found.insert(name.clone(), Package { name, dir, fragment, deps });
    }
    Ok(found)
}

/// The shortest chain of normal dependencies from `from` to a package `forbidden` accepts, if any.
fn reaches(packages: &BTreeMap<String, Package>, from: &str, forbidden: impl Fn(&Package) -> bool) -> Option<Vec<String>> {
    let mut queue = VecDeque::from([vec![from.to_owned()]]);
    let mut seen = BTreeSet::from([from.to_owned()]);
    while let Some(chain) = queue.pop_front() {
        let last = chain.last().expect("a chain has a start");
        for dep in packages.get(last).map(|package| package.deps.as_slice()).unwrap_or_default() {
            if !seen.insert(dep.clone()) {
                continue;
            }
            let mut longer = chain.clone();
            longer.push(dep.clone());
            if packages.get(dep).is_some_and(&forbidden) {
                return Some(longer);
            }
            queue.push_back(longer);
        }
    }
    None
}

/// Every broken rule, in words.
fn violations(packages: &BTreeMap<String, Package>) -> Vec<String> {
    let mut found = Vec::new();
    for package in packages.values().filter(|package| package.fragment) {
        for dep in package.deps.iter().filter(|dep| !FRAGMENT_MAY_USE.contains(&dep.as_str())) {
            found.push(format!("fragment {} depends on {dep}; a fragment may use {} only", package.name, FRAGMENT_MAY_USE.join(", ")));
        }
        let name = package.name.clone();
        let off_limits = |other: &Package| (other.fragment && other.name != name) || other.is_provider() || HOST_SIDE.contains(&other.name.as_str());
        if let Some(chain) = reaches(packages, &package.name, off_limits) {
            found.push(format!("fragment {} reaches {}: {}", package.name, chain.last().expect("a chain"), chain.join(" → ")));
        }
    }
    let rules: [(&str, Forbidden); 3] = [
        ("tessera-fragment", &|other: &Package| HOST_SIDE.contains(&other.name.as_str()) || other.fragment || other.is_provider()),
        ("tessera-contracts", &|_: &Package| true),
        ("shared-auth", &|other: &Package| other.name != "tessera-contracts"),
    ];
    for (name, forbidden) in rules {
        if let Some(chain) = packages.contains_key(name).then(|| reaches(packages, name, forbidden)).flatten() {
            found.push(format!("{name} reaches {}: {}", chain.last().expect("a chain"), chain.join(" → ")));
        }
    }
    found
}

/// Checks the rules on this workspace; fails naming every violation. Prints the workspace's dependency
/// edges between its own crates, for the record.
pub fn check(workspace: &Workspace) -> Result<()> {
    let output = cargo(workspace).args(["metadata", "--format-version", "1"]).output().context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = packages(&metadata, &workspace.root.to_string_lossy())?;
    let edges: usize = packages.values().map(|package| package.deps.len()).sum();
    let fragments = packages.values().filter(|package| package.fragment).count();
    let broken = violations(&packages);
    if !broken.is_empty() {
        bail!("the workspace's layering is broken:\n  - {}", broken.join("\n  - "));
    }
    println!("xtask: layering holds: {} crates, {edges} dependency edges between them, {fragments} fragments on the SDK only", packages.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, dir: &str, deps: &[&str]) -> Package {
        Package {
            name: name.into(),
            dir: dir.into(),
            fragment: dir.starts_with("fragments/") && !dir.ends_with("/bin"),
            deps: deps.iter().map(|dep| dep.to_string()).collect(),
        }
    }

    fn workspace(extra: &[Package]) -> BTreeMap<String, Package> {
        let mut packages = vec![
            package("tessera-contracts", "platform/contracts", &[]),
            package("shared-auth", "platform/shared-auth", &["tessera-contracts"]),
            package("tessera-fragment", "platform/fragment", &["tessera-contracts", "shared-auth"]),
            package("tessera-host", "platform/host", &["tessera-fragment", "tessera-contracts", "shared-auth"]),
            package("tessera-paysandbox", "providers/paysandbox", &["tessera-fragment", "tessera-host"]),
            package("tessera-catalog", "fragments/catalog", &["tessera-fragment", "tessera-contracts", "shared-auth"]),
            package("tessera-catalog-bin", "fragments/catalog/bin", &["tessera-catalog", "tessera-host"]),
            package("tessera-cart", "fragments/cart", &["tessera-fragment", "tessera-contracts"]),
        ];
        packages.extend(extra.iter().cloned());
        packages.into_iter().map(|package| (package.name.clone(), package)).collect()
    }

    #[test]
    fn the_intended_layout_holds() {
        assert_eq!(violations(&workspace(&[])), Vec::<String>::new());
    }

    #[test]
    fn a_fragment_on_the_host_a_provider_or_another_fragment_is_named_with_its_chain() {
        let mut packages = workspace(&[]);
        packages.get_mut("tessera-cart").unwrap().deps.push("tessera-paysandbox".into());
        let found = violations(&packages);
        assert!(
            found
                .iter()
                .any(|v| v == "fragment tessera-cart depends on tessera-paysandbox; a fragment may use tessera-fragment, tessera-contracts, shared-auth only"),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v == "fragment tessera-cart reaches tessera-paysandbox: tessera-cart → tessera-paysandbox"), "{found:?}");

        // Indirectly: through a helper crate of the workspace that is allowed by name but not by what it links.
        let mut packages = workspace(&[package("tessera-helpers", "platform/helpers", &["tessera-host"])]);
        packages.get_mut("tessera-fragment").unwrap().deps.push("tessera-helpers".into());
        let found = violations(&packages);
        assert!(
            found.iter().any(|v| v == "fragment tessera-catalog reaches tessera-host: tessera-catalog → tessera-fragment → tessera-helpers → tessera-host"),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v.starts_with("tessera-fragment reaches tessera-host")), "{found:?}");

        let mut packages = workspace(&[]);
        packages.get_mut("tessera-catalog").unwrap().deps.push("tessera-cart".into());
        assert!(violations(&packages).iter().any(|v| v.contains("fragment tessera-catalog reaches tessera-cart")));
    }

    #[test]
    fn the_contracts_stand_alone_and_shared_auth_on_the_contracts_only() {
        let mut packages = workspace(&[]);
        packages.get_mut("tessera-contracts").unwrap().deps.push("shared-auth".into());
        packages.get_mut("shared-auth").unwrap().deps.push("tessera-fragment".into());
        let found = violations(&packages);
        assert!(found.iter().any(|v| v.starts_with("tessera-contracts reaches shared-auth")), "{found:?}");
        assert!(found.iter().any(|v| v.starts_with("shared-auth reaches tessera-fragment")), "{found:?}");
    }

    /// The real workspace, read from `cargo metadata`: the rules hold today.
    #[test]
    fn this_workspace_keeps_its_layering() {
        check(&Workspace::locate()).unwrap();
    }
}
