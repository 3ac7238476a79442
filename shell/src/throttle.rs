//! Sign-in throttling, per account and per client address, kept in the shell's database so it holds
//! across restarts and shell replicas.
//!
//! After too many failures inside the window, further attempts get the same generic "too many attempts"
//! answer (even with the right password) until old failures leave the window; a success clears the
//! account's failures. Unknown accounts are counted like real ones, so the answer reveals nothing.

use sqlx::AnyPool;

#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub window_seconds: i64,
    pub max_failures_per_account: i64,
    pub max_failures_per_address: i64,
}

fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

async fn failures(db: &AnyPool, key: &str, since: i64) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM login_failures WHERE throttle_key = $1 AND failed_at > $2").bind(key).bind(since).fetch_one(db).await?;
    Ok(count)
}

/// Whether a sign-in for `email` from `address` must wait.
pub async fn is_throttled(db: &AnyPool, settings: &ThrottleSettings, email: &str, address: Option<&str>, now: i64) -> Result<bool, sqlx::Error> {
    let since = now - settings.window_seconds;
    if failures(db, &account_key(email), since).await? >= settings.max_failures_per_account {
        return Ok(true);
    }
    match address {
        Some(address) => Ok(failures(db, &address_key(address), since).await? >= settings.max_failures_per_address),
        None => Ok(false),
    }
}

/// Records a failed sign-in and forgets failures older than the window.
pub async fn record_failure(db: &AnyPool, settings: &ThrottleSettings, email: &str, address: Option<&str>, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let keys = [Some(account_key(email)), address.map(address_key)];
    for key in keys.into_iter().flatten() {
        sqlx::query("INSERT INTO login_failures (throttle_key, failed_at) VALUES ($1, $2)").bind(key).bind(now).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1").bind(now - settings.window_seconds).execute(&mut *tx).await?;
    tx.commit().await
}

/// Forgets an account's failures after a successful sign-in.
pub async fn clear_account(db: &AnyPool, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1").bind(account_key(email)).execute(db).await?;
    Ok(())
}
