//! Leases (`tessera_fragment::lease`) on a fragment's database, as several instances of a fragment take
//! them: one holder at a time, and a holder that died loses its lease when its time runs out. On SQLite
//! and on PostgreSQL when configured.

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use tessera_fragment::db::{Migrations, StoreSettings};
use tessera_fragment::lease::Lease;
use tessera_testing::{each_backend, Backend};

static NO_TABLES: Migrator = Migrator::DEFAULT;
static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NO_TABLES, postgres: &NO_TABLES };

/// Drops the test's PostgreSQL schema when the test ends.
struct Cleanup(StoreSettings);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(url) = self.0.postgres_url.clone() {
            tessera_testing::backend::drop_schemas(url, self.0.schema_prefix.clone(), vec!["leases".into()]);
        }
    }
}

each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_lease_is_held_by_one_holder_at_a_time_and_runs_out_when_its_holder_dies
);
async fn a_lease_is_held_by_one_holder_at_a_time_and_runs_out_when_its_holder_dies(backend: Backend) {
    // Two pools on one fragment's database: two instances of it.
    let data = tempfile::tempdir().unwrap();
    let store = tessera_testing::test_settings(data.path(), backend).store;
    let pools = [store.open_fragment("leases", &NO_MIGRATIONS).await.unwrap(), store.open_fragment("leases", &NO_MIGRATIONS).await.unwrap()];
    let _cleanup = Cleanup(store.clone());
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let overlaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..16 {
        let (db, inside, overlaps) = (pools[n % 2].clone(), inside.clone(), overlaps.clone());
        tasks.push(tokio::spawn(async move {
            let lease = Lease::take(&db, "cart:one", Duration::from_secs(30), Duration::from_secs(30)).await.unwrap();
            if inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            lease.release().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(overlaps.load(std::sync::atomic::Ordering::SeqCst), 0, "{backend:?}");
    // A holder that never releases (it died) loses the lease when its time runs out.
    let held = Lease::try_take(&pools[0], "job:sweep", Duration::from_millis(200)).await.unwrap().expect("free");
    std::mem::forget(held);
    assert!(Lease::try_take(&pools[1], "job:sweep", Duration::from_secs(1)).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(Lease::try_take(&pools[1], "job:sweep", Duration::from_secs(1)).await.unwrap().is_some());
}
