//! Typed, layered configuration: defaults, then an optional TOML file (`TESSERA_CONFIG`), then
//! `TESSERA_*` environment variables (`__` separates nesting: `TESSERA_FRAGMENTS__CATALOG__UPSTREAM`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tessera_fragment::db::{StoreSettings, DEFAULT_POSTGRES_POOL_SIZE};
use tessera_fragment::event_admin::Retention;
use tessera_fragment::secrets::SecretSettings;

use crate::client_ip::TrustedProxies;

/// Everything a `tessera` process can be told.
#[derive(Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Address to listen on (`TESSERA_ADDR`).
    pub addr: SocketAddr,
    /// Where SQLite files and the signing key live (`TESSERA_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Where `cargo xtask build` put the fragments' bundles and manifests (`TESSERA_SITE_DIR`).
    pub site_dir: PathBuf,
    /// PostgreSQL URL; when set every service uses its own schema there instead of SQLite.
    pub postgres_url: Option<String>,
    /// Prefix of the PostgreSQL schema names (`<prefix><service>`).
    pub schema_prefix: String,
    /// Connections per service pool on PostgreSQL (`TESSERA_POSTGRES_POOL_SIZE`).
    pub postgres_pool_size: u32,
    /// Public URL of the site; `https://` makes cookies `Secure`.
    pub public_url: String,
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of an access token. Short: revocation reaches fragments served directly within it.
    pub access_ttl_seconds: i64,
    /// Absolute lifetime of a session (its refresh tokens rotate within it).
    pub session_ttl_seconds: i64,
    /// A used refresh token presented again within this many seconds is a concurrent request, not a replay.
    pub refresh_reuse_grace_seconds: i64,
    /// Parent domain for subdomain deployments (`Domain=` cookies); unset for same-origin.
    pub cookie_domain: Option<String>,
    /// Origins allowed to send state-changing requests; default: the origin of `public_url`.
    pub allowed_origins: Vec<String>,
    /// Sign-in throttling (see the shell's `throttle`): the window, and the failures allowed within it of
    /// one account from one client address, of one account from every address, and from one address over
    /// every account (the last two never bind an account signing in from where it did before).
    pub login_throttle_window_seconds: i64,
    pub login_max_failures_per_account: i64,
    pub login_max_failures_per_account_total: i64,
    pub login_max_failures_per_address: i64,
    /// Registrations allowed from one client address within the sign-in throttle's window.
    pub registration_max_per_address: i64,
    /// Password hashes (sign-in checks, registrations, password changes) running at once in the shell;
    /// 0: one per core. Past it requests wait up to 2 s for a turn, then get 503 with `Retry-After`.
    pub password_hashes_at_once: usize,
    /// Default time a fragment has to start answering.
    pub fragment_timeout_ms: u64,
    /// How often the shell asks each fragment instance whether it is ready (`GET /readyz`).
    pub health_interval_ms: u64,
    /// On SIGTERM: how long `/readyz` answers 503 before the listener closes (so balancers stop sending
    /// new requests first), and how long requests in flight then have to finish.
    pub drain_notice_ms: u64,
    pub drain_timeout_ms: u64,
    /// Where a fragment running alone fetches the shell's JWKS (default: `<public_url>/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// Per-fragment settings, by name.
    pub fragments: BTreeMap<String, FragmentSettings>,
    /// The shell as an OpenID Connect provider: the sites on other domains that sign their users in here,
    /// by client id (`TESSERA_OIDC_CLIENTS__<ID>__REDIRECT_URIS`, `…__SECRET`, `…__POST_LOGOUT_REDIRECT_URIS`;
    /// ids are lowercase, as environment keys are read so).
    pub oidc_clients: BTreeMap<String, OidcClientSettings>,
    /// A fragment running alone on a domain the shell's cookie does not reach: the shell it signs its
    /// users in at (`TESSERA_OIDC_PROVIDER__ISSUER`, `…__CLIENT_ID`, `…__CLIENT_SECRET`, `…__URL`,
    /// `…__SESSION_CHECK_SECONDS`; see `crate::relying_party`).
    pub oidc_provider: Option<OidcProviderSettings>,
    /// Seed the demo accounts and catalogue.
    pub demo: bool,
    /// Generated products the demo adds to the eight classic ones.
    pub demo_extra_products: usize,
    /// Shared secret signing event requests between fragments (every fragment process of a deployment
    /// must share it; at least 32 bytes); unset: one is generated in the data dir, which is enough for a
    /// single process. See `tessera_fragment::secrets` for which process holds which secret.
    pub events_secret: Option<String>,
    /// Shared secret signing calls between fragments (the cart reserving stock in inventory): every
    /// process of a fragment that calls or is called; at least 32 bytes; unset: generated in the data dir.
    pub service_secret: Option<String>,
    /// Shared secret signing the merchant's (the cart's) calls to the payment provider: the cart's
    /// processes and the provider's; at least 32 bytes; unset: generated in the data dir.
    pub payment_api_secret: Option<String>,
    /// Delivery attempts before an event becomes a dead letter.
    pub events_max_attempts: i64,
    /// First retry delay; it doubles with every attempt (capped at a minute).
    pub events_base_backoff_ms: i64,
    /// Days a delivered event is kept in its producer's outbox (a subscriber that appears later is
    /// backfilled with the events still kept).
    pub events_retention_days: i64,
    /// Days a consumer keeps the inbox row of an event it applied (a redelivery within them has no
    /// effect); longer than a dead letter may wait for its replay and than NATS keeps messages (30).
    pub inbox_retention_days: i64,
    /// Days a session that ended (signed out, revoked, expired) is kept, with its refresh tokens.
    pub sessions_retention_days: i64,
    /// Secrets that sign and verify payment webhooks, comma-separated (each at least 32 bytes). The provider signs with every one
    /// and the cart accepts any, so a secret is rotated by adding the new one on both sides, then removing
    /// the old. Unset: one is generated in the data dir (enough for a single process).
    pub payment_webhook_secrets: Option<String>,
    /// Base URL of a separate process serving the payment provider (`/sandbox-pay`), or several,
    /// comma-separated (every shell replica serves it); unset: the sandbox provider runs in this process.
    pub payment_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed, comma-separated addresses or CIDRs (see
    /// `crate::client_ip`); unset: the socket peer is the client.
    pub trusted_proxies: Option<String>,
    /// Where this process serves its Prometheus metrics (`GET /metrics`) on a listener of their own;
    /// unset: a fragment process serves them on its main listener (which is never public: the shell
    /// forwards only fragment prefixes), and a process with the shell serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// NATS server carrying events between services over JetStream (`crate::broker`); unset: events
    /// travel over HTTP. Every process of a deployment must agree.
    pub nats_url: Option<String>,
    /// Prefix of the NATS subjects and streams of this deployment (several may share one server).
    pub nats_prefix: String,
    /// How a producer's relay learns of committed events (`TESSERA_OUTBOX_RELAY`): `poll` (default) or
    /// `cdc`, PostgreSQL's logical replication stream. Every instance of a fragment must agree.
    pub outbox_relay: OutboxRelay,
}

