//! The shared secrets of a deployment: one per trust relationship, so a process holds only the secrets of
//! the relationships it takes part in.
//!
//! | secret | setting | who holds it |
//! |---|---|---|
//! | [`Secret::Events`] | `TESSERA_EVENTS_SECRET` | every fragment process (producers sign events, consumers verify them) |
//! | [`Secret::Services`] | `TESSERA_SERVICE_SECRET` | fragments that call each other (the cart reserving stock in inventory) |
//! | [`Secret::PaymentApi`] | `TESSERA_PAYMENT_API_SECRET` | the cart and the payment provider (the merchant API) |
//! | [`Secret::PaymentWebhooks`] | `TESSERA_PAYMENT_WEBHOOK_SECRETS` | the cart and the payment provider (its webhooks) |
//! | [`Secret::KeyEncryption`] | `TESSERA_KEY_ENCRYPTION_KEY` | the shell's processes (it encrypts the signing keys in the shell's database) |
//!
//! Before, one events secret signed events, reservations and the merchant API alike, so the payment
//! sandbox — which needs none of the first two — could have forged stock reservations and events. Now the
//! sandbox holds the payment secrets only, and a leaked payment secret opens nothing else.
//!
//! Decisions:
//! - A secret is loaded when a part of the process first asks for it; a secret nobody asks for is never
//!   read or generated. An unset secret is generated once (32 random bytes) and kept in the data dir
//!   under `keys/`, which is enough for a single process (or several sharing one data dir).
//! - A configured secret is shared between processes, so it must be strong: fewer than
//!   [`MIN_SHARED_SECRET_BYTES`] bytes is refused at start, naming the setting (never its value).
//! - Files are created owner-only (directories 0700, files 0600): the data dir holds these secrets and
//!   the SQLite databases, whose WAL and shared-memory files SQLite creates with the database's mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fs::{create_private_dir, create_private_file};
use crate::signature::{CallSigner, EventSigner};
use crate::webhook::WebhookSigner;

/// The configured secrets of a deployment: this module's section of the process settings (`TESSERA_*`
/// variables of the same names). Unset ones are generated in the data dir when first needed.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecretSettings {
    /// Shared secret signing event requests between fragments (`TESSERA_EVENTS_SECRET`: every fragment
    /// process of a deployment must share it; at least 32 bytes).
    pub events_secret: Option<String>,
    /// Shared secret signing calls between fragments (the cart reserving stock in inventory): every
    /// process of a fragment that calls or is called (`TESSERA_SERVICE_SECRET`).
    pub service_secret: Option<String>,
    /// Shared secret signing the merchant's (the cart's) calls to the payment provider: the cart's
    /// processes and the provider's (`TESSERA_PAYMENT_API_SECRET`).
    pub payment_api_secret: Option<String>,
    /// Secrets that sign and verify payment webhooks, comma-separated (`TESSERA_PAYMENT_WEBHOOK_SECRETS`).
    /// The provider signs with every one and the cart accepts any, so a secret is rotated by adding the
    /// new one on both sides, then removing the old.
    pub payment_webhook_secrets: Option<String>,
    /// Encrypts the shell's private signing keys where it stores them (its database), comma-separated:
    /// the first encrypts, every one decrypts, so it is rotated by putting a new one first and removing
    /// the old once every shell replica has restarted (`TESSERA_KEY_ENCRYPTION_KEY`; every shell replica
    /// must share it; at least 32 bytes). Never stored in a database.
    pub key_encryption_key: Option<String>,
}

impl std::fmt::Debug for SecretSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which are set, never their values.
        let set: Vec<&str> = Secret::ALL.iter().filter(|secret| !secret.configured(self).is_empty()).map(|secret| secret.variable()).collect();
        f.debug_struct("SecretSettings").field("configured", &set).finish()
    }
}

/// The shortest secret accepted where processes share it (256 bits, the HMAC-SHA256 key size).
pub const MIN_SHARED_SECRET_BYTES: usize = 32;

/// One trust relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    /// Events between fragments.
    Events,
    /// Signed calls between fragments.
    Services,
    /// The merchant API of the payment provider.
    PaymentApi,
    /// The payment provider's webhooks to the merchant.
    PaymentWebhooks,
    /// The shell's signing keys at rest.
    KeyEncryption,
}

impl Secret {
    pub const ALL: [Secret; 5] = [Secret::Events, Secret::Services, Secret::PaymentApi, Secret::PaymentWebhooks, Secret::KeyEncryption];

