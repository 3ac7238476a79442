//! The shell's signing keys, kept in its database so that every shell replica signs with and publishes
//! the same keys, and a rotation reaches all of them: each replica re-reads the table every
//! [`FOLLOW_EVERY`] and hands the ring the current set. The first replica to start on an empty table
//! (under the start-up lock, so only one) imports the ring an earlier release kept as files in the data
//! dir — sessions signed with it stay valid — or generates the first key.
//!
//! The private keys are encrypted at rest ([`Sealing`]): AES-256-GCM under a key derived (HKDF-SHA256)
//! from `TESSERA_KEY_ENCRYPTION_KEY`, which is never in the database, with the key's id as associated
//! data, so a reader of the table — a fragment's connection in a single-role install, a backup — gets
//! nothing that signs, and a row moved to another id does not open. A row is stored as
//! `sealed:v1:<kek id>:<base64 nonce ‖ ciphertext>`; rows an earlier release kept in the clear, or sealed
//! under a key-encryption key that is no longer the first, are sealed again under the first one at
//! start, under the start-up lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use shared_auth::keys::{now_seconds, read_legacy_dir, KeyEntry, KeyError, KeyRing, StoredKey, TokenSigner};
use sqlx::AnyPool;

/// How often a replica re-reads the keys. Rotation's publication delay (minutes) is far longer.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The prefix of a sealed row.
const SEALED: &str = "sealed:v1:";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the signing keys table: {0}")]
    Database(#[from] sqlx::Error),
    #[error("key {kid} is sealed under key-encryption key {kek}, which TESSERA_KEY_ENCRYPTION_KEY does not hold (keep the old key after the new one until every row is sealed again)")]
    UnknownKek { kid: String, kek: String },
    #[error("key {kid} does not open under its key-encryption key: the row was changed or moved from another key")]
    Tampered { kid: String },
    #[error("TESSERA_KEY_ENCRYPTION_KEY holds no key")]
    NoKek,
    #[error("the system has no randomness to seal a key")]
    NoRandomness,
    #[error(transparent)]
    Secret(#[from] tessera_fragment::secrets::SecretError),
}

/// One key-encryption key: its public id (a digest, which tells nothing of it) and the AEAD key derived
/// from it.
struct Kek {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens the private keys with the key-encryption keys (see the module docs). The first key
/// seals; every key opens.
pub struct Sealing {
    keks: Vec<Kek>,
}

impl Sealing {
    /// From the configured (or generated) values of `TESSERA_KEY_ENCRYPTION_KEY`, first one first.
    pub fn new(secrets: &[Vec<u8>]) -> Result<Sealing, KeysError> {
        let keks: Vec<Kek> = secrets
            .iter()
            .map(|secret| {
                let digest = ring::digest::digest(&ring::digest::SHA256, &[b"tessera-kek-id:".as_slice(), secret].concat());
                let id = digest.as_ref()[..8].iter().map(|byte| format!("{byte:02x}")).collect();
                let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera signing-key encryption v1").extract(secret);
                let okm = prk.expand(&[b"aes-256-gcm"], &AES_256_GCM).expect("32 bytes is within HKDF-SHA256's output");
                Kek { id, key: LessSafeKey::new(UnboundKey::from(okm)) }
            })
            .collect();
        if keks.is_empty() {
            return Err(KeysError::NoKek);
        }
        Ok(Sealing { keks })
    }

    /// The sealing of a shell with these settings: `TESSERA_KEY_ENCRYPTION_KEY`, or one generated in the
    /// data dir (enough for one process, or replicas sharing that dir).
    pub fn of(settings: &tessera_host::Settings) -> Result<Sealing, KeysError> {
        let secrets = tessera_fragment::secrets::Secrets::new(&settings.secrets, &settings.store.data_dir)?;
        Sealing::new(&secrets.key_encryption()?)
    }

    /// The row text of `kid`'s private key.
    fn seal(&self, kid: &str, pkcs8: &[u8]) -> Result<String, KeysError> {
        let kek = &self.keks[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeysError::NoRandomness)?;
        let mut sealed = pkcs8.to_vec();
        kek.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kid.as_bytes()), &mut sealed)
            .map_err(|_| KeysError::Tampered { kid: kid.to_owned() })?;
        Ok(format!("{SEALED}{}:{}", kek.id, STANDARD.encode([nonce.as_slice(), &sealed].concat())))
    }

    /// The private key of a row, and whether the row should be sealed again (in the clear, or under a
    /// key-encryption key that is not the first).
    fn open(&self, kid: &str, stored: &str) -> Result<(Vec<u8>, bool), KeysError> {
        let tampered = || KeysError::Tampered { kid: kid.to_owned() };
        let Some(rest) = stored.strip_prefix(SEALED) else {
            let pkcs8 = STANDARD.decode(stored).map_err(|_| KeyError::Stored(format!("key {kid} is neither sealed nor base64")))?;
            return Ok((pkcs8, true));
        };
        let (kek_id, body) = rest.split_once(':').ok_or_else(tampered)?;
        let Some(position) = self.keks.iter().position(|kek| kek.id == kek_id) else {
            return Err(KeysError::UnknownKek { kid: kid.to_owned(), kek: kek_id.chars().take(16).collect() });
        };
        let mut bytes = STANDARD.decode(body).map_err(|_| tampered())?;
        if bytes.len() < NONCE_LEN {
            return Err(tampered());
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| tampered())?;
        let pkcs8 = self.keks[position].key.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut sealed).map_err(|_| tampered())?;
        Ok((pkcs8.to_vec(), position != 0))
    }
}

