//! The catalog alone, as its team ships it: its own database (SQLite, and PostgreSQL when configured),
//! users signed in by a key of the test's own, inventory met only as the signed `inventory.stock_changed`
//! events it sends. Listing, search, filters, sort and pages; bad input; product pages for people and
//! crawlers; the availability projection; editing and its announcements; the bundle its pages load and
//! the reload a page of another contract is asked for. What crosses fragments (a price reaching the
//! cart) is tested in `site/tests/`; the shell's composition, with probe fragments, in the shell's.

use serde_json::Value;
use shared_auth::Role;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::StockChanged;
use tessera_testing::each_backend;
use tessera_testing::{Alone, Backend, Options, StatusCode};

/// The catalog alone with its demo catalogue: the classic eight products and sixty generated ones.
async fn start(backend: Backend) -> Alone {
    Alone::start(&tessera_catalog::server::Catalog, backend, Options { demo: Some(60), ..Options::default() }).await
}

/// The listing as JSON, through the server function the page uses.
async fn search(catalog: &Alone, query: &str) -> (StatusCode, Value) {
    catalog.api("/catalog/api/search_products", query, None).await
}

fn names(listing: &Value) -> Vec<String> {
    listing["cards"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

/// What the product page says is available of a classic demo SKU (its product's id is the SKU in
/// lower case).
async fn available(catalog: &Alone, sku: &str) -> Option<i64> {
    let (status, detail) = catalog.api("/catalog/api/product_detail", &format!("id={}", sku.to_ascii_lowercase()), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    detail["variants"].as_array().unwrap().iter().find(|v| v["sku"] == sku).unwrap_or_else(|| panic!("{sku}: {detail}"))["available"].as_i64()
}

fn stock(sku: &str, available: i64) -> StockChanged {
    StockChanged { sku: sku.parse().unwrap(), on_hand: available, available }
}

each_backend!(search_filters_sort_and_pages);
async fn search_filters_sort_and_pages(backend: Backend) {
    let catalog = start(backend).await;
    let (status, all) = search(&catalog, "").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 68, "{backend:?}: the classic eight and sixty generated");
    assert_eq!((all["page"].as_i64(), all["pages"].as_i64()), (Some(1), Some(3)));

    // Full-text search: name, brand and description, ranked; prefixes match.
    let (_, found) = search(&catalog, "query[q]=stoneware").await;
    assert_eq!(names(&found)[0], "Stoneware mug", "{backend:?}");
    let (_, found) = search(&catalog, "query[q]=stonew").await;
    assert_eq!(names(&found)[0], "Stoneware mug", "{backend:?}: prefix search");
    let (_, found) = search(&catalog, "query[q]=Northwind").await;
    assert!(found["total"].as_i64().unwrap() > 0);
    assert!(found["cards"].as_array().unwrap().iter().all(|c| c["brand"] == "Northwind"), "{backend:?}: brand search");
    let (_, found) = search(&catalog, "query[q]=recycled+packaging+tote").await;
    assert!(names(&found).iter().all(|n| n.contains("tote")), "{backend:?}: every word must match: {found}");

    // Filters narrow, each on its own and together.
    let (_, mugs) = search(&catalog, "query[cat]=mugs").await;
    assert!(mugs["total"].as_i64().unwrap() >= 2);
    let (_, home) = search(&catalog, "query[cat]=home").await;
    assert!(home["total"].as_i64() > mugs["total"].as_i64(), "a parent category includes its children");
    let (_, cheap) = search(&catalog, "query[min]=5&query[max]=15").await;
    for card in cheap["cards"].as_array().unwrap() {
        let minor = card["price"]["minor"].as_i64().unwrap();
        assert!((500..=1500).contains(&minor), "{backend:?}: {card}");
    }
    let (_, blue) = search(&catalog, "query[attr]=colour:blue").await;
    assert!(blue["total"].as_i64().unwrap() > 0);
    let (_, sorted) = search(&catalog, "query[sort]=price").await;
    let prices: Vec<i64> = sorted["cards"].as_array().unwrap().iter().map(|c| c["price"]["minor"].as_i64().unwrap()).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{backend:?}: by price");
    let (_, last) = search(&catalog, "query[page]=3").await;
    assert_eq!(last["cards"].as_array().unwrap().len(), 68 - 48);

    // In stock: what inventory said is available, nothing it has not spoken of.
    let (_, none) = search(&catalog, "query[stock]=1").await;
    assert_eq!(none["total"], 0, "{backend:?}: no stock event yet, so nothing is known to be in stock: {none}");
    catalog.deliver(ServiceName::INVENTORY, &stock("MUG-STN-01", 5), 1).await.unwrap();
    catalog.deliver(ServiceName::INVENTORY, &stock("PEN-GEL-BK", 0), 2).await.unwrap();
    let (_, in_stock) = search(&catalog, "query[stock]=1").await;
    assert_eq!(names(&in_stock), ["Stoneware mug"], "{backend:?}: {in_stock}");
    let (_, in_stock_mugs) = search(&catalog, "query[stock]=1&query[cat]=mugs&query[q]=mug").await;
    assert_eq!(names(&in_stock_mugs), ["Stoneware mug"], "{backend:?}: filters combine");
}

each_backend!(availability_follows_signed_stock_events_in_order_and_nothing_else);
async fn availability_follows_signed_stock_events_in_order_and_nothing_else(backend: Backend) {
    let catalog = start(backend).await;
    assert_eq!(available(&catalog, "MUG-STN-01").await, None, "{backend:?}: unknown until inventory says");

    let forged = catalog.deliver_signed(&Alone::stranger(ServiceName::INVENTORY), ServiceName::INVENTORY, &stock("MUG-STN-01", 99), 1).await;
    assert!(forged.is_err(), "{backend:?}: a forged event is refused");
    assert_eq!(available(&catalog, "MUG-STN-01").await, None, "{backend:?}: and changes nothing");

    catalog.deliver(ServiceName::INVENTORY, &stock("MUG-STN-01", 7), 2).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(7), "{backend:?}");
    catalog.deliver(ServiceName::INVENTORY, &stock("MUG-STN-01", 3), 1).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(7), "{backend:?}: an older event arriving late changes nothing");
    catalog.deliver(ServiceName::INVENTORY, &stock("MUG-STN-01", 0), 3).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(0), "{backend:?}: sold out");

    let inconsistent = StockChanged { sku: "MUG-STN-01".parse().unwrap(), on_hand: -1, available: 4 };
    assert!(catalog.deliver(ServiceName::INVENTORY, &inconsistent, 4).await.is_err(), "{backend:?}: a malformed event is refused");
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(0), "{backend:?}: and changes nothing");
    let (_, html) = catalog.text("/catalog/p/mug-stn-01", None).await;
    assert!(html.contains("Out of stock"), "{backend:?}: the product page says so");
}

