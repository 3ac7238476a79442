//! Signed requests between services: a timestamped HMAC-SHA256 over what the request says, keyed by the
//! secret of one trust relationship (`crate::secrets`). The callee learns which service signed and refuses
//! anything unsigned, stale or tampered with; a browser cannot forge one.
//!
//! - [`EventSigner`] signs event deliveries (`POST <prefix>/events`, and the NATS message headers) over
//!   timestamp, producer and body.
//! - [`CallSigner`] signs service calls (`crate::service`) over method, path and body, with the same
//!   construction and a key of its own, so a captured call cannot be replayed against another endpoint.
//!
//! Each signer holds one or more secrets: it signs with the first and accepts any, so a secret can be
//! rotated without losing requests in flight. `ring`'s HMAC compares in constant time.

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tessera_contracts::domain::ServiceName;

pub const PRODUCER_HEADER: &str = "x-tessera-event-producer";
pub const TIMESTAMP_HEADER: &str = "x-tessera-event-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tessera-event-signature";
/// Signed requests older or newer than this are refused (replays of captured requests).
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// Signs and verifies event requests between services. Holds one or more shared secrets: it signs with
/// the first and accepts any, so secrets can be rotated without losing events in flight.
#[derive(Clone)]
pub struct EventSigner {
    keys: Arc<Vec<ring::hmac::Key>>,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSigner { .. }")
    }
}

/// Why an event request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request is not signed")]
    Missing,
    #[error("the request's signature timestamp is missing, malformed or outside the tolerance")]
    Stale,
    #[error("the request's signature does not match")]
    Mismatch,
    #[error("the request is signed by {0:?}, which is not a service name")]
    NotAService(String),
}

impl EventSigner {
    pub fn new(secrets: &[Vec<u8>]) -> EventSigner {
        assert!(!secrets.is_empty(), "at least one event secret");
        EventSigner { keys: Arc::new(secrets.iter().map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)).collect()) }
    }

    fn message(timestamp: i64, producer: &str, body: &[u8]) -> Vec<u8> {
        let mut message = format!("{timestamp}.{producer}.").into_bytes();
        message.extend_from_slice(body);
        message
    }

    /// The three headers of a signed event request.
    pub fn sign(&self, producer: &ServiceName, body: &[u8], timestamp: i64) -> [(&'static str, String); 3] {
        let tag = ring::hmac::sign(&self.keys[0], &EventSigner::message(timestamp, producer.as_str(), body));
        [
            (PRODUCER_HEADER, producer.to_string()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, format!("v1={}", STANDARD.encode(tag.as_ref()))),
        ]
    }

    /// Checks a request's signature (constant time) and returns the producer that signed it.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_seconds: i64) -> Result<ServiceName, SignatureError> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let (Some(producer), Some(signature)) = (header(PRODUCER_HEADER), header(SIGNATURE_HEADER)) else {
            return Err(SignatureError::Missing);
        };
        let timestamp: i64 = header(TIMESTAMP_HEADER).and_then(|t| t.parse().ok()).ok_or(SignatureError::Stale)?;
        if now_seconds.abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        let tag = signature.strip_prefix("v1=").and_then(|tag| STANDARD.decode(tag).ok()).ok_or(SignatureError::Mismatch)?;
        let message = EventSigner::message(timestamp, producer, body);
        if self.keys.iter().any(|key| ring::hmac::verify(key, &message, &tag).is_ok()) {
            ServiceName::parse(producer).map_err(|_| SignatureError::NotAService(producer.chars().take(64).collect()))
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Signs and verifies service calls with one relationship's secret. The method and path are signed with
/// the body, so a captured call cannot be replayed against another endpoint. (It shares the timestamped
/// HMAC of event requests, with a key of its own.)
#[derive(Clone, Debug)]
pub struct CallSigner {
    hmac: EventSigner,
}

impl CallSigner {
    pub fn new(secrets: &[Vec<u8>]) -> CallSigner {
        CallSigner { hmac: EventSigner::new(secrets) }
    }

    fn message(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut message = format!("{method} {path}\n").into_bytes();
        message.extend_from_slice(body);
        message
    }

    /// The headers of a signed call by `caller`.
    pub fn sign(&self, caller: &ServiceName, method: &str, path: &str, body: &[u8], timestamp: i64) -> [(&'static str, String); 3] {
        self.hmac.sign(caller, &CallSigner::message(method, path, body), timestamp)
    }

    /// Checks a call's signature and returns the calling service.
    pub fn verify(&self, headers: &HeaderMap, method: &str, path: &str, body: &[u8], now_seconds: i64) -> Result<ServiceName, SignatureError> {
        self.hmac.verify(headers, &CallSigner::message(method, path, body), now_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_name_the_producer_and_refuse_tampering_staleness_and_other_secrets() {
        let signer = EventSigner::new(&[b"secret-one".to_vec()]);
        let body = br#"{"id":"1"}"#;
        let mut headers = HeaderMap::new();
        for (name, value) in signer.sign(&ServiceName::INVENTORY, body, 1_000) {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(signer.verify(&headers, body, 1_000), Ok(ServiceName::INVENTORY));
        assert_eq!(signer.verify(&headers, br#"{"id":"2"}"#, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(signer.verify(&headers, body, 1_000 + SIGNATURE_TOLERANCE_SECONDS + 1), Err(SignatureError::Stale));
        assert_eq!(EventSigner::new(&[b"other".to_vec()]).verify(&headers, body, 1_000), Err(SignatureError::Mismatch));
        // Claiming to be another producer breaks the signature.
        headers.insert(PRODUCER_HEADER, "cart".parse().unwrap());
        assert_eq!(signer.verify(&headers, body, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(signer.verify(&HeaderMap::new(), body, 1_000), Err(SignatureError::Missing));
        // Rotation: a verifier with the new and the old secret accepts both.
        let rotated = EventSigner::new(&[b"secret-two".to_vec(), b"secret-one".to_vec()]);
        headers.insert(PRODUCER_HEADER, "inventory".parse().unwrap());
        assert!(rotated.verify(&headers, body, 1_000).is_ok());
        // A holder of the secret still cannot name a service that cannot exist.
        let mut odd = HeaderMap::new();
        for (name, value) in signer.sign(&ServiceName::of("Not/A name"), body, 1_000) {
            odd.insert(name, value.parse().unwrap());
        }
        assert_eq!(signer.verify(&odd, body, 1_000), Err(SignatureError::NotAService("Not/A name".into())));
    }
}
