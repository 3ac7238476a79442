//! The three fragments through the shell: the shared login reaches each of them, each owns its data, and
//! every server function answers bad input with a clear 4xx and changes nothing.

mod support;

use reqwest::StatusCode;
use support::{each_backend, spawn_app, Backend, ADMIN, PASSWORD, SHOPPER};

each_backend!(the_catalog_lists_products_from_its_own_database);
async fn the_catalog_lists_products_from_its_own_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, html) = app.text("/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    for product in tessera_contracts::demo::PRODUCTS {
        assert!(html.contains(product.name), "{backend:?}: {} missing", product.name);
    }
    let (status, json) = app.api("/catalog/api/search_products", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["total"], tessera_contracts::demo::PRODUCTS.len(), "{json}");
}

each_backend!(cart_lines_belong_to_their_user_only);
async fn cart_lines_belong_to_their_user_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let sam = app.login_as(SHOPPER, PASSWORD).await;
    let ada = app.login_as(ADMIN, PASSWORD).await;
    let (status, json) = app.api("/cart/api/add_item", "sku=MUG-STN-01&quantity=2", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["item_count"], 2);
    assert_eq!(app.cart_count(Some(&sam)).await, 2);
    assert_eq!(app.cart_count(Some(&ada)).await, 0, "another user's cart is separate");
    assert_eq!(app.cart_count(None).await, 0);

    // Ada cannot change Sam's line: she has no such line.
    let (status, json) = app.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=5", Some(&ada)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_eq!(app.cart_count(Some(&sam)).await, 2);

    let (_, html) = app.text("/cart", Some(&sam)).await;
    assert!(html.contains("MUG-STN-01"));
    let (_, html) = app.text("/cart", Some(&ada)).await;
    assert!(!html.contains("MUG-STN-01"));

    // Sam changes and removes his line.
    let (status, json) = app.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=3", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["lines"][0]["quantity"], 3);
    let (status, json) = app.api("/cart/api/set_quantity", "sku=MUG-STN-01&quantity=0", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["lines"].as_array().unwrap().len(), 0);
}

each_backend!(cart_server_functions_refuse_bad_input_and_change_nothing);
async fn cart_server_functions_refuse_bad_input_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let sam = app.login_as(SHOPPER, PASSWORD).await;
    let (status, json) = app.api("/cart/api/add_item", "sku=STK-RST-10&quantity=98", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let cases: Vec<(&str, String, Option<&str>, StatusCode)> = vec![
        ("/cart/api/add_item", "sku=ZZZ-NOPE-01&quantity=1".into(), Some(&sam), StatusCode::NOT_FOUND),
        // More than the stock: refused with what is left.
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=5".into(), Some(&sam), StatusCode::CONFLICT),
        ("/cart/api/add_item", "".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "quantity=1".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=abc".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=0".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=-3".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=100".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=PEN-GEL-BK&quantity=99999999999999999999999".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", "sku=pen%3Bdrop&quantity=1".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", format!("sku={}&quantity=1", "A".repeat(40)), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/add_item", format!("sku=PEN-GEL-BK&quantity=1&pad={}", "x".repeat(40_000)), Some(&sam), StatusCode::PAYLOAD_TOO_LARGE),
        // 98 + 2 would exceed the line maximum: a conflict, explained.
        ("/cart/api/add_item", "sku=STK-RST-10&quantity=2".into(), Some(&sam), StatusCode::CONFLICT),
        ("/cart/api/set_quantity", "sku=STK-RST-10&quantity=100".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/set_quantity", "sku=STK-RST-10&quantity=-1".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/set_quantity", "sku=&quantity=1".into(), Some(&sam), StatusCode::BAD_REQUEST),
        ("/cart/api/no_such_function", "".into(), Some(&sam), StatusCode::BAD_REQUEST),
    ];
    for (path, body, cookie, expected) in cases {
        let (status, json) = app.api(path, &body, cookie).await;
        assert_eq!(status, expected, "{backend:?} {path} {}: {json}", &body[..body.len().min(60)]);
        if expected != StatusCode::BAD_REQUEST || path != "/cart/api/no_such_function" {
            assert!(json.get("message").is_some() || json.get("kind").is_some(), "{path}: a readable error: {json}");
        }
    }
    // A server function is not a GET endpoint.
    let response = app.get("/cart/api/add_item?sku=STK-RST-10&quantity=1", Some(&sam)).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.cart_count(Some(&sam)).await, 98, "{backend:?}: nothing changed");
}

each_backend!(inventory_is_for_inventory_admins_only);
async fn inventory_is_for_inventory_admins_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, html) = app.text("/admin/inventory", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Please sign in") && html.contains("data-testid=\"login-link\""), "page with chrome");
    let sam = app.login_as(SHOPPER, PASSWORD).await;
    let (status, html) = app.text("/admin/inventory", Some(&sam)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Not allowed") && html.contains("Sam Shopper"));
    assert!(!html.contains("PEN-GEL-BK"), "no stock data leaks into the 403 page");

    for (path, body) in [("/admin/inventory/api/stock_page", ""), ("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=5")] {
        let (status, _) = app.api(path, body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} anonymous");
        let (status, json) = app.api(path, body, Some(&sam)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} shopper: {json}");
    }
    let ada = app.login_as(ADMIN, PASSWORD).await;
    let (status, json) = app.api("/admin/inventory/api/stock_page", "", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    let pen = json["rows"].as_array().unwrap().iter().find(|level| level["sku"] == "PEN-GEL-BK").unwrap().clone();
    assert_eq!(pen["on_hand"], 4, "the shopper's attempt changed nothing");
}

each_backend!(stock_adjustments_are_checked_and_never_go_below_zero);
async fn stock_adjustments_are_checked_and_never_go_below_zero(backend: Backend) {
    let app = spawn_app(backend).await;
    let ada = app.login_as(ADMIN, PASSWORD).await;
    let (status, json) = app.api("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=3", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["on_hand"], 7);
    let cases = [
        ("sku=PEN-GEL-BK&delta=-8", StatusCode::CONFLICT),
        ("sku=PEN-GEL-BK&delta=0", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK&delta=10001", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK&delta=-9223372036854775808", StatusCode::BAD_REQUEST),
        ("sku=PEN-GEL-BK", StatusCode::BAD_REQUEST),
        ("sku=NOPE-1&delta=1", StatusCode::NOT_FOUND),
        ("sku=bad sku&delta=1", StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        let (status, json) = app.api("/admin/inventory/api/adjust_stock", body, Some(&ada)).await;
        assert_eq!(status, expected, "{backend:?} {body}: {json}");
    }
    let (_, json) = app.api("/admin/inventory/api/adjust_stock", "sku=PEN-GEL-BK&delta=-7", Some(&ada)).await;
    assert_eq!(json["on_hand"], 0, "{backend:?}: every refused adjustment changed nothing");
}
