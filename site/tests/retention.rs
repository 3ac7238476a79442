//! Retention: what each service deletes as it ages, and what it must keep whatever its age.

mod support;

use support::{count, database, each_backend, spawn_app, Backend};

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
