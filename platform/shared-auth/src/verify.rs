//! Verifying access tokens with the shell's published keys.
//!
//! A [`Verifier`] turns a token into [`Claims`] or a [`TokenError`]. It pins the algorithm to EdDSA before
//! looking at anything else (so `alg: none`, HS256 keyed with a public key and friends never reach a key),
//! requires a `kid` it knows, and checks `iss`, `aud`, `exp`, `nbf`, `typ` and a lifetime cap.
//!
//! Keys come from a [`JwksSource`]: over HTTP from the shell's `/.well-known/jwks.json` when the fragment
//! runs as its own process, or from the shell in the same process. Keys are cached; an unknown `kid`
//! triggers at most one refetch per cooldown, so a flood of made-up `kid`s cannot flood the shell. When a
//! fetch fails, the next waits longer each time (1 s doubling to a minute), and the keys already known
//! keep verifying tokens meanwhile, however old; one fetch runs at a time, and a request whose key is
//! known never waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::keys::now_seconds;
use crate::{Claims, SessionUser, ACCESS_TOKEN_TYPE};

/// Longest token we even try to parse; a real access token is well under 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest `kid` we look up.
const MAX_KID_BYTES: usize = 128;
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Why a token was refused. Logged at debug level; users only ever see "signed out".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is too long")]
    TooLong,
    #[error("token is malformed")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    WrongAlgorithm(String),
    #[error("token has no key id")]
    MissingKid,
    #[error("no published key has this key id")]
    UnknownKid,
    #[error("the key set could not be fetched: {0}")]
    KeysUnavailable(String),
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token is not an access token")]
    WrongType,
    #[error("token lives longer than any token the shell issues")]
    LifetimeTooLong,
}

/// Where a verifier gets the shell's public keys from.
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>>;
}

/// Why the shell's public keys could not be had (logged; the keys known so far stay in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{url} is not reachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer a key set: {reason}")]
    Unreadable { url: String, reason: String },
}

/// Fetches the JWKS over HTTP (a fragment running as its own process).
pub struct HttpJwks {
    url: String,
    client: reqwest::Client,
}

impl HttpJwks {
    pub fn new(url: impl Into<String>) -> Self {
        HttpJwks::with_client(url, reqwest::Client::builder())
    }

    /// Fetching with a client of the caller's making (one that trusts the deployment's certificate
    /// authority), bounded to 3 s a fetch.
    pub fn with_client(url: impl Into<String>, builder: reqwest::ClientBuilder) -> Self {
        let client = builder.timeout(Duration::from_secs(3)).build().expect("an HTTP client");
        HttpJwks { url: url.into(), client }
    }
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>> {
        Box::pin(async move {
            let url = || self.url.clone();
            let response = self.client.get(&self.url).send().await.map_err(|e| JwksError::Unreachable { url: url(), reason: e.to_string() })?;
            if !response.status().is_success() {
                return Err(JwksError::Status { url: url(), status: response.status().as_u16() });
            }
            let body = response.bytes().await.map_err(|e| JwksError::Unreachable { url: url(), reason: e.to_string() })?;
            serde_json::from_slice(&body).map_err(|e| JwksError::Unreadable { url: url(), reason: e.to_string() })
        })
    }
}

/// Reads the JWKS from the shell in the same process: the public keys only, through a function the
/// shell provides, so the fragment still never sees the signing key.
pub struct InProcessJwks(pub Arc<dyn Fn() -> JwkSet + Send + Sync>);

impl JwksSource for InProcessJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>> {
        let keys = (self.0)();
        Box::pin(async move { Ok(keys) })
    }
}

/// What [`Verifier::verify_other`] expects of a token.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// Any one of these.
    pub audiences: &'a [&'a str],
    /// The JOSE header's `typ`.
    pub typ: &'a str,
    /// `false` for a token that only says who sent it (an ID token as a sign-out hint), however old.
    pub check_expiry: bool,
}

/// Settings of a [`Verifier`].
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    pub issuer: String,
    pub audience: String,
    /// Audiences accepted beside `audience` (a fragment on a subdomain of the site also takes the site's
    /// token, which the browser sends every sibling host).
    pub also_accepted: Vec<String>,
    /// Tokens whose `exp - iat` exceeds this are refused even if signed.
    pub max_lifetime: Duration,
    /// Keys are refetched after this long even when every `kid` is known.
    pub cache_ttl: Duration,
    /// Minimum time between two fetches triggered by unknown `kid`s.
    pub refetch_cooldown: Duration,
    /// Name of the cookie that carries the access token ([`crate::cookie::CookiePolicy::access_name`]).
    pub access_cookie: String,
}

