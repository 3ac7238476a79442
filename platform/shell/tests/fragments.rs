//! The shared login reaching the fragments behind the shell (probes): each renders the user from the
//! cookie the shell lets through, with the shell's chrome composed into its slot once, and a forged or
//! foreign cookie is nobody everywhere.

mod support;

use reqwest::StatusCode;
use support::{each_backend, spawn_shell, Backend, ADMIN, PASSWORD};

each_backend!(every_fragment_shows_the_user_from_the_shared_cookie);
async fn every_fragment_shows_the_user_from_the_shared_cookie(backend: Backend) {
    let app = spawn_shell(backend).await;
    let cookie = app.login_as(ADMIN, PASSWORD).await;
    for path in ["/catalog", "/cart", "/admin/inventory"] {
        let (status, html) = app.text(path, Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?} {path}");
        // Rendered by the fragment itself after verifying the cookie with the shell's public key ...
        assert!(html.contains("Signed in as <strong>Ada Admin</strong>"), "{path}: {html}");
        // ... and the shell's chrome, composed into the fragment's slot exactly once.
        assert_eq!(html.matches("data-testid=\"user-name\"").count(), 1, "{path}");
        assert_eq!(html.matches("id=\"tessera-chrome\"").count(), 1, "{path}");
        assert!(html.contains("/style/tessera.css?v="), "{path}: shared stylesheet");
    }
    // Anonymous visitors are guests in the fragments that allow them.
    let (_, html) = app.text("/catalog", None).await;
    assert!(html.contains("Browsing as a guest"));
}

each_backend!(a_forged_or_foreign_cookie_is_nobody_everywhere);
async fn a_forged_or_foreign_cookie_is_nobody_everywhere(backend: Backend) {
    let app = spawn_shell(backend).await;
    let real = app.login_as(ADMIN, PASSWORD).await;
    let token = real.trim_start_matches("tessera_access=");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Flip one character of the signature.
    let flipped = if parts[2].ends_with('A') { 'B' } else { 'A' };
    parts[2].pop();
    parts[2].push(flipped);
    let forged = format!("tessera_access={}", parts.join("."));
    let none = "tessera_access=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
    for cookie in [forged.as_str(), none, "tessera_access=garbage", &format!("tessera_access={}", "x".repeat(5000))] {
        let (status, html) = app.text("/catalog", Some(cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Browsing as a guest"), "{backend:?}: {}", &cookie[..cookie.len().min(40)]);
        let (status, _) = app.text("/admin/inventory/staff", Some(cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.api("/cart/api/whoami", "", Some(cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
