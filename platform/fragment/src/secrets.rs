//! The secrets of a deployment: each service's own signing keys, and one shared secret per trust
//! relationship with a third party, so a process holds only what the parts it runs take part in.
//!
//! | secret | setting | who holds it |
//! |---|---|---|
//! | a service's signing keys ([`Secrets::service_keys`]) | `TESSERA_SERVICE_KEYS__<SERVICE>` | that service's processes only (it signs its events and calls; others learn the public halves, `crate::signature`) |
//! | [`Secret::PaymentApi`] | `TESSERA_PAYMENT_API_SECRET` | the cart and the payment provider (the merchant API) |
//! | [`Secret::PaymentWebhooks`] | `TESSERA_PAYMENT_WEBHOOK_SECRETS` | the cart and the payment provider (its webhooks) |
//! | [`Secret::KeyEncryption`] | `TESSERA_KEY_ENCRYPTION_KEY` | the shell's processes (it encrypts the signing keys in the shell's database) |
//!
//! Before, every fragment shared one events secret and one service secret, so any of them could sign as
//! any other: the catalog could publish `cart.order_paid`. Now a service signs with keys nobody else holds,
//! and a leaked payment secret opens nothing but the payment relationship.
//!
//! Decisions:
//! - A secret is loaded when a part of the process first asks for it; a secret nobody asks for is never
//!   read or generated. An unset one is generated once and kept in the data dir under `keys/` (32 random
//!   bytes for a shared secret, an Ed25519 PKCS#8 document for a service's key): enough for one process,
//!   or several sharing one data dir. Signing keys need no sharing at all — every instance may have its
//!   own, since consumers learn every instance's public keys — so generated ones suit any deployment.
//! - A configured shared secret is shared between processes, so it must be strong: fewer than
//!   [`MIN_SHARED_SECRET_BYTES`] bytes is refused at start, naming the setting (never its value). A
//!   configured signing key that is not an Ed25519 PKCS#8 document is refused the same way.
//! - Files are created owner-only (directories 0700, files 0600): the data dir holds these secrets and
//!   the SQLite databases, whose WAL and shared-memory files SQLite creates with the database's mode.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tessera_contracts::domain::ServiceName;

use crate::fs::{create_private_dir, create_private_file};
use crate::signature::{CallSigner, ServiceKeys};
use crate::webhook::WebhookSigner;

/// The configured secrets of a deployment: this module's section of the process settings (`TESSERA_*`
/// variables of the same names). Unset ones are generated in the data dir when first needed.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecretSettings {
    /// Each service's private signing keys, by service name (`TESSERA_SERVICE_KEYS__CART`): base64
    /// Ed25519 PKCS#8 documents, comma-separated; the first signs, all are published, so a key is rotated
    /// by adding the new one second, then moving it first, then dropping the old. Unset: generated in the
    /// data dir, one per instance, which is fine too (`tessera keys new` prints one).
    pub service_keys: BTreeMap<String, String>,
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
        f.debug_struct("SecretSettings").field("configured", &set).field("service_keys", &self.service_keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// The shortest secret accepted where processes share it (256 bits, the HMAC-SHA256 key size).
pub const MIN_SHARED_SECRET_BYTES: usize = 32;

/// One shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    /// The merchant API of the payment provider.
    PaymentApi,
    /// The payment provider's webhooks to the merchant.
    PaymentWebhooks,
    /// The shell's signing keys at rest.
    KeyEncryption,
}

impl Secret {
    pub const ALL: [Secret; 3] = [Secret::PaymentApi, Secret::PaymentWebhooks, Secret::KeyEncryption];

