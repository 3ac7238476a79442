//! The security headers of every response the site sends, set once, here, for the shell's pages and for
//! every fragment's alike — a fragment cannot weaken them: what it sets under these names is replaced.
//!
//! - **Content-Security-Policy.** Scripts only from the site itself (the fragments' bundles, the
//!   chrome's `/chrome.js`) and inline scripts carrying this response's nonce: a fresh 128-bit value per
//!   request, handed to the fragment on the forwarded request ([`CSP_NONCE_HEADER`], replacing anything
//!   a client sent), which puts it on its boot script and on Leptos' streaming scripts. Markup that
//!   slipped into a page (a product name, a review) cannot know it, so it cannot run. WebAssembly is
//!   compiled (`'wasm-unsafe-eval'`), nothing else is evaluated. Forms post only to the site and the
//!   configured payment provider, and their redirects may end only there or at a registered OpenID
//!   Connect client's addresses (`form-action` covers redirects); no page may be framed (`frame-ancestors 'none'`); no `<base>`, no
//!   plugins.
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: strict-origin-when-cross-origin`,
//!   `X-Frame-Options: DENY` (for browsers without `frame-ancestors`), and HSTS when the site is served
//!   over https.
//!
//! The static headers use tower-http's overriding `SetResponseHeaderLayer`; only the policy, which
//! carries the per-request nonce, needs a middleware of its own. The payment sandbox served beside the
//! shell is not part of the store and keeps its own, stricter policy (no script at all); it gets the
//! static headers only.

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

/// What the policy allows beyond the site itself.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Origins forms may post to besides the site (a payment provider of its own).
    pub form_targets: Vec<String>,
    /// Served over https: browsers are told to keep to it.
    pub https: bool,
}

impl Policy {
    /// The policy for the site configured by `settings`.
    pub fn of(settings: &crate::settings::ShellSettings) -> Policy {
        // A form's redirects count too: signing in on behalf of an OpenID Connect client ends at the
        // client's address, and so does a sign-out it asked for.
        let client_addresses =
            settings.oidc.oidc_clients.values().flat_map(|client| [client.redirect_uris.as_str(), client.post_logout_redirect_uris.as_str()]);
        let mut form_targets: Vec<String> = settings
            .host
            .site
            .payment_url
            .iter()
            .map(String::as_str)
            .chain(client_addresses)
            .flat_map(|urls| urls.split(','))
            .filter_map(|url| url::Url::parse(url.trim()).ok())
            .map(|url| url.origin().ascii_serialization())
            .filter(|origin| origin != "null")
            .collect();
        form_targets.sort();
        form_targets.dedup();
        Policy { form_targets, https: settings.host.login.secure_cookies() }
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

async fn content_security_policy(State(policy): State<Arc<Policy>>, mut request: Request, next: Next) -> Response {
    let nonce = new_nonce();
    let value = HeaderValue::from_str(&nonce).expect("base64url is a valid header value");
    request.headers_mut().insert(CSP_NONCE_HEADER, value);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.remove(CSP_NONCE_HEADER);
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy.content_security_policy(&nonce)).expect("the policy is ASCII"));
    response
}

/// `router` with the security headers on every response (see the module docs).
pub fn protect(router: Router, policy: &Policy) -> Router {
    let router = router.layer(axum::middleware::from_fn_with_state(Arc::new(policy.clone()), content_security_policy));
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
    use crate::oidc::OidcClientSettings;
    use crate::settings::ShellSettings;

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
        assert!(nonces.iter().all(|nonce| nonce.len() == 22 && nonce.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')));
    }

    #[test]
    fn forms_may_end_at_the_payment_provider_and_the_registered_clients_only() {
        let mut settings = ShellSettings::default();
        settings.host.site.payment_url = Some("https://pay.example/p, https://pay.example/q".into());
        settings.oidc.oidc_clients.insert(
            "ops".into(),
            OidcClientSettings {
                redirect_uris: "https://ops.example/oidc/callback".into(),
                secret: None,
                post_logout_redirect_uris: "https://ops.example/admin, https://other.example:8443/bye".into(),
            },
        );
        let policy = Policy::of(&settings);
        assert_eq!(policy.form_targets, ["https://ops.example", "https://other.example:8443", "https://pay.example"]);
        assert!(policy.content_security_policy("n").contains("form-action 'self' https://ops.example https://other.example:8443 https://pay.example;"));
        assert!(Policy::of(&ShellSettings::default()).content_security_policy("n").contains("form-action 'self';"));
    }
}
