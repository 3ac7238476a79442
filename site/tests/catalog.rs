//! The catalog in the composed site: its pages in the shell's chrome (bad listing input, 404s) and
//! product pages with their `<head>` for people and crawlers. The catalog's own behaviour — search,
//! filters, the availability projection, editing — is tested with the catalog alone, in
//! `fragments/catalog/tests/`.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{spawn_with, Backend, Options, TestApp};

fn with_generated_products(settings: &mut tessera_site::ShellSettings) {
    settings.host.site.demo_extra_products = 60;
}

async fn start(backend: Backend) -> TestApp {
    spawn_with(backend, Options { configure: Some(with_generated_products), ..Options::default() }).await
}

/// The listing as JSON, through the server function the page uses.
async fn search(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let response = app.post_form("/catalog/api/search_products", query.to_owned(), None).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_listing_input_gets_a_clear_answer_never_a_500() {
    let app = start(Backend::Sqlite).await;
    let long = "a".repeat(10_000);
    for (query, expected) in [
        ("q=%22*%29%28%3A%5E-NEAR%2F2", StatusCode::OK),
        ("q=%27%20OR%201%3D1%3B%20DROP%20TABLE%20products%3B--", StatusCode::OK),
        ("q=AND%20OR%20NOT", StatusCode::OK),
        ("page=99999999999", StatusCode::OK),
        ("page=-5", StatusCode::OK),
        ("page=abc", StatusCode::BAD_REQUEST),
        ("min=cheap", StatusCode::BAD_REQUEST),
        ("min=30&max=10", StatusCode::BAD_REQUEST),
        ("sort=random()", StatusCode::BAD_REQUEST),
        ("attr=blue", StatusCode::BAD_REQUEST),
        (&format!("q={long}"), StatusCode::BAD_REQUEST),
    ] {
        let (status, html) = app.text(&format!("/catalog?{query}"), None).await;
        assert_eq!(status, expected, "{}: {}", &query[..query.len().min(60)], &html[..html.len().min(300)]);
        assert!(html.contains("data-testid=\"login-link\""), "the page keeps the chrome");
        let api: Vec<String> = query.split('&').map(|pair| format!("query[{}", pair.replacen('=', "]=", 1))).collect();
        let (status, _) = search(&app, &api.join("&")).await;
        assert_eq!(status, expected, "API {}", &query[..query.len().min(60)]);
    }
    let (_, html) = app.text("/catalog?page=99999999999", None).await;
    assert!(html.replace("<!>", "").contains("Page 3 of 3"), "an absurd page shows the last one");
    for path in ["/catalog/p/nope", "/catalog/c/nope", "/catalog/p/%00", &format!("/catalog/p/{}", "x".repeat(500))] {
        let (status, html) = app.text(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(html.contains("data-testid=\"login-link\"") && html.contains("Browse the catalog"), "{path}: a 404 page in the chrome");
    }
    let (status, _) = app.text("/catalog/img/..%2F..%2Fetc%2Fpasswd", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app.get("/catalog/img/mug-stn-01.svg", None).await;
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
}

#[tokio::test]
async fn product_pages_are_complete_for_people_and_crawlers() {
    let app = start(Backend::Sqlite).await;
    let (status, html) = app.text("/catalog/p/mug-stn-01", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<title>Stoneware mug · Ferris &amp; Co · Tessera</title>"), "{}", &html[..600]);
    assert!(html.contains("<meta name=\"description\" content=\"Hand-glazed 350 ml mug.\""));
    assert!(html.contains("<link rel=\"canonical\" href=\"/catalog/p/mug-stn-01\""));
    let start = html.find("<script type=\"application/ld+json\">").expect("JSON-LD") + "<script type=\"application/ld+json\">".len();
    let json: Value = serde_json::from_str(&html[start..start + html[start..].find("</script>").unwrap()]).unwrap();
    assert_eq!((json["@type"].as_str(), json["sku"].as_str()), (Some("Product"), Some("MUG-STN-01")));
    assert_eq!((json["offers"]["price"].as_str(), json["offers"]["priceCurrency"].as_str()), (Some("14.50"), Some("EUR")));
    assert!(html.contains("data-testid=\"breadcrumbs\"") && html.contains("href=\"/catalog/c/mugs\""), "breadcrumbs to the category");
    assert!(html.contains("data-testid=\"price\" class=\"price\">EUR 14.50</p>"), "the price, as people read it");

    // A product with variants offers a picker.
    let (_, listing) = search(&app, "query[cat]=tees").await;
    let id = listing["cards"].as_array().unwrap().iter().find(|c| c["single_sku"].is_null()).expect("a tee with sizes")["id"].as_str().unwrap().to_owned();
    let (_, html) = app.text(&format!("/catalog/p/{id}"), None).await;
    assert!(html.contains("data-testid=\"variant-picker\""), "{id}");
}