/// How a producer's relay learns of committed events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxRelay {
    /// Queries the delivery table after each local commit and every half second (`crate::relay::Relay`).
    #[default]
    Poll,
    /// Reads committed outbox rows from PostgreSQL's logical replication stream (`crate::cdc`).
    Cdc,
}

/// A client of the shell's OpenID Connect provider.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct OidcClientSettings {
    /// The exact addresses the client may be sent back to after sign-in, comma-separated.
    pub redirect_uris: String,
    /// The client's secret, at least 32 bytes: it authenticates the client at the token endpoint.
    pub secret: Option<String>,
    /// The exact addresses the client may send users to after signing out, comma-separated.
    #[serde(default)]
    pub post_logout_redirect_uris: String,
}

impl std::fmt::Debug for OidcClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClientSettings")
            .field("redirect_uris", &self.redirect_uris)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .finish()
    }
}

/// The OpenID Connect provider (the shell) a fragment on another domain signs its users in at.
#[derive(Clone, Serialize, Deserialize)]
pub struct OidcProviderSettings {
    /// The shell's issuer: its public URL, as its discovery document names it.
    pub issuer: String,
    /// Where this process reaches the shell for discovery, keys, tokens and userinfo; default: the issuer.
    #[serde(default)]
    pub url: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    /// How old the shell's last word on a session may get before it is asked again: the bound within
    /// which a sign-out at the shell ends the session here.
    #[serde(default = "default_session_check_seconds")]
    pub session_check_seconds: u64,
}

