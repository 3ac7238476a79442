//! Signed requests between services. Each service signs its events and its service calls with keys of
//! its own (Ed25519, [`ServiceKeys`]); a consumer or callee checks the signature against the public keys it
//! has learned for the service the request names ([`KeyDirectory`]), so it knows which service signed,
//! and one service cannot sign as another — a compromised catalog holds the catalog's keys only.
//!
//! - [`EventSigner`] signs event deliveries (`POST <prefix>/events`, and the NATS message headers) over
//!   timestamp, producer and body.
//! - [`CallSigner`] signs service calls (`crate::service`) over timestamp, caller, method, path with query,
//!   and body. Between services it uses the same keys ([`CallSigner::keyed`]); towards a third party that
//!   shares a secret with one service (the payment provider's merchant API) it is a timestamped
//!   HMAC-SHA256 under that secret ([`CallSigner::shared`]), as such APIs are.
//!
//! Decisions:
//! - Where public keys come from: a process learns its own services' keys when it builds them, and the
//!   others' from their descriptions (`tessera_contracts::descriptor::FragmentDescriptor::signing_keys`),
//!   read by discovery from the addresses the process's configuration gives for that service — never from
//!   what another service claims. A key id is derived from its key ([`key_id`]), and the directory keys by
//!   (service, key id), so a service publishing another's key gains nothing.
//! - A signature under a key not (yet) known is a transient refusal ([`SignatureError::is_transient`]),
//!   answered 503 rather than 401/403 since the callee cannot tell a forger from a caller's new instance:
//!   it wakes discovery ([`KeyDirectory::unknown_key_seen`]), the relay retries, NATS redelivers and
//!   [`crate::service::ServiceClient`] calls once more. A wrong signature under a known key is final.
//! - Rotation without downtime: a service signs with the first key of its ring and publishes all of them;
//!   instances may each have their own (generated in their data dir), since every instance's description
//!   is read. A key no instance publishes any more is forgotten after [`KEY_MEMORY`] (in memory only: a
//!   restarted process forgets at once).
//! - Domain separation: events and calls sign different messages (`tessera-event` / `tessera-call`), so a
//!   signature of one is never valid as the other. `ring` verifies Ed25519 and compares HMAC tags in
//!   constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use tessera_contracts::descriptor::SigningKey;
use tessera_contracts::domain::ServiceName;

pub const PRODUCER_HEADER: &str = "x-tessera-event-producer";
pub const TIMESTAMP_HEADER: &str = "x-tessera-event-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tessera-event-signature";
/// Signed requests older or newer than this are refused (replays of captured requests).
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;
/// How long a learned public key stays trusted after no instance of its service publishes it any more.
pub const KEY_MEMORY: Duration = Duration::from_secs(3600);
/// Begins the message of the 503 that answers a request signed with a key the callee has not learned
/// yet: a caller may send the request again shortly (`crate::service::ServiceClient` does, once).
pub const UNKNOWN_KEY_REFUSAL: &str = "the signing key is not known here yet";

/// Why a signed request was refused.
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
    #[error("the request is signed with key {kid:?} of {service}, which this process does not know (yet)")]
    UnknownKey { service: String, kid: String },
}

impl SignatureError {
    /// Whether the same request may be accepted later: a key not learned yet (a new instance, a rotation
    /// that discovery has not read). Everything else is final.
    pub fn is_transient(&self) -> bool {
        matches!(self, SignatureError::UnknownKey { .. })
    }
}

/// Why a service's keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("the system has no randomness to generate a key")]
    NoRandomness,
}

/// The id of a public key: the first 16 characters of its SHA-256, unpadded base64url.
pub fn key_id(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(digest.as_ref())[..16].to_owned()
}

/// One service's own signing keys: it signs with the first and publishes every one.
pub struct ServiceKeys {
    service: ServiceName,
    pairs: Vec<(String, Ed25519KeyPair)>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.pairs.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("ServiceKeys").field("service", &self.service).field("kids", &kids).finish()
    }
}

