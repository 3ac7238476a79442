//! The HTML document around every fragment page.
//!
//! Each fragment renders a whole document (so `<head>` is its own) with an empty
//! `<header id="tessera-chrome">` as the first child of `<body>`: the shell fills it with the site chrome
//! while streaming. Pages are rendered in Leptos's islands mode: the document and every `#[component]`
//! are server-only HTML, and only `#[island]` components are hydrated (by the page runtime in
//! `islands.js`), so nothing in the browser ever walks the chrome or the static parts of a page.

use leptos::prelude::*;
use tessera_contracts::CHROME_SLOT_ID;

use crate::manifest::{hydration_tags, HydrationTags};
use crate::runtime::FragmentRuntime;

/// The document for a fragment page. `app` must start with the empty chrome slot
/// (`<header id="tessera-chrome">`) and put the page in `<main class="fragment …">`, the element the page
/// runtime swaps when it navigates inside the fragment.
pub fn document<V: IntoView + 'static>(runtime: &FragmentRuntime, title: &str, app: impl FnOnce() -> V) -> impl IntoView {
    document_with(runtime, &PageHead { title: title.to_owned(), ..PageHead::default() }, app)
}

/// What a page tells browsers, crawlers and link previews in its `<head>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageHead {
    pub title: String,
    /// `<meta name="description">`.
    pub description: Option<String>,
    /// `<link rel="canonical">`.
    pub canonical: Option<String>,
    /// A schema.org JSON-LD object, serialised ([`script_safe_json`] is applied here).
    pub json_ld: Option<String>,
}

/// [`document`] with a full [`PageHead`].
pub fn document_with<V: IntoView + 'static>(runtime: &FragmentRuntime, head: &PageHead, app: impl FnOnce() -> V) -> impl IntoView {
    // Islands mode: what is outside an island renders without hydration markers (an island turns them on
    // for itself). The setting belongs to this request's render.
    if let Some(context) = Owner::current_shared_context() {
        context.set_is_hydrating(false);
    }
    let manifest = runtime.manifests.current();
    let tags = manifest.as_deref().and_then(|manifest| hydration_tags(manifest, runtime.prefix));
    let build_id = manifest.as_ref().map(|m| m.build_id.clone()).unwrap_or_else(|| "unbuilt".into());
    let stylesheet = manifest.as_deref().and_then(crate::manifest::stylesheet).map(|(href, integrity)| {
        view! { <link rel="stylesheet" href=href integrity=integrity crossorigin="anonymous"/> }
    });
    let (preload, script) = match tags {
        Some(HydrationTags { js_url, js_integrity, wasm_url, wasm_integrity, script }) => (
            Some(view! {
                <link rel="modulepreload" href=js_url integrity=js_integrity crossorigin="anonymous"/>
                // Matches the script's `fetch(wasm, { integrity })` (a CORS request with same-origin
                // credentials), so that fetch is answered by this download.
                <link rel="preload" href=wasm_url r#as="fetch" r#type="application/wasm" integrity=wasm_integrity crossorigin="anonymous"/>
            }),
            Some(view! { <script type="module" nonce=leptos::nonce::use_nonce().map(|nonce| nonce.to_string()) inner_html=script></script> }),
        ),
        None => (None, None),
    };
    let title = format!("{} · Tessera", head.title);
    let description = head.description.clone().map(|content| view! { <meta name="description" content=content/> });
    let canonical = head.canonical.clone().map(|href| view! { <link rel="canonical" href=href/> });
    let json_ld = head.json_ld.as_ref().map(|json| {
        let json = script_safe_json(json);
        view! { <script type="application/ld+json" inner_html=json></script> }
    });
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="tessera-fragment" content=runtime.name.to_string()/>
                <meta name="tessera-build" content=build_id/>
                <title>{title}</title>
                {description}
                {canonical}
                {json_ld}
                {stylesheet}
                {preload}
                {script}
            </head>
            <body data-fragment=runtime.name.to_string()>
                {app()}
            </body>
        </html>
    }
}

/// A widget's HTML with the fragment's stylesheet linked before it (a `<link rel="stylesheet">` may stand
/// in the body), so a widget on the shell's home page is styled by its own fragment's rules, scoped to
/// the widget's root (`tessera_contracts::manifest::FRAGMENT_ATTRIBUTE`).
pub fn widget_html(runtime: &FragmentRuntime, html: String) -> String {
    let manifest = runtime.manifests.current();
    match manifest.as_deref().and_then(crate::manifest::stylesheet) {
        Some((href, integrity)) => {
            let link = view! { <link rel="stylesheet" href=href integrity=integrity crossorigin="anonymous"/> }.to_html();
            format!("{link}{html}")
        }
        None => html,
    }
}

/// JSON made safe to put inside a `<script>` element: `<`, `>` and `&` become `\u003c`, `\u003e`, `\u0026`.
/// Escaping `</` alone is not enough: `<!--` followed by `<script` inside a script puts the HTML parser in
/// its "double escaped" state, where the real `</script>` no longer ends the element, and a product name
/// could then change how the rest of the page parses. The three characters appear in serialised JSON only
/// inside strings, where the escapes mean the same characters, so the data is unchanged.
pub fn script_safe_json(json: &str) -> String {
    let mut safe = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            other => safe.push(other),
        }
    }
    safe
}

/// A complete, non-hydrated page with a heading and a message (403, 404 and the like), in the same
/// document shape as fragment pages so the shell adds the chrome to it.
pub fn status_document(fragment: &str, title: &str, message: &str, link: Option<(&str, &str)>) -> String {
    let link = link.map(|(href, text)| {
        let href = href.to_owned();
        let text = text.to_owned();
        view! { <p><a href=href>{text}</a></p> }
    });
    let title_text = format!("{title} · Tessera");
    let view = view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{title_text}</title>
            </head>
            <body data-fragment=fragment.to_owned()>
                <header id=CHROME_SLOT_ID></header>
                <main class="status-page">
                    <h1>{title.to_owned()}</h1>
                    <p>{message.to_owned()}</p>
                    {link}
                </main>
            </body>
        </html>
    };
    view.to_html()
}

#[cfg(test)]
mod tests {
    use super::script_safe_json;

    #[test]
    fn json_in_a_script_cannot_open_comments_tags_or_entities_and_means_the_same() {
        let value = serde_json::json!({ "name": "Mug <!--<script> & </script><b>", "n": 1 });
        let safe = script_safe_json(&value.to_string());
        for fragment in ["<", ">", "&"] {
            assert!(!safe.contains(fragment), "{safe}");
        }
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), value);
    }
}
