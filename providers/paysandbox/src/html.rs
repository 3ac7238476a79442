//! The shopper's pages as HTML, rendered on the server with Leptos' `view!` (every value is escaped).
//!
//! They look like a third-party provider's pages on purpose, not like the shop: a provider page has no
//! shop header, its own little style, and here a banner nobody can miss saying it is a sandbox. No
//! JavaScript; the strict Content-Security-Policy only allows the inline style and same-origin forms.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use leptos::prelude::*;
use tessera_contracts::payments::pay_page_path;

use crate::card::TestCard;
use crate::payments::PaymentRecord;

/// The provider's name as shoppers see it.
const PROVIDER: &str = "Sandbox Pay";

/// The provider's own look (kept free of `<`, `>` and `&`, which have no business in a style sheet).
const STYLE: &str = "
body { margin: 0; background: #eef1f5; color: #1d2330; font: 16px/1.5 system-ui, -apple-system, 'Segoe UI', sans-serif; }
.banner { background: #ffd23f; color: #2b2100; text-align: center; font-weight: 700; font-size: 1.15rem; padding: .9rem 1rem; border-bottom: 3px dashed #2b2100; letter-spacing: .02em; }
main { max-width: 28rem; margin: 2rem auto; background: #fff; border-radius: 12px; box-shadow: 0 6px 24px rgba(20, 30, 60, .12); padding: 1.5rem 1.75rem; }
.brand { margin: 0 0 1rem; font-weight: 800; color: #3d4ed8; font-size: 1.1rem; }
.brand span { font-weight: 600; color: #8a6d00; background: #fff4c2; border-radius: 4px; padding: 0 .35rem; font-size: .8rem; text-transform: uppercase; }
h1 { font-size: 1.3rem; margin: 0 0 .75rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
.amount { font-size: 2rem; font-weight: 700; margin: 0; }
.description { color: #5a6275; margin: .25rem 0 1.25rem; }
label { display: block; font-size: .9rem; font-weight: 600; margin: .75rem 0 0; }
input { display: block; box-sizing: border-box; width: 100%; margin-top: .25rem; padding: .6rem .7rem; border: 1px solid #c5cbd8; border-radius: 6px; font: inherit; }
.row { display: flex; gap: 1rem; }
.row label { flex: 1; }
button { margin-top: 1.25rem; width: 100%; padding: .75rem; border: 0; border-radius: 6px; background: #3d4ed8; color: #fff; font: inherit; font-weight: 700; cursor: pointer; }
button.secondary { background: #fff; color: #b42318; border: 1px solid #b42318; }
.error { background: #fde8e7; color: #8f1d14; border-radius: 6px; padding: .6rem .8rem; margin: 0 0 .5rem; }
.test-cards { background: #f6f7fb; border-radius: 8px; padding: .25rem 1rem .75rem; margin-top: 1.5rem; font-size: .9rem; }
.test-cards ul { padding-left: 1.1rem; margin: .25rem 0; }
code { font-size: .95rem; }
footer { text-align: center; color: #6b7385; font-size: .8rem; margin-bottom: 2rem; }
";

/// No scripts, no frames, forms only to this site; the page never leaves a cached copy or a referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A complete provider page with `content` under the sandbox banner.
pub fn render(status: StatusCode, title: &str, content: AnyView) -> Response {
    let title = format!("{title} · {PROVIDER} (sandbox)");
    let html = view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="robots" content="noindex"/>
                <title>{title}</title>
                <style>{STYLE}</style>
            </head>
            <body>
                <div class="banner" role="note">"SANDBOX — test mode, no real money moves"</div>
                <main>
                    <p class="brand">{PROVIDER} " " <span>"test mode"</span></p>
                    {content}
                </main>
                <footer>"A payment simulator for testing. Never enter a real card number here."</footer>
            </body>
        </html>
    }
    .to_html();
    let headers = [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    ];
    (status, headers, Html(html)).into_response()
}

/// Who is asking for how much, at the top of the payment pages.
fn summary(record: &PaymentRecord) -> impl IntoView {
    view! {
        <p class="amount">{record.amount()}</p>
        <p class="description">{record.description.clone()}</p>
    }
}

/// What the shopper typed, to show again after a correctable mistake (never the CVC).
#[derive(Debug, Clone, Default)]
pub struct Entered {
    pub number: String,
    pub expiry: String,
}

/// The card form, with an error above it when the last submit was refused.
pub fn card_form(record: &PaymentRecord, error: Option<&str>, entered: Entered) -> AnyView {
    let error = error.map(|error| view! { <p class="error" role="alert">{error.to_owned()}</p> });
    let cards = TestCard::ALL.into_iter().map(|(_, number, effect)| view! { <li><code>{number}</code> " — " {effect}</li> }).collect_view();
    view! {
        <h1>"Pay the shop"</h1>
        {summary(record)}
        <form method="post" action=pay_page_path(&record.id)>
            {error}
            <label>
                "Card number"
                <input name="card_number" autocomplete="cc-number" inputmode="numeric" placeholder="4242 4242 4242 4242" required=true value=entered.number/>
            </label>
            <div class="row">
                <label>
                    "Expiry (MM/YY)"
                    <input name="expiry" autocomplete="cc-exp" placeholder="12/30" required=true value=entered.expiry/>
                </label>
                <label>
                    "CVC"
                    <input name="cvc" autocomplete="cc-csc" inputmode="numeric" placeholder="123" required=true/>
                </label>
            </div>
            <button type="submit">"Pay " {record.amount()}</button>
        </form>
        <section class="test-cards">
            <h2>"Test cards"</h2>
            <ul>{cards}</ul>
            <p>"Use any future expiry date (MM/YY) and any 3-digit CVC."</p>
        </section>
    }
    .into_any()
}

/// The bank's extra step: approve or reject the payment.
pub fn confirm_form(record: &PaymentRecord) -> AnyView {
    view! {
        <h1>"Your bank asks you to confirm this payment"</h1>
        {summary(record)}
        <p>"This is the sandbox's stand-in for your bank's app or one-time code."</p>
        <form method="post" action=format!("{}/confirm", pay_page_path(&record.id))>
            <button type="submit" name="decision" value="approve">"Approve payment"</button>
            <button type="submit" name="decision" value="reject" class="secondary">"Reject payment"</button>
        </form>
    }
    .into_any()
}

/// A page with a heading, a sentence and an optional link onwards.
pub fn message(heading: &str, text: String, link: Option<(String, &'static str)>) -> AnyView {
    let link = link.map(|(href, label)| view! { <p><a href=href>{label}</a></p> });
    view! {
        <h1>{heading.to_owned()}</h1>
        <p>{text}</p>
        {link}
    }
    .into_any()
}
