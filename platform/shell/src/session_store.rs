//! Sessions and their rotating refresh tokens (OAuth 2.0 Security BCP: rotation with reuse detection).
//!
//! A refresh token is 32 random bytes, sent once in an HttpOnly cookie and stored only as its SHA-256
//! hash. Each use marks it used and issues the next one of the same session. A used token presented again
//! within [`SessionSettings::reuse_grace_seconds`] is a concurrent request of the same browser (two
//! requests raced with the same cookie) and gets an access token only; presented later, it is a replay:
//! the whole session is revoked and the event logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;

pub use shared_auth::keys::now_seconds;

/// Session lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSettings {
    /// Absolute lifetime of a session (and of its refresh cookie), its refresh tokens rotating within it
    /// (`TESSERA_SESSION_TTL_SECONDS`).
    pub session_ttl_seconds: i64,
    /// How long after its use a refresh token still counts as "the same browser racing itself"
    /// (`TESSERA_REFRESH_REUSE_GRACE_SECONDS`); presented again later, it revokes the session.
    #[serde(rename = "refresh_reuse_grace_seconds")]
    pub reuse_grace_seconds: i64,
    /// Days a session that ended (signed out, revoked, expired) is kept, with its refresh tokens
    /// (`TESSERA_SESSIONS_RETENTION_DAYS`).
    pub sessions_retention_days: i64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings { session_ttl_seconds: 30 * 24 * 3600, reuse_grace_seconds: 10, sessions_retention_days: 7 }
    }
}

/// Longest refresh token looked up (ours are 43 characters).
const MAX_REFRESH_TOKEN_LEN: usize = 128;

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("system randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A session just created: its id (the `sid` claim) and first refresh token.
pub struct NewSession {
    pub id: String,
    pub refresh_token: String,
}

/// Starts a session for `user_id`.
pub async fn create(db: &AnyPool, settings: &SessionSettings, user_id: &str, user_agent: &str, now: i64) -> Result<NewSession, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let refresh_token = new_token();
    let user_agent: String = user_agent.chars().filter(|c| !c.is_control()).take(200).collect();
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, user_agent) VALUES ($1, $2, $3, $3, $4, $5)")
        .bind(&id)
        .bind(user_id)
        .bind(now)
        .bind(now + settings.session_ttl_seconds)
        .bind(&user_agent)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
        .bind(hash(&refresh_token))
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(NewSession { id, refresh_token })
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// A new access token may be issued; `refresh_token` is the next one (none for a concurrent reuse).
    Rotated { session_id: String, user_id: String, refresh_token: Option<String> },
    /// Unknown, expired or revoked.
    Invalid,
    /// A used token was replayed: the session is now revoked.
    Replayed { session_id: String },
}

/// Rotates a refresh token.
pub async fn rotate(db: &AnyPool, settings: &SessionSettings, token: &str, now: i64) -> Result<Refresh, sqlx::Error> {
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_LEN {
        return Ok(Refresh::Invalid);
    }
    let token_hash = hash(token);
    /// A refresh token with the session it belongs to.
    #[derive(sqlx::FromRow)]
    struct TokenRow {
        session_id: String,
        used_at: Option<i64>,
        user_id: String,
        revoked_at: Option<i64>,
        expires_at: i64,
    }
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT t.session_id, t.used_at, s.user_id, s.revoked_at, s.expires_at \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
    )
    .bind(&token_hash)
    .fetch_optional(db)
    .await?;
    let Some(TokenRow { session_id, used_at, user_id, revoked_at, expires_at }) = row else {
        return Ok(Refresh::Invalid);
    };
    if revoked_at.is_some() || expires_at <= now {
        return Ok(Refresh::Invalid);
    }
    if let Some(used_at) = used_at {
        if now - used_at <= settings.reuse_grace_seconds {
            return Ok(Refresh::Rotated { session_id, user_id, refresh_token: None });
        }
        revoke(db, &session_id, "refresh token replayed").await?;
        tracing::warn!(session = %session_id, user = %user_id, "a used refresh token was replayed; the session is revoked");
        return Ok(Refresh::Replayed { session_id });
    }
    let next = new_token();
    let mut tx = db.begin().await?;
    let claimed =
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL").bind(now).bind(&token_hash).execute(&mut *tx).await?;
    if claimed.rows_affected() == 0 {
        // Another request rotated it a moment ago: same browser, same cookie.
        tx.rollback().await?;
        return Ok(Refresh::Rotated { session_id, user_id, refresh_token: None });
    }
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
        .bind(hash(&next))
        .bind(&session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2").bind(now).bind(&session_id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Refresh::Rotated { session_id, user_id, refresh_token: Some(next) })
}

