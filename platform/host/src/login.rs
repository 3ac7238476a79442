//! The shared login as every process sees it: the settings it is verified with (issuer, audience, token
//! lifetime, cookies, allowed origins, where the shell's keys are) and the verifier, CSRF and cookie
//! policies made from them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared_auth::cookie::CookiePolicy;
use shared_auth::csrf::CsrfPolicy;
use shared_auth::verify::VerifierSettings;

/// The shared login as every process verifies it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginSettings {
    /// Public URL of the site (`TESSERA_PUBLIC_URL`); `https://` makes cookies `Secure`. A fragment
    /// verifies logins with the keys published there.
    pub public_url: String,
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of an access token. Short: revocation reaches fragments served directly within it.
    pub access_ttl_seconds: i64,
    /// Parent domain for subdomain deployments (`Domain=` cookies); unset for same-origin.
    pub cookie_domain: Option<String>,
    /// Origins allowed to send state-changing requests; default: the origin of `public_url`.
    pub allowed_origins: Vec<String>,
    /// Where a fragment running alone fetches the shell's JWKS (default: `<public_url>/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            public_url: "http://127.0.0.1:3000".into(),
            issuer: "tessera-shell".into(),
            audience: "tessera".into(),
            access_ttl_seconds: 300,
            cookie_domain: None,
            allowed_origins: Vec::new(),
            jwks_url: None,
        }
    }
}

impl LoginSettings {
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// Origins allowed to send state-changing requests.
    pub fn allowed_origins(&self) -> Vec<String> {
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.clone();
        }
        match url::Url::parse(&self.public_url) {
            Ok(url) => vec![url.origin().ascii_serialization()],
            Err(_) => Vec::new(),
        }
    }

    pub fn cookie_policy(&self) -> CookiePolicy {
        CookiePolicy { secure: self.secure_cookies(), domain: self.cookie_domain.clone() }
    }

    pub fn csrf_policy(&self) -> CsrfPolicy {
        CsrfPolicy { allowed_origins: self.allowed_origins(), allow_same_site: self.cookie_domain.is_some() }
    }

    pub fn jwks_url(&self) -> String {
        self.jwks_url.clone().unwrap_or_else(|| format!("{}/.well-known/jwks.json", self.public_url.trim_end_matches('/')))
    }
}

/// The verifier settings of fragment `fragment`: it accepts the tokens the shell mints for it alone
/// (audience `<audience>:<fragment>`), never the site's token, which only the shell's own pages and API
/// accept — a token a fragment records opens nothing else. On subdomains (`TESSERA_COOKIE_DOMAIN`) the
/// browser sends the site's cookie to every sibling host, the fragment's included, so there it accepts
/// the site's token too (the security model's shape 3 says what that leaves open).
pub fn fragment_verifier_settings(login: &LoginSettings, fragment: &str) -> VerifierSettings {
    let mut verifier = verifier_settings(login);
    verifier.audience = shared_auth::keys::fragment_audience(&login.audience, fragment);
    if login.cookie_domain.is_some() {
        verifier.also_accepted = vec![login.audience.clone()];
    }
    verifier
}

/// The verifier settings of the shell's own pages and API: the site's token only.
pub fn verifier_settings(login: &LoginSettings) -> VerifierSettings {
    let mut verifier = VerifierSettings::new(&login.issuer, &login.audience);
    verifier.access_cookie = login.cookie_policy().access_name();
    // No token the shell issues lives longer than this; anything longer is forged or misconfigured.
    verifier.max_lifetime = Duration::from_secs(login.access_ttl_seconds.max(60) as u64 + 60);
    verifier
}
