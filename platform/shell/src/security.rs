//! The security headers of the site (`tessera_host::security`, shared with every fragment's process):
//! here, what the shell's policy allows beyond the site — forms ending at the configured payment
//! provider and at the registered OpenID Connect clients' addresses.

use tessera_host::security::Policy;

/// The policy for the site configured by `settings`: a form's redirects count too, so signing in on
/// behalf of an OpenID Connect client ends at the client's address, and so does a sign-out it asked for.
pub fn policy(settings: &crate::settings::ShellSettings) -> Policy {
    let client_addresses = settings.oidc.oidc_clients.values().flat_map(|client| [client.redirect_uris.as_str(), client.post_logout_redirect_uris.as_str()]);
    Policy::with_form_targets(settings.host.site.payment_url.iter().map(String::as_str).chain(client_addresses), settings.host.login.secure_cookies())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::OidcClientSettings;
    use crate::settings::ShellSettings;

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
        let policy = policy(&settings);
        assert_eq!(policy.form_targets, ["https://ops.example", "https://other.example:8443", "https://pay.example"]);
        assert!(policy.content_security_policy("n").contains("form-action 'self' https://ops.example https://other.example:8443 https://pay.example;"));
        assert!(super::policy(&ShellSettings::default()).content_security_policy("n").contains("form-action 'self';"));
    }
}