    /// The environment variable that sets it.
    pub fn variable(self) -> &'static str {
        match self {
            Secret::Events => "TESSERA_EVENTS_SECRET",
            Secret::Services => "TESSERA_SERVICE_SECRET",
            Secret::PaymentApi => "TESSERA_PAYMENT_API_SECRET",
            Secret::PaymentWebhooks => "TESSERA_PAYMENT_WEBHOOK_SECRETS",
            Secret::KeyEncryption => "TESSERA_KEY_ENCRYPTION_KEY",
        }
    }

    /// The file in `<data_dir>/keys/` that keeps a generated one.
    fn file(self) -> &'static str {
        match self {
            Secret::Events => "events.secret",
            Secret::Services => "services.secret",
            Secret::PaymentApi => "payment-api.secret",
            Secret::PaymentWebhooks => "payment-webhook.secret",
            Secret::KeyEncryption => "key-encryption.secret",
        }
    }

    /// The configured values (webhook secrets are a comma-separated list, for rotation).
    fn configured(self, settings: &SecretSettings) -> Vec<String> {
        let value = match self {
            Secret::Events => &settings.events_secret,
            Secret::Services => &settings.service_secret,
            Secret::PaymentApi => &settings.payment_api_secret,
            Secret::PaymentWebhooks => &settings.payment_webhook_secrets,
            Secret::KeyEncryption => &settings.key_encryption_key,
        };
        let Some(value) = value else { return Vec::new() };
        let values: Vec<&str> = if matches!(self, Secret::PaymentWebhooks | Secret::KeyEncryption) { value.split(',').collect() } else { vec![value] };
        values.into_iter().map(str::trim).filter(|value| !value.is_empty()).map(str::to_owned).collect()
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{variable} is {bytes} bytes long; a secret shared between processes must be at least {MIN_SHARED_SECRET_BYTES} (for example 64 hex digits from `openssl rand -hex 32`)")]
    TooShort { variable: &'static str, bytes: usize },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("the system has no randomness to generate a secret")]
    NoRandomness,
}

/// The secrets of one process, loaded on first use.
pub struct Secrets {
    data_dir: PathBuf,
    configured: HashMap<Secret, Vec<Vec<u8>>>,
    loaded: Mutex<HashMap<Secret, Arc<Vec<Vec<u8>>>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let configured: Vec<&str> = Secret::ALL.iter().filter(|secret| self.configured.contains_key(secret)).map(|secret| secret.variable()).collect();
        f.debug_struct("Secrets").field("configured", &configured).finish_non_exhaustive()
    }
}

impl Secrets {
    /// The secrets `settings` configure (each checked for length now) and, for the others, `data_dir`,
    /// which keeps generated ones under `keys/`.
    pub fn new(settings: &SecretSettings, data_dir: &Path) -> Result<Secrets, SecretError> {
        let mut configured = HashMap::new();
        for secret in Secret::ALL {
            let values = secret.configured(settings);
            if let Some(short) = values.iter().find(|value| value.len() < MIN_SHARED_SECRET_BYTES) {
                return Err(SecretError::TooShort { variable: secret.variable(), bytes: short.len() });
            }
            if !values.is_empty() {
                configured.insert(secret, values.into_iter().map(String::into_bytes).collect());
            }
        }
        Ok(Secrets { data_dir: data_dir.to_path_buf(), configured, loaded: Mutex::new(HashMap::new()) })
    }

    /// Signs and verifies events.
    pub fn events(&self) -> Result<EventSigner, SecretError> {
        Ok(EventSigner::new(&self.get(Secret::Events)?))
    }

    /// Signs and verifies calls between fragments.
    pub fn services(&self) -> Result<CallSigner, SecretError> {
        Ok(CallSigner::new(&self.get(Secret::Services)?))
    }

    /// Signs and verifies the merchant's calls to the payment provider.
    pub fn payment_api(&self) -> Result<CallSigner, SecretError> {
        Ok(CallSigner::new(&self.get(Secret::PaymentApi)?))
    }

    /// Signs and verifies the payment provider's webhooks.
    pub fn payment_webhooks(&self) -> Result<WebhookSigner, SecretError> {
        Ok(WebhookSigner::new(&self.get(Secret::PaymentWebhooks)?))
    }

