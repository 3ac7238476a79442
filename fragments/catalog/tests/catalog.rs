//! The catalog alone, as its team ships it: its own database (SQLite, and PostgreSQL when configured),
//! users signed in by a key of the test's own, inventory met only as the signed `inventory.stock_changed`
//! events it sends. Listing, search, filters, sort and pages; the availability projection; editing and
//! its announcements. What crosses fragments (pages in the shell's chrome, a price reaching the cart)
//! is tested in `site/tests/`.

use serde_json::Value;
use shared_auth::Role;
use tessera_contracts::events::StockChanged;
use tessera_testing::each_backend;
use tessera_testing::{Alone, Backend, Options, StatusCode, EVENTS_SECRET};

/// The catalog alone with its demo catalogue: the classic eight products and sixty generated ones.
async fn start(backend: Backend) -> Alone {
    Alone::start(&tessera_catalog::server::Catalog, backend, Options { demo: Some(60), ..Options::default() }).await
}

/// The listing as JSON, through the server function the page uses.
async fn search(catalog: &Alone, query: &str) -> (StatusCode, Value) {
    catalog.call("/catalog/api/search_products", query, None).await
}

fn names(listing: &Value) -> Vec<String> {
    listing["cards"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

/// What the product page says is available of a classic demo SKU (its product's id is the SKU in
/// lower case).
async fn available(catalog: &Alone, sku: &str) -> Option<i64> {
    let (status, detail) = catalog.call("/catalog/api/product_detail", &format!("id={}", sku.to_ascii_lowercase()), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    detail["variants"].as_array().unwrap().iter().find(|v| v["sku"] == sku).unwrap_or_else(|| panic!("{sku}: {detail}"))["available"].as_i64()
}

fn stock(sku: &str, available: i64) -> StockChanged {
    StockChanged { sku: sku.into(), on_hand: available, available }
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
    catalog.deliver("inventory", &stock("MUG-STN-01", 5), 1, EVENTS_SECRET).await.unwrap();
    catalog.deliver("inventory", &stock("PEN-GEL-BK", 0), 2, EVENTS_SECRET).await.unwrap();
    let (_, in_stock) = search(&catalog, "query[stock]=1").await;
    assert_eq!(names(&in_stock), ["Stoneware mug"], "{backend:?}: {in_stock}");
    let (_, in_stock_mugs) = search(&catalog, "query[stock]=1&query[cat]=mugs&query[q]=mug").await;
    assert_eq!(names(&in_stock_mugs), ["Stoneware mug"], "{backend:?}: filters combine");
}

each_backend!(availability_follows_signed_stock_events_in_order_and_nothing_else);
async fn availability_follows_signed_stock_events_in_order_and_nothing_else(backend: Backend) {
    let catalog = start(backend).await;
    assert_eq!(available(&catalog, "MUG-STN-01").await, None, "{backend:?}: unknown until inventory says");

    let forged = catalog.deliver("inventory", &stock("MUG-STN-01", 99), 1, "a-secret-the-deployment-does-not-have-0123").await;
    assert!(forged.is_err(), "{backend:?}: a forged event is refused");
    assert_eq!(available(&catalog, "MUG-STN-01").await, None, "{backend:?}: and changes nothing");

    catalog.deliver("inventory", &stock("MUG-STN-01", 7), 2, EVENTS_SECRET).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(7), "{backend:?}");
    catalog.deliver("inventory", &stock("MUG-STN-01", 3), 1, EVENTS_SECRET).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(7), "{backend:?}: an older event arriving late changes nothing");
    catalog.deliver("inventory", &stock("MUG-STN-01", 0), 3, EVENTS_SECRET).await.unwrap();
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(0), "{backend:?}: sold out");

    let inconsistent = StockChanged { sku: "MUG-STN-01".into(), on_hand: -1, available: 4 };
    assert!(catalog.deliver("inventory", &inconsistent, 4, EVENTS_SECRET).await.is_err(), "{backend:?}: a malformed event is refused");
    assert_eq!(available(&catalog, "MUG-STN-01").await, Some(0), "{backend:?}: and changes nothing");
    let (_, html) = catalog.page("/catalog/p/mug-stn-01", None).await;
    assert!(html.contains("Out of stock"), "{backend:?}: the product page says so");
}

each_backend!(catalog_editors_create_and_edit_products_and_each_change_is_announced);
async fn catalog_editors_create_and_edit_products_and_each_change_is_announced(backend: Backend) {
    let catalog = start(backend).await;
    let editor: &'static str = catalog.cookie_of(&Alone::user("ada", &[Role::CatalogEditor])).leak();
    let shopper: &'static str = catalog.cookie_of(&Alone::user("sam", &[Role::Shopper])).leak();
    let save = |body: &'static str, cookie: Option<&'static str>| catalog.call("/catalog/api/save_product", body, cookie);
    let create =
        "input[name]=Glacier+bottle&input[brand]=Pebble&input[category]=home&input[price]=24.90&input[sku]=BTL-GLC-01&input[description]=Keeps+water+cold";
    assert_eq!(save(create, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(save(create, Some(shopper)).await.0, StatusCode::FORBIDDEN);
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

    let (status, _) = catalog.page("/catalog/new", Some(shopper)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, html) = catalog.page("/catalog/p/glacier-bottle/edit", Some(editor)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"product-editor\"") && html.contains("Glacier bottle XL"));
}
