//! Signed webhooks from a payment provider: `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` over `"<t>.<raw body>"`
//! with HMAC-SHA256 (the scheme of `tessera_contracts::payments::SIGNATURE_HEADER`).
//!
//! The signer signs with every configured secret and the verifier accepts a match with any of its own,
//! so a secret is rotated by adding the new one on both sides, then removing the old. Verification
//! compares in constant time (`ring::hmac::verify`), checks the timestamp against a tolerance (a captured
//! webhook cannot be replayed later) and only ever looks at the raw bytes received, before any parsing.

use std::sync::Arc;

use tessera_contracts::payments::WEBHOOK_TOLERANCE_SECONDS;

/// Why a webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook has no signature header")]
    Missing,
    #[error("the webhook's signature header is malformed")]
    Malformed,
    #[error("the webhook's timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} seconds from now (a replay, or a clock far off)")]
    Stale,
    #[error("the webhook's signature does not match")]
    Mismatch,
}

/// Signs or verifies webhooks with one or more shared secrets.
#[derive(Clone)]
pub struct WebhookSigner {
    keys: Arc<Vec<ring::hmac::Key>>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSigner {{ {} secrets }}", self.keys.len())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Lowercase or uppercase hex digits only: `from_str_radix` alone would take "+f" as a byte, so two
/// spellings of one signature would both verify.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn message(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    message
}

impl WebhookSigner {
    pub fn new(secrets: &[Vec<u8>]) -> WebhookSigner {
        assert!(!secrets.is_empty(), "at least one webhook secret");
        WebhookSigner { keys: Arc::new(secrets.iter().map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)).collect()) }
    }

    /// The signature header value for `body` sent at `timestamp` (unix seconds).
    pub fn header(&self, body: &[u8], timestamp: i64) -> String {
        let message = message(timestamp, body);
        let mut value = format!("t={timestamp}");
        for key in self.keys.iter() {
            value.push_str(",v1=");
            value.push_str(&hex(ring::hmac::sign(key, &message).as_ref()));
        }
        value
    }

    /// Checks `header` against the raw `body` at `now_seconds`.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_seconds: i64) -> Result<(), WebhookError> {
        let header = header.ok_or(WebhookError::Missing)?;
        if header.len() > 1024 {
            return Err(WebhookError::Malformed);
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => timestamp = Some(value.parse::<i64>().map_err(|_| WebhookError::Malformed)?),
                Some(("v1", value)) => signatures.push(unhex(value).ok_or(WebhookError::Malformed)?),
                // Other schemes (a future v2) are ignored, as providers do.
                Some(_) => {}
                None => return Err(WebhookError::Malformed),
            }
        }
        let timestamp = timestamp.ok_or(WebhookError::Malformed)?;
        if signatures.is_empty() {
            return Err(WebhookError::Malformed);
        }
        if now_seconds.abs_diff(timestamp) > WEBHOOK_TOLERANCE_SECONDS.unsigned_abs() {
            return Err(WebhookError::Stale);
        }
        let message = message(timestamp, body);
        let matched = self.keys.iter().any(|key| signatures.iter().any(|tag| ring::hmac::verify(key, &message, tag).is_ok()));
        if matched {
            Ok(())
        } else {
            Err(WebhookError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let signer = WebhookSigner::new(&[b"secret-one".to_vec()]);
        let header = signer.header(b"{\"id\":1}", 1_000);
        assert_eq!(signer.verify(Some(&header), b"{\"id\":1}", 1_000), Ok(()));
        assert_eq!(signer.verify(Some(&header), b"{\"id\":2}", 1_000), Err(WebhookError::Mismatch));
        assert_eq!(signer.verify(Some(&header), b"{\"id\":1}", 1_000 + WEBHOOK_TOLERANCE_SECONDS + 1), Err(WebhookError::Stale));
        assert_eq!(signer.verify(Some(&header), b"{\"id\":1}", 1_000 - WEBHOOK_TOLERANCE_SECONDS - 1), Err(WebhookError::Stale));
        assert_eq!(signer.verify(None, b"{}", 1_000), Err(WebhookError::Missing));
        // A timestamp at the edge of i64 is merely stale, never an overflow.
        assert_eq!(signer.verify(Some("t=-9223372036854775808,v1=00"), b"{}", 1_000), Err(WebhookError::Stale));
        for bad in ["", "t=x,v1=00", "v1=00", "t=1000", "t=1000,v1=zz", "t=1000,v1=+0", "nonsense"] {
            assert_eq!(signer.verify(Some(bad), b"{}", 1_000), Err(WebhookError::Malformed), "{bad:?}");
        }
        let other = WebhookSigner::new(&[b"guessed".to_vec()]);
        assert_eq!(other.verify(Some(&header), b"{\"id\":1}", 1_000), Err(WebhookError::Mismatch));
    }

    #[test]
    fn secrets_rotate_without_refusing_webhooks_in_flight() {
        let old = WebhookSigner::new(&[b"old".to_vec()]);
        let both = WebhookSigner::new(&[b"new".to_vec(), b"old".to_vec()]);
        let new = WebhookSigner::new(&[b"new".to_vec()]);
        // The provider still signs with the old secret while the merchant already knows both…
        assert_eq!(both.verify(Some(&old.header(b"x", 5)), b"x", 5), Ok(()));
        // …and a provider signing with both reaches a merchant that knows only one of them.
        assert_eq!(new.verify(Some(&both.header(b"x", 5)), b"x", 5), Ok(()));
        assert_eq!(old.verify(Some(&both.header(b"x", 5)), b"x", 5), Ok(()));
        assert_eq!(old.verify(Some(&new.header(b"x", 5)), b"x", 5), Err(WebhookError::Mismatch));
    }
}
