//! The security headers of every response a Tessera process sends — the shell's and a fragment's own
//! process alike, so a fragment reached directly (its own domain, a subdomain, its port) defends itself
//! as the shell does. Behind the shell they are set again by the shell, which a fragment cannot weaken:
//! what it sets under these names is replaced.
//!
//! - **Content-Security-Policy.** Scripts only from the site itself and inline scripts carrying this
//!   response's nonce: a fresh 128-bit value per request, handed to the handler on the request
//!   ([`CSP_NONCE_HEADER`]), which puts it on its boot script and on Leptos' streaming scripts. A request
//!   the shell forwards carries the shell's nonce, which a fragment's process keeps (the shell's policy
//!   names it); a browser never sends one. Markup that slipped into a page cannot know the nonce, so it
//!   cannot run. WebAssembly is compiled (`'wasm-unsafe-eval'`), nothing else is evaluated. Forms post only
//!   to the site and the origins the [`Policy`] names (a payment provider, OpenID Connect clients), and
//!   their redirects may end only there (`form-action` covers redirects); no page may be framed; no
//!   `<base>`, no plugins.
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: strict-origin-when-cross-origin`,
//!   `X-Frame-Options: DENY` (for browsers without `frame-ancestors`), and HSTS over https.
//!
//! The static headers use tower-http's overriding `SetResponseHeaderLayer`; only the policy, which
//! carries the per-request nonce, needs a middleware of its own.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use base64::Engine;
use tessera_contracts::CSP_NONCE_HEADER;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::settings::Settings;

/// What the policy allows beyond the site itself.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Origins forms may post to, or be redirected to, besides the site.
    pub form_targets: Vec<String>,
    /// Served over https: browsers are told to keep to it.
    pub https: bool,
}

impl Policy {
    /// A policy whose forms may also reach the origins of `urls` (comma-separated lists allowed).
    pub fn with_form_targets<'a>(urls: impl IntoIterator<Item = &'a str>, https: bool) -> Policy {
        let mut form_targets: Vec<String> = urls
            .into_iter()
            .flat_map(|urls| urls.split(','))
            .filter_map(|url| url::Url::parse(url.trim()).ok())
            .map(|url| url.origin().ascii_serialization())
            .filter(|origin| origin != "null")
            .collect();
        form_targets.sort();
        form_targets.dedup();
        Policy { form_targets, https }
    }

    /// The policy of a fragment's own process: its checkout may end at the payment provider (the one
    /// configured, else the shell at the site's public address), its sign-in and sign-out at the OpenID
    /// Connect provider it uses.
    pub fn for_fragment(settings: &Settings) -> Policy {
        let provider = settings.site.payment_url.as_deref().unwrap_or(settings.login.public_url.as_str());
        let oidc = settings.site.oidc_provider.iter().flat_map(|oidc| [oidc.issuer.as_str(), oidc.url.as_deref().unwrap_or_default()]);
        Policy::with_form_targets(std::iter::once(provider).chain(oidc), settings.login.secure_cookies())
    }

    /// The Content-Security-Policy of a response whose inline scripts carry `nonce`.
    pub fn content_security_policy(&self, nonce: &str) -> String {
        let mut forms = String::from("'self'");
        for origin in &self.form_targets {
            forms.push(' ');
            forms.push_str(origin);
        }
        format!(
            "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: https:; \
             connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action {forms}; frame-ancestors 'none'"
        )
    }
}

/// A fresh nonce: 128 random bits, base64url.
fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `value` looks like a nonce this code makes (so one handed down by the shell is kept).
fn is_nonce(value: &str) -> bool {
    (16..=64).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn content_security_policy(State((policy, keep_given)): State<(Arc<Policy>, bool)>, mut request: Request, next: Next) -> Response {
    let given = request.headers().get(CSP_NONCE_HEADER).and_then(|value| value.to_str().ok()).filter(|value| keep_given && is_nonce(value));
    let nonce = given.map(str::to_owned).unwrap_or_else(new_nonce);
    let value = HeaderValue::from_str(&nonce).expect("base64url is a valid header value");
    request.headers_mut().insert(CSP_NONCE_HEADER, value);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.remove(CSP_NONCE_HEADER);
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy.content_security_policy(&nonce)).expect("the policy is ASCII"));
    response
}

/// `router` with the security headers on every response, a fresh nonce for each (the shell: what a
/// client sends under the nonce header is replaced).
pub fn protect(router: Router, policy: &Policy) -> Router {
    let router = router.layer(axum::middleware::from_fn_with_state((Arc::new(policy.clone()), false), content_security_policy));
    protect_static(router, policy)
}

/// [`protect`] for a fragment's own process: a nonce the shell handed down with a forwarded request is
/// kept (the shell's policy, which replaces this one, names it); any other request gets a fresh one.
pub fn protect_fragment(router: Router, policy: &Policy) -> Router {
    let router = router.layer(axum::middleware::from_fn_with_state((Arc::new(policy.clone()), true), content_security_policy));
    protect_static(router, policy)
}

/// `router` with the headers that do not depend on the page: for a part of the site that keeps a policy
/// of its own (the payment sandbox, which is not the store: no script at all, its own inline style).
pub fn protect_static(router: Router, policy: &Policy) -> Router {
    let router = router
        .layer(SetResponseHeaderLayer::overriding(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin")))
        .layer(SetResponseHeaderLayer::overriding(X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
    match policy.https {
        true => router.layer(SetResponseHeaderLayer::overriding(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"))),
        false => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_nonce_and_the_payment_provider_and_nothing_inline() {
        let policy = Policy { form_targets: vec!["https://pay.example".into()], https: true };
        let csp = policy.content_security_policy("abc");
        assert!(csp.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval';"), "{csp}");
        assert!(csp.contains("form-action 'self' https://pay.example;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'") && csp.contains("base-uri 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let nonces: std::collections::HashSet<String> = (0..100).map(|_| new_nonce()).collect();
        assert_eq!(nonces.len(), 100);
        assert!(nonces.iter().all(|nonce| is_nonce(nonce) && nonce.len() == 22));
        assert!(!is_nonce("short") && !is_nonce("not a nonce at all, spaces") && !is_nonce(&"a".repeat(65)));
    }

    #[test]
    fn a_fragment_alone_may_send_forms_to_its_payment_provider_and_sign_in_provider() {
        let mut settings = Settings::default();
        settings.login.public_url = "https://shop.example".into();
        assert_eq!(Policy::for_fragment(&settings).form_targets, ["https://shop.example"]);
        settings.site.payment_url = Some("https://pay.example/sandbox-pay".into());
        assert_eq!(Policy::for_fragment(&settings).form_targets, ["https://pay.example"]);
    }
}
