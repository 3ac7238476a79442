//! Access-token verification against anything: a fragment turns whatever arrives in the access cookie
//! into a user through `Verifier::verify`, so no input may panic it, and none may pass unless the shell
//! signed it with claims a shell would issue.
//!
//! The first byte picks a shape, so the fuzzer explores all three:
//! - 0: the input as a token, as is;
//! - 1: a genuine token with the input's edits applied (position, byte pairs): accepted only if its
//!   claims are still exactly the genuine ones (signature malleability would show here);
//! - 2: the input as the claims JSON, signed with the real key: accepted only if a reference check of
//!   the claims (issuer, audience, type, expiry, lifetime, issue time) accepts them too.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shared_auth::keys::{now_seconds, KeyRing, TokenSigner};
use shared_auth::verify::{InProcessJwks, Verifier, VerifierSettings};
use shared_auth::{Claims, Role, SessionUser, ACCESS_TOKEN_TYPE};

const ISSUER: &str = "tessera-shell";
const AUDIENCE: &str = "tessera";
const MAX_LIFETIME_SECONDS: i64 = 360;
const LEEWAY_SECONDS: i64 = 30;

struct Fixture {
    signer: Arc<TokenSigner>,
    verifier: Verifier,
    genuine: String,
    genuine_claims: Claims,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let signer = Arc::new(TokenSigner::new(KeyRing::ephemeral(300), ISSUER, AUDIENCE, 300));
        let mut settings = VerifierSettings::new(ISSUER, AUDIENCE);
        settings.max_lifetime = Duration::from_secs(MAX_LIFETIME_SECONDS as u64);
        let published = signer.clone();
        let verifier = Verifier::new(settings, InProcessJwks(Arc::new(move || published.jwks())));
        let user = SessionUser { id: "u-1".into(), email: "shopper@example.com".into(), name: "Sam".into(), roles: vec![Role::Shopper] };
        let genuine_claims = signer.access_claims(&user, "s-1");
        let genuine = signer.sign_claims(&genuine_claims).expect("signing");
        Fixture { signer, verifier, genuine, genuine_claims }
    })
}

/// Whether a shell could have issued a token with these claims, written independently of the verifier:
/// `None` within two seconds of a time boundary, where the clock moves between the two checks.
fn acceptable(claims: &Claims) -> Option<bool> {
    let now = now_seconds();
    let near = |a: i64, b: i64| a.abs_diff(b) <= 2;
    if near(claims.exp.saturating_add(LEEWAY_SECONDS), now) || near(claims.iat, now + LEEWAY_SECONDS) {
        return None;
    }
    Some(
        claims.iss == ISSUER
            && claims.aud == AUDIENCE
            && claims.typ == ACCESS_TOKEN_TYPE
            && claims.exp.saturating_add(LEEWAY_SECONDS) >= now
            && claims.exp.saturating_sub(claims.iat) <= MAX_LIFETIME_SECONDS
            && claims.iat <= now + LEEWAY_SECONDS,
    )
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&shape, rest)) = data.split_first() else { return };
    match shape % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if let Ok(claims) = futures::executor::block_on(fixture.verifier.verify(&token)) {
                assert_eq!(claims, fixture.genuine_claims, "an unsigned input verified: {token:?}");
            }
        }
        1 => {
            let mut token = fixture.genuine.clone().into_bytes();
            for edit in rest.chunks_exact(3) {
                let position = u16::from_le_bytes([edit[0], edit[1]]) as usize % (token.len() + 1);
                match edit[2] {
                    // A byte removed, or one inserted: the token's length changes too.
                    0 if position < token.len() => drop(token.remove(position)),
                    0 => {}
                    byte if position == token.len() => token.push(byte),
                    byte => token[position] = byte,
                }
            }
            let token = String::from_utf8_lossy(&token);
            if let Ok(claims) = futures::executor::block_on(fixture.verifier.verify(&token)) {
                assert_eq!(claims, fixture.genuine_claims, "an edited token verified with other claims: {token:?}");
            }
        }
        _ => {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
            let Ok(token) = fixture.signer.sign_claims(&json) else { return };
            let verified = futures::executor::block_on(fixture.verifier.verify(&token));
            let parsed: Option<Claims> = serde_json::from_value(json.clone()).ok();
            match (&verified, &parsed) {
                (Ok(claims), Some(parsed)) => {
                    assert_eq!(claims, parsed);
                    assert_ne!(acceptable(claims), Some(false), "claims no shell issues were accepted: {json}");
                }
                (Ok(claims), None) => panic!("claims that do not even parse were accepted as {claims:?}: {json}"),
                // Refused: the reference check must not find them acceptable (allowing the verifier's
                // extra rules on nbf, which these claims do not carry unless the input adds it).
                (Err(error), Some(parsed)) if acceptable(parsed) == Some(true) && json.get("nbf").is_none() => {
                    panic!("acceptable claims were refused ({error}): {json}")
                }
                (Err(_), _) => {}
            }
        }
    }
});