each_backend!(catalog_editors_create_and_edit_products_and_each_change_is_announced);
async fn catalog_editors_create_and_edit_products_and_each_change_is_announced(backend: Backend) {
    let catalog = start(backend).await;
    let editor: &'static str = catalog.cookie_of(&Alone::user("ada", &[Role::CatalogEditor])).leak();
    let shopper: &'static str = catalog.cookie_of(&Alone::user("sam", &[Role::Shopper])).leak();
    let save = |body: &'static str, cookie: Option<&'static str>| catalog.api("/catalog/api/save_product", body, cookie);
    let create =
        "input[name]=Glacier+bottle&input[brand]=Pebble&input[category]=home&input[price]=24.90&input[sku]=BTL-GLC-01&input[description]=Keeps+water+cold";
    assert_eq!(save(create, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(save(create, Some(shopper)).await.0, StatusCode::FORBIDDEN);
    // The same editor's site token (the shell's alone) and the token the shell minted for another
    // fragment (what that fragment could replay here) are a guest's.
    let editor_user = Alone::user("ada", &[Role::CatalogEditor]);
    for (what, stolen) in [("the site's token", catalog.site_cookie_of(&editor_user)), ("the cart's token", catalog.cookie_for(&editor_user, "cart"))] {
        assert_eq!(catalog.api("/catalog/api/save_product", create, Some(&stolen)).await.0, StatusCode::UNAUTHORIZED, "{what}");
    }
    let (status, json) = save(create, Some(editor)).await;
    assert_eq!(status, StatusCode::OK, "{backend:?}: {json}");
    assert_eq!(json["id"], "glacier-bottle");
    let (_, found) = search(&catalog, "query[q]=glacier").await;
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
        let (status, json) = save(body, Some(editor)).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
        assert!(json.to_string().contains(needle), "{body}: {json}");
    }
    let edit = "input[id]=glacier-bottle&input[name]=Glacier+bottle+XL&input[brand]=Pebble&input[category]=home&input[price]=29&input[image]=https%3A%2F%2Fimg.example%2Fbottle.png";
    let (status, json) = save(edit, Some(editor)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!((json["price"]["minor"].as_i64(), json["image"].as_str()), (Some(2900), Some("https://img.example/bottle.png")));
    let (status, json) = save("input[id]=glacier-bottle&input[name]=X&input[price]=1&input[image]=javascript%3Aalert(1)", Some(editor)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (_, found) = search(&catalog, "query[q]=glacier").await;
    assert_eq!(names(&found), ["Glacier bottle XL"], "{backend:?}: the search index follows edits");

    // Two saves, two announcements of that product; the refused ones announced nothing.
    let announced: Vec<(String, String)> = catalog.announced().await.into_iter().filter(|(_, id)| id == "glacier-bottle").collect();
    assert_eq!(announced, vec![("catalog.product_changed".to_owned(), "glacier-bottle".to_owned()); 2], "{backend:?}");

    let (status, _) = catalog.text("/catalog/new", Some(shopper)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, html) = catalog.text("/catalog/p/glacier-bottle/edit", Some(editor)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"product-editor\"") && html.contains("Glacier bottle XL"));
}

each_backend!(the_catalog_lists_products_from_its_own_database);
async fn the_catalog_lists_products_from_its_own_database(backend: Backend) {
    let app = Alone::start(&tessera_catalog::server::Catalog, backend, Options { demo: Some(0), ..Options::default() }).await;
    let (status, html) = app.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    for product in tessera_contracts::demo::PRODUCTS {
        assert!(html.contains(product.name), "{backend:?}: {} missing", product.name);
    }
    let (status, json) = app.api("/catalog/api/search_products", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["total"], tessera_contracts::demo::PRODUCTS.len(), "{json}");
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
        assert!(html.contains("<header id=\"tessera-chrome\"></header>"), "the page keeps the slot for the shell's chrome");
        let api: Vec<String> = query.split('&').map(|pair| format!("query[{}", pair.replacen('=', "]=", 1))).collect();
        let (status, _) = search(&app, &api.join("&")).await;
        assert_eq!(status, expected, "API {}", &query[..query.len().min(60)]);
    }
    let (_, html) = app.text("/catalog?page=99999999999", None).await;
    assert!(html.replace("<!>", "").contains("Page 3 of 3"), "an absurd page shows the last one");
    for path in ["/catalog/p/nope", "/catalog/c/nope", "/catalog/p/%00", &format!("/catalog/p/{}", "x".repeat(500))] {
        let (status, html) = app.text(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(html.contains("<header id=\"tessera-chrome\"></header>") && html.contains("Browse the catalog"), "{path}: a 404 page with the chrome's slot");
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

#[tokio::test]
async fn pages_reference_the_bundle_in_the_manifest_and_follow_a_redeploy_without_restart() {
    // The catalog reads its bundle's manifest at run time from `<site dir>/catalog`, as a deploy writes it.
    let app = start(Backend::Sqlite).await;
    let bundle = app.settings.site.site_dir.join("catalog");
    std::fs::create_dir_all(bundle.join("pkg")).unwrap();
    let write_manifest = |build: &str| {
        let manifest = serde_json::json!({
            "name": "catalog", "version": "0.1.0", "build_id": build, "route_prefix": "/catalog",
            "contract_version": 1, "profile": "wasm-release",
            "assets": [
                {"kind": "js", "path": format!("pkg/catalog-{build}.js"), "integrity": format!("sha384-js{build}"), "bytes": 1},
                {"kind": "wasm", "path": format!("pkg/catalog-{build}_bg.wasm"), "integrity": format!("sha384-wasm{build}"), "bytes": 1}
            ]
        });
        std::fs::write(bundle.join("manifest.json.tmp"), manifest.to_string()).unwrap();
        std::fs::rename(bundle.join("manifest.json.tmp"), bundle.join("manifest.json")).unwrap();
    };
    write_manifest("aaaa");
    std::fs::write(bundle.join("pkg/catalog-aaaa.js"), "export default 1;").unwrap();
    let (_, html) = app.text("/catalog", None).await;
    assert!(html.contains("href=\"/catalog/pkg/catalog-aaaa.js\"") && html.contains("integrity=\"sha384-jsaaaa\""), "{html}");
    assert!(html.contains("\"/catalog/pkg/catalog-aaaa_bg.wasm\"") && html.contains("sha384-wasmaaaa"));
    let asset = app.get("/catalog/pkg/catalog-aaaa.js", None).await;
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));

    // Make sure the file's modification time moves on coarse-grained filesystems.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_manifest("bbbb");
    let file = std::fs::File::options().append(true).open(bundle.join("manifest.json")).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    let (_, html) = app.text("/catalog", None).await;
    assert!(html.contains("catalog-bbbb.js") && !html.contains("catalog-aaaa.js"), "the new build is served without restart");

    // A bundle built against another contract version is not loaded; the page still renders.
    let manifest = std::fs::read_to_string(bundle.join("manifest.json")).unwrap().replace("\"contract_version\":1", "\"contract_version\":99");
    std::fs::write(bundle.join("manifest.json"), manifest).unwrap();
    let file = std::fs::File::options().append(true).open(bundle.join("manifest.json")).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(10)).unwrap();
    let (status, html) = app.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("catalog-bbbb.js") && !html.contains("modulepreload"), "no hydration with a foreign contract");
    assert!(html.contains("Black cap"), "the server-rendered page is complete");
}