    /// The keys that encrypt the shell's signing keys at rest: the first encrypts, every one decrypts.
    pub fn key_encryption(&self) -> Result<Arc<Vec<Vec<u8>>>, SecretError> {
        self.get(Secret::KeyEncryption)
    }

    /// Which secrets this process has loaded so far (tests show what a process holds).
    pub fn loaded(&self) -> Vec<Secret> {
        let loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Secret::ALL.into_iter().filter(|secret| loaded.contains_key(secret)).collect()
    }

    fn get(&self, secret: Secret) -> Result<Arc<Vec<Vec<u8>>>, SecretError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(values) = loaded.get(&secret) {
            return Ok(values.clone());
        }
        let values = match self.configured.get(&secret) {
            Some(values) => values.clone(),
            None => vec![generated(&self.data_dir.join("keys"), secret.file())?],
        };
        let values = Arc::new(values);
        loaded.insert(secret, values.clone());
        Ok(values)
    }
}

/// The secret kept in `dir/file`, generated first if there is none.
fn generated(dir: &Path, file: &str) -> Result<Vec<u8>, SecretError> {
    let path = dir.join(file);
    let io = |context: String| move |source| SecretError::Io { context, source };
    if !path.exists() {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).map_err(|_| SecretError::NoRandomness)?;
        create_private_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
        match create_private_file(&path).and_then(|mut file| std::io::Write::write_all(&mut file, &secret)) {
            Ok(()) => {}
            // Another process of the same data dir made it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io(format!("writing {}", path.display()))(error)),
        }
    }
    std::fs::read(&path).map_err(io(format!("reading {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::restrict_to_owner;
    use tessera_contracts::domain::ServiceName;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-secrets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_short_configured_secret_is_refused_by_name_without_its_value() {
        let dir = temp_dir("short");
        let settings = SecretSettings { service_secret: Some("change-me".into()), ..SecretSettings::default() };
        let error = Secrets::new(&settings, &dir).unwrap_err().to_string();
        assert!(error.contains("TESSERA_SERVICE_SECRET is 9 bytes long") && error.contains("at least 32"), "{error}");
        assert!(!error.contains("change-me"), "{error}");
        // One short webhook secret among good ones is refused too.
        let settings = SecretSettings { payment_webhook_secrets: Some(format!("{},short", "w".repeat(40))), ..SecretSettings::default() };
        assert!(format!("{settings:?}").contains("TESSERA_PAYMENT_WEBHOOK_SECRETS") && !format!("{settings:?}").contains("www"), "set, never shown");
        assert!(Secrets::new(&settings, &dir).unwrap_err().to_string().contains("TESSERA_PAYMENT_WEBHOOK_SECRETS is 5 bytes long"));
        assert!(!dir.exists(), "refusing writes nothing");
    }

    #[test]
    fn each_relationship_has_its_own_secret_and_only_what_is_asked_for_is_loaded() {
        let dir = temp_dir("own");
        let secrets = Secrets::new(&SecretSettings::default(), &dir).unwrap();
        assert!(secrets.loaded().is_empty());
        let services = secrets.services().unwrap();
        let payments = secrets.payment_api().unwrap();
        assert_eq!(secrets.loaded(), [Secret::Services, Secret::PaymentApi]);
        let headers: axum::http::HeaderMap = services
            .sign(&ServiceName::CART, "POST", "/x", b"{}", 1_000)
            .into_iter()
            .map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap()))
            .collect();
        assert_eq!(services.verify(&headers, "POST", "/x", b"{}", 1_000), Ok(ServiceName::CART));
        assert!(payments.verify(&headers, "POST", "/x", b"{}", 1_000).is_err(), "the payment secret does not vouch for a service call");
        let mut files: Vec<String> = std::fs::read_dir(dir.join("keys")).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["payment-api.secret", "services.secret"], "no events or webhook secret was made");
        // A second process on the same data dir reads the same secrets.
        let again = Secrets::new(&SecretSettings::default(), &dir).unwrap().services().unwrap();
        assert_eq!(again.verify(&headers, "POST", "/x", b"{}", 1_000), Ok(ServiceName::CART));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn generated_secrets_and_their_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        Secrets::new(&SecretSettings::default(), &dir).unwrap().events().unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("keys")), 0o700);
        assert_eq!(mode(&dir.join("keys").join("events.secret")), 0o600);
        let loose = dir.join("loose");
        std::fs::write(&loose, b"x").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_to_owner(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