impl ServiceKeys {
    /// The keys in these PKCS#8 documents (the first signs).
    pub fn from_pkcs8(service: ServiceName, documents: &[Vec<u8>]) -> Result<ServiceKeys, KeyError> {
        if documents.is_empty() {
            return Err(KeyError::Invalid("no signing key".into()));
        }
        let pairs = documents
            .iter()
            .enumerate()
            .map(|(index, document)| {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(document)
                    .map_err(|_| KeyError::Invalid(format!("key {} of {service} is not an Ed25519 private key in PKCS#8 form", index + 1)))?;
                Ok((key_id(pair.public_key().as_ref()), pair))
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(ServiceKeys { service, pairs })
    }

    /// A new private key, as a PKCS#8 document.
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map(|document| document.as_ref().to_vec()).map_err(|_| KeyError::NoRandomness)
    }

    /// A service with one new key (tests and tools; processes keep theirs, see `crate::secrets`).
    pub fn generate(service: ServiceName) -> ServiceKeys {
        let document = ServiceKeys::generate_pkcs8().expect("system randomness");
        ServiceKeys::from_pkcs8(service, &[document]).expect("a key just generated")
    }

    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The public halves, for the service's description.
    pub fn public_keys(&self) -> Vec<SigningKey> {
        self.pairs.iter().map(|(kid, pair)| SigningKey { kid: kid.clone(), ed25519: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()) }).collect()
    }

    /// The signature header's value: `ed25519=<kid>.<signature>`.
    fn sign(&self, message: &[u8]) -> String {
        let (kid, pair) = &self.pairs[0];
        format!("ed25519={kid}.{}", STANDARD.encode(pair.sign(message).as_ref()))
    }
}

struct Known {
    public: Vec<u8>,
    seen: Instant,
    /// A key of a service in this process: never forgotten.
    pinned: bool,
}

/// The public keys a process trusts, by service and key id.
#[derive(Default)]
pub struct KeyDirectory {
    keys: RwLock<HashMap<(ServiceName, String), Known>>,
    /// Woken when a signature names a key not known here, so discovery looks again at once.
    unknown: tokio::sync::Notify,
}

impl std::fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known: Vec<String> = keys.keys().map(|(service, kid)| format!("{service}:{kid}")).collect();
        f.debug_struct("KeyDirectory").field("known", &known).finish()
    }
}

impl KeyDirectory {
    /// Trusts the keys of a service of this process (for good).
    pub fn trust(&self, keys: &ServiceKeys) {
        let mut known = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (kid, pair) in &keys.pairs {
            known.insert((keys.service.clone(), kid.clone()), Known { public: pair.public_key().as_ref().to_vec(), seen: Instant::now(), pinned: true });
        }
    }

    /// Learns (or refreshes) keys that an instance of `service` published in its description, read from
    /// that service's configured address. A key whose id is not its own or that is not a 32-byte key is
    /// skipped. Returns how many were taken.
    pub fn learn(&self, service: &ServiceName, published: &[SigningKey]) -> usize {
        let mut known = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut taken = 0;
        for key in published {
            let public = match URL_SAFE_NO_PAD.decode(&key.ed25519) {
                Ok(public) if public.len() == 32 && key_id(&public) == key.kid => public,
                _ => {
                    tracing::warn!(%service, kid = %key.kid.chars().take(32).collect::<String>(), "a published signing key is malformed or not the key its id names; ignored");
                    continue;
                }
            };
            let entry = known.entry((service.clone(), key.kid.clone())).or_insert(Known { public, seen: Instant::now(), pinned: false });
            entry.seen = Instant::now();
            taken += 1;
        }
        taken
    }

    /// Forgets `service`'s learned keys that nobody published for `memory`.
    pub fn forget_unseen(&self, service: &ServiceName, memory: Duration) {
        let mut known = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.retain(|(owner, kid), key| {
            let keep = owner != service || key.pinned || key.seen.elapsed() < memory;
            if !keep {
                tracing::info!(%owner, %kid, "a signing key no instance publishes any more is forgotten");
            }
            keep
        });
    }

    /// Returns once a signature under an unknown key was seen since the last call (discovery's cue to
    /// read the descriptions again now rather than at its next round).
    pub async fn unknown_key_seen(&self) {
        self.unknown.notified().await;
    }

