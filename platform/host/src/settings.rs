//! Typed, layered configuration: defaults, then an optional TOML file (`TESSERA_CONFIG`), then
//! `TESSERA_*` environment variables (`__` separates nesting: `TESSERA_FRAGMENTS__CATALOG__UPSTREAM`).
//!
//! [`Settings`] is what every process reads, made of sections owned by what reads them, each read from
//! the same sources, so a setting keeps its one name (`TESSERA_DATA_DIR`, not a path through the
//! sections):
//! - [`ServerSettings`] (`crate::serve`): address, draining, metrics listener, trusted proxies;
//! - `StoreSettings` (`tessera_fragment::db`): data dir, PostgreSQL;
//! - `SecretSettings` (`tessera_fragment::secrets`): the shared secrets of each trust relationship;
//! - `LoginSettings` (`crate::login`): the shared login every process verifies (issuer, audience,
//!   cookies, JWKS);
//! - `EventSettings` (`crate::relay`): transport, relay, retries, retention;
//! - the fragments' upstreams, the OpenID Connect provider of a fragment on another domain
//!   (`crate::relying_party`), the payment provider, the bundles and the demo data.
//!
//! The shell's own knobs (sessions, sign-in throttling, the registry's timeouts, its OpenID Connect
//! clients) are the shell's (`tessera_shell::settings`), read the same way ([`section`]) beside these. `cargo xtask settings` writes the reference
//! (`docs/settings.md`) from these definitions, and a test keeps it current.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_contracts::domain::ServiceName;
use tessera_fragment::db::StoreSettings;
use tessera_fragment::secrets::SecretSettings;

use crate::login::LoginSettings;
use crate::relay::EventSettings;
use crate::relying_party::OidcProviderSettings;
use crate::serve::ServerSettings;

/// Reads one section of the settings: its defaults, then `TESSERA_CONFIG` (a TOML file) if set, then
/// `TESSERA_*` variables. Each section takes its own keys from the same sources and ignores the others',
/// so one environment holds the settings of every section and every process; a malformed value is
/// refused naming its key and where it came from (`for key "POSTGRES_POOL_SIZE" in `TESSERA_` environment
/// variable(s)`).
/// (Each section is read on its own rather than as `serde(flatten)`ed parts of one struct, which would
/// lose that name from the error.)
pub fn section<T: Default + Serialize + DeserializeOwned>() -> Result<T, Box<figment::Error>> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Ok(path) = std::env::var("TESSERA_CONFIG") {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(Env::prefixed("TESSERA_").split("__").ignore(&["config", "test_postgres_url", "test_nats_url"])).extract().map_err(Box::new)
}

/// Everything a Tessera process can be told, but the shell's own knobs: one section per part that reads
/// it (see the module's docs).
#[derive(Clone, Default)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub secrets: SecretSettings,
    pub login: LoginSettings,
    pub events: EventSettings,
    pub site: SiteSettings,
}

/// What this process serves and reaches: its bundles, the fragments it is told of, the payment
/// provider, and the demo data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteSettings {
    /// Where `cargo xtask build` put the fragments' bundles and manifests (`TESSERA_SITE_DIR`).
    pub site_dir: PathBuf,
    /// Per-fragment settings, by name (`TESSERA_FRAGMENTS__<NAME>__UPSTREAMS`, `…__TIMEOUT_MS`).
    pub fragments: BTreeMap<ServiceName, FragmentSettings>,
    /// A fragment running alone on a domain the shell's cookie does not reach: the shell it signs its
    /// users in at (`TESSERA_OIDC_PROVIDER__ISSUER`, `…__CLIENT_ID`, `…__CLIENT_SECRET`, `…__URL`,
    /// `…__SESSION_CHECK_SECONDS`; see `crate::relying_party`).
    pub oidc_provider: Option<OidcProviderSettings>,
    /// Base URL of a separate process serving the payment provider (`/sandbox-pay`), or several,
    /// comma-separated (every shell replica serves it); unset: the shell serves the sandbox provider in
    /// its own process, and a fragment alone reaches it at `public_url`.
    pub payment_url: Option<String>,
    /// Seed the demo accounts and catalogue (`--demo`).
    pub demo: bool,
    /// Generated products the demo adds to the eight classic ones.
    pub demo_extra_products: usize,
}

