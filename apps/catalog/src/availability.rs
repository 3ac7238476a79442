//! The availability projection: what inventory said about each SKU, applied once per event and never
//! overwritten by an older event of the same SKU.

use sqlx::AnyPool;
use tessera_contracts::events::{DecodeError, Envelope, StockChanged};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Applies `inventory.stock_changed` in one transaction with the inbox record. Returns `false` for a
/// redelivery (nothing applied again).
pub async fn apply_stock_changed(db: &AnyPool, envelope: &Envelope, event: &StockChanged) -> Result<bool, ApplyError> {
    if event.on_hand < 0 || event.available < 0 || event.sku.is_empty() || event.sku != envelope.aggregate_id {
        return Err(DecodeError::Malformed { event_type: envelope.event_type.clone(), message: "inconsistent stock figures".into() }.into());
    }
    let mut tx = db.begin().await?;
    if !tessera_kit::events::record_in_inbox(&mut tx, envelope).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO availability (sku, on_hand, available, sequence, updated_at_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand, available = excluded.available, \
         sequence = excluded.sequence, updated_at_ms = excluded.updated_at_ms \
         WHERE availability.sequence < excluded.sequence",
    )
    .bind(&event.sku)
    .bind(event.on_hand)
    .bind(event.available)
    .bind(envelope.sequence)
    .bind(tessera_kit::events::now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
