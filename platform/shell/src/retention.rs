//! The shell's hourly pruning, in every replica (the deletes are idempotent): what it keeps of ended
//! sessions, sign-in records and the OpenID Connect provider's codes.

use sqlx::AnyPool;

use crate::session_store::{self, now_seconds, Pruned};

/// How often the shell prunes (every replica does; the deletes are idempotent).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Prunes every hour, from now on: ended sessions and old sign-in records (`session_store::prune`), and
/// the provider's codes once no replay of them can matter (`oidc::codes::prune`).
pub fn spawn_pruning(db: AnyPool, keep_seconds: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PRUNE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // The longest throttle window any setting could ask for is far below a day.
            let now = now_seconds();
            match session_store::prune(&db, now, keep_seconds, 24 * 3600).await {
                Ok(pruned) if pruned != Pruned::default() => tracing::info!(?pruned, "pruned ended sessions and old sign-in records"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "pruning sessions failed"),
            }
            if let Err(error) = crate::oidc::codes::prune(&db, now).await {
                tracing::warn!(%error, "pruning the provider's codes failed");
            }
        }
    })
}
