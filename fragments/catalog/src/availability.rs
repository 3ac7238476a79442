//! The availability projection: what inventory said about each SKU, applied once per event and never
//! overwritten by an older event of the same SKU.

use sqlx::AnyConnection;
use tessera_contracts::events::{Envelope, StockChanged};
use tessera_fragment::subscriptions::HandlerError;

/// Applies `inventory.stock_changed` on the event's transaction (which also holds its inbox row).
pub async fn apply_stock_changed(tx: &mut AnyConnection, envelope: &Envelope, event: &StockChanged) -> Result<(), HandlerError> {
    if event.on_hand < 0 || event.available < 0 || event.sku.as_str() != envelope.aggregate_id {
        return Err(HandlerError::Refused(format!("the {} payload is malformed: inconsistent stock figures", envelope.event_type)));
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
    .bind(tessera_fragment::db::now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
