//! The all-in-one site: the one place that chooses which fragments the `tessera` binary contains.

use anyhow::Context;
use tessera_fragment::fragment::Fragment;
use tessera_host::binary::{run_fragment, Extra};
use tessera_host::{Running, Settings};
use tessera_shell::settings::ShellSettings;

/// Every fragment of the storefront, in navigation order.
pub const FRAGMENTS: [&dyn Fragment; 3] = [&tessera_catalog::server::Catalog, &tessera_cart::server::Cart, &tessera_inventory::server::Inventory];

/// Every service of the site that keeps data: the shell, the fragments, the sandbox payment provider
/// (the schemas and roles `tessera db provision` makes).
pub fn services() -> Vec<String> {
    let fragments = FRAGMENTS.iter().map(|fragment| fragment.name().to_string());
    std::iter::once("shell".to_owned()).chain(fragments).chain(std::iter::once(tessera_paysandbox::NAME.to_string())).collect()
}

/// Which part of the site this process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The shell, with every fragment that has no upstream configured running in this process.
    Site,
    /// One fragment alone, verifying logins with the shell's JWKS over HTTP (what `tessera-<name>` does).
    Fragment(String),
}

/// The fragment called `name`.
pub fn fragment(name: &str) -> anyhow::Result<&'static dyn Fragment> {
    FRAGMENTS.iter().copied().find(|fragment| fragment.name().as_str() == name).with_context(|| {
        let names: Vec<String> = FRAGMENTS.iter().map(|fragment| fragment.name().to_string()).collect();
        format!("there is no fragment called {name:?} ({})", names.join(", "))
    })
}

/// Binds `TESSERA_ADDR` (port 0 picks a free one) and serves `mode` in the background.
pub async fn spawn(settings: &ShellSettings, mode: &Mode) -> anyhow::Result<Running> {
    match mode {
        Mode::Site => Ok(tessera_shell::site::serve(settings, &FRAGMENTS).await?),
        Mode::Fragment(name) => {
            let fragment = fragment(name)?;
            // This binary links the sandbox provider too, so the cart alone brings it along unless a provider
            // is configured (`tessera-cart` itself reaches a provider over HTTP only).
            let extra: Option<Extra> = (fragment.name() == tessera_cart::NAME).then_some(|host| {
                Box::pin(async move {
                    if host.settings.site.payment_url.is_none() {
                        Ok(Some(tessera_paysandbox::attach(host).await?))
                    } else {
                        Ok(None)
                    }
                })
            });
            Ok(run_fragment(&settings.host, fragment, extra).await?)
        }
    }
}

/// `tessera inventory verify`: checks the inventory's invariants on its database (the same one `serve`
/// uses with these settings). Returns the report; the caller decides the exit status.
pub async fn verify_inventory(settings: &Settings) -> anyhow::Result<tessera_inventory::verify::Report> {
    let db = settings.store.open_fragment(tessera_inventory::NAME.as_str(), &tessera_inventory::server::MIGRATIONS).await?;
    let report = tessera_inventory::verify::verify(&db).await.context("reading the inventory database")?;
    db.close().await;
    Ok(report)
}