/// What the shell needs to know about the session of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub active: bool,
    /// Access tokens issued before this are stale (the user's roles changed).
    pub roles_changed_at: i64,
    /// When the session ends at the latest.
    pub expires_at: i64,
}

/// The session `session_id` of user `user_id`; `None` when there is none (or it is another user's: a
/// token whose `sub` and `sid` disagree is not a session of anyone).
pub async fn status(db: &AnyPool, session_id: &str, user_id: &str, now: i64) -> Result<Option<SessionStatus>, sqlx::Error> {
    let row: Option<(Option<i64>, i64, i64)> = sqlx::query_as(
        "SELECT s.revoked_at, s.expires_at, u.roles_changed_at FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.user_id = $2",
    )
    .bind(session_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(revoked_at, expires_at, roles_changed_at)| SessionStatus { active: revoked_at.is_none() && expires_at > now, roles_changed_at, expires_at }))
}

/// When session `session_id` started and when it ends at the latest (`None`: there is no such session).
pub async fn lifetime(db: &AnyPool, session_id: &str) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT created_at, expires_at FROM sessions WHERE id = $1").bind(session_id).fetch_optional(db).await
}

/// Ends one session.
pub async fn revoke(db: &AnyPool, session_id: &str, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
        .bind(now_seconds())
        .bind(reason)
        .bind(session_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends every session of a user; returns how many were active.
pub async fn revoke_all(db: &AnyPool, user_id: &str, reason: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL")
        .bind(now_seconds())
        .bind(reason)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(result.rows_affected())
}

/// Ends a session only if it belongs to `user_id`; `false` when there is no such session of theirs.
pub async fn revoke_own(db: &AnyPool, user_id: &str, session_id: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'signed out from the account page' \
         WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now_seconds())
    .bind(session_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// An active session, for the account page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub user_agent: String,
}

pub async fn list_active(db: &AnyPool, user_id: &str, now: i64) -> Result<Vec<SessionInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, last_seen_at, user_agent FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY last_seen_at DESC",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
}

/// How long a used refresh token of a live session is kept. Presented again within it, it revokes the
/// session as a replay; once deleted, it is only an unknown token (refused, signing nobody in), so the
/// theft signal of a very old token is what pruning gives up.
const USED_TOKENS_KEPT_SECONDS: i64 = 24 * 3600;
/// How long a pair of account and address stays known after its last sign-in (`crate::throttle`).
const KNOWN_PAIRS_KEPT_SECONDS: i64 = 30 * 24 * 3600;

/// What [`prune`] deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub sign_in_records: u64,
}

/// Deletes sessions that ended (revoked or expired) more than `keep_seconds` before `now`, with their
/// refresh tokens; used refresh tokens of live sessions older than a day; sign-in failures past the
/// longest throttle window and pairs of account and address no longer known.
pub async fn prune(db: &AnyPool, now: i64, keep_seconds: i64, throttle_window_seconds: i64) -> Result<Pruned, sqlx::Error> {
    let ended_before = now - keep_seconds;
    let ended = "SELECT id FROM sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)";
    let mut tx = db.begin().await?;
    let mut refresh_tokens =
        sqlx::query(&format!("DELETE FROM refresh_tokens WHERE session_id IN ({ended})")).bind(ended_before).execute(&mut *tx).await?.rows_affected();
    let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)")
        .bind(ended_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    refresh_tokens += sqlx::query("DELETE FROM refresh_tokens WHERE used_at IS NOT NULL AND used_at < $1")
        .bind(now - USED_TOKENS_KEPT_SECONDS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let mut sign_in_records =
        sqlx::query("DELETE FROM login_failures WHERE failed_at < $1").bind(now - throttle_window_seconds).execute(&mut *tx).await?.rows_affected();
    sign_in_records +=
        sqlx::query("DELETE FROM login_known WHERE succeeded_at < $1").bind(now - KNOWN_PAIRS_KEPT_SECONDS).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(Pruned { sessions, refresh_tokens, sign_in_records })
}