impl Default for SiteSettings {
    fn default() -> Self {
        SiteSettings {
            site_dir: PathBuf::from("target/site"),
            fragments: BTreeMap::new(),
            oidc_provider: None,
            payment_url: None,
            demo: false,
            demo_extra_products: tessera_contracts::demo::DEFAULT_EXTRA_PRODUCTS,
        }
    }
}

/// How the shell (and the other services) reach one fragment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FragmentSettings {
    /// Base URL of a separate process (`TESSERA_FRAGMENTS__<NAME>__UPSTREAM`).
    pub upstream: Option<String>,
    /// Base URLs of several instances, comma-separated (`TESSERA_FRAGMENTS__<NAME>__UPSTREAMS`); used
    /// together with `upstream`. Unset both: the fragment runs in this process, if this binary has it.
    pub upstreams: Option<String>,
    /// Overrides the shell's `fragment_timeout_ms` for this fragment.
    pub timeout_ms: Option<u64>,
    /// The path prefix the shell routes to this fragment (`TESSERA_FRAGMENTS__<NAME>__PREFIX`; default
    /// `tessera_contracts::descriptor::site_prefix`: `/admin/inventory` for inventory, `/<name>` for most).
    /// A fragment describing itself at any other prefix is not routed to: a description cannot claim
    /// another fragment's addresses.
    pub prefix: Option<String>,
}

impl FragmentSettings {
    /// Every configured instance's base URL (`upstream` first, then `upstreams`), without duplicates.
    pub fn instances(&self) -> Vec<String> {
        let mut instances: Vec<String> = Vec::new();
        let listed = self.upstreams.iter().flat_map(|list| list.split(','));
        for url in self.upstream.iter().map(String::as_str).chain(listed) {
            let url = url.trim().trim_end_matches('/');
            if !url.is_empty() && !instances.iter().any(|known| known == url) {
                instances.push(url.to_owned());
            }
        }
        instances
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every section prints what it may: the database URL, the secrets and the NATS URL never.
        f.debug_struct("Settings")
            .field("server", &self.server)
            .field("store", &self.store)
            .field("secrets", &self.secrets)
            .field("login", &self.login)
            .field("events", &self.events)
            .field("site", &self.site)
            .finish()
    }
}

impl Settings {
    /// Defaults, then `TESSERA_CONFIG` (a TOML file) if set, then `TESSERA_*` variables, section by section.
    pub fn load() -> Result<Settings, Box<figment::Error>> {
        Ok(Settings { server: section()?, store: section()?, secrets: section()?, login: section()?, events: section()?, site: section()? })
    }