    /// Whether any key of `service` is known.
    pub fn knows(&self, service: &ServiceName) -> bool {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).keys().any(|(owner, _)| owner == service)
    }

    /// Checks `signature` (`ed25519=<kid>.<base64>`) over `message` as one by `claimed`.
    fn verify(&self, claimed: &ServiceName, signature: &str, message: &[u8]) -> Result<(), SignatureError> {
        let (kid, signature) = signature.strip_prefix("ed25519=").and_then(|rest| rest.split_once('.')).ok_or(SignatureError::Mismatch)?;
        let signature = STANDARD.decode(signature).map_err(|_| SignatureError::Mismatch)?;
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(known) = keys.get(&(claimed.clone(), kid.to_owned())) else {
            if keys.keys().any(|(_, known)| known == kid) {
                // Another service's key, renamed: final.
                return Err(SignatureError::Mismatch);
            }
            self.unknown.notify_one();
            return Err(SignatureError::UnknownKey { service: claimed.to_string(), kid: kid.chars().take(32).collect() });
        };
        UnparsedPublicKey::new(&ED25519, &known.public).verify(message, &signature).map_err(|_| SignatureError::Mismatch)
    }
}

/// The three signature headers of a request, parsed and checked for age: (signer, timestamp, signature).
fn signed_parts(headers: &HeaderMap, now_seconds: i64) -> Result<(ServiceName, i64, &str), SignatureError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(signer), Some(signature)) = (header(PRODUCER_HEADER), header(SIGNATURE_HEADER)) else {
        return Err(SignatureError::Missing);
    };
    let timestamp: i64 = header(TIMESTAMP_HEADER).and_then(|t| t.parse().ok()).ok_or(SignatureError::Stale)?;
    if now_seconds.abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let signer = ServiceName::parse(signer).map_err(|_| SignatureError::NotAService(signer.chars().take(64).collect()))?;
    Ok((signer, timestamp, signature))
}

fn headers_of(signer: &ServiceName, timestamp: i64, signature: String) -> [(&'static str, String); 3] {
    [(PRODUCER_HEADER, signer.to_string()), (TIMESTAMP_HEADER, timestamp.to_string()), (SIGNATURE_HEADER, signature)]
}

fn event_message(timestamp: i64, producer: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("tessera-event\n{timestamp}.{producer}.").into_bytes();
    message.extend_from_slice(body);
    message
}

fn call_message(timestamp: i64, caller: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("tessera-call\n{timestamp}.{caller}.{method} {path}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

/// Signs one service's events and verifies other services' (and its own).
#[derive(Clone, Debug)]
pub struct EventSigner {
    own: Arc<ServiceKeys>,
    directory: Arc<KeyDirectory>,
}

impl EventSigner {
    /// Signs with `own`, verifies with `directory` (which it makes trust `own`).
    pub fn new(own: Arc<ServiceKeys>, directory: Arc<KeyDirectory>) -> EventSigner {
        directory.trust(&own);
        EventSigner { own, directory }
    }

    /// The service it signs as.
    pub fn service(&self) -> &ServiceName {
        self.own.service()
    }

    /// Its public keys, for its description.
    pub fn public_keys(&self) -> Vec<SigningKey> {
        self.own.public_keys()
    }

    /// The keys it verifies with.
    pub fn directory(&self) -> &Arc<KeyDirectory> {
        &self.directory
    }

    /// The three headers of a signed event request.
    pub fn sign(&self, body: &[u8], timestamp: i64) -> [(&'static str, String); 3] {
        let producer = self.own.service();
        headers_of(producer, timestamp, self.own.sign(&event_message(timestamp, producer.as_str(), body)))
    }

    /// Checks a request's signature and returns the producer that signed it.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_seconds: i64) -> Result<ServiceName, SignatureError> {
        let (producer, timestamp, signature) = signed_parts(headers, now_seconds)?;
        self.directory.verify(&producer, signature, &event_message(timestamp, producer.as_str(), body))?;
        Ok(producer)
    }
}

/// Signs and verifies service calls: with a service's own keys ([`CallSigner::keyed`]), or with a secret
/// shared with a third party ([`CallSigner::shared`]: the payment provider's merchant API).
#[derive(Clone, Debug)]
pub struct CallSigner(Scheme);

#[derive(Clone)]
enum Scheme {
    Keyed(EventSigner),
    Shared { caller: ServiceName, keys: Arc<Vec<ring::hmac::Key>> },
}

impl std::fmt::Debug for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scheme::Keyed(signer) => write!(f, "Keyed({})", signer.service()),
            Scheme::Shared { caller, .. } => write!(f, "Shared({caller}, ..)"),
        }
    }
}

