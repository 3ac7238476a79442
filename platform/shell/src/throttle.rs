//! Sign-in throttling, kept in the shell's database so it holds across restarts and shell replicas.
//!
//! Three counts of failed sign-ins inside a window, each with its own limit:
//! - **per account and client address** (`login_max_failures_per_account`, 5): guessing one account's
//!   password from one place. Over it, that account from that address waits — even with the right
//!   password, so the answer tells a guesser nothing;
//! - **per account, from every address** (`login_max_failures_per_account_total`, 50): one account guessed
//!   from many addresses;
//! - **per client address, over every account** (`login_max_failures_per_address`, 50): password spraying,
//!   one password tried against many accounts.
//!
//! And one count of successful sign-ins, **per account** (`login_max_per_account`, 30): each costs a
//! password hash, so a client looping correct sign-ins would otherwise hash without end (the hashing
//! turns are also shared fairly between clients, `crate::users::Hashing`).
//!
//! The last two must not lock out people who did nothing wrong: the account's owner while strangers guess
//! at it, or everyone behind one proxy or NAT address after one of them sprayed. So they bind only pairs of
//! account and address that are *not known*: a pair is known once its account signed in successfully from
//! its address (within 30 days). A known pair is limited by its own failures only. A guesser gains nothing
//! from this — to be known, a pair needed the right password — and the account's owner keeps getting in
//! from where they always do, while a new place has to wait like any stranger.
//!
//! **Attempts are counted before the password is checked.** Each attempt writes its rows (one per count)
//! first, committed, and only then counts — its own row included — so of any number of parallel attempts
//! at most the limit's worth see a count within it and reach the (deliberately slow) password check. An
//! attempt that is refused takes its rows back (waiting must not extend the wait); one that fails leaves
//! them as failures; one that succeeds takes them back, forgets its pair's failures and makes the pair
//! known. Unknown accounts are counted like real ones, so no answer reveals which emails exist.

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThrottleSettings {
    /// The window failures are counted in (`TESSERA_LOGIN_THROTTLE_WINDOW_SECONDS`).
    #[serde(rename = "login_throttle_window_seconds")]
    pub window_seconds: i64,
    /// Registrations from one address (each hashes a password; the answer to a taken email tells that
    /// the account exists, so this also bounds how fast emails can be tried;
    /// `TESSERA_REGISTRATION_MAX_PER_ADDRESS`).
    #[serde(rename = "registration_max_per_address")]
    pub max_registrations_per_address: i64,
    /// Failures of one account from one address (`TESSERA_LOGIN_MAX_FAILURES_PER_ACCOUNT`).
    #[serde(rename = "login_max_failures_per_account")]
    pub max_failures_per_account: i64,
    /// Failures of one account from every address (binds pairs that are not known;
    /// `TESSERA_LOGIN_MAX_FAILURES_PER_ACCOUNT_TOTAL`).
    #[serde(rename = "login_max_failures_per_account_total")]
    pub max_failures_per_account_total: i64,
    /// Failures from one address over every account (binds pairs that are not known;
    /// `TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS`).
    #[serde(rename = "login_max_failures_per_address")]
    pub max_failures_per_address: i64,
    /// Successful sign-ins of one account within the window (`TESSERA_LOGIN_MAX_PER_ACCOUNT`); past it
    /// even the right password waits.
    #[serde(rename = "login_max_per_account")]
    pub max_sign_ins_per_account: i64,
    /// Requests to the OpenID Connect provider's `/oauth/authorize` within the window, per client address
    /// and per session (each may store a code; `TESSERA_OAUTH_AUTHORIZE_MAX_PER_WINDOW`).
    #[serde(rename = "oauth_authorize_max_per_window")]
    pub authorize_max_per_window: i64,
    /// Password hashes (sign-in checks, registrations, password changes) running at once; 0: one per
    /// core (`TESSERA_PASSWORD_HASHES_AT_ONCE`). Past it requests wait up to 2 s for a turn, then get 503
    /// with `Retry-After`.
    pub password_hashes_at_once: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            window_seconds: 900,
            max_registrations_per_address: 20,
            max_failures_per_account: 5,
            max_failures_per_account_total: 50,
            max_failures_per_address: 50,
            max_sign_ins_per_account: 30,
            authorize_max_per_window: 120,
            password_hashes_at_once: 0,
        }
    }
}

/// How long a successful sign-in keeps its pair of account and address known.
const KNOWN_FOR_SECONDS: i64 = 30 * 24 * 3600;

/// The address a limit counts a client under: an IPv4 address as it is, an IPv6 address by its /64 (one
/// host or home network is given a whole /64, so counting single IPv6 addresses would let it take 2^64
/// turns).
pub fn bucket(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                let network = std::net::Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0);
                format!("{network}/64")
            }
        },
    }
}

fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn sign_ins_key(email: &str) -> String {
    format!("signed-in:{}", email.trim().to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

fn pair_key(email: &str, address: Option<&str>) -> String {
    format!("pair:{}|{}", email.trim().to_lowercase(), address.unwrap_or("-"))
}

/// A sign-in attempt that may check its password; say how it ended with [`Attempt::succeeded`] or
/// [`Attempt::failed`].
#[derive(Debug)]
pub struct Attempt {
    id: String,
    pair: String,
    sign_ins: String,
}

async fn failures(db: &AnyPool, key: &str, since: i64) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM login_failures WHERE throttle_key = $1 AND failed_at > $2").bind(key).bind(since).fetch_one(db).await?;
    Ok(count)
}

async fn is_known(db: &AnyPool, pair: &str, now: i64) -> Result<bool, sqlx::Error> {
    let (known,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM login_known WHERE pair_key = $1 AND succeeded_at > $2")
        .bind(pair)
        .bind(now - KNOWN_FOR_SECONDS)
        .fetch_one(db)
        .await?;
    Ok(known > 0)
}

async fn take_back(db: &AnyPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE attempt = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Counts a sign-in for `email` from `address` and says whether it may check its password (`None`: it
/// must wait). See the module docs for the counts and why the attempt is counted first.
pub async fn attempt(db: &AnyPool, settings: &ThrottleSettings, email: &str, address: Option<&str>, now: i64) -> Result<Option<Attempt>, sqlx::Error> {
    let attempt = Attempt { id: uuid::Uuid::new_v4().to_string(), pair: pair_key(email, address), sign_ins: sign_ins_key(email) };
    let account = account_key(email);
    let address = address.map(address_key);
    let mut tx = db.begin().await?;
    for key in [Some(&attempt.pair), Some(&account), address.as_ref()].into_iter().flatten() {
        sqlx::query("INSERT INTO login_failures (throttle_key, failed_at, attempt) VALUES ($1, $2, $3)")
            .bind(key)
            .bind(now)
            .bind(&attempt.id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let since = now - settings.window_seconds;
    let mut over = failures(db, &attempt.pair, since).await? > settings.max_failures_per_account
        || failures(db, &attempt.sign_ins, since).await? >= settings.max_sign_ins_per_account;
    if !over && !is_known(db, &attempt.pair, now).await? {
        over = failures(db, &account, since).await? > settings.max_failures_per_account_total;
        if let (false, Some(address)) = (over, &address) {
            over = failures(db, address, since).await? > settings.max_failures_per_address;
        }
    }
    if over {
        take_back(db, &attempt.id).await?;
        return Ok(None);
    }
    Ok(Some(attempt))
}

impl Attempt {
    /// The password was right: the attempt is not a failure, the pair's failures are forgotten and the
    /// pair is known from now on.
    pub async fn succeeded(self, db: &AnyPool, now: i64) -> Result<(), sqlx::Error> {
        let mut tx = db.begin().await?;
        sqlx::query("DELETE FROM login_failures WHERE attempt = $1 OR throttle_key = $2").bind(&self.id).bind(&self.pair).execute(&mut *tx).await?;
        // Counted among the account's sign-ins of the window (a row of the same table, kept as long).
        sqlx::query("INSERT INTO login_failures (throttle_key, failed_at, attempt) VALUES ($1, $2, $3)")
            .bind(&self.sign_ins)
            .bind(now)
            .bind(&self.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO login_known (pair_key, succeeded_at) VALUES ($1, $2) ON CONFLICT (pair_key) DO UPDATE SET succeeded_at = excluded.succeeded_at",
        )
        .bind(&self.pair)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The password was wrong: the attempt's rows stay, as failures; failures older than the window go.
    pub async fn failed(self, db: &AnyPool, settings: &ThrottleSettings, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1").bind(now - settings.window_seconds).execute(db).await?;
        Ok(())
    }

    /// The check could not run (a database error): the attempt counts for nothing.
    pub async fn abandoned(self, db: &AnyPool) -> Result<(), sqlx::Error> {
        take_back(db, &self.id).await
    }
}

/// One of something else limited per key within the window — registrations per address, wrong current
/// passwords per account — counted first, as sign-ins are, so parallel requests cannot pass the limit.
#[derive(Debug)]
pub struct Counted {
    id: String,
}

/// Counts one more under `key` and says whether it is within `limit` (`None`: over it, not counted).
pub async fn count(db: &AnyPool, settings: &ThrottleSettings, key: &str, limit: i64, now: i64) -> Result<Option<Counted>, sqlx::Error> {
    let counted = Counted { id: uuid::Uuid::new_v4().to_string() };
    sqlx::query("INSERT INTO login_failures (throttle_key, failed_at, attempt) VALUES ($1, $2, $3)").bind(key).bind(now).bind(&counted.id).execute(db).await?;
    if failures(db, key, now - settings.window_seconds).await? > limit {
        take_back(db, &counted.id).await?;
        return Ok(None);
    }
    sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1").bind(now - settings.window_seconds).execute(db).await?;
    Ok(Some(counted))
}

impl Counted {
    /// It does not count after all (the current password was right; no turn to hash was free).
    pub async fn take_back(self, db: &AnyPool) -> Result<(), sqlx::Error> {
        take_back(db, &self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_ones_by_address() {
        let v6 = |text: &str| bucket(text.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"), v6("2001:db8:1:2::9"), "one /64, one bucket");
        assert_ne!(v6("2001:db8:1:3::1"), v6("2001:db8:1:2::1"));
        assert_eq!(v6("203.0.113.7"), "203.0.113.7");
        assert_eq!(v6("::ffff:203.0.113.7"), "203.0.113.7", "an IPv4 client on a dual-stack socket");
    }
}
