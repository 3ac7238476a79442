//! TLS for what a process reaches: every HTTP client (forwarding, service calls, event deliveries,
//! JWKS, the OpenID Connect provider) speaks HTTPS through rustls and trusts the system's roots plus
//! the certificates of `TESSERA_TLS_CA_FILE` (a PEM bundle: a deployment's own certificate authority);
//! NATS trusts the same file for `tls://` servers. PostgreSQL takes its TLS from its URL, as libpq does:
//! `sslmode=prefer|require|verify-ca|verify-full` and `sslrootcert=<file>`, for the pools (sqlx reads
//! them) and the streaming relay's replication connection alike (`crate::cdc`, which falls back to
//! `TESSERA_TLS_CA_FILE` when the URL names no `sslrootcert`).
//!
//! Decisions: rustls with ring, already in the tree (async-nats, jsonwebtoken), not OpenSSL (a system
//! library to match). The replication client's TLS feature also compiles aws-lc (its TLS dependency's
//! default; a C build of about half a minute), and rustls then cannot pick a provider by itself, so every
//! process makes ring the default before any TLS ([`install_crypto_provider`], from [`Roots::from_setting`]
//! and the NATS connect). The roots are read once at start, so a bad file stops the process with its name
//! rather than failing a request later.

use std::path::{Path, PathBuf};

/// Why `TESSERA_TLS_CA_FILE` cannot be used (the process does not start).
#[derive(Debug, thiserror::Error)]
#[error("TESSERA_TLS_CA_FILE {file}: {reason}")]
pub struct TlsError {
    file: String,
    reason: String,
}

/// The certificate authorities a process trusts beyond the system's.
#[derive(Clone, Default)]
pub struct Roots {
    file: Option<PathBuf>,
    certificates: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roots").field("file", &self.file).field("certificates", &self.certificates.len()).finish()
    }
}

/// Makes ring the process's default TLS provider (idempotent). Libraries that build their TLS
/// configuration without naming a provider (async-nats) need a default once two are compiled in.
pub fn install_crypto_provider() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}

impl Roots {
    /// The system's roots and those of `file` (`TESSERA_TLS_CA_FILE`), if any (read now).
    pub fn from_setting(file: Option<&Path>) -> Result<Roots, TlsError> {
        install_crypto_provider();
        file.map_or(Ok(Roots::default()), Roots::from_file)
    }

    /// The system's roots and the certificates of the PEM bundle `file`.
    pub fn from_file(file: &Path) -> Result<Roots, TlsError> {
        let unusable = |reason: String| TlsError { file: file.display().to_string(), reason };
        let pem = std::fs::read(file).map_err(|error| unusable(error.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| unusable(error.to_string()))?;
        if certificates.is_empty() {
            return Err(unusable("holds no certificate".into()));
        }
        Ok(Roots { file: Some(file.to_owned()), certificates })
    }

    /// The PEM bundle, for clients that read it themselves (NATS).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// An HTTP client builder that trusts these roots (and never follows a redirect: an answer must not
    /// steer where this process sends its requests).
    pub fn http(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        for certificate in &self.certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
        builder
    }
}