/// A `signing_keys` row: the private key sealed (or, from an earlier release, base64 in the clear).
#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    pkcs8: String,
    created_at: i64,
    signs_from: i64,
}

async fn rows(db: &AnyPool) -> Result<Vec<KeyRow>, KeysError> {
    Ok(sqlx::query_as("SELECT kid, pkcs8, created_at, signs_from FROM signing_keys ORDER BY signs_from, kid").fetch_all(db).await?)
}

/// Every stored key, opened.
pub async fn load(db: &AnyPool, sealing: &Sealing) -> Result<Vec<StoredKey>, KeysError> {
    rows(db)
        .await?
        .into_iter()
        .map(|KeyRow { kid, pkcs8, created_at, signs_from }| {
            let (pkcs8, _) = sealing.open(&kid, &pkcs8)?;
            Ok(StoredKey { entry: KeyEntry { kid, created_at, signs_from }, pkcs8 })
        })
        .collect()
}

async fn insert(db: &AnyPool, sealing: &Sealing, key: &StoredKey) -> Result<(), KeysError> {
    sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_at, signs_from) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING")
        .bind(&key.entry.kid)
        .bind(sealing.seal(&key.entry.kid, &key.pkcs8)?)
        .bind(key.entry.created_at)
        .bind(key.entry.signs_from)
        .execute(db)
        .await?;
    Ok(())
}

/// Seals again, under the first key-encryption key, every row kept in the clear or under another one;
/// returns how many. Call it holding the shell's start-up lock.
pub async fn reseal(db: &AnyPool, sealing: &Sealing) -> Result<usize, KeysError> {
    let mut resealed = 0;
    for row in rows(db).await? {
        let (pkcs8, stale) = sealing.open(&row.kid, &row.pkcs8)?;
        if stale {
            sqlx::query("UPDATE signing_keys SET pkcs8 = $1 WHERE kid = $2 AND pkcs8 = $3")
                .bind(sealing.seal(&row.kid, &pkcs8)?)
                .bind(&row.kid)
                .bind(&row.pkcs8)
                .execute(db)
                .await?;
            resealed += 1;
        }
    }
    if resealed > 0 {
        tracing::info!(resealed, "sealed signing keys under the first TESSERA_KEY_ENCRYPTION_KEY");
    }
    Ok(resealed)
}

/// The ring of the stored keys; on an empty table, the imported file ring of `legacy_dir` or a fresh
/// key first. Call it holding the shell's start-up lock, so replicas starting together create one.
pub async fn open(db: &AnyPool, sealing: &Sealing, legacy_dir: &Path, access_ttl_seconds: i64) -> Result<KeyRing, KeysError> {
    reseal(db, sealing).await?;
    let mut stored = load(db, sealing).await?;
    if stored.is_empty() {
        let first = match read_legacy_dir(legacy_dir)? {
            Some(imported) => {
                tracing::info!(keys = imported.len(), dir = %legacy_dir.display(), "importing the key ring from the data dir into the database");
                imported
            }
            None => vec![StoredKey::generate(0)?],
        };
        for key in &first {
            insert(db, sealing, key).await?;
        }
        stored = load(db, sealing).await?;
    }
    Ok(KeyRing::new(&stored, access_ttl_seconds)?)
}

/// Adds a key that starts signing `publish_delay_seconds` from now. Every replica publishes it within
/// [`FOLLOW_EVERY`].
pub async fn rotate(db: &AnyPool, sealing: &Sealing, publish_delay_seconds: i64) -> Result<KeyEntry, KeysError> {
    let key = StoredKey::generate(now_seconds() + publish_delay_seconds.max(0))?;
    insert(db, sealing, &key).await?;
    Ok(key.entry)
}

/// What `keys rotate` tells the operator.
pub fn describe_rotation(entry: &KeyEntry) -> String {
    format!("new key {} is published by every shell replica within {} s and signs from {} (unix time)", entry.kid, FOLLOW_EVERY.as_secs(), entry.signs_from)
}

/// Keeps `signer`'s ring equal to the table, until the task is aborted.
pub fn follow(db: AnyPool, sealing: Arc<Sealing>, signer: Arc<TokenSigner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(FOLLOW_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reloaded = match load(&db, &sealing).await {
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
