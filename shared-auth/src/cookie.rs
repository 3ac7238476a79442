//! The access cookie's attributes, in one place: HttpOnly, SameSite=Lax, Path=/, Secure over https.

use cookie::{Cookie, SameSite};
use http::HeaderMap;

use crate::ACCESS_COOKIE;

/// `Set-Cookie` value that stores an access token for `max_age_seconds`.
pub fn access_cookie(token: &str, secure: bool, max_age_seconds: i64) -> String {
    Cookie::build((ACCESS_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_seconds))
        .build()
        .to_string()
}

/// `Set-Cookie` value that removes the access cookie.
pub fn clear_access_cookie(secure: bool) -> String {
    access_cookie("", secure, 0)
}

/// The access token from the request's `Cookie` headers, if present.
pub fn read_access_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == ACCESS_COOKIE && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_cookie_is_http_only_lax_and_site_wide() {
        let cookie = access_cookie("abc", false, 900);
        assert!(cookie.starts_with("tessera_access=abc"));
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=900"] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
        assert!(!cookie.contains("Secure"));
        assert!(access_cookie("abc", true, 900).contains("Secure"));
    }

    #[test]
    fn the_token_is_read_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, "theme=dark; tessera_access=tok.en.x".parse().unwrap());
        assert_eq!(read_access_token(&headers).as_deref(), Some("tok.en.x"));
        let mut empty = HeaderMap::new();
        empty.append(http::header::COOKIE, "tessera_access=".parse().unwrap());
        assert_eq!(read_access_token(&empty), None);
    }
}