    /// The environment variable that sets it.
    pub fn variable(self) -> &'static str {
        match self {
            Secret::PaymentApi => "TESSERA_PAYMENT_API_SECRET",
            Secret::PaymentWebhooks => "TESSERA_PAYMENT_WEBHOOK_SECRETS",
            Secret::KeyEncryption => "TESSERA_KEY_ENCRYPTION_KEY",
        }
    }

    /// The file in `<data_dir>/keys/` that keeps a generated one.
    fn file(self) -> &'static str {
        match self {
            Secret::PaymentApi => "payment-api.secret",
            Secret::PaymentWebhooks => "payment-webhook.secret",
            Secret::KeyEncryption => "key-encryption.secret",
        }
    }

    /// The configured values (webhook secrets are a comma-separated list, for rotation).
    fn configured(self, settings: &SecretSettings) -> Vec<String> {
        let value = match self {
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
    #[error("TESSERA_SERVICE_KEYS__{service}: {problem}")]
    BadKey { service: String, problem: String },
}

/// The secrets of one process, loaded on first use.
pub struct Secrets {
    data_dir: PathBuf,
    configured: HashMap<Secret, Vec<Vec<u8>>>,
    loaded: Mutex<HashMap<Secret, Arc<Vec<Vec<u8>>>>>,
    /// Configured signing keys by service, already checked.
    configured_keys: HashMap<String, Vec<Vec<u8>>>,
    keys: Mutex<HashMap<ServiceName, Arc<ServiceKeys>>>,
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
        let mut configured_keys = HashMap::new();
        for (service, value) in &settings.service_keys {
            let bad = |problem: String| SecretError::BadKey { service: service.to_uppercase(), problem };
            let name = ServiceName::parse(service).map_err(|_| bad("not a service name".into()))?;
            let documents = value
                .split(',')
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .enumerate()
                .map(|(index, value)| STANDARD.decode(value).map_err(|_| bad(format!("key {} is not base64", index + 1))))
                .collect::<Result<Vec<_>, _>>()?;
            ServiceKeys::from_pkcs8(name, &documents).map_err(|error| bad(error.to_string()))?;
            configured_keys.insert(service.clone(), documents);
        }
        Ok(Secrets { data_dir: data_dir.to_path_buf(), configured, loaded: Mutex::new(HashMap::new()), configured_keys, keys: Mutex::new(HashMap::new()) })
    }

    /// The signing keys of `service` (configured, or generated in the data dir at
    /// `keys/<service>.ed25519`): its events and calls are signed with them.
    pub fn service_keys(&self, service: &ServiceName) -> Result<Arc<ServiceKeys>, SecretError> {
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(keys) = keys.get(service) {
            return Ok(keys.clone());
        }
        let documents = match self.configured_keys.get(service.as_str()) {
            Some(documents) => documents.clone(),
            None => vec![generated(&self.data_dir.join("keys"), &format!("{service}.ed25519"), || {
                ServiceKeys::generate_pkcs8().map_err(|_| SecretError::NoRandomness)
            })?],
        };
        let bad = |error: crate::signature::KeyError| SecretError::BadKey {
            service: service.as_str().to_uppercase(),
            problem: format!("{error} (in the data dir's keys/{service}.ed25519)"),
        };
        let ring = Arc::new(ServiceKeys::from_pkcs8(service.clone(), &documents).map_err(bad)?);
        keys.insert(service.clone(), ring.clone());
        Ok(ring)
    }

    /// Signs (as `caller`) and verifies the merchant's calls to the payment provider.
    pub fn payment_api(&self, caller: ServiceName) -> Result<CallSigner, SecretError> {
        Ok(CallSigner::shared(caller, &self.get(Secret::PaymentApi)?))
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
            None => vec![generated(&self.data_dir.join("keys"), secret.file(), random_secret)?],
        };
        let values = Arc::new(values);
        loaded.insert(secret, values.clone());
        Ok(values)
    }
}

/// A new signing key for `service`, as the line that configures it:
/// `TESSERA_SERVICE_KEYS__<SERVICE>=<base64 PKCS#8>` (what `tessera keys new` prints).
pub fn new_service_key_setting(service: &ServiceName) -> Result<String, SecretError> {
    let document = ServiceKeys::generate_pkcs8().map_err(|_| SecretError::NoRandomness)?;
    Ok(format!("TESSERA_SERVICE_KEYS__{}={}", service.as_str().to_uppercase(), STANDARD.encode(document)))
}

/// 32 random bytes.
fn random_secret() -> Result<Vec<u8>, SecretError> {
    use ring::rand::SecureRandom;
    let mut secret = vec![0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut secret).map_err(|_| SecretError::NoRandomness)?;
    Ok(secret)
}