fn default_session_check_seconds() -> u64 {
    60
}

impl std::fmt::Debug for OidcProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderSettings")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("session_check_seconds", &self.session_check_seconds)
            .finish_non_exhaustive()
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
    /// Overrides `fragment_timeout_ms` for this fragment.
    pub timeout_ms: Option<u64>,
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
        // The database URL may hold a password: never print it.
        f.debug_struct("Settings")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("site_dir", &self.site_dir)
            .field("postgres", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("nats", &self.nats_url.as_ref().map(|_| "<set>"))
            .field("outbox_relay", &self.outbox_relay)
            .field("public_url", &self.public_url)
            .field("fragments", &self.fragments)
            .field("oidc_clients", &self.oidc_clients)
            .field("oidc_provider", &self.oidc_provider)
            .field("payment_url", &self.payment_url)
            .field("demo", &self.demo)
            .field("demo_extra_products", &self.demo_extra_products)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: PathBuf::from("data"),
            site_dir: PathBuf::from("target/site"),
            postgres_url: None,
            schema_prefix: "tessera_".into(),
            postgres_pool_size: DEFAULT_POSTGRES_POOL_SIZE,
            public_url: "http://127.0.0.1:3000".into(),
            issuer: "tessera-shell".into(),
            audience: "tessera".into(),
            access_ttl_seconds: 300,
            session_ttl_seconds: 30 * 24 * 3600,
            refresh_reuse_grace_seconds: 10,
            cookie_domain: None,
            allowed_origins: Vec::new(),
            login_throttle_window_seconds: 900,
            login_max_failures_per_account: 5,
            login_max_failures_per_account_total: 50,
            login_max_failures_per_address: 50,
            registration_max_per_address: 20,
            password_hashes_at_once: 0,
            fragment_timeout_ms: 3000,
            health_interval_ms: 1000,
            drain_notice_ms: 2000,
            drain_timeout_ms: 10_000,
            jwks_url: None,
            fragments: BTreeMap::new(),
            oidc_clients: BTreeMap::new(),
            oidc_provider: None,
            demo: false,
            demo_extra_products: tessera_contracts::demo::DEFAULT_EXTRA_PRODUCTS,
            events_secret: None,
            service_secret: None,
            payment_api_secret: None,
            events_max_attempts: 8,
            events_base_backoff_ms: 200,
            events_retention_days: 7,
            inbox_retention_days: 45,
            sessions_retention_days: 7,
            payment_webhook_secrets: None,
            payment_url: None,
            trusted_proxies: None,
            metrics_addr: None,
            nats_url: None,
            nats_prefix: "tessera".into(),
            outbox_relay: OutboxRelay::Poll,
        }
    }
}

impl Settings {
    /// Defaults, then `TESSERA_CONFIG` (a TOML file) if set, then `TESSERA_*` variables.
    pub fn load() -> Result<Settings, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Ok(path) = std::env::var("TESSERA_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed("TESSERA_").split("__").ignore(&["config", "test_postgres_url"])).extract().map_err(Box::new)
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// Origins allowed to send state-changing requests.
    pub fn allowed_origins(&self) -> Vec<String> {
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.clone();
        }
        match url::Url::parse(&self.public_url) {
            Ok(url) => vec![url.origin().ascii_serialization()],
            Err(_) => Vec::new(),
        }
    }

    pub fn cookie_policy(&self) -> shared_auth::cookie::CookiePolicy {
        shared_auth::cookie::CookiePolicy { secure: self.secure_cookies(), domain: self.cookie_domain.clone() }
    }

    pub fn csrf_policy(&self) -> shared_auth::csrf::CsrfPolicy {
        shared_auth::csrf::CsrfPolicy { allowed_origins: self.allowed_origins(), allow_same_site: self.cookie_domain.is_some() }
    }

    /// The deployment's configured secrets (`tessera_fragment::secrets`).
    pub fn secrets(&self) -> SecretSettings {
        SecretSettings {
            events_secret: self.events_secret.clone(),
            service_secret: self.service_secret.clone(),
            payment_api_secret: self.payment_api_secret.clone(),
            payment_webhook_secrets: self.payment_webhook_secrets.clone(),
        }
    }

