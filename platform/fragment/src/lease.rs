//! Named leases in a fragment's database: mutual exclusion between the instances of one fragment, which
//! share that database (and between tasks of one instance).
//!
//! A lease is a row `(name, holder, until_ms)`. Taking it is one conditional upsert — it succeeds when
//! nobody holds the name or the holder's time has run out — so it works the same on SQLite and PostgreSQL
//! and needs no connection held while the work runs (a cart's lock is held across a call to inventory;
//! an open transaction or a session lock would pin a pooled connection for that long). A holder that dies
//! loses the lease when its time runs out; one that finishes deletes it. Work done under a lease still
//! changes state with conditional statements: the lease keeps instances from doing the same work at the
//! same time, the conditions keep an expired lease from doing harm.

use std::time::Duration;

use sqlx::AnyPool;

use crate::db::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0} is held by someone else and was not released in time")]
    Busy(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A lease this task holds. Dropping it releases it in the background; [`Lease::release`] does it now.
/// While held it is renewed in the background ([`Lease::kept`]), so work that takes longer than its
/// time (a slow inventory) does not lose it half-way; a holder that dies stops renewing.
#[derive(Debug)]
pub struct Lease {
    db: AnyPool,
    name: String,
    holder: String,
    released: bool,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Takes `name` for `ttl` if nobody holds it (or its holder's time has run out).
    pub async fn try_take(db: &AnyPool, name: &str, ttl: Duration) -> Result<Option<Lease>, sqlx::Error> {
        let holder = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms WHERE leases.until_ms < $4",
        )
        .bind(name)
        .bind(&holder)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(db)
        .await?;
        Ok((taken.rows_affected() == 1).then(|| Lease { db: db.clone(), name: name.to_owned(), holder, released: false, renewal: None }))
    }

    /// Takes `name` for `ttl`, waiting (polling, a few milliseconds at first) up to `wait` for its holder.
    pub async fn take(db: &AnyPool, name: &str, ttl: Duration, wait: Duration) -> Result<Lease, LeaseError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(lease) = Lease::try_take(db, name, ttl).await? {
                return Ok(lease);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(LeaseError::Busy(name.to_owned()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Renews the lease every third of `ttl` until it is released or dropped.
    pub fn kept(mut self, ttl: Duration) -> Lease {
        let (db, name, holder) = (self.db.clone(), self.name.clone(), self.holder.clone());
        self.renewal = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let renewed = sqlx::query("UPDATE leases SET until_ms = $1 WHERE name = $2 AND holder = $3")
                    .bind(now_ms() + ttl.as_millis() as i64)
                    .bind(&name)
                    .bind(&holder)
                    .execute(&db)
                    .await;
                match renewed {
                    Ok(done) if done.rows_affected() == 1 => {}
                    Ok(_) => {
                        tracing::warn!(lease = name, "a lease ran out before it was renewed");
                        return;
                    }
                    Err(error) => tracing::warn!(lease = name, %error, "could not renew a lease; trying again"),
                }
            }
        }));
        self
    }

    /// Whether this holder still has the lease as far as it knows: renewed in time ([`Lease::kept`]).
    /// A lease whose renewal found it taken over is lost, and work under it should stop.
    pub fn is_held(&self) -> bool {
        !self.released && self.renewal.as_ref().is_none_or(|renewal| !renewal.is_finished())
    }

    fn stop_renewing(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }

    /// Gives the lease back.
    pub async fn release(mut self) {
        self.stop_renewing();
        self.released = true;
        if let Err(error) = delete(&self.db, &self.name, &self.holder).await {
            tracing::warn!(lease = self.name, %error, "could not release a lease; it runs out by itself");
        }
    }
}

async fn delete(db: &AnyPool, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2").bind(name).bind(holder).execute(db).await.map(drop)
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.released {
            return;
        }
        // Dropped on an early return or a cancelled request: release without making the caller wait.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (db, name, holder) = (self.db.clone(), std::mem::take(&mut self.name), std::mem::take(&mut self.holder));
            handle.spawn(async move {
                let _ = delete(&db, &name, &holder).await;
            });
        }
    }
}

/// Runs one pass of a periodic job (a sweeper) that every instance schedules every `period`: the first
/// instance to come to it in a period takes the job's lease for nine tenths of the period and runs the
/// pass, renewing the lease while the pass runs; the others skip it. After the pass the lease is left to
/// run out rather than released, so the job runs about once per period across all instances, never
/// twice at once; when the instance that ran it dies, another takes the next period. Returns `None`
/// when this instance skipped.
pub async fn once_per_period<T, F>(db: &AnyPool, job: &str, period: Duration, pass: F) -> Result<Option<T>, sqlx::Error>
where
    F: std::future::Future<Output = T>,
{
    let ttl = period * 9 / 10;
    let Some(lease) = Lease::try_take(db, &format!("job:{job}"), ttl).await? else {
        return Ok(None);
    };
    let mut lease = lease.kept(ttl);
    let result = pass.await;
    lease.stop_renewing();
    lease.released = true;
    Ok(Some(result))
}
