//! The shell's signing key and the JWKS that publishes its public half.
//!
//! The key is an Ed25519 key pair in PKCS#8, generated with `ring` on first run and stored in the data dir
//! (mode 0600). Its `kid` is the RFC 7638 thumbprint of the public JWK, so it is stable across restarts and
//! says nothing about the private key. Only the shell constructs a [`TokenSigner`].

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use crate::{Claims, SessionUser, ACCESS_TOKEN_TYPE};

/// File name of the signing key inside the shell's data directory.
pub const SIGNING_KEY_FILE: &str = "jwt-signing-key.p8";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the signing key at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the signing key at {0} is not an Ed25519 PKCS#8 key")]
    Invalid(PathBuf),
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
    /// Loads the key from `dir`, generating and storing a new one when there is none.
    pub fn load_or_generate(dir: &Path) -> Result<SigningKey, KeyError> {
        let path = dir.join(SIGNING_KEY_FILE);
        let io = |source| KeyError::Io { path: path.clone(), source };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let document =
                    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
                write_private_file(&path, document.as_ref()).map_err(io)?;
                document.as_ref().to_vec()
            }
            Err(error) => return Err(io(error)),
        };
        SigningKey::from_pkcs8(&pkcs8).ok_or(KeyError::Invalid(path))
    }

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

    /// A fresh key that is never stored (tests).
    pub fn generate_ephemeral() -> SigningKey {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("system randomness");
        SigningKey::from_pkcs8(document.as_ref()).expect("a freshly generated key parses")
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK set, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        let x = URL_SAFE_NO_PAD.encode(&self.public_key);
        let document = serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig" }]
        });
        serde_json::from_value(document).expect("a well-formed OKP JWK")
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

/// Issues access tokens for the shell.
#[derive(Debug)]
pub struct TokenSigner {
    key: SigningKey,
    issuer: String,
    audience: String,
    access_ttl_seconds: i64,
}

impl TokenSigner {
    pub fn new(key: SigningKey, issuer: impl Into<String>, audience: impl Into<String>, access_ttl_seconds: i64) -> Self {
        TokenSigner { key, issuer: issuer.into(), audience: audience.into(), access_ttl_seconds }
    }

    pub fn jwks(&self) -> JwkSet {
        self.key.jwks()
    }

    pub fn access_ttl_seconds(&self) -> i64 {
        self.access_ttl_seconds
    }

    /// Claims of a new access token for `user`, valid from now.
    pub fn access_claims(&self, user: &SessionUser) -> Claims {
        let now = now_seconds();
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.id.clone(),
            exp: now + self.access_ttl_seconds,
            iat: now,
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            email: user.email.clone(),
            name: user.name.clone(),
            roles: user.roles.clone(),
        }
    }

    /// A signed access token for `user`.
    pub fn issue_access_token(&self, user: &SessionUser) -> Result<String, KeyError> {
        self.key.sign(&self.access_claims(user))
    }

    /// Signs the given claims as they are (tests use this to build expired or otherwise odd tokens).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, KeyError> {
        self.key.sign(claims)
    }
}

pub(crate) fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_generated_once_and_reloaded_with_the_same_kid() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKey::load_or_generate(dir.path()).unwrap();
        let second = SigningKey::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.kid(), second.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the private key must not be readable by others");
        }
    }

    #[test]
    fn jwks_publishes_only_the_public_key() {
        let key = SigningKey::generate_ephemeral();
        let json = serde_json::to_value(key.jwks()).unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["kid"], key.kid());
        assert!(jwk.get("d").is_none(), "the private scalar must never be published");
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SIGNING_KEY_FILE), b"not a key").unwrap();
        assert!(matches!(SigningKey::load_or_generate(dir.path()), Err(KeyError::Invalid(_))));
    }
}