impl VerifierSettings {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        VerifierSettings {
            issuer: issuer.into(),
            audience: audience.into(),
            also_accepted: Vec::new(),
            max_lifetime: Duration::from_secs(24 * 3600),
            cache_ttl: Duration::from_secs(300),
            refetch_cooldown: Duration::from_secs(10),
            access_cookie: "tessera_access".into(),
        }
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// Failed fetches in a row, and when the next may run.
    failures: u32,
    retry_at: Option<Instant>,
}

/// The first wait after a failed fetch; it doubles with each failure in a row, up to [`MAX_RETRY_AFTER`].
const FIRST_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl KeyCache {
    /// Whether a fetch should run now for `kid`: the keys are stale, or `kid` is unknown and the cooldown
    /// has passed — and no failed fetch asks to wait.
    fn fetch_due(&self, kid: &str, settings: &VerifierSettings) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let since = |period: Duration| self.fetched_at.is_none_or(|at| at.elapsed() >= period);
        since(settings.cache_ttl) || (!self.keys.contains_key(kid) && since(settings.refetch_cooldown))
    }

    fn found(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        match self.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if self.keys.is_empty() => Err(TokenError::KeysUnavailable("the shell's keys could not be fetched yet".into())),
            None => Err(TokenError::UnknownKid),
        }
    }
}

struct Inner {
    settings: VerifierSettings,
    source: Box<dyn JwksSource>,
    /// Held only to read or swap keys, never across a fetch.
    cache: std::sync::Mutex<KeyCache>,
    /// Held across a fetch: one at a time.
    fetching: tokio::sync::Mutex<()>,
    validation: Validation,
}

