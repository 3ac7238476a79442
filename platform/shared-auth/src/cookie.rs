//! The session cookies' names and attributes, in one place, for both deploy shapes.
//!
//! - **Same origin** (every fragment behind the shell) over https: `__Host-tessera_access` and
//!   `__Host-tessera_refresh`: Secure, Path=/, no Domain, so no other host (not even a sibling subdomain)
//!   can set or overwrite them.
//! - **Subdomains** (`shop.example`, `catalog.shop.example`, …): the access cookie is a `Domain` cookie for
//!   the parent domain so every subdomain receives it (`__Secure-` name over https). The refresh cookie
//!   is not: only the shell redeems it, so it stays host-only on the shell's host (`__Host-` over https),
//!   and a 30-day credential never travels to, or can be read by, any other subdomain.
//! - Plain http (local development and tests on loopback): unprefixed names without Secure, because
//!   browsers refuse prefixed cookies there.
//!
//! All cookies are HttpOnly and SameSite=Lax. Readers accept only the configured name: a cookie planted
//! under another name by a sibling host is never read.

use cookie::{Cookie, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// How this deployment names and scopes its session cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiePolicy {
    /// Served over https: Secure cookies with a name prefix.
    pub secure: bool,
    /// Parent domain for subdomain deployments (`Domain=` attribute); `None` for same-origin.
    pub domain: Option<String>,
}

impl CookiePolicy {
    /// Same-origin deployment.
    pub fn same_origin(secure: bool) -> CookiePolicy {
        CookiePolicy { secure, domain: None }
    }

    fn prefixed(&self, base: &'static str) -> String {
        match (self.secure, &self.domain) {
            (true, None) => format!("__Host-{base}"),
            (true, Some(_)) => format!("__Secure-{base}"),
            (false, _) => base.to_owned(),
        }
    }

    /// Name of the access-token cookie.
    pub fn access_name(&self) -> String {
        self.prefixed("tessera_access")
    }

    /// Name of the refresh-token cookie: host-only in every deploy shape (see the module docs).
    pub fn refresh_name(&self) -> String {
        match self.secure {
            true => "__Host-tessera_refresh".to_owned(),
            false => "tessera_refresh".to_owned(),
        }
    }

    fn build(&self, name: String, value: &str, max_age_seconds: i64) -> String {
        self.build_scoped(name, value, max_age_seconds, self.domain.as_deref())
    }

    fn build_scoped(&self, name: String, value: &str, max_age_seconds: i64, domain: Option<&str>) -> String {
        let mut builder = Cookie::build((name, value.to_owned()))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(max_age_seconds));
        if let Some(domain) = domain {
            builder = builder.domain(domain.to_owned());
        }
        builder.build().to_string()
    }

    /// `Set-Cookie` value storing an access token.
    pub fn access_cookie(&self, token: &str, max_age_seconds: i64) -> String {
        self.build(self.access_name(), token, max_age_seconds)
    }

    /// `Set-Cookie` value storing a refresh token.
    pub fn refresh_cookie(&self, token: &str, max_age_seconds: i64) -> String {
        self.build_scoped(self.refresh_name(), token, max_age_seconds, None)
    }

    /// `Set-Cookie` values that remove both cookies.
    pub fn clear_cookies(&self) -> [String; 2] {
        [self.build(self.access_name(), "", 0), self.build_scoped(self.refresh_name(), "", 0, None)]
    }

    /// The access token from the request's `Cookie` headers.
    pub fn read_access_token(&self, headers: &HeaderMap) -> Option<String> {
        read_cookie(headers, &self.access_name())
    }

    /// The refresh token from the request's `Cookie` headers.
    pub fn read_refresh_token(&self, headers: &HeaderMap) -> Option<String> {
        read_cookie(headers, &self.refresh_name())
    }
}

/// The value of the first non-empty cookie called `name`.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
}

/// Rewrites the request's `Cookie` header: drops the cookies in `remove`, then adds `add`.
pub fn rewrite_cookie_header(headers: &mut HeaderMap, remove: &[&str], add: &[(String, String)]) {
    let mut pairs: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|cookie| !remove.contains(&cookie.name()))
        .map(|cookie| format!("{}={}", cookie.name(), cookie.value()))
        .collect();
    pairs.extend(add.iter().map(|(name, value)| format!("{name}={value}")));
    headers.remove(COOKIE);
    if !pairs.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&pairs.join("; ")) {
            headers.insert(COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_over_https_uses_host_prefixed_cookies() {
        let policy = CookiePolicy::same_origin(true);
        let cookie = policy.access_cookie("abc", 300);
        assert!(cookie.starts_with("__Host-tessera_access=abc"));
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure", "Max-Age=300"] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
        assert!(!cookie.contains("Domain"), "__Host- cookies must not have a Domain");
        assert!(policy.refresh_cookie("r", 60).starts_with("__Host-tessera_refresh=r"));
    }

    #[test]
    fn subdomain_deployments_use_a_domain_cookie() {
        let policy = CookiePolicy { secure: true, domain: Some("shop.example".into()) };
        let cookie = policy.access_cookie("abc", 300);
        assert!(cookie.starts_with("__Secure-tessera_access=abc") && cookie.contains("Domain=shop.example"), "{cookie}");
        let plain = CookiePolicy { secure: false, domain: Some("shop.localhost".into()) };
        let cookie = plain.access_cookie("abc", 300);
        assert!(cookie.starts_with("tessera_access=abc") && !cookie.contains("Secure"), "{cookie}");
    }

    #[test]
    fn the_refresh_cookie_stays_on_the_shells_host_in_subdomain_deployments() {
        for secure in [true, false] {
            let policy = CookiePolicy { secure, domain: Some("shop.example".into()) };
            let refresh = policy.refresh_cookie("r", 60);
            assert!(!refresh.contains("Domain"), "{refresh}");
            assert_eq!(refresh.starts_with("__Host-tessera_refresh=r"), secure, "{refresh}");
            let [access, cleared] = policy.clear_cookies();
            assert!(access.contains("Domain=shop.example") && !cleared.contains("Domain"), "{access} / {cleared}");
            assert!(cleared.starts_with(&format!("{}=;", policy.refresh_name())), "{cleared}");
        }
    }

    #[test]
    fn only_the_configured_name_is_read() {
        let policy = CookiePolicy::same_origin(true);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "tessera_access=planted; theme=dark".parse().unwrap());
        assert_eq!(policy.read_access_token(&headers), None);
        headers.append(COOKIE, "__Host-tessera_access=real".parse().unwrap());
        assert_eq!(policy.read_access_token(&headers).as_deref(), Some("real"));
    }

    #[test]
    fn clearing_expires_both_cookies() {
        let [access, refresh] = CookiePolicy::same_origin(false).clear_cookies();
        assert!(access.starts_with("tessera_access=;") && access.contains("Max-Age=0"));
        assert!(refresh.starts_with("tessera_refresh=;") && refresh.contains("Max-Age=0"));
    }

    #[test]
    fn the_cookie_header_is_rewritten_without_the_removed_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; tessera_refresh=secret; tessera_access=old".parse().unwrap());
        rewrite_cookie_header(&mut headers, &["tessera_refresh", "tessera_access"], &[("tessera_access".into(), "new".into())]);
        assert_eq!(headers[COOKIE], "a=1; tessera_access=new");
    }
}
