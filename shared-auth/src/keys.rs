//! The shell's signing keys: a key ring with rotation, and the JWKS that publishes the public halves.
//!
//! Keys are Ed25519 pairs in PKCS#8, generated with `ring` and stored in the data dir (mode 0600) as
//! `<kid>.p8`, listed in `keyring.json` with the time each starts signing. A key's `kid` is the RFC 7638
//! thumbprint of its public JWK. Rotation (`tessera keys rotate`) adds a key that starts signing only after
//! a publication delay, so every fragment's cached JWKS already has it when the first token with its
//! `kid` arrives; the key it replaces stays published until the last token it signed has expired. A running
//! shell notices the ring's file changing and follows it without a restart. Only the shell constructs a
//! [`TokenSigner`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Claims, SessionUser, ACCESS_TOKEN_TYPE};

/// The ring's index inside the keys directory.
pub const KEYRING_FILE: &str = "keyring.json";
/// The single key file of the first release, imported into the ring when found.
const LEGACY_KEY_FILE: &str = "jwt-signing-key.p8";
/// Extra time a retired key stays published, beyond the access-token lifetime (clock skew).
const RETIRE_MARGIN_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is not an Ed25519 PKCS#8 key")]
    Invalid(PathBuf),
    #[error("{path} is not a valid key ring: {message}")]
    Ring { path: PathBuf, message: String },
    #[error("cannot generate a signing key")]
    Generate,
    #[error("cannot sign a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An Ed25519 signing key with its key id.
pub struct SigningKey {
    kid: String,
    public_key: Vec<u8>,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Builds a key from PKCS#8 bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).ok()?;
        let public_key = pair.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&public_key);
        // RFC 7638: members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        Some(SigningKey { kid, public_key, encoding: EncodingKey::from_ed_der(pkcs8) })
    }

    fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ok(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?.as_ref().to_vec())
    }

    /// A fresh key that is never stored (tests).
    pub fn generate_ephemeral() -> SigningKey {
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("system randomness")).expect("a fresh key parses")
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn jwk(&self) -> serde_json::Value {
        let x = URL_SAFE_NO_PAD.encode(&self.public_key);
        serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig" })
    }

    /// Signs arbitrary claims with this key (`alg` EdDSA, `typ` JWT, `kid`).
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// One key of the ring, as listed in `keyring.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub created_at: i64,
    /// From this time (seconds since the epoch) on, this key signs new tokens.
    pub signs_from: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RingFile {
    keys: Vec<KeyEntry>,
}

struct LoadedRing {
    /// The ring file as loaded: compared byte for byte to notice a rotation (timestamps can be too coarse).
    contents: Vec<u8>,
    keys: Keys,
}

/// The shell's keys over time.
pub struct KeyRing {
    dir: Option<PathBuf>,
    access_ttl_seconds: i64,
    loaded: RwLock<LoadedRing>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

/// Keys of a ring, sorted by `signs_from`.
type Keys = Vec<(KeyEntry, Arc<SigningKey>)>;

fn read_ring(dir: &Path) -> Result<(Vec<u8>, Keys), KeyError> {
    let path = dir.join(KEYRING_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let file: RingFile = serde_json::from_slice(&bytes).map_err(|error| KeyError::Ring { path: path.clone(), message: error.to_string() })?;
    let mut keys = Vec::new();
    for entry in file.keys {
        if !entry.kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(KeyError::Ring { path, message: format!("bad kid {:?}", entry.kid) });
        }
        let key_path = dir.join(format!("{}.p8", entry.kid));
        let pkcs8 = std::fs::read(&key_path).map_err(io(&key_path))?;
        let key = SigningKey::from_pkcs8(&pkcs8).ok_or_else(|| KeyError::Invalid(key_path.clone()))?;
        if key.kid() != entry.kid {
            return Err(KeyError::Ring { path, message: format!("{} holds another key than its name says", key_path.display()) });
        }
        keys.push((entry, Arc::new(key)));
    }
    if keys.is_empty() {
        return Err(KeyError::Ring { path, message: "no keys".into() });
    }
    keys.sort_by_key(|(entry, _)| entry.signs_from);
    Ok((bytes, keys))
}

fn write_ring(dir: &Path, entries: &[KeyEntry]) -> Result<(), KeyError> {
    let path = dir.join(KEYRING_FILE);
    let temporary = dir.join(format!("{KEYRING_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(&RingFile { keys: entries.to_vec() }).expect("serialisable");
    std::fs::write(&temporary, json).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))
}

/// Stores a new key file and returns its entry.
fn add_key(dir: &Path, pkcs8: &[u8], signs_from: i64) -> Result<KeyEntry, KeyError> {
    let key = SigningKey::from_pkcs8(pkcs8).ok_or(KeyError::Generate)?;
    let path = dir.join(format!("{}.p8", key.kid()));
    if !path.exists() {
        write_private_file(&path, pkcs8).map_err(io(&path))?;
    }
    Ok(KeyEntry { kid: key.kid().to_owned(), created_at: now_seconds(), signs_from })
}

impl KeyRing {
    /// Opens the ring in `dir`, creating it (with one key that signs at once) on first run.
    pub fn open(dir: &Path, access_ttl_seconds: i64) -> Result<KeyRing, KeyError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !dir.join(KEYRING_FILE).exists() {
            let legacy = dir.join(LEGACY_KEY_FILE);
            let pkcs8 = match std::fs::read(&legacy) {
                Ok(bytes) => bytes,
                Err(_) => SigningKey::generate_pkcs8()?,
            };
            let entry = add_key(dir, &pkcs8, 0)?;
            write_ring(dir, &[entry])?;
        }
        let (contents, keys) = read_ring(dir)?;
        Ok(KeyRing { dir: Some(dir.to_path_buf()), access_ttl_seconds, loaded: RwLock::new(LoadedRing { contents, keys }) })
    }

