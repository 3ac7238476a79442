//! The shell's settings: every process's (`tessera_host::Settings`) and, beside them, the shell's own
//! knobs in sections owned by what reads them — sessions (`crate::session_store`), sign-in throttling
//! (`crate::throttle`), how it reaches fragments (`crate::registry`) and the clients of its OpenID
//! Connect provider (`crate::oidc`). Every section is read from the same sources
//! (`tessera_host::settings::section`), so each setting keeps its one name
//! (`TESSERA_LOGIN_MAX_FAILURES_PER_ACCOUNT`); a fragment's process reads the same environment and
//! ignores what is the shell's.

use tessera_host::settings::section;
use tessera_host::Settings;

use crate::oidc::OidcSettings;
use crate::registry::RegistrySettings;
use crate::session_store::SessionSettings;
use crate::throttle::ThrottleSettings;

/// Everything the shell (and the all-in-one `tessera`, which runs it) can be told.
#[derive(Clone, Debug, Default)]
pub struct ShellSettings {
    pub host: Settings,
    pub sessions: SessionSettings,
    pub throttle: ThrottleSettings,
    pub registry: RegistrySettings,
    pub oidc: OidcSettings,
}

impl ShellSettings {
    /// Defaults, then `TESSERA_CONFIG` (a TOML file) if set, then `TESSERA_*` variables, section by section.
    pub fn load() -> Result<ShellSettings, Box<figment::Error>> {
        Ok(ShellSettings { host: Settings::load()?, sessions: section()?, throttle: section()?, registry: section()?, oidc: section()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn the_shells_knobs_and_every_processs_come_from_one_environment_by_their_own_names() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_LOGIN_MAX_FAILURES_PER_ACCOUNT", "7");
            jail.set_env("TESSERA_REFRESH_REUSE_GRACE_SECONDS", "0");
            jail.set_env("TESSERA_PASSWORD_HASHES_AT_ONCE", "2");
            jail.set_env("TESSERA_HEALTH_INTERVAL_MS", "250");
            jail.set_env("TESSERA_DATA_DIR", "/tmp/tessera-shell");
            jail.set_env("TESSERA_OIDC_CLIENTS__OPS__REDIRECT_URIS", "https://ops.example/oidc/callback");
            jail.set_env("TESSERA_OIDC_CLIENTS__OPS__SECRET", "client-secret-of-thirty-two-bytes-or-more");
            let settings = ShellSettings::load().map_err(|error| *error)?;
            assert_eq!(settings.throttle.max_failures_per_account, 7);
            assert_eq!(settings.throttle.max_failures_per_address, 50, "the default of what is not set");
            assert_eq!(settings.throttle.password_hashes_at_once, 2);
            assert_eq!(settings.sessions.reuse_grace_seconds, 0);
            assert_eq!(settings.registry.health_interval_ms, 250);
            assert_eq!(settings.host.store.data_dir, std::path::PathBuf::from("/tmp/tessera-shell"));
            assert_eq!(settings.oidc.oidc_clients["ops"].redirect_uris, "https://ops.example/oidc/callback");
            assert_eq!(settings.oidc.oidc_clients["ops"].post_logout_redirect_uris, "");
            assert!(!format!("{settings:?}").contains("thirty-two"), "a client's secret is never printed");
            // A fragment's process reads the same environment and takes its part only.
            let fragment = tessera_host::Settings::load().map_err(|error| *error)?;
            assert_eq!(fragment.store.data_dir, std::path::PathBuf::from("/tmp/tessera-shell"));
            Ok(())
        });
    }
}