/// Verifies access tokens. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct Verifier(Arc<Inner>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("settings", &self.0.settings).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(settings: VerifierSettings, source: impl JwksSource) -> Verifier {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[settings.issuer.as_str()]);
        let audiences: Vec<&str> = std::iter::once(settings.audience.as_str()).chain(settings.also_accepted.iter().map(String::as_str)).collect();
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Verifier(Arc::new(Inner {
            settings,
            source: Box::new(source),
            cache: std::sync::Mutex::new(KeyCache::default()),
            fetching: tokio::sync::Mutex::new(()),
            validation,
        }))
    }

    /// The key of a token, after the checks every token passes first: length, three parts, EdDSA and a
    /// known `kid`.
    async fn checked_key(&self, token: &str) -> Result<(jsonwebtoken::Header, DecodingKey), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        if token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        // Unknown algorithms (including every spelling of "none") fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().ok_or(TokenError::MissingKid)?;
        if kid.is_empty() || kid.len() > MAX_KID_BYTES {
            return Err(TokenError::UnknownKid);
        }
        Ok((header, self.key_for(&kid).await?))
    }

    /// Verifies an access token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (_, key) = self.checked_key(token).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.0.validation).map_err(|error| TokenError::Invalid(error.to_string()))?;
        let claims = data.claims;
        if claims.typ != ACCESS_TOKEN_TYPE {
            return Err(TokenError::WrongType);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > self.0.settings.max_lifetime.as_secs() as i64 || claims.iat > now_seconds() + LEEWAY_SECONDS as i64 {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(claims)
    }

    /// Verifies a token of another kind signed with the same keys (the OpenID Connect ID and access
    /// tokens): the checks of [`Verifier::verify`] before any key is used, then `expect`.
    pub async fn verify_other<T: serde::de::DeserializeOwned>(&self, token: &str, expect: &Expect<'_>) -> Result<T, TokenError> {
        let (header, key) = self.checked_key(token).await?;
        if header.typ.as_deref() != Some(expect.typ) {
            return Err(TokenError::WrongType);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[expect.issuer]);
        validation.set_audience(expect.audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = expect.check_expiry;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        if expect.audiences.is_empty() {
            return Err(TokenError::Invalid("no audience is accepted".into()));
        }
        jsonwebtoken::decode::<T>(token, &key, &validation).map(|data| data.claims).map_err(|error| TokenError::Invalid(error.to_string()))
    }

    pub fn settings(&self) -> &VerifierSettings {
        &self.0.settings
    }

    /// The user of a token, or `None` (logged at debug level) when the token is not acceptable.
    pub async fn user_from_token(&self, token: &str) -> Option<SessionUser> {
        match self.verify(token).await {
            Ok(claims) => Some(claims.into()),
            Err(error) => {
                tracing::debug!(%error, "access token refused");
                None
            }
        }
    }

    /// The user of the access cookie in these headers, if any.
    pub async fn user_from_headers(&self, headers: &http::HeaderMap) -> Option<SessionUser> {
        let token = crate::cookie::read_cookie(headers, &self.0.settings.access_cookie)?;
        self.user_from_token(&token).await
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.0.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn key_for(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        let settings = &self.0.settings;
        let (known, due) = {
            let cache = self.cache();
            (cache.keys.get(kid).cloned(), cache.fetch_due(kid, settings))
        };
        if !due {
            return self.cache().found(kid);
        }
        // A known key does not wait for another request's fetch; an unknown one waits for it, then looks
        // again (that fetch may have brought it).
        let _fetching = match known {
            Some(key) => match self.0.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(key),
            },
            None => self.0.fetching.lock().await,
        };
        if !self.cache().fetch_due(kid, settings) {
            return self.cache().found(kid);
        }
        let fetched = self.0.source.fetch().await;
        let mut cache = self.cache();
        match fetched {
            Ok(set) => {
                cache.keys = decoding_keys(&set);
                cache.fetched_at = Some(Instant::now());
                cache.failures = 0;
                cache.retry_at = None;
            }
            Err(error) => {
                let wait = FIRST_RETRY_AFTER.saturating_mul(1 << cache.failures.min(6)).min(MAX_RETRY_AFTER);
                cache.failures += 1;
                cache.retry_at = Some(Instant::now() + wait);
                tracing::warn!(%error, retry_in = ?wait, known_keys = cache.keys.len(), "cannot fetch the shell's JWKS; keeping the keys it has");
                if cache.keys.is_empty() {
                    return Err(TokenError::KeysUnavailable(error.to_string()));
                }
            }
        }
        cache.found(kid)
    }
}

fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => Some((kid, key)),
                Err(error) => {
                    tracing::warn!(%kid, %error, "ignoring an unusable key in the JWKS");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;
    use crate::keys::{KeyRing, TokenSigner};
    use crate::Role;

    const ISSUER: &str = "tessera-shell";
    const AUDIENCE: &str = "tessera";

    struct CountingSource {
        jwks: JwkSet,
        fetches: Arc<AtomicUsize>,
    }

    impl JwksSource for CountingSource {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let jwks = self.jwks.clone();
            Box::pin(async move { Ok(jwks) })
        }
    }

    fn user() -> SessionUser {
        SessionUser { id: "u1".into(), email: "sam@example.com".into(), name: "Sam".into(), roles: vec![Role::Shopper] }
    }

    fn setup() -> (TokenSigner, Verifier, Arc<AtomicUsize>) {
        let signer = TokenSigner::new(KeyRing::ephemeral(900), ISSUER, AUDIENCE, 900);
        let fetches = Arc::new(AtomicUsize::new(0));
        let source = CountingSource { jwks: signer.jwks(), fetches: fetches.clone() };
        (signer, Verifier::new(VerifierSettings::new(ISSUER, AUDIENCE), source), fetches)
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[tokio::test]
    async fn a_token_issued_by_the_shell_verifies() {
        let (signer, verifier, _) = setup();
        let token = signer.issue_access_token(&user(), "s1").unwrap();
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(SessionUser::from(claims), user());
    }

    #[tokio::test]
    async fn a_tampered_payload_is_refused() {
        let (signer, verifier, _) = setup();
        let token = signer.issue_access_token(&user(), "s1").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = signer.access_claims(&user(), "s1");
        claims.roles = vec![Role::InventoryAdmin];
        let forged = format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&claims).unwrap()), parts[2]);
        assert!(matches!(verifier.verify(&forged).await, Err(TokenError::Invalid(_))));
    }

    #[tokio::test]
    async fn alg_none_is_refused_in_every_spelling() {
        let (signer, verifier, _) = setup();
        let payload = b64(&serde_json::to_value(signer.access_claims(&user(), "s1")).unwrap());
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": "x"}));
            for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
                assert!(verifier.verify(&token).await.is_err(), "alg {alg} accepted");
            }
        }
    }

    #[tokio::test]
    async fn hs256_keyed_with_anything_is_refused() {
        let (signer, verifier, _) = setup();
        let claims = signer.access_claims(&user(), "s1");
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(signer.jwks().keys[0].common.key_id.clone().unwrap());
        let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(b"public")).unwrap();
        assert!(matches!(verifier.verify(&token).await, Err(TokenError::WrongAlgorithm(_))));
    }

    #[tokio::test]
    async fn expired_wrong_issuer_wrong_audience_and_wrong_type_are_refused() {
        let (signer, verifier, _) = setup();
        let base = signer.access_claims(&user(), "s1");
        let cases = [
            Claims { exp: base.iat - 3600, iat: base.iat - 4000, ..base.clone() },
            Claims { iss: "someone-else".into(), ..base.clone() },
            Claims { aud: "another-site".into(), ..base.clone() },
            Claims { typ: "refresh".into(), ..base.clone() },
            Claims { exp: base.iat + 365 * 24 * 3600, ..base.clone() },
        ];
        for claims in cases {
            let token = signer.sign_claims(&claims).unwrap();
            assert!(verifier.verify(&token).await.is_err(), "accepted {claims:?}");
        }
    }

    #[tokio::test]
    async fn a_token_from_another_key_with_an_unknown_kid_is_refused() {
        let (_, verifier, _) = setup();
        let attacker = TokenSigner::new(KeyRing::ephemeral(900), ISSUER, AUDIENCE, 900);
        let token = attacker.issue_access_token(&user(), "s1").unwrap();
        assert_eq!(verifier.verify(&token).await, Err(TokenError::UnknownKid));
    }

    /// A shell that stopped answering: each fetch takes a while, then fails.
    struct FailingSource {
        fetches: Arc<AtomicUsize>,
    }

    impl JwksSource for FailingSource {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err(JwksError::Unreachable { url: "the shell".into(), reason: "connection refused".into() })
            })
        }
    }

    /// The shell's keys until it goes down; then each fetch hangs until released, and fails.
    struct Gate {
        good: JwkSet,
        up: std::sync::atomic::AtomicBool,
        release: tokio::sync::Notify,
        fetches: AtomicUsize,
    }

    impl JwksSource for Arc<Gate> {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, JwksError>> + Send + '_>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if self.up.load(Ordering::SeqCst) {
                    return Ok(self.good.clone());
                }
                self.release.notified().await;
                Err(JwksError::Unreachable { url: "the shell".into(), reason: "connection refused".into() })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_key_source_is_retried_with_backoff_while_known_keys_keep_verifying() {
        let (signer, _, _) = setup();
        let token = signer.issue_access_token(&user(), "s1").unwrap();
        let gate = Arc::new(Gate { good: signer.jwks(), up: true.into(), release: tokio::sync::Notify::new(), fetches: AtomicUsize::new(0) });
        let mut settings = VerifierSettings::new(ISSUER, AUDIENCE);
        settings.cache_ttl = Duration::from_millis(20);
        let verifier = Verifier::new(settings, gate.clone());
        verifier.verify(&token).await.unwrap();
        // The shell goes away and the keys go stale. One request runs the fetch, which hangs…
        gate.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let fetching = tokio::spawn({
            let (verifier, token) = (verifier.clone(), token.clone());
            async move { verifier.verify(&token).await }
        });
        while gate.fetches.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // …while every other request verifies with the known key (were they waiting for the fetch, this
        // would never finish: the bound only turns a hang into a failure).
        let others = futures::future::join_all((0..100).map(|_| verifier.verify(&token)));
        for result in tokio::time::timeout(Duration::from_secs(10), others).await.expect("known keys do not wait for a fetch") {
            result.unwrap();
        }
        gate.release.notify_one();
        fetching.await.unwrap().unwrap();
        // The failed fetch waits a second before the next: the requests meanwhile fetch nothing.
        for _ in 0..30 {
            verifier.verify(&token).await.unwrap();
        }
        assert_eq!(gate.fetches.load(Ordering::SeqCst), 2, "a failed fetch is not retried on every request");
    }

    #[tokio::test]
    async fn without_any_known_key_a_failing_source_answers_keys_unavailable_and_backs_off() {
        let (signer, _, _) = setup();
        let token = signer.issue_access_token(&user(), "s1").unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = Verifier::new(VerifierSettings::new(ISSUER, AUDIENCE), FailingSource { fetches: fetches.clone() });
        for _ in 0..5 {
            assert!(matches!(verifier.verify(&token).await, Err(TokenError::KeysUnavailable(_))));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let (signer, verifier, fetches) = setup();
        let good = signer.issue_access_token(&user(), "s1").unwrap();
        verifier.verify(&good).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let payload = b64(&serde_json::to_value(signer.access_claims(&user(), "s1")).unwrap());
        for n in 0..50 {
            let header = b64(&serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": format!("random-{n}")}));
            let token = format!("{header}.{payload}.c2ln");
            assert_eq!(verifier.verify(&token).await, Err(TokenError::UnknownKid));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "unknown kids must not trigger a fetch each");
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused_without_panicking() {
        let (_, verifier, _) = setup();
        for token in ["", ".", "..", "a.b", "a.b.c.d", "!!!.###.$$$", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verifier.verify(token).await.is_err(), "accepted {token:?}");
        }
    }
}
