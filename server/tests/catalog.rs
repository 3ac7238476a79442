//! The catalog through the real server with a generated demo catalogue: listing, search, filters, sort,
//! pages, product pages and their `<head>`, editing, and every bad input the issue names.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{count, database, each_backend, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD, SHOPPER};

fn with_generated_products(settings: &mut tessera_server::Settings) {
    settings.demo_extra_products = 60;
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

fn names(listing: &Value) -> Vec<String> {
    listing["cards"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

each_backend!(search_filters_sort_and_pages_work_on_both_backends);
async fn search_filters_sort_and_pages_work_on_both_backends(backend: Backend) {
    let app = start(backend).await;
    let (status, all) = search(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 68, "{backend:?}: the classic eight and sixty generated");
    assert_eq!((all["page"].as_i64(), all["pages"].as_i64()), (Some(1), Some(3)));

    // Full-text search: name, brand and description, ranked; prefixes match.
    let (_, found) = search(&app, "query[q]=stoneware").await;
    assert_eq!(names(&found)[0], "Stoneware mug", "{backend:?}");
    let (_, found) = search(&app, "query[q]=stonew").await;
    assert_eq!(names(&found)[0], "Stoneware mug", "{backend:?}: prefix search");
    let (_, found) = search(&app, "query[q]=Northwind").await;
    assert!(found["total"].as_i64().unwrap() > 0);
    assert!(found["cards"].as_array().unwrap().iter().all(|c| c["brand"] == "Northwind"), "{backend:?}: brand search");
    let (_, found) = search(&app, "query[q]=recycled+packaging+tote").await;
    assert!(names(&found).iter().all(|n| n.contains("tote")), "{backend:?}: every word must match: {found}");

    // Filters narrow, each on its own and together.
    let (_, mugs) = search(&app, "query[cat]=mugs").await;
    assert!(mugs["total"].as_i64().unwrap() >= 2);
    let (_, home) = search(&app, "query[cat]=home").await;
    assert!(home["total"].as_i64() > mugs["total"].as_i64(), "a parent category includes its children");
    let (_, cheap) = search(&app, "query[min]=5&query[max]=15").await;
    for card in cheap["cards"].as_array().unwrap() {
        let minor = card["price"]["minor"].as_i64().unwrap();
        assert!((500..=1500).contains(&minor), "{backend:?}: {card}");
    }
    let (_, blue) = search(&app, "query[attr]=colour:blue").await;
    assert!(blue["total"].as_i64().unwrap() > 0);
    let (_, in_stock) = search(&app, "query[stock]=1").await;
    assert!(in_stock["total"].as_i64() < all["total"].as_i64(), "{backend:?}: some products are sold out");
    let (_, sorted) = search(&app, "query[sort]=price").await;
    let prices: Vec<i64> = sorted["cards"].as_array().unwrap().iter().map(|c| c["price"]["minor"].as_i64().unwrap()).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{backend:?}: by price");
    let (_, last) = search(&app, "query[page]=3").await;
    assert_eq!(last["cards"].as_array().unwrap().len(), 68 - 48);
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

each_backend!(catalog_editors_create_and_edit_products_and_each_change_is_announced);
async fn catalog_editors_create_and_edit_products_and_each_change_is_announced(backend: Backend) {
    let app = start(backend).await;
    let ada = app.login_as(ADMIN, PASSWORD).await;
    let sam = app.login_as(SHOPPER, PASSWORD).await;
    let save = |body: &str, cookie: Option<&str>| {
        let (app, body, cookie) = (&app, body.to_owned(), cookie.map(str::to_owned));
        async move {
            let response = app.post_form("/catalog/api/save_product", body, cookie.as_deref()).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let create =
        "input[name]=Glacier+bottle&input[brand]=Pebble&input[category]=home&input[price]=24.90&input[sku]=BTL-GLC-01&input[description]=Keeps+water+cold";
    assert_eq!(save(create, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(save(create, Some(&sam)).await.0, StatusCode::FORBIDDEN);
    let (status, json) = save(create, Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {json}");
    assert_eq!(json["id"], "glacier-bottle");
    let (_, found) = search(&app, "query[q]=glacier").await;
    assert_eq!(names(&found), ["Glacier bottle"], "{backend:?}: searchable at once");
    for (body, expected, needle) in [
        (create, StatusCode::CONFLICT, "exists already"),
        ("input[name]=X&input[price]=free&input[sku]=X-1", StatusCode::BAD_REQUEST, "price"),
        ("input[name]=X&input[price]=0&input[sku]=X-1", StatusCode::BAD_REQUEST, "price"),
        ("input[name]=&input[price]=1&input[sku]=X-1", StatusCode::BAD_REQUEST, "name"),
        ("input[name]=X&input[price]=1&input[sku]=bad+sku", StatusCode::BAD_REQUEST, "SKU"),
        ("input[name]=X&input[price]=1&input[sku]=X-1&input[category]=nowhere", StatusCode::BAD_REQUEST, "category"),
        ("input[id]=no-such-product&input[name]=X&input[price]=1", StatusCode::NOT_FOUND, "no product"),
    ] {
        let (status, json) = save(body, Some(&ada)).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
        assert!(json.to_string().contains(needle), "{body}: {json}");
    }
    let (status, json) = save("input[id]=glacier-bottle&input[name]=Glacier+bottle+XL&input[brand]=Pebble&input[category]=home&input[price]=29&input[image]=https%3A%2F%2Fimg.example%2Fbottle.png", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!((json["price"]["minor"].as_i64(), json["image"].as_str()), (Some(2900), Some("https://img.example/bottle.png")));
    let (status, json) = save("input[id]=glacier-bottle&input[name]=X&input[price]=1&input[image]=javascript%3Aalert(1)", Some(&ada)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (_, found) = search(&app, "query[q]=glacier").await;
    assert_eq!(names(&found), ["Glacier bottle XL"], "{backend:?}: the search index follows edits");
    let db = database(&app, "catalog").await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'catalog.product_changed'").await, 2);
    let (status, _) = app.text("/catalog/new", Some(&sam)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, html) = app.text("/catalog/p/glacier-bottle/edit", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"product-editor\"") && html.contains("Glacier bottle XL"));
}
