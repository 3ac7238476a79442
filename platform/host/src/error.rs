//! The one error of this crate: why a process could not be assembled or started. Each is fatal at start
//! and printed by the binary's `main`, naming the setting or the service at fault.

use tessera_contracts::domain::ServiceName;
use tessera_fragment::db::DbError;
use tessera_fragment::fragment::SeedError;
use tessera_fragment::secrets::SecretError;

/// Why a process could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("seeding the {fragment} demo data: {source}")]
    Seed { fragment: ServiceName, source: SeedError },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("reading or recording event subscriptions: {0}")]
    Subscriptions(sqlx::Error),
    #[error(transparent)]
    Cdc(#[from] crate::cdc::CdcError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error(transparent)]
    Proxies(#[from] crate::client_ip::NotAProxy),
    #[error(transparent)]
    RelyingParty(#[from] crate::relying_party::RpSettingsError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