#[tokio::test]
async fn a_page_of_another_contract_is_asked_to_reload_and_one_of_another_build_is_served() {
    let site = start(Backend::Sqlite).await;
    let call = |contract: &'static str, build: &'static str| {
        site.client
            .post(format!("{}/catalog/api/search_products", site.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(tessera_contracts::CONTRACT_HEADER, contract)
            .header(tessera_contracts::BUILD_HEADER, build)
            .send()
    };
    // Same contract, another build (a page rendered before a compatible redeploy): it works.
    let current = tessera_contracts::CONTRACT_VERSION.to_string().leak();
    let response = call(current, "0123456789abcdef").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(tessera_contracts::RELOAD_HEADER).is_none());
    // Another contract: a clear refusal the page turns into one reload, never a silent wrong answer.
    let response = call("999", "0123456789abcdef").await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers().get(tessera_contracts::RELOAD_HEADER).unwrap(), "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.to_string().contains("another version of the site"), "{body}");
}

#[tokio::test]
async fn malformed_unsigned_and_forged_event_requests_are_refused_and_change_nothing() {
    let app = start(Backend::Sqlite).await;
    app.deliver(ServiceName::INVENTORY, &stock("MUG-STN-01", 25), 1).await.unwrap();
    assert_eq!(available(&app, "MUG-STN-01").await, Some(25));
    let envelope_at = |occurred_at_ms: i64, version: u32, event_type: &str, producer: &str, payload: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(), "type": event_type, "version": version, "aggregate_type": "sku",
            "aggregate_id": "MUG-STN-01", "sequence": 999_999, "occurred_at_ms": occurred_at_ms, "producer": producer, "payload": payload
        }))
        .unwrap()
    };
    let envelope = |version: u32, event_type: &str, producer: &str, payload: serde_json::Value| {
        envelope_at(tessera_fragment::db::now_ms(), version, event_type, producer, payload)
    };
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let good_payload = serde_json::json!({"sku": "MUG-STN-01", "on_hand": 0, "available": 0});
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let signer = app.signer_of(ServiceName::INVENTORY);
    let forger = Alone::stranger(ServiceName::INVENTORY);
    let cart = app.signer_of(ServiceName::CART);
    let renamed = |mut headers: [(&'static str, String); 3], producer: &str| {
        headers[0].1 = producer.to_owned();
        headers
    };
    let send = |body: Vec<u8>, headers: Option<[(&'static str, String); 3]>| {
        let mut request = app.client.post(format!("{}/catalog/events", app.url)).header("content-type", "application/json");
        for (name, value) in headers.into_iter().flatten() {
            request = request.header(name, value);
        }
        async move { request.body(body).send().await.unwrap().status() }
    };
    let body = envelope(1, "inventory.stock_changed", "inventory", good_payload.clone());
    // Headers: `None` signs the body correctly as the producer it claims; `Some(None)` sends it unsigned.
    type Headers = Option<Option<[(&'static str, String); 3]>>;
    let cases: Vec<(&str, Vec<u8>, Headers, StatusCode)> = vec![
        ("unsigned", body.clone(), Some(None), StatusCode::UNAUTHORIZED),
        ("signed with a key nobody published for inventory", body.clone(), Some(Some(forger.sign(&body, now()))), StatusCode::SERVICE_UNAVAILABLE),
        ("signed by the cart, named inventory", body.clone(), Some(Some(renamed(cart.sign(&body, now()), "inventory"))), StatusCode::UNAUTHORIZED),
        ("signed by inventory, renamed the cart", body.clone(), Some(Some(renamed(signer.sign(&body, now()), "cart"))), StatusCode::UNAUTHORIZED),
        ("signed by the cart as itself", body.clone(), Some(Some(cart.sign(&body, now()))), StatusCode::BAD_REQUEST),
        ("an old captured request", body.clone(), Some(Some(signer.sign(&body, now() - 3600))), StatusCode::UNAUTHORIZED),
        ("signed for another body", body.clone(), Some(Some(signer.sign(b"{}", now()))), StatusCode::UNAUTHORIZED),
        ("not JSON", b"not json".to_vec(), None, StatusCode::BAD_REQUEST),
        ("claims another producer", envelope(1, "inventory.stock_changed", "cart", good_payload.clone()), None, StatusCode::BAD_REQUEST),
        ("unknown version", envelope(2, "inventory.stock_changed", "inventory", good_payload.clone()), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("unknown type", envelope(1, "inventory.exploded", "inventory", good_payload.clone()), None, StatusCode::UNPROCESSABLE_ENTITY),
        ("another producer's type", envelope(1, "catalog.product_changed", "inventory", good_payload.clone()), None, StatusCode::FORBIDDEN),
        (
            "older than the inbox remembers",
            envelope_at(tessera_fragment::db::now_ms() - 60 * DAY_MS, 1, "inventory.stock_changed", "inventory", good_payload.clone()),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("malformed payload", envelope(1, "inventory.stock_changed", "inventory", serde_json::json!({"sku": 1})), None, StatusCode::UNPROCESSABLE_ENTITY),
        (
            "negative stock",
            envelope(1, "inventory.stock_changed", "inventory", serde_json::json!({"sku": "MUG-STN-01", "on_hand": -5, "available": -5})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (name, body, headers, expected) in cases {
        // Cases without explicit headers are correctly signed by the producer they claim.
        let headers = headers.unwrap_or_else(|| Some(signer.sign(&body, now())));
        assert_eq!(send(body, headers).await, expected, "{name}");
    }
    let huge =
        envelope(1, "inventory.stock_changed", "inventory", serde_json::json!({"sku": "MUG-STN-01", "on_hand": 0, "available": 0, "pad": "x".repeat(100_000)}));
    let headers = signer.sign(&huge, now());
    assert_eq!(send(huge, Some(headers)).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(available(&app, "MUG-STN-01").await, Some(25), "nothing changed");

    // The same envelope correctly signed is applied, once.
    let headers = signer.sign(&body, now());
    assert_eq!(send(body.clone(), Some(headers.clone())).await, StatusCode::OK);
    assert_eq!(send(body, Some(headers)).await, StatusCode::OK);
    assert_eq!(available(&app, "MUG-STN-01").await, Some(0));
}

#[tokio::test]
async fn the_catalog_alone_sends_the_security_headers_itself() {
    let app = start(Backend::Sqlite).await;
    let response = app.get("/catalog", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
    let csp = header("content-security-policy");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "strict-origin-when-cross-origin");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    let nonce = csp.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).expect("a nonce").to_owned();
    let html = response.text().await.unwrap();
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "the page's scripts carry the policy's nonce: {html}");
    // Behind the shell, the page keeps the nonce the shell handed down (the shell's policy names it).
    let handed = "handedDownByTheShell0123";
    let response = app.client.get(format!("{}/catalog", app.url)).header("x-tessera-csp-nonce", handed).send().await.unwrap();
    assert!(response.headers()["content-security-policy"].to_str().unwrap().contains(&format!("'nonce-{handed}'")));
    assert!(response.text().await.unwrap().contains(&format!("nonce=\"{handed}\"")));
}

each_backend!(a_batch_of_events_is_applied_in_one_request_and_each_refusal_stays_its_own);
async fn a_batch_of_events_is_applied_in_one_request_and_each_refusal_stays_its_own(backend: Backend) {
    let app = start(backend).await;
    let now = tessera_fragment::db::now_ms();
    let envelope = |sku: &str, event_type: &str, producer: &str, payload: serde_json::Value| {
        serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(), "type": event_type, "version": 1, "aggregate_type": "sku",
            "aggregate_id": sku, "sequence": 1, "occurred_at_ms": now, "producer": producer, "payload": payload
        })
    };
    let level = |sku: &str, available: i64| serde_json::json!({ "sku": sku, "on_hand": available, "available": available });
    let mug = envelope("MUG-STN-01", "inventory.stock_changed", "inventory", level("MUG-STN-01", 4));
    let batch = serde_json::json!([
        mug.clone(),
        envelope("TEE-BLU-M", "inventory.stock_changed", "inventory", serde_json::json!({ "sku": "TEE-BLU-M", "on_hand": -5, "available": -5 })),
        envelope("CAP-1", "catalog.product_changed", "inventory", level("CAP-1", 1)),
        envelope("CAP-2", "inventory.exploded", "inventory", level("CAP-2", 1)),
        envelope("CAP-3", "inventory.stock_changed", "cart", level("CAP-3", 1)),
        envelope("PEN-GEL-BK", "inventory.stock_changed", "inventory", level("PEN-GEL-BK", 0)),
        mug,
        envelope("TEE-BLU-M", "inventory.stock_changed", "inventory", level("TEE-BLU-M", 3)),
    ]);
    let body = serde_json::to_vec(&batch).unwrap();
    let inventory = app.signer_of(ServiceName::INVENTORY);
    let post = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut request = app.client.post(format!("{}/catalog/events/batch", app.url)).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap() }
    };
    let now_s = tessera_fragment::db::now_seconds();
    let response = post(body.clone(), inventory.sign(&body, now_s).to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK, "{backend:?}");
    let outcomes: Vec<Value> = response.json().await.unwrap();
    let statuses: Vec<u64> = outcomes.iter().map(|outcome| outcome["status"].as_u64().unwrap()).collect();
    // Applied; negative stock refused by the handler (rolled back alone); another producer's type; a type
    // the catalog does not take; signed by inventory but claiming the cart; applied; a duplicate of the
    // first (its inbox row, in the same transaction, makes it a no-op); the tee's next event, held back
    // behind its refused one (order comes first).
    assert_eq!(statuses, [200, 422, 403, 422, 400, 200, 200, 409], "{backend:?}: {outcomes:?}");
    assert!(outcomes[7]["message"].as_str().unwrap().starts_with(tessera_fragment::routes::HELD_BACK), "{outcomes:?}");
    assert!(outcomes[1]["message"].as_str().unwrap().contains("inconsistent"), "{outcomes:?}");
    assert_eq!(available(&app, "MUG-STN-01").await, Some(4), "{backend:?}");
    assert_eq!(available(&app, "PEN-GEL-BK").await, Some(0), "{backend:?}");
    assert_eq!(available(&app, "TEE-BLU-M").await, None, "{backend:?}: the refused one changed nothing");
    let db = app.runtime.db.clone();
    assert_eq!(tessera_testing::web::count(&db, "SELECT COUNT(*) FROM inbox").await, 2, "{backend:?}: the two applied, once");

    // The whole request refused: unsigned, signed by a stranger, not a list, too many.
    let stranger = Alone::stranger(ServiceName::INVENTORY);
    assert_eq!(post(body.clone(), Vec::new()).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(post(body.clone(), stranger.sign(&body, now_s).to_vec()).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let object = serde_json::to_vec(&batch[0]).unwrap();
    assert_eq!(post(object.clone(), inventory.sign(&object, now_s).to_vec()).await.status(), StatusCode::BAD_REQUEST);
    let many = serde_json::to_vec(&vec![batch[5].clone(); tessera_fragment::inbox::MAX_BATCH_EVENTS + 1]).unwrap();
    assert_eq!(post(many.clone(), inventory.sign(&many, now_s).to_vec()).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(tessera_testing::web::count(&db, "SELECT COUNT(*) FROM inbox").await, 2, "{backend:?}: nothing more");
}
