//! The shell's signing keys: a key ring with rotation, and the JWKS that publishes the public halves.
//!
//! Keys are Ed25519 pairs in PKCS#8, generated with `ring`. A key's `kid` is the RFC 7638 thumbprint of
//! its public JWK. The ring holds the keys in memory, each with the time it starts signing; where they
//! are kept is the shell's business (its database, so every replica signs with and publishes the same
//! keys — `tessera_shell::keys`). Rotation adds a key that starts signing only after a publication
//! delay, so every fragment's cached JWKS already has it when the first token with its `kid` arrives;
//! the key it replaces stays published until the last token it signed has expired. Rings that earlier
//! releases kept as files in the data dir are read once, to import them ([`read_legacy_dir`]). Only the
//! shell constructs a [`TokenSigner`].

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
    #[error("stored signing keys: {0}")]
    Stored(String),
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
        self.sign_typed(claims, "JWT")
    }

    /// Signs claims with the JOSE header `typ` given (`at+jwt` for RFC 9068 access tokens).
    pub fn sign_typed<T: serde::Serialize>(&self, claims: &T, typ: &str) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// One key of the ring: its id and when it starts signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub created_at: i64,
    /// From this time (seconds since the epoch) on, this key signs new tokens.
    pub signs_from: i64,
}