    /// Where services keep their data.
    pub fn store(&self) -> StoreSettings {
        StoreSettings {
            data_dir: self.data_dir.clone(),
            postgres_url: self.postgres_url.clone(),
            schema_prefix: self.schema_prefix.clone(),
            postgres_pool_size: self.postgres_pool_size,
        }
    }

    /// The instances configured for fragment `name` (empty: none, it runs in this process or nowhere).
    pub fn instances_of(&self, name: &str) -> Vec<String> {
        self.fragments.get(name).map(FragmentSettings::instances).unwrap_or_default()
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, String> {
        TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or_default()).map_err(|error| format!("TESSERA_TRUSTED_PROXIES: {error}"))
    }

    /// How long the runtime keeps event rows.
    pub fn retention(&self) -> Retention {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        Retention { events_ms: self.events_retention_days.max(1) * DAY_MS, inbox_ms: self.inbox_retention_days.max(1) * DAY_MS }
    }

    pub fn jwks_url(&self) -> String {
        self.jwks_url.clone().unwrap_or_else(|| format!("{}/.well-known/jwks.json", self.public_url.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn environment_overrides_defaults_with_nesting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_ADDR", "127.0.0.1:4000");
            jail.set_env("TESSERA_DATA_DIR", "/tmp/tessera-x");
            jail.set_env("TESSERA_FRAGMENTS__CATALOG__UPSTREAM", "http://127.0.0.1:3101");
            jail.set_env("TESSERA_FRAGMENTS__CATALOG__TIMEOUT_MS", "250");
            jail.set_env("TESSERA_FRAGMENTS__CART__UPSTREAMS", "http://127.0.0.1:3201/, http://127.0.0.1:3202,,");
            jail.set_env("TESSERA_OUTBOX_RELAY", "cdc");
            let settings = Settings::load().map_err(|error| *error)?;
            assert_eq!(settings.outbox_relay, OutboxRelay::Cdc);
            assert_eq!(settings.addr.port(), 4000);
            assert_eq!(settings.data_dir, PathBuf::from("/tmp/tessera-x"));
            let catalog = &settings.fragments["catalog"];
            assert_eq!(catalog.upstream.as_deref(), Some("http://127.0.0.1:3101"));
            assert_eq!(catalog.timeout_ms, Some(250));
            assert_eq!(settings.instances_of("catalog"), ["http://127.0.0.1:3101"]);
            assert_eq!(settings.instances_of("cart"), ["http://127.0.0.1:3201", "http://127.0.0.1:3202"]);
            assert!(settings.instances_of("inventory").is_empty());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn openid_connect_clients_and_provider_come_from_the_environment_and_their_secrets_are_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_OIDC_CLIENTS__OPS__REDIRECT_URIS", "https://ops.example/oidc/callback");
            jail.set_env("TESSERA_OIDC_CLIENTS__OPS__SECRET", "client-secret-of-thirty-two-bytes-or-more");
            jail.set_env("TESSERA_OIDC_PROVIDER__ISSUER", "https://shop.example");
            jail.set_env("TESSERA_OIDC_PROVIDER__CLIENT_ID", "ops");
            jail.set_env("TESSERA_OIDC_PROVIDER__CLIENT_SECRET", "client-secret-of-thirty-two-bytes-or-more");
            let settings = Settings::load().map_err(|error| *error)?;
            assert_eq!(settings.oidc_clients["ops"].redirect_uris, "https://ops.example/oidc/callback");
            assert_eq!(settings.oidc_clients["ops"].post_logout_redirect_uris, "");
            let provider = settings.oidc_provider.as_ref().expect("a provider");
            assert_eq!((provider.issuer.as_str(), provider.client_id.as_str(), provider.url.as_deref()), ("https://shop.example", "ops", None));
            assert_eq!(provider.session_check_seconds, 60);
            assert!(!format!("{settings:?}").contains("thirty-two"));
            Ok(())
        });
    }

    #[test]
    fn the_database_url_is_never_printed() {
        let settings = Settings { postgres_url: Some("postgres://u:secret@h/db".into()), ..Settings::default() };
        assert!(!format!("{settings:?}").contains("secret"));
    }
}