/// The secret kept in `dir/file`, made by `make` first if there is none.
fn generated(dir: &Path, file: &str, make: impl FnOnce() -> Result<Vec<u8>, SecretError>) -> Result<Vec<u8>, SecretError> {
    let path = dir.join(file);
    let io = |context: String| move |source| SecretError::Io { context, source };
    if !path.exists() {
        let secret = make()?;
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-secrets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_short_configured_secret_is_refused_by_name_without_its_value() {
        let dir = temp_dir("short");
        let settings = SecretSettings { payment_api_secret: Some("change-me".into()), ..SecretSettings::default() };
        let error = Secrets::new(&settings, &dir).unwrap_err().to_string();
        assert!(error.contains("TESSERA_PAYMENT_API_SECRET is 9 bytes long") && error.contains("at least 32"), "{error}");
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
        let payments = secrets.payment_api(ServiceName::CART).unwrap();
        let cart = secrets.service_keys(&ServiceName::CART).unwrap();
        assert_eq!(secrets.loaded(), [Secret::PaymentApi]);
        let headers: axum::http::HeaderMap =
            payments.sign("POST", "/x", b"{}", 1_000).into_iter().map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())).collect();
        assert_eq!(payments.verify(&headers, "POST", "/x", b"{}", 1_000), Ok(ServiceName::CART));
        let mut files: Vec<String> = std::fs::read_dir(dir.join("keys")).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["cart.ed25519", "payment-api.secret"], "no webhook secret or other service's key was made");
        // A second process on the same data dir reads the same secret and the same key.
        let again = Secrets::new(&SecretSettings::default(), &dir).unwrap();
        assert_eq!(again.payment_api(ServiceName::PAYMENTS).unwrap().verify(&headers, "POST", "/x", b"{}", 1_000), Ok(ServiceName::CART));
        assert_eq!(again.service_keys(&ServiceName::CART).unwrap().public_keys(), cart.public_keys());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configured_signing_keys_are_used_and_a_malformed_one_is_refused_by_name() {
        let dir = temp_dir("keys");
        let (first, second) = (ServiceKeys::generate_pkcs8().unwrap(), ServiceKeys::generate_pkcs8().unwrap());
        let configured = format!("{}, {}", STANDARD.encode(&first), STANDARD.encode(&second));
        let settings = SecretSettings { service_keys: [("inventory".to_owned(), configured)].into(), ..SecretSettings::default() };
        let secrets = Secrets::new(&settings, &dir).unwrap();
        let ring = secrets.service_keys(&ServiceName::INVENTORY).unwrap();
        assert_eq!(ring.public_keys(), ServiceKeys::from_pkcs8(ServiceName::INVENTORY, &[first, second]).unwrap().public_keys());
        assert!(!dir.exists(), "a configured key writes nothing");
        // What `tessera keys new` prints is such a setting.
        let line = new_service_key_setting(&ServiceName::CART).unwrap();
        let (variable, value) = line.split_once('=').unwrap();
        assert_eq!(variable, "TESSERA_SERVICE_KEYS__CART");
        let settings = SecretSettings { service_keys: [("cart".to_owned(), value.to_owned())].into(), ..SecretSettings::default() };
        assert_eq!(Secrets::new(&settings, &dir).unwrap().service_keys(&ServiceName::CART).unwrap().public_keys().len(), 1);
        let refused = |value: &str| {
            let settings = SecretSettings { service_keys: [("cart".to_owned(), value.to_owned())].into(), ..SecretSettings::default() };
            Secrets::new(&settings, &dir).unwrap_err().to_string()
        };
        assert!(refused("not base64!").contains("TESSERA_SERVICE_KEYS__CART: key 1 is not base64"));
        let error = refused(&STANDARD.encode(b"thirty-two bytes of something else"));
        assert!(error.contains("TESSERA_SERVICE_KEYS__CART") && error.contains("not an Ed25519 private key"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn generated_secrets_and_their_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        Secrets::new(&SecretSettings::default(), &dir).unwrap().service_keys(&ServiceName::CATALOG).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("keys")), 0o700);
        assert_eq!(mode(&dir.join("keys").join("catalog.ed25519")), 0o600);
        let loose = dir.join("loose");
        std::fs::write(&loose, b"x").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_to_owner(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
