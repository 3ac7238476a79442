//! An event request as a consumer's `POST <prefix>/events` reads it: the signature first, then the
//! envelope, then the payload as the typed event its type names. Nothing panics; a body verifies only
//! when signed by the producer it claims; every event type either decodes or says why, and what decodes
//! survives a round trip unchanged (a consumer and a producer agree on its meaning).

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::*;
use tessera_fragment::inbox::accept_envelope;

use tessera_fragment::signature::{EventSigner, KeyDirectory, ServiceKeys};

/// Inventory's and the cart's signers, sharing the consumer's directory, and a stranger's.
fn signers() -> &'static (EventSigner, EventSigner, EventSigner) {
    static SIGNERS: OnceLock<(EventSigner, EventSigner, EventSigner)> = OnceLock::new();
    SIGNERS.get_or_init(|| {
        let directory = Arc::new(KeyDirectory::default());
        let signer = |name: ServiceName, directory: Arc<KeyDirectory>| EventSigner::new(Arc::new(ServiceKeys::generate(name)), directory);
        (signer(ServiceName::INVENTORY, directory.clone()), signer(ServiceName::CART, directory), signer(ServiceName::INVENTORY, Arc::default()))
    })
}

fn headers(pairs: impl IntoIterator<Item = (&'static str, String)>) -> HeaderMap {
    pairs.into_iter().filter_map(|(name, value)| Some((HeaderName::from_static(name), HeaderValue::from_str(&value).ok()?))).collect()
}

fn round_trip<E: Event + PartialEq + std::fmt::Debug>(envelope: &Envelope) {
    if let Ok(event) = envelope.decode::<E>() {
        let again = Envelope { payload: serde_json::to_value(&event).expect("an event serialises"), ..envelope.clone() };
        assert_eq!(again.decode::<E>().as_ref(), Ok(&event), "{} changed in a round trip", E::TYPE);
    }
}

fuzz_target!(|data: &[u8]| {
    let (inventory, cart, stranger) = signers();
    let Some((&shape, body)) = data.split_first() else { return };
    let now = tessera_fragment::db::now_seconds();
    let signer = if shape % 2 == 0 { inventory } else { cart };
    let signed_by = signer.service().clone();
    let envelope = match accept_envelope(signer, &headers(signer.sign(body, now)), body) {
        Ok(envelope) => envelope,
        Err(_) => return,
    };
    assert_eq!(envelope.producer, signed_by, "an envelope claimed another producer than its signer");
    round_trip::<StockChanged>(&envelope);
    round_trip::<OrderPaid>(&envelope);
    round_trip::<OrderCancelled>(&envelope);
    round_trip::<OrderCancelRequested>(&envelope);
    round_trip::<OrderCancelConfirmed>(&envelope);
    round_trip::<OrderCancelRefused>(&envelope);
    round_trip::<OrderFulfilled>(&envelope);
    round_trip::<OrderShort>(&envelope);
    round_trip::<ProductChanged>(&envelope);
    // The same body under a forged or foreign signature is refused.
    assert!(accept_envelope(signer, &headers(stranger.sign(body, now)), body).is_err());
    assert!(accept_envelope(signer, &headers(signer.sign(body, now - 3600)), body).is_err());
});
