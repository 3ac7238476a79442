//! The site chrome (brand, navigation from the registry, cart badge, user menu) and the shell's own
//! documents. Rendered with Leptos' `view!` on the server only: the shell hydrates nothing, so the chrome
//! never competes with the one fragment app a page hydrates.

use leptos::prelude::*;
use shared_auth::SessionUser;
use tessera_contracts::dom_events::CART_UPDATED;
use tessera_contracts::domain::ServiceName;

use crate::registry::FragmentRegistry;

/// What the chrome shows for one request.
pub struct ChromeContext<'a> {
    pub registry: &'a FragmentRegistry,
    pub user: Option<&'a SessionUser>,
    /// Items in the user's cart, when the cart fragment answered in time.
    pub cart_count: Option<i64>,
    /// Prefix of the fragment being shown, to mark its nav link as current.
    pub current: Option<&'a str>,
}

/// The chrome's inner HTML, as it goes into a fragment's `<header id="tessera-chrome">`.
pub fn chrome_html(context: &ChromeContext<'_>) -> String {
    let links = context
        .registry
        .fragments()
        .iter()
        .filter(|fragment| fragment.in_nav)
        .filter(|fragment| match fragment.nav_role {
            None => true,
            Some(role) => context.user.is_some_and(|user| user.has_role(role)),
        })
        .map(|fragment| {
            let current = context.current == Some(fragment.prefix.as_str());
            let badge = (fragment.name == ServiceName::CART).then(|| {
                let count = context.cart_count.map(|count| count.to_string()).unwrap_or_default();
                view! { " " <span class="badge" data-cart-badge="" data-testid="cart-badge">{count}</span> }
            });
            view! {
                <a href=fragment.prefix.clone() rel="external" aria-current=current.then_some("page")>
                    {fragment.title.clone()}
                    {badge}
                </a>
            }
        })
        .collect_view();
    let user_menu = match context.user {
        // A menu that folds behind the user's name on a phone; on a wide screen the stylesheet shows it
        // open in the bar, without the summary.
        Some(user) => view! {
            <details class="account-menu">
                <summary>{user.name.clone()}</summary>
                <div class="menu">
                    {user.has_role(shared_auth::Role::Admin).then(|| view! {
                        <a href="/admin/users" rel="external">"Accounts"</a>
                        <a href="/admin/events" rel="external">"Events"</a>
                        <a href="/admin/fragments" rel="external">"Fragments"</a>
                    })}
                    <a href="/account" rel="external" data-testid="user-name">{user.name.clone()}</a>
                    <form method="post" action="/logout" class="inline">
                        <button type="submit" data-testid="logout">"Sign out"</button>
                    </form>
                </div>
            </details>
        }
        .into_any(),
        None => view! {
            <a href="/login" rel="external" data-testid="login-link">"Sign in"</a>
            <a href="/register" rel="external">"Register"</a>
        }
        .into_any(),
    };
    view! {
        <div class="chrome">
            <a class="brand" href="/" rel="external">"Tessera"</a>
            <nav class="site-nav" aria-label="Site">{links}</nav>
            <div class="user-menu">{user_menu}</div>
        </div>
    }
    .to_html()
}

/// Listens for the cart's DOM event and updates every badge on the page (served as `/chrome.js`).
pub(crate) fn badge_script() -> String {
    format!("addEventListener({CART_UPDATED:?},e=>{{for(const b of document.querySelectorAll('[data-cart-badge]'))b.textContent=e.detail.item_count}})")
}

/// The chrome script's address, versioned by its content (served with a year-long cache).
pub fn script_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        badge_script().hash(&mut hasher);
        format!("/chrome.js?v={:016x}", hasher.finish())
    })
}

/// What the shell adds to every fragment page's `<head>`: the shared stylesheet and the badge listener.
pub fn head_html(stylesheet_url: &str) -> String {
    view! {
        <link rel="stylesheet" href=stylesheet_url.to_owned()/>
        <script src=script_url()></script>
    }
    .to_html()
}

/// A whole shell page: document, head, chrome and `main`.
pub fn document(title: &str, stylesheet_url: &str, chrome: String, main: impl IntoView + 'static) -> String {
    let title = format!("{title} · Tessera");
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{title}</title>
                <link rel="stylesheet" href=stylesheet_url.to_owned()/>
                <script src=script_url()></script>
            </head>
            <body data-fragment="shell">
                <header id=tessera_contracts::CHROME_SLOT_ID inner_html=chrome></header>
                <main class="shell">{main}</main>
            </body>
        </html>
    }
    .to_html()
}
