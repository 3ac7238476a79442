//! Retention: what each service deletes as it ages, and what it must keep whatever its age.

mod support;

use reqwest::StatusCode;
use support::{count, database, each_backend, set_cookie, spawn_app, Backend, PASSWORD, SHOPPER};

const DAY_MS: i64 = 24 * 3600 * 1000;

each_backend!(delivered_events_and_old_inbox_rows_go_while_undelivered_events_stay);
async fn delivered_events_and_old_inbox_rows_go_while_undelivered_events_stay(backend: Backend) {
    let app = spawn_app(backend).await;
    let inventory = database(&app, "inventory").await;
    let catalog = database(&app, "catalog").await;
    // The demo seed's stock events, delivered to the catalog.
    support::eventually("the seed's events delivered", || async {
        count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries WHERE status <> 'delivered'").await == 0
    })
    .await;
    let events = count(&inventory, "SELECT COUNT(*) FROM outbox").await;
    assert!(events >= 4, "{events}");
    // Age every event but the newest two by eight days; one old event's delivery is dead.
    let (newest,): (i64,) = sqlx::query_as("SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET 1").fetch_one(&inventory).await.unwrap();
    sqlx::query("UPDATE outbox SET occurred_at_ms = occurred_at_ms - $1 WHERE seq < $2").bind(8 * DAY_MS).bind(newest).execute(&inventory).await.unwrap();
    let (dead,): (i64,) = sqlx::query_as("SELECT MIN(seq) FROM outbox").fetch_one(&inventory).await.unwrap();
    sqlx::query("UPDATE outbox_deliveries SET status = 'dead' WHERE seq = $1").bind(dead).execute(&inventory).await.unwrap();
    let received = count(&catalog, "SELECT COUNT(*) FROM inbox").await;
    sqlx::query("UPDATE inbox SET received_at_ms = received_at_ms - $1 WHERE position = (SELECT MIN(position) FROM inbox)")
        .bind(46 * DAY_MS)
        .execute(&catalog)
        .await
        .unwrap();

    let retention = tessera_fragment::event_admin::Retention { events_ms: 7 * DAY_MS, inbox_ms: 45 * DAY_MS };
    let now = tessera_fragment::db::now_ms();
    let (pruned, _) = tessera_fragment::event_admin::prune(&inventory, retention, now).await.unwrap();
    assert_eq!(pruned as i64, events - 3, "{backend:?}: every old event but the dead one");
    let left: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM outbox ORDER BY seq").fetch_all(&inventory).await.unwrap();
    assert_eq!(left.len(), 3);
    assert_eq!(left[0].0, dead, "an event whose delivery is dead stays, for its replay");
    assert_eq!(count(&inventory, "SELECT COUNT(*) FROM outbox_deliveries d WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.seq = d.seq)").await, 0);
    let (_, inbox) = tessera_fragment::event_admin::prune(&catalog, retention, now).await.unwrap();
    assert_eq!(inbox, 1);
    assert_eq!(count(&catalog, "SELECT COUNT(*) FROM inbox").await, received - 1);
}

each_backend!(guest_carts_no_cookie_can_reach_go_while_younger_ones_stay);
async fn guest_carts_no_cookie_can_reach_go_while_younger_ones_stay(backend: Backend) {
    let app = spawn_app(backend).await;
    let cart = database(&app, "cart").await;
    let mut cookies = Vec::new();
    for sku in ["MUG-STN-01", "TEE-BLU-M"] {
        let response = app.post_form("/cart/api/add_item", format!("sku={sku}&quantity=1"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        cookies.push(set_cookie(&response, "tessera_cart").expect("a guest cart"));
    }
    // The first cart was made 31 days ago: its cookie has expired in every browser.
    sqlx::query("UPDATE carts SET created_at_ms = created_at_ms - $1 WHERE id = (SELECT cart_id FROM cart_items WHERE sku = 'MUG-STN-01')")
        .bind(31 * DAY_MS)
        .execute(&cart)
        .await
        .unwrap();
    let pruned = tessera_cart::store::prune_guest_carts(&cart, tessera_fragment::db::now_ms()).await.unwrap();
    assert_eq!(pruned, 1, "{backend:?}");
    assert_eq!(count(&cart, "SELECT COUNT(*) FROM cart_items WHERE sku = 'MUG-STN-01'").await, 0);
    assert_eq!(app.cart_count(Some(&cookies[1])).await, 1, "the younger guest cart stays");
    // A signed-in shopper's cart is never a guest cart, however old.
    let sam = app.login_as(SHOPPER, PASSWORD).await;
    assert_eq!(app.post_form("/cart/api/add_item", "sku=BAG-CNV-01&quantity=1", Some(&sam)).await.status(), StatusCode::OK);
    sqlx::query("UPDATE carts SET created_at_ms = created_at_ms - $1 WHERE user_id IS NOT NULL").bind(90 * DAY_MS).execute(&cart).await.unwrap();
    assert_eq!(tessera_cart::store::prune_guest_carts(&cart, tessera_fragment::db::now_ms()).await.unwrap(), 0);
    assert_eq!(app.cart_count(Some(&sam)).await, 1);
}
