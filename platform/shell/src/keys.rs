//! The shell's signing keys, kept in its database so that every shell replica signs with and publishes
//! the same keys, and a rotation reaches all of them: each replica re-reads the table every
//! [`FOLLOW_EVERY`] and hands the ring the current set. The first replica to start on an empty table
//! (under the start-up lock, so only one) imports the ring an earlier release kept as files in the data
//! dir — sessions signed with it stay valid — or generates the first key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use shared_auth::keys::{now_seconds, read_legacy_dir, KeyEntry, KeyError, KeyRing, StoredKey, TokenSigner};
use sqlx::AnyPool;

/// How often a replica re-reads the keys. Rotation's publication delay (minutes) is far longer.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the signing keys table: {0}")]
    Database(#[from] sqlx::Error),
}

/// Every stored key.
pub async fn load(db: &AnyPool) -> Result<Vec<StoredKey>, KeysError> {
    /// A `signing_keys` row: the private key base64-encoded.
    #[derive(sqlx::FromRow)]
    struct KeyRow {
        kid: String,
        pkcs8: String,
        created_at: i64,
        signs_from: i64,
    }
    let rows: Vec<KeyRow> = sqlx::query_as("SELECT kid, pkcs8, created_at, signs_from FROM signing_keys ORDER BY signs_from, kid").fetch_all(db).await?;
    rows.into_iter()
        .map(|KeyRow { kid, pkcs8, created_at, signs_from }| {
            let pkcs8 = STANDARD.decode(pkcs8).map_err(|_| KeyError::Stored(format!("key {kid} is not base64")))?;
            Ok(StoredKey { entry: KeyEntry { kid, created_at, signs_from }, pkcs8 })
        })
        .collect()
}

async fn insert(db: &AnyPool, key: &StoredKey) -> Result<(), KeysError> {
    sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_at, signs_from) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING")
        .bind(&key.entry.kid)
        .bind(STANDARD.encode(&key.pkcs8))
        .bind(key.entry.created_at)
        .bind(key.entry.signs_from)
        .execute(db)
        .await?;
    Ok(())
}

/// The ring of the stored keys; on an empty table, the imported file ring of `legacy_dir` or a fresh
/// key first. Call it holding the shell's start-up lock, so replicas starting together create one.
pub async fn open(db: &AnyPool, legacy_dir: &Path, access_ttl_seconds: i64) -> Result<KeyRing, KeysError> {
    let mut stored = load(db).await?;
    if stored.is_empty() {
        let first = match read_legacy_dir(legacy_dir)? {
            Some(imported) => {
                tracing::info!(keys = imported.len(), dir = %legacy_dir.display(), "importing the key ring from the data dir into the database");
                imported
            }
            None => vec![StoredKey::generate(0)?],
        };
        for key in &first {
            insert(db, key).await?;
        }
        stored = load(db).await?;
    }
    Ok(KeyRing::new(&stored, access_ttl_seconds)?)
}

/// Adds a key that starts signing `publish_delay_seconds` from now. Every replica publishes it within
/// [`FOLLOW_EVERY`].
pub async fn rotate(db: &AnyPool, publish_delay_seconds: i64) -> Result<KeyEntry, KeysError> {
    let key = StoredKey::generate(now_seconds() + publish_delay_seconds.max(0))?;
    insert(db, &key).await?;
    Ok(key.entry)
}

/// What `keys rotate` tells the operator.
pub fn describe_rotation(entry: &KeyEntry) -> String {
    format!("new key {} is published by every shell replica within {} s and signs from {} (unix time)", entry.kid, FOLLOW_EVERY.as_secs(), entry.signs_from)
}

/// Keeps `signer`'s ring equal to the table, until the task is aborted.
pub fn follow(db: AnyPool, signer: Arc<TokenSigner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(FOLLOW_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reloaded = match load(&db).await {
                Ok(stored) => signer.ring().replace(&stored).map_err(KeysError::from),
                Err(error) => Err(error),
            };
            match reloaded {
                Ok(true) => tracing::info!("signing keys changed; following"),
                Ok(false) => {}
                // Keep the keys we have: a bad row or a database hiccup must not stop logins.
                Err(error) => tracing::error!(%error, "cannot reload the signing keys; keeping the loaded ones"),
            }
        }
    })
}