    /// A ring of one fresh key that lives in memory only (tests).
    pub fn ephemeral(access_ttl_seconds: i64) -> KeyRing {
        let key = SigningKey::generate_ephemeral();
        let entry = KeyEntry { kid: key.kid().to_owned(), created_at: 0, signs_from: 0 };
        KeyRing { dir: None, access_ttl_seconds, loaded: RwLock::new(LoadedRing { contents: Vec::new(), keys: vec![(entry, Arc::new(key))] }) }
    }

    /// Adds a key to the ring in `dir` that starts signing `publish_delay_seconds` from now. Running shells
    /// pick it up from the file. Returns its entry.
    pub fn rotate(dir: &Path, publish_delay_seconds: i64) -> Result<KeyEntry, KeyError> {
        let (_, keys) = read_ring(dir)?;
        let entry = add_key(dir, &SigningKey::generate_pkcs8()?, now_seconds() + publish_delay_seconds.max(0))?;
        let mut entries: Vec<KeyEntry> = keys.into_iter().map(|(entry, _)| entry).collect();
        entries.push(entry.clone());
        write_ring(dir, &entries)?;
        Ok(entry)
    }

    /// Re-reads the ring when its file changed (another process rotated it).
    fn refresh(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(current) = std::fs::read(dir.join(KEYRING_FILE)) else {
            return;
        };
        let stale = self.loaded.read().map(|loaded| loaded.contents != current).unwrap_or(true);
        if stale {
            match read_ring(dir) {
                Ok((contents, keys)) => {
                    if let Ok(mut loaded) = self.loaded.write() {
                        *loaded = LoadedRing { contents, keys };
                    }
                }
                // Keep the keys we have: a half-edited ring must not stop logins.
                Err(error) => {
                    tracing::error!(%error, "cannot reload the key ring; keeping the loaded keys")
                }
            }
        }
    }

    /// The key that signs at `now`: the newest whose `signs_from` has passed.
    pub fn signing_key(&self, now: i64) -> Arc<SigningKey> {
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded
            .keys
            .iter()
            .rev()
            .find(|(entry, _)| entry.signs_from <= now)
            .or_else(|| loaded.keys.first())
            .map(|(_, key)| key.clone())
            .expect("a ring has at least one key")
    }