    /// The instances configured for fragment `name` (empty: none, it runs in this process or nowhere).
    pub fn instances_of(&self, name: &ServiceName) -> Vec<String> {
        self.site.fragments.get(name).map(FragmentSettings::instances).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::OutboxRelay;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn environment_overrides_defaults_with_nesting_and_every_section_reads_its_own_names() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_ADDR", "127.0.0.1:4000");
            jail.set_env("TESSERA_DATA_DIR", "/tmp/tessera-x");
            jail.set_env("TESSERA_FRAGMENTS__CATALOG__UPSTREAM", "http://127.0.0.1:3101");
            jail.set_env("TESSERA_FRAGMENTS__CATALOG__TIMEOUT_MS", "250");
            jail.set_env("TESSERA_FRAGMENTS__CART__UPSTREAMS", "http://127.0.0.1:3201/, http://127.0.0.1:3202,,");
            jail.set_env("TESSERA_OUTBOX_RELAY", "cdc");
            jail.set_env("TESSERA_POSTGRES_POOL_SIZE", "4");
            jail.set_env("TESSERA_EVENTS_MAX_ATTEMPTS", "3");
            jail.set_env("TESSERA_ACCESS_TTL_SECONDS", "120");
            jail.set_env("TESSERA_DRAIN_NOTICE_MS", "0");
            // A secret of digits only stays text (the environment's values are typed by their looks).
            jail.set_env("TESSERA_PAYMENT_API_SECRET", "0123456789012345678901234567890123456789");
            jail.set_env("TESSERA_SERVICE_KEYS__INVENTORY", "MC4CAQAwBQYDK2VwBCIEIA==");
            jail.set_env("TESSERA_DEMO", "true");
            jail.set_env("TESSERA_POSTGRES_URLS__CATALOG", "postgres://tessera_catalog:pw@db/shop");
            let settings = Settings::load().map_err(|error| *error)?;
            assert_eq!(settings.store.postgres_url_of("catalog").unwrap(), Some("postgres://tessera_catalog:pw@db/shop"));
            let refused = settings.store.postgres_url_of("cart").unwrap_err().to_string();
            assert!(refused.contains("TESSERA_POSTGRES_URLS__CART"), "a service without a URL of its own is told which to set: {refused}");
            assert!(!format!("{:?}", settings.store).contains("pw@"), "never printed");
            assert_eq!(settings.events.outbox_relay, OutboxRelay::Cdc);
            assert_eq!(settings.events.events_max_attempts, 3);
            assert_eq!(settings.server.addr.port(), 4000);
            assert_eq!(settings.server.drain_notice_ms, 0);
            assert_eq!(settings.store.data_dir, PathBuf::from("/tmp/tessera-x"));
            assert_eq!(settings.store.postgres_pool_size, 4);
            assert_eq!(settings.login.access_ttl_seconds, 120);
            assert_eq!(settings.secrets.payment_api_secret.as_deref(), Some("0123456789012345678901234567890123456789"));
            assert_eq!(settings.secrets.service_keys["inventory"], "MC4CAQAwBQYDK2VwBCIEIA==", "a service's keys, by its name");
            assert!(settings.site.demo);
            let catalog = &settings.site.fragments["catalog"];
            assert_eq!(catalog.upstream.as_deref(), Some("http://127.0.0.1:3101"));
            assert_eq!(catalog.timeout_ms, Some(250));
            assert_eq!(settings.instances_of(&ServiceName::CATALOG), ["http://127.0.0.1:3101"]);
            assert_eq!(settings.instances_of(&ServiceName::CART), ["http://127.0.0.1:3201", "http://127.0.0.1:3202"]);
            assert!(settings.instances_of(&ServiceName::INVENTORY).is_empty());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn a_malformed_value_is_refused_naming_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_POSTGRES_POOL_SIZE", "many");
            let error = Settings::load().map(drop).unwrap_err().to_string();
            assert!(error.contains("\"POSTGRES_POOL_SIZE\" in `TESSERA_` environment variable"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn the_openid_connect_provider_comes_from_the_environment_and_its_secret_is_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_OIDC_PROVIDER__ISSUER", "https://shop.example");
            jail.set_env("TESSERA_OIDC_PROVIDER__CLIENT_ID", "ops");
            jail.set_env("TESSERA_OIDC_PROVIDER__CLIENT_SECRET", "client-secret-of-thirty-two-bytes-or-more");
            let settings = Settings::load().map_err(|error| *error)?;
            let provider = settings.site.oidc_provider.as_ref().expect("a provider");
            assert_eq!((provider.issuer.as_str(), provider.client_id.as_str(), provider.url.as_deref()), ("https://shop.example", "ops", None));
            assert_eq!(provider.session_check_seconds, 60);
            assert!(!format!("{settings:?}").contains("thirty-two"));
            Ok(())
        });
    }

    #[test]
    fn the_database_url_and_the_secrets_are_never_printed() {
        let mut settings = Settings::default();
        settings.store.postgres_url = Some("postgres://u:secret@h/db".into());
        settings.secrets.payment_api_secret = Some("a-payment-secret-of-thirty-two-bytes".into());
        settings.secrets.service_keys.insert("cart".into(), "MC4CAQAwBQYDK2VwBCIEIA-private".into());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("secret@h") && !printed.contains("a-payment-secret") && !printed.contains("-private"), "{printed}");
        assert!(printed.contains("TESSERA_PAYMENT_API_SECRET") && printed.contains("cart"), "which secrets are set is shown: {printed}");
    }
}
