//! The `Cookie` header as a fragment and the shell read it. Whatever a browser (or an attacker) sends,
//! reading never panics, and the shell's rewrite before forwarding a request to a fragment — dropping the
//! refresh cookie and replacing the access cookie — leaves nothing a fragment could read as the dropped
//! cookie or as another access token, however the input hides one (quotes, spaces, several headers,
//! empty names, bytes that are not text).

#![no_main]

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use shared_auth::cookie::{read_cookie, rewrite_cookie_header};

const REFRESH: &str = "tessera_refresh";
const ACCESS: &str = "tessera_access";

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // Up to four Cookie headers: the input split at 0xFF bytes.
    for part in data.split(|byte| *byte == 0xFF).take(4) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(COOKIE, value);
        }
    }
    for name in [REFRESH, ACCESS, "", "a"] {
        if let Some(value) = read_cookie(&headers, name) {
            assert!(!value.is_empty(), "an empty cookie is no cookie");
        }
    }
    rewrite_cookie_header(&mut headers, &[REFRESH, ACCESS], &[(ACCESS.to_owned(), "forwarded".to_owned())]);
    assert_eq!(read_cookie(&headers, REFRESH), None, "the refresh cookie reached a fragment: {headers:?}");
    assert_eq!(read_cookie(&headers, ACCESS).as_deref(), Some("forwarded"), "another access token reached a fragment: {headers:?}");
    assert!(headers.get_all(COOKIE).iter().count() <= 1, "the rewrite leaves one Cookie header");
});