    /// Every key a verifier may meet at `now`: keys about to sign, the signing key, and retired keys
    /// until the last token they signed has expired.
    pub fn published(&self, now: i64) -> Vec<(KeyEntry, Arc<SigningKey>)> {
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = &loaded.keys;
        keys.iter()
            .enumerate()
            .filter(|(index, _)| match keys.get(index + 1) {
                // Retired once the next key signs; published until its tokens are all expired.
                Some((next, _)) if next.signs_from <= now => now < next.signs_from + self.access_ttl_seconds + RETIRE_MARGIN_SECONDS,
                _ => true,
            })
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// The JWKS at `now`.
    pub fn jwks(&self, now: i64) -> JwkSet {
        let keys: Vec<serde_json::Value> = self.published(now).iter().map(|(_, key)| key.jwk()).collect();
        serde_json::from_value(serde_json::json!({ "keys": keys })).expect("well-formed OKP JWKs")
    }
}

/// Issues access tokens for the shell.
#[derive(Debug)]
pub struct TokenSigner {
    ring: KeyRing,
    issuer: String,
    audience: String,
    access_ttl_seconds: i64,
}

impl TokenSigner {
    pub fn new(ring: KeyRing, issuer: impl Into<String>, audience: impl Into<String>, access_ttl_seconds: i64) -> Self {
        TokenSigner { ring, issuer: issuer.into(), audience: audience.into(), access_ttl_seconds }
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        self.ring.jwks(now_seconds())
    }

    pub fn access_ttl_seconds(&self) -> i64 {
        self.access_ttl_seconds
    }

    /// Claims of a new access token for `user` in session `session_id`, valid from now.
    pub fn access_claims(&self, user: &SessionUser, session_id: &str) -> Claims {
        let now = now_seconds();
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.id.clone(),
            exp: now + self.access_ttl_seconds,
            iat: now,
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            sid: session_id.to_owned(),
            email: user.email.clone(),
            name: user.name.clone(),
            roles: user.roles.clone(),
        }
    }

    /// A signed access token for `user` in session `session_id`.
    pub fn issue_access_token(&self, user: &SessionUser, session_id: &str) -> Result<String, KeyError> {
        self.sign_claims(&self.access_claims(user, session_id))
    }

    /// Signs the given claims as they are, with the current key (tests build odd tokens with it).
    pub fn sign_claims<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.ring.signing_key(now_seconds()).sign(claims)
    }
}

/// Seconds since the epoch: the one clock of tokens, sessions and timestamps in the databases.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs() as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(ring: &KeyRing, now: i64) -> Vec<String> {
        ring.published(now).iter().map(|(entry, _)| entry.kid.clone()).collect()
    }

    #[test]
    fn the_ring_is_created_once_and_reloaded_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyRing::open(dir.path(), 300).unwrap();
        let second = KeyRing::open(dir.path(), 300).unwrap();
        assert_eq!(first.signing_key(now_seconds()).kid(), second.signing_key(now_seconds()).kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let kid = first.signing_key(now_seconds()).kid().to_owned();
            let mode = std::fs::metadata(dir.path().join(format!("{kid}.p8"))).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the private key must not be readable by others");
        }
    }

    #[test]
    fn a_rotated_key_is_published_before_it_signs_and_the_old_one_stays_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 300).unwrap();
        let old = ring.signing_key(now_seconds()).kid().to_owned();
        let new = KeyRing::rotate(dir.path(), 600).unwrap();
        let now = now_seconds();
        // Published at once, signing only after the delay.
        assert_eq!(kids(&ring, now), vec![old.clone(), new.kid.clone()]);
        assert_eq!(ring.signing_key(now).kid(), old);
        let switch = new.signs_from;
        assert_eq!(ring.signing_key(switch).kid(), new.kid);
        // The old key stays published for the access-token lifetime (+ margin) after the switch.
        assert_eq!(kids(&ring, switch + 300), vec![old.clone(), new.kid.clone()]);
        assert_eq!(kids(&ring, switch + 300 + RETIRE_MARGIN_SECONDS), vec![new.kid.clone()]);
    }

    #[test]
    fn jwks_publishes_only_public_keys() {
        let ring = KeyRing::ephemeral(300);
        let json = serde_json::to_value(ring.jwks(now_seconds())).unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert!(jwk.get("d").is_none(), "the private scalar must never be published");
    }

    #[test]
    fn a_corrupt_ring_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEYRING_FILE), b"{\"keys\":[{\"kid\":\"../x\",\"created_at\":0,\"signs_from\":0}]}").unwrap();
        assert!(matches!(KeyRing::open(dir.path(), 300), Err(KeyError::Ring { .. })));
        std::fs::write(dir.path().join(KEYRING_FILE), b"not json").unwrap();
        assert!(matches!(KeyRing::open(dir.path(), 300), Err(KeyError::Ring { .. })));
    }
}
