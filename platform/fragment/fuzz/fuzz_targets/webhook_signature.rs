//! The payment webhook's signature header (`t=<unix>,v1=<hex>…`), as the cart checks it on the raw body
//! before anything else. No header may panic the check, and none passes unless it carries a tag the
//! secret made for exactly this timestamp and body, within the tolerance.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_contracts::payments::WEBHOOK_TOLERANCE_SECONDS;
use tessera_fragment::webhook::WebhookSigner;

const SECRET: &[u8] = b"fuzz-webhook-secret-0123456789abcdef";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let signer = WebhookSigner::new(&[SECRET.to_vec()]);
    // The input is the header, then a NUL, then the body (the header may also be missing).
    let (header, body) = match data.iter().position(|byte| *byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let header = std::str::from_utf8(header).ok();
    if signer.verify(header, body, NOW).is_ok() {
        let header = header.expect("a missing header never verifies");
        // Then some `t=` is within the tolerance and some `v1=` is the genuine tag for it.
        let genuine = header.split(',').filter_map(|part| part.trim().strip_prefix("t=")).filter_map(|t| t.parse::<i64>().ok()).any(|timestamp| {
            NOW.abs_diff(timestamp) <= WEBHOOK_TOLERANCE_SECONDS.unsigned_abs() && {
                let expected = signer.header(body, timestamp);
                let tag = expected.split_once(",v1=").map(|(_, tag)| tag.to_owned()).unwrap_or_default();
                header.split(',').filter_map(|part| part.trim().strip_prefix("v1=")).any(|given| given.eq_ignore_ascii_case(&tag))
            }
        });
        assert!(genuine, "a forged webhook signature verified: {header:?}");
    }
    // The genuine header for this body always verifies, and never for another body.
    let real = signer.header(body, NOW);
    assert!(signer.verify(Some(&real), body, NOW).is_ok());
    let mut other = body.to_vec();
    other.push(b' ');
    assert!(signer.verify(Some(&real), &other, NOW).is_err());
});