/// A key as it is stored (the shell keeps them in its database): its entry and its PKCS#8 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub entry: KeyEntry,
    pub pkcs8: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("entry", &self.entry).finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A fresh key that starts signing at `signs_from`.
    pub fn generate(signs_from: i64) -> Result<StoredKey, KeyError> {
        let pkcs8 = SigningKey::generate_pkcs8()?;
        let key = SigningKey::from_pkcs8(&pkcs8).ok_or(KeyError::Generate)?;
        Ok(StoredKey { entry: KeyEntry { kid: key.kid().to_owned(), created_at: now_seconds(), signs_from }, pkcs8 })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RingFile {
    keys: Vec<KeyEntry>,
}

/// The shell's keys over time. It holds them in memory; whoever stores them (the shell's database)
/// hands it the current set with [`KeyRing::replace`] when it changes.
pub struct KeyRing {
    access_ttl_seconds: i64,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

/// Keys of a ring, sorted by `signs_from` (then `kid`, so every replica orders ties alike).
type Keys = Vec<(KeyEntry, Arc<SigningKey>)>;

fn parse_keys(stored: &[StoredKey]) -> Result<Keys, KeyError> {
    let mut keys = Vec::new();
    for StoredKey { entry, pkcs8 } in stored {
        let key = SigningKey::from_pkcs8(pkcs8).ok_or_else(|| KeyError::Stored(format!("key {} is not an Ed25519 PKCS#8 key", entry.kid)))?;
        if key.kid() != entry.kid {
            return Err(KeyError::Stored(format!("key {} holds another key than its id says", entry.kid)));
        }
        keys.push((entry.clone(), Arc::new(key)));
    }
    if keys.is_empty() {
        return Err(KeyError::Stored("no keys".into()));
    }
    keys.sort_by(|(a, _), (b, _)| (a.signs_from, &a.kid).cmp(&(b.signs_from, &b.kid)));
    Ok(keys)
}

/// The key ring an earlier release kept in a directory (`keyring.json` and `<kid>.p8` files, or the
/// first release's single `jwt-signing-key.p8`), to import it: `None` when there is none.
pub fn read_legacy_dir(dir: &Path) -> Result<Option<Vec<StoredKey>>, KeyError> {
    let path = dir.join(KEYRING_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let legacy = dir.join(LEGACY_KEY_FILE);
            return match std::fs::read(&legacy) {
                Ok(pkcs8) => {
                    let key = SigningKey::from_pkcs8(&pkcs8).ok_or_else(|| KeyError::Invalid(legacy.clone()))?;
                    Ok(Some(vec![StoredKey { entry: KeyEntry { kid: key.kid().to_owned(), created_at: now_seconds(), signs_from: 0 }, pkcs8 }]))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(io(&legacy)(error)),
            };
        }
        Err(error) => return Err(io(&path)(error)),
    };
    let file: RingFile = serde_json::from_slice(&bytes).map_err(|error| KeyError::Ring { path: path.clone(), message: error.to_string() })?;
    let mut keys = Vec::new();
    for entry in file.keys {
        if !entry.kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(KeyError::Ring { path, message: format!("bad kid {:?}", entry.kid) });
        }
        let key_path = dir.join(format!("{}.p8", entry.kid));
        let pkcs8 = std::fs::read(&key_path).map_err(io(&key_path))?;
        keys.push(StoredKey { entry, pkcs8 });
    }
    parse_keys(&keys).map_err(|error| KeyError::Ring { path, message: error.to_string() })?;
    Ok(Some(keys))
}

impl KeyRing {
    /// A ring of the stored keys (at least one).
    pub fn new(stored: &[StoredKey], access_ttl_seconds: i64) -> Result<KeyRing, KeyError> {
        Ok(KeyRing { access_ttl_seconds, keys: RwLock::new(parse_keys(stored)?) })
    }

    /// A ring of one fresh key that lives in memory only (tests).
    pub fn ephemeral(access_ttl_seconds: i64) -> KeyRing {
        KeyRing::new(&[StoredKey::generate(0).expect("system randomness")], access_ttl_seconds).expect("a fresh key parses")
    }

    /// Takes the current set of keys (another replica rotated). Returns whether anything changed; a
    /// set that does not parse is refused and the loaded keys stay, so a bad row cannot stop logins.
    pub fn replace(&self, stored: &[StoredKey]) -> Result<bool, KeyError> {
        let keys = parse_keys(stored)?;
        let mut loaded = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = loaded.len() == keys.len() && loaded.iter().zip(&keys).all(|((a, _), (b, _))| a == b);
        if !same {
            *loaded = keys;
        }
        Ok(!same)
    }

    /// The key that signs at `now`: the newest whose `signs_from` has passed.
    pub fn signing_key(&self, now: i64) -> Arc<SigningKey> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter().rev().find(|(entry, _)| entry.signs_from <= now).or_else(|| keys.first()).map(|(_, key)| key.clone()).expect("a ring has at least one key")
    }

    /// Every key a verifier may meet at `now`: keys about to sign, the signing key, and retired keys
    /// until the last token they signed has expired.
    pub fn published(&self, now: i64) -> Vec<(KeyEntry, Arc<SigningKey>)> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
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

/// Lifetime of the token the shell mints for one fragment on each request it forwards there: the
/// request's, not the session's.
pub const FRAGMENT_TOKEN_TTL_SECONDS: i64 = 60;

/// The audience of the tokens the shell hands fragment `fragment` of the site whose tokens have
/// `site_audience`: `tessera:catalog`. A fragment accepts only its own, so a token it records is good at
/// no other fragment and not at the shell.
pub fn fragment_audience(site_audience: &str, fragment: &str) -> String {
    format!("{site_audience}:{fragment}")
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

    /// The ring, to hand it the current keys.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
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

    /// The token for one request the shell forwards to `fragment`, as the user of `claims` (a verified
    /// site token's): the same user, roles and session, the fragment's own audience, and a lifetime of
    /// [`FRAGMENT_TOKEN_TTL_SECONDS`] at most (never past the site token's).
    pub fn fragment_token(&self, claims: &Claims, fragment: &str) -> Result<String, KeyError> {
        let now = now_seconds();
        let scoped =
            Claims { aud: fragment_audience(&self.audience, fragment), iat: now, exp: claims.exp.min(now + FRAGMENT_TOKEN_TTL_SECONDS), ..claims.clone() };
        self.sign_claims(&scoped)
    }

    /// A signed access token for `user` in session `session_id`.
    pub fn issue_access_token(&self, user: &SessionUser, session_id: &str) -> Result<String, KeyError> {
        self.sign_claims(&self.access_claims(user, session_id))
    }

    /// Signs the given claims as they are, with the current key (tests build odd tokens with it).
    pub fn sign_claims<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.ring.signing_key(now_seconds()).sign(claims)
    }

    /// Signs other tokens (the OpenID Connect ones) with the current key and the JOSE `typ` given.
    pub fn sign_typed<T: serde::Serialize>(&self, claims: &T, typ: &str) -> Result<String, KeyError> {
        self.ring.signing_key(now_seconds()).sign_typed(claims, typ)
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
    fn a_rotated_key_is_published_before_it_signs_and_the_old_one_stays_until_its_tokens_expire() {
        let first = StoredKey::generate(0).unwrap();
        let ring = KeyRing::new(std::slice::from_ref(&first), 300).unwrap();
        let old = first.entry.kid.clone();
        let new = StoredKey::generate(now_seconds() + 600).unwrap();
        assert!(ring.replace(&[first.clone(), new.clone()]).unwrap());
        assert!(!ring.replace(&[new.clone(), first.clone()]).unwrap(), "the same keys in another order change nothing");
        let now = now_seconds();
        // Published at once, signing only after the delay.
        assert_eq!(kids(&ring, now), vec![old.clone(), new.entry.kid.clone()]);
        assert_eq!(ring.signing_key(now).kid(), old);
        let switch = new.entry.signs_from;
        assert_eq!(ring.signing_key(switch).kid(), new.entry.kid);
        // The old key stays published for the access-token lifetime (+ margin) after the switch.
        assert_eq!(kids(&ring, switch + 300), vec![old.clone(), new.entry.kid.clone()]);
        assert_eq!(kids(&ring, switch + 300 + RETIRE_MARGIN_SECONDS), vec![new.entry.kid.clone()]);
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
    fn bad_keys_are_refused_and_the_loaded_ones_stay() {
        let good = StoredKey::generate(0).unwrap();
        let ring = KeyRing::new(std::slice::from_ref(&good), 300).unwrap();
        let mut lying = StoredKey::generate(0).unwrap();
        lying.entry.kid = good.entry.kid.clone() + "x";
        assert!(matches!(ring.replace(&[lying]), Err(KeyError::Stored(_))));
        let garbage = StoredKey { entry: good.entry.clone(), pkcs8: b"not a key".to_vec() };
        assert!(matches!(ring.replace(&[garbage]), Err(KeyError::Stored(_))));
        assert!(matches!(ring.replace(&[]), Err(KeyError::Stored(_))));
        assert_eq!(ring.signing_key(now_seconds()).kid(), good.entry.kid);
    }

    #[test]
    fn an_earlier_release_ring_directory_is_read_for_import_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_legacy_dir(dir.path()).unwrap().is_none());
        let key = StoredKey::generate(0).unwrap();
        std::fs::write(dir.path().join(format!("{}.p8", key.entry.kid)), &key.pkcs8).unwrap();
        std::fs::write(dir.path().join(KEYRING_FILE), serde_json::to_vec(&RingFile { keys: vec![key.entry.clone()] }).unwrap()).unwrap();
        assert_eq!(read_legacy_dir(dir.path()).unwrap(), Some(vec![key.clone()]));
        std::fs::write(dir.path().join(KEYRING_FILE), b"{\"keys\":[{\"kid\":\"../x\",\"created_at\":0,\"signs_from\":0}]}").unwrap();
        assert!(matches!(read_legacy_dir(dir.path()), Err(KeyError::Ring { .. })));
        std::fs::write(dir.path().join(KEYRING_FILE), b"not json").unwrap();
        assert!(matches!(read_legacy_dir(dir.path()), Err(KeyError::Ring { .. })));
        // The first release's single key file.
        let single = tempfile::tempdir().unwrap();
        std::fs::write(single.path().join(LEGACY_KEY_FILE), &key.pkcs8).unwrap();
        assert_eq!(read_legacy_dir(single.path()).unwrap().unwrap()[0].entry.kid, key.entry.kid);
    }
}
