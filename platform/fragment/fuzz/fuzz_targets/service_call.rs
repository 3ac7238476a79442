//! A signed service call (the cart reserving stock, the cart creating a payment), as the callee checks
//! it: headers, method, path and body from the input. Nothing panics, and a call verifies only with the
//! headers the caller's key made for exactly that caller, method, path, body and a timestamp within the
//! tolerance (Ed25519 signatures are deterministic, so "the headers it made" is one value).

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tessera_contracts::domain::ServiceName;

use tessera_fragment::signature::{CallSigner, EventSigner, ServiceKeys, SIGNATURE_TOLERANCE_SECONDS};

const NOW: i64 = 1_800_000_000;

/// The cart's calls, verified with a directory that trusts the cart's key.
fn signer() -> &'static CallSigner {
    static SIGNER: OnceLock<CallSigner> = OnceLock::new();
    SIGNER.get_or_init(|| CallSigner::keyed(EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::CART)), Arc::default())))
}

fuzz_target!(|data: &[u8]| {
    let signer = signer();
    // Fields separated by NUL: producer, timestamp, signature, method, path, body.
    let mut fields = data.splitn(6, |byte| *byte == 0);
    let mut next = || fields.next().unwrap_or_default();
    let (caller, timestamp, signature, method, path, body) = (next(), next(), next(), next(), next(), next());
    let mut headers = HeaderMap::new();
    for (name, value) in [("x-tessera-event-producer", caller), ("x-tessera-event-timestamp", timestamp), ("x-tessera-event-signature", signature)] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let method = String::from_utf8_lossy(method);
    let path = String::from_utf8_lossy(path);
    if let Ok(who) = signer.verify(&headers, &method, &path, body, NOW) {
        let at: i64 = headers["x-tessera-event-timestamp"].to_str().unwrap().parse().unwrap();
        assert!(NOW.abs_diff(at) <= SIGNATURE_TOLERANCE_SECONDS.unsigned_abs());
        assert_eq!(who, ServiceName::CART);
        let expected = signer.sign(&method, &path, body, at);
        assert_eq!(headers["x-tessera-event-signature"].to_str().unwrap(), expected[2].1, "a forged call verified");
    }
    // The genuine headers verify for this call and for no other method, path or body.
    let genuine: HeaderMap = signer
        .sign(&method, &path, body, NOW)
        .into_iter()
        .filter_map(|(name, value)| Some((HeaderName::from_static(name), HeaderValue::from_str(&value).ok()?)))
        .collect();
    if genuine.len() == 3 {
        assert_eq!(signer.verify(&genuine, &method, &path, body, NOW), Ok(ServiceName::CART));
        assert!(signer.verify(&genuine, &format!("{method}X"), &path, body, NOW).is_err());
        assert!(signer.verify(&genuine, &method, &format!("{path}/x"), body, NOW).is_err());
        assert!(signer.verify(&genuine, &method, &path, &[body, b"x"].concat(), NOW).is_err());
    }
});
