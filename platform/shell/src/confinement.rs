//! What a fragment may know of a visitor and leave in their browser, decided at the one place every
//! request to a fragment passes ([`crate::registry::FragmentRegistry::forward`]) and every answer comes
//! back through (`to_fragment`).
//!
//! - **A token per fragment, never the site's.** The site's access token is good at the shell's own pages
//!   and API. A fragment gets, instead, a token the shell mints for that request: the same user, roles and
//!   session, the fragment's own audience (`tessera:catalog`), a minute's lifetime
//!   (`shared_auth::keys::TokenSigner::fragment_token`). Every fragment accepts only tokens of its own
//!   audience and the shell only the site's, so a token a compromised fragment records opens nothing
//!   else, for a minute. The refresh token never leaves the shell.
//! - **Cookies by owner.** Fragment `cart` owns the cookies named `tessera_cart` and `tessera_cart_<…>`
//!   (whatever `__Host-`/`__Secure-` prefix, in any case; service names have no `_`, so no name has two
//!   owners). A request to a fragment carries only the cookies it owns (and its token); an answer from it
//!   sets only cookies it owns — never the shell's (session fixation), nor another fragment's (the cart's
//!   guest cookie is a bearer key to a guest's cart).
//!
//! Confinement is by name rather than by cookie `Path`: the chrome's cart badge on every page reads the
//! guest's cart through the cart's own cookie, which a `Path=/cart` cookie would hide from every other
//! page; and a path does not stop a fragment's server from reading what the browser sends to it.

use std::sync::Arc;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use shared_auth::cookie::CookiePolicy;
use shared_auth::keys::TokenSigner;
use shared_auth::Claims;
use tessera_contracts::domain::ServiceName;

/// The shell's own cookies, by name whatever prefix form (`__Host-`, `__Secure-`) is written.
const SHELL_COOKIES: [&str; 2] = ["tessera_access", "tessera_refresh"];

/// A cookie name without its `__Host-`/`__Secure-` prefix, lower-cased.
fn bare(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    lower.trim_start_matches("__host-").trim_start_matches("__secure-").to_owned()
}

/// Whether cookie `name` is one of the shell's.
pub fn is_shells(name: &str) -> bool {
    let bare = bare(name);
    SHELL_COOKIES.contains(&bare.as_str())
}

/// Whether cookie `name` belongs to `fragment` (see the module docs).
pub fn owned_by(fragment: &ServiceName, name: &str) -> bool {
    let bare = bare(name);
    let own = format!("tessera_{fragment}");
    !is_shells(&bare) && (bare == own || bare.strip_prefix(&own).is_some_and(|rest| rest.starts_with('_')))
}

/// Mints the per-fragment tokens of forwarded requests.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `None`: no user is ever passed on (a registry in a test of routing alone).
    signer: Option<Arc<TokenSigner>>,
    access_cookie: String,
}

impl Credentials {
    pub fn new(signer: Arc<TokenSigner>, cookies: &CookiePolicy) -> Credentials {
        Credentials { signer: Some(signer), access_cookie: cookies.access_name() }
    }

    /// Rewrites the `Cookie` header of a request to `fragment`: only the cookies it owns, and, for the
    /// user of `claims` (the session the shell verified), that fragment's token under the access cookie's
    /// name, where the fragment's login reads it.
    pub fn scope(&self, fragment: &ServiceName, headers: &mut HeaderMap, claims: Option<&Claims>) {
        let mut kept: Vec<String> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .map(str::trim)
            .filter(|pair| pair.split_once('=').is_some_and(|(name, _)| owned_by(fragment, name)))
            .map(str::to_owned)
            .collect();
        if let (Some(signer), Some(claims)) = (&self.signer, claims) {
            match signer.fragment_token(claims, fragment.as_str()) {
                Ok(token) => kept.push(format!("{}={token}", self.access_cookie)),
                // The request goes on as a guest's: a fragment never gets the site's token instead.
                Err(error) => tracing::error!(%fragment, %error, "cannot sign a fragment's token"),
            }
        }
        headers.remove(COOKIE);
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.insert(COOKIE, value);
            }
        }
    }
}

/// Removes from a fragment's answer every cookie it sets that it does not own: the shell's (a fragment
/// cannot sign a visitor into a session of its choosing, nor out of theirs) and other fragments'.
pub fn keep_own_set_cookies(fragment: &ServiceName, headers: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|value| {
            let name = value.to_str().ok().and_then(|cookie| cookie.split_once('=')).map(|(name, _)| name.trim()).unwrap_or_default();
            let own = owned_by(fragment, name);
            if !own {
                tracing::warn!(%fragment, cookie = name, "a fragment tried to set a cookie it does not own; dropped");
            }
            own
        })
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for value in kept {
        headers.append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_has_one_owner_at_most_and_the_shells_have_none_among_fragments() {
        let cart = ServiceName::CART;
        let catalog = ServiceName::CATALOG;
        for own in ["tessera_cart", "__Host-tessera_cart", "__Secure-tessera_cart_view", "TESSERA_CART"] {
            assert!(owned_by(&cart, own), "{own}");
            assert!(!owned_by(&catalog, own), "{own}");
        }
        for nobodys in ["tessera_access", "__Host-tessera_refresh", "tessera_cartx", "cart", "tessera_", "session", "tessera_cat"] {
            assert!(!owned_by(&cart, nobodys) && !owned_by(&catalog, nobodys), "{nobodys}");
        }
        let access = ServiceName::parse("access").unwrap();
        assert!(!owned_by(&access, "tessera_access"), "a fragment named like a shell cookie does not get it");
    }

    #[test]
    fn a_request_to_a_fragment_carries_its_own_cookies_only_and_no_site_token() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "tessera_access=site.token.here; tessera_cart=guest-1; tessera_catalog_view=grid".parse().unwrap());
        headers.append(COOKIE, "__Host-tessera_refresh=r; other=x".parse().unwrap());
        let mut to_cart = headers.clone();
        Credentials::default().scope(&ServiceName::CART, &mut to_cart, None);
        assert_eq!(to_cart.get_all(COOKIE).iter().collect::<Vec<_>>(), ["tessera_cart=guest-1"]);
        Credentials::default().scope(&ServiceName::INVENTORY, &mut headers, None);
        assert!(headers.get(COOKIE).is_none(), "nothing of its own: no Cookie header at all");
    }

    #[test]
    fn an_answer_sets_only_the_cookies_its_fragment_owns() {
        let mut headers = HeaderMap::new();
        for cookie in ["tessera_access=x; Path=/", "__Host-tessera_refresh=y", "tessera_cart=stolen; Path=/", "tessera_catalog_view=grid; Path=/catalog"] {
            headers.append(SET_COOKIE, cookie.parse().unwrap());
        }
        keep_own_set_cookies(&ServiceName::CATALOG, &mut headers);
        assert_eq!(headers.get_all(SET_COOKIE).iter().collect::<Vec<_>>(), ["tessera_catalog_view=grid; Path=/catalog"]);
    }
}