impl CallSigner {
    /// Calls between services: signed with the caller's keys, verified against the callers' public keys.
    pub fn keyed(signer: EventSigner) -> CallSigner {
        CallSigner(Scheme::Keyed(signer))
    }

    /// Calls under a shared secret, signed as `caller`: it signs with the first secret and accepts any,
    /// so a secret can be rotated without losing calls in flight.
    pub fn shared(caller: ServiceName, secrets: &[Vec<u8>]) -> CallSigner {
        assert!(!secrets.is_empty(), "at least one secret");
        let keys = secrets.iter().map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)).collect();
        CallSigner(Scheme::Shared { caller, keys: Arc::new(keys) })
    }

    /// The headers of a signed call.
    pub fn sign(&self, method: &str, path: &str, body: &[u8], timestamp: i64) -> [(&'static str, String); 3] {
        match &self.0 {
            Scheme::Keyed(signer) => {
                let caller = signer.service();
                headers_of(caller, timestamp, signer.own.sign(&call_message(timestamp, caller.as_str(), method, path, body)))
            }
            Scheme::Shared { caller, keys } => {
                let tag = ring::hmac::sign(&keys[0], &call_message(timestamp, caller.as_str(), method, path, body));
                headers_of(caller, timestamp, format!("v1={}", STANDARD.encode(tag.as_ref())))
            }
        }
    }

    /// Checks a call's signature and returns the calling service.
    pub fn verify(&self, headers: &HeaderMap, method: &str, path: &str, body: &[u8], now_seconds: i64) -> Result<ServiceName, SignatureError> {
        let (caller, timestamp, signature) = signed_parts(headers, now_seconds)?;
        let message = call_message(timestamp, caller.as_str(), method, path, body);
        match &self.0 {
            Scheme::Keyed(signer) => signer.directory.verify(&caller, signature, &message)?,
            Scheme::Shared { keys, .. } => {
                let tag = signature.strip_prefix("v1=").and_then(|tag| STANDARD.decode(tag).ok()).ok_or(SignatureError::Mismatch)?;
                if !keys.iter().any(|key| ring::hmac::verify(key, &message, &tag).is_ok()) {
                    return Err(SignatureError::Mismatch);
                }
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: [(&'static str, String); 3]) -> HeaderMap {
        pairs.into_iter().map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())).collect()
    }

    #[test]
    fn an_event_is_accepted_only_under_a_key_learned_for_the_producer_it_names() {
        let inventory = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::INVENTORY)), Arc::default());
        let catalog_directory = Arc::new(KeyDirectory::default());
        let catalog = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::CATALOG)), catalog_directory.clone());
        let body = br#"{"id":"1"}"#;
        let signed = headers(inventory.sign(body, 1_000));
        // Not learned yet: transient, so the relay retries.
        let unknown = catalog.verify(&signed, body, 1_000).unwrap_err();
        assert!(unknown.is_transient(), "{unknown}");
        assert_eq!(catalog_directory.learn(&ServiceName::INVENTORY, &inventory.public_keys()), 1);
        assert_eq!(catalog.verify(&signed, body, 1_000), Ok(ServiceName::INVENTORY));
        assert_eq!(catalog.verify(&signed, br#"{"id":"2"}"#, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(catalog.verify(&signed, body, 1_000 + SIGNATURE_TOLERANCE_SECONDS + 1), Err(SignatureError::Stale));
        assert_eq!(catalog.verify(&HeaderMap::new(), body, 1_000), Err(SignatureError::Missing));
        // The catalog signs as itself only: renaming its signature to inventory's finds no such key, and
        // publishing inventory's public key as its own does not make its signatures inventory's.
        let mut forged = headers(catalog.sign(body, 1_000));
        forged.insert(PRODUCER_HEADER, "inventory".parse().unwrap());
        assert_eq!(catalog.verify(&forged, body, 1_000), Err(SignatureError::Mismatch));
        let stranger = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::INVENTORY)), Arc::default());
        assert!(matches!(catalog.verify(&headers(stranger.sign(body, 1_000)), body, 1_000), Err(SignatureError::UnknownKey { .. })));
        catalog_directory.learn(&ServiceName::CATALOG, &inventory.public_keys());
        let mut renamed = headers(inventory.sign(body, 1_000));
        renamed.insert(PRODUCER_HEADER, "catalog".parse().unwrap());
        assert_eq!(catalog.verify(&renamed, body, 1_000), Err(SignatureError::Mismatch), "the producer's name is signed");
        // A key that is not the one its id names is not learned.
        let mut lying = inventory.public_keys();
        lying[0].kid = key_id(b"another key");
        assert_eq!(KeyDirectory::default().learn(&ServiceName::INVENTORY, &lying), 0);
        let mut odd = signed.clone();
        odd.insert(PRODUCER_HEADER, "Not/A name".parse().unwrap());
        assert_eq!(catalog.verify(&odd, body, 1_000), Err(SignatureError::NotAService("Not/A name".into())));
    }

    #[test]
    fn a_rotated_ring_signs_with_its_first_key_and_a_key_nobody_publishes_is_forgotten() {
        let (old, new) = (ServiceKeys::generate_pkcs8().unwrap(), ServiceKeys::generate_pkcs8().unwrap());
        let before = EventSigner::new(Arc::new(ServiceKeys::from_pkcs8(ServiceName::CART, std::slice::from_ref(&old)).unwrap()), Arc::default());
        let after = EventSigner::new(Arc::new(ServiceKeys::from_pkcs8(ServiceName::CART, &[new.clone(), old.clone()]).unwrap()), Arc::default());
        let directory = Arc::new(KeyDirectory::default());
        let consumer = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::INVENTORY)), directory.clone());
        directory.learn(&ServiceName::CART, &after.public_keys());
        assert!(consumer.verify(&headers(before.sign(b"x", 5)), b"x", 5).is_ok(), "a key still published is trusted");
        assert!(consumer.verify(&headers(after.sign(b"x", 5)), b"x", 5).is_ok());
        directory.forget_unseen(&ServiceName::CART, Duration::ZERO);
        assert!(!directory.knows(&ServiceName::CART));
        assert!(directory.knows(&ServiceName::INVENTORY), "a process's own keys stay");
        assert!(ServiceKeys::from_pkcs8(ServiceName::CART, &[b"not a key".to_vec()]).unwrap_err().to_string().contains("key 1 of cart"));
    }

    #[test]
    fn calls_sign_method_path_and_body_and_never_pass_for_events() {
        let directory = Arc::new(KeyDirectory::default());
        let cart = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::CART)), directory.clone());
        let calls = CallSigner::keyed(cart.clone());
        let signed = headers(calls.sign("POST", "/x?a=1", b"{}", 1_000));
        assert_eq!(calls.verify(&signed, "POST", "/x?a=1", b"{}", 1_000), Ok(ServiceName::CART));
        assert_eq!(calls.verify(&signed, "POST", "/x?a=2", b"{}", 1_000), Err(SignatureError::Mismatch));
        assert_eq!(calls.verify(&signed, "PUT", "/x?a=1", b"{}", 1_000), Err(SignatureError::Mismatch));
        assert_eq!(cart.verify(&signed, b"{}", 1_000), Err(SignatureError::Mismatch), "a call's signature is not an event's");
        // A shared secret is its own scheme: neither accepts the other's signatures.
        let shared = CallSigner::shared(ServiceName::CART, &[b"secret-one".to_vec()]);
        let by_secret = headers(shared.sign("POST", "/x", b"{}", 1_000));
        assert_eq!(shared.verify(&by_secret, "POST", "/x", b"{}", 1_000), Ok(ServiceName::CART));
        assert_eq!(calls.verify(&by_secret, "POST", "/x", b"{}", 1_000), Err(SignatureError::Mismatch));
        assert_eq!(shared.verify(&signed, "POST", "/x?a=1", b"{}", 1_000), Err(SignatureError::Mismatch));
        let rotated = CallSigner::shared(ServiceName::PAYMENTS, &[b"secret-two".to_vec(), b"secret-one".to_vec()]);
        assert!(rotated.verify(&by_secret, "POST", "/x", b"{}", 1_000).is_ok(), "any of the secrets is accepted");
        assert_eq!(CallSigner::shared(ServiceName::CART, &[b"other".to_vec()]).verify(&by_secret, "POST", "/x", b"{}", 1_000), Err(SignatureError::Mismatch));
    }
}
