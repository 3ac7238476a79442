//! Where a test's data lives ([`Backend`]: a fresh SQLite file, or PostgreSQL schemas of the test's own),
//! one test case per backend ([`each_backend!`](crate::each_backend)), the settings every test process
//! starts from ([`test_settings`]), and dropping what a PostgreSQL case left behind ([`drop_schemas`]).

use tessera_host::Settings;

/// Where a test's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The test PostgreSQL (`TESSERA_TEST_POSTGRES_URL`), if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TESSERA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty())
}

/// Whether PostgreSQL cases can run; says so on stderr when not. `cargo xtask test` sets the URL to the
/// local server, and under `CI=true` fails when that is missing, so a skip happens only in a plain
/// `cargo test` on a machine without PostgreSQL.
pub fn postgres_configured() -> bool {
    let configured = postgres_url().is_some();
    if !configured {
        eprintln!("TESSERA_TEST_POSTGRES_URL is not set: the PostgreSQL case is skipped");
    }
    configured
}

/// One test case per backend for `async fn name(backend: Backend)`: `name::sqlite` and
/// `name::postgres`, so the runner reports each (a SQLite failure does not hide the PostgreSQL result)
/// and `cargo test name::postgres` runs one. The test attribute is `#[tokio::test]` unless given first.
#[macro_export]
macro_rules! each_backend {
    ($name:ident) => {
        $crate::each_backend!(
            #[tokio::test]
            $name
        );
    };
    (#[$test:meta] $name:ident) => {
        mod $name {
            #[$test]
            async fn sqlite() {
                super::$name($crate::backend::Backend::Sqlite).await
            }

            #[$test]
            async fn postgres() {
                if $crate::backend::postgres_configured() {
                    super::$name($crate::backend::Backend::Postgres).await
                }
            }
        }
    };
}

/// The settings every test process starts from: a port of its own, its data and bundles under `dir`, a
/// PostgreSQL schema prefix of its own (`t<12 hex>_`) when on PostgreSQL, small pools, and no drain notice.
pub fn test_settings(dir: &std::path::Path, backend: Backend) -> Settings {
    let mut settings = Settings::default();
    settings.server.addr = "127.0.0.1:0".parse().expect("an address");
    settings.server.drain_notice_ms = 0;
    settings.server.drain_timeout_ms = 2_000;
    settings.store.data_dir = dir.join("data");
    settings.store.postgres_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(postgres_url().expect("TESSERA_TEST_POSTGRES_URL")),
    };
    settings.store.schema_prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.store.postgres_pool_size = 3;
    settings.site.site_dir = dir.join("site");
    settings
}

/// The NATS server of the broker tests (`TESSERA_TEST_NATS_URL`), if any.
pub fn nats_url() -> Option<String> {
    std::env::var("TESSERA_TEST_NATS_URL").ok().filter(|url| !url.is_empty())
}

/// Drops the PostgreSQL schemas `<prefix><service>` (and the streaming relay's publications of them, and
/// the roles of that name `tessera db provision` may have made) a test made, from a thread of its own (a drop may run inside the test's runtime, which cannot block on
/// itself), bounded: at worst a schema is left behind, never a hung test run.
pub fn drop_schemas(url: String, prefix: String, services: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            sqlx::any::install_default_drivers();
            let cleanup = async {
                if let Ok(pool) = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await {
                    // The stopped server's connections may still hold locks for a moment.
                    let _ = sqlx::query("SET lock_timeout = '3s'").execute(&pool).await;
                    for service in services {
                        // The stopped server's replication slot or connections may still hold a lock: try again.
                        for _ in 0..3 {
                            if sqlx::query(&format!("DROP SCHEMA IF EXISTS {prefix}{service} CASCADE")).execute(&pool).await.is_ok() {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                        let _ = sqlx::query(&format!("DROP PUBLICATION IF EXISTS tessera_outbox_{prefix}{service}")).execute(&pool).await;
                        let role = format!("{prefix}{service}");
                        let (exists,): (bool,) =
                            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(&role).fetch_one(&pool).await.unwrap_or((false,));
                        if exists {
                            let _ = sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await;
                            let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(&pool).await;
                        }
                    }
                    pool.close().await;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), cleanup).await;
        });
    })
    .join();
}
