//! Stock levels: the admin page, its server functions and queries.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use shared_auth::SessionUser;
use tessera_contracts::ApiError;

/// Stock of one SKU at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: String,
    pub location: String,
    pub on_hand: i64,
}

/// Below this many units a SKU counts as low on stock.
pub const LOW_STOCK: i64 = 5;
/// Largest single adjustment accepted, either way.
pub const MAX_ADJUSTMENT: i64 = 10_000;

/// What the admin page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockView {
    pub user: SessionUser,
    pub levels: Vec<StockLevel>,
}

/// Every stock level (inventory admins only).
#[server(prefix = "/admin/inventory/api", endpoint = "stock_levels")]
pub async fn stock_levels() -> Result<StockView, ApiError> {
    let user = shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let runtime = tessera_kit::use_runtime()?;
    let levels = queries::levels(&runtime.db).await.map_err(tessera_kit::internal)?;
    Ok(StockView { user, levels })
}

/// Receives (`delta > 0`) or removes (`delta < 0`) units of a SKU at the main location.
#[server(prefix = "/admin/inventory/api", endpoint = "adjust_stock")]
pub async fn adjust_stock(sku: String, delta: i64) -> Result<StockLevel, ApiError> {
    use tessera_contracts::domain::Sku;
    shared_auth::extract::require_role(shared_auth::Role::InventoryAdmin).await?;
    let sku = Sku::parse(&sku).map_err(ApiError::BadRequest)?;
    if delta == 0 || delta.unsigned_abs() > MAX_ADJUSTMENT.unsigned_abs() {
        return Err(ApiError::BadRequest(format!(
            "an adjustment must be between 1 and {MAX_ADJUSTMENT} units either way, not {delta}"
        )));
    }
    let runtime = tessera_kit::use_runtime()?;
    queries::adjust(&runtime.db, &runtime.events.outbox, &sku, delta).await
}

#[cfg(feature = "ssr")]
pub mod queries {
    use sqlx::{AnyConnection, AnyPool};
    use tessera_contracts::domain::Sku;
    use tessera_contracts::events::StockChanged;
    use tessera_contracts::ApiError;
    use tessera_kit::db::now_seconds;
    use tessera_kit::events::Outbox;

    use super::StockLevel;

    pub const MAIN_LOCATION: &str = "main";

    pub async fn levels(db: &AnyPool) -> Result<Vec<StockLevel>, sqlx::Error> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT sku, location, on_hand FROM stock_levels ORDER BY sku, location").fetch_all(db).await?;
        Ok(rows.into_iter().map(|(sku, location, on_hand)| StockLevel { sku, location, on_hand }).collect())
    }

    pub async fn low_stock(db: &AnyPool, below: i64) -> Result<Vec<StockLevel>, sqlx::Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT sku, location, on_hand FROM stock_levels WHERE on_hand < $1 ORDER BY on_hand, sku",
        )
        .bind(below)
        .fetch_all(db)
        .await?;
        Ok(rows.into_iter().map(|(sku, location, on_hand)| StockLevel { sku, location, on_hand }).collect())
    }

    /// `inventory.stock_changed` for a SKU's new level, into the outbox of the caller's transaction.
    pub async fn announce(connection: &mut AnyConnection, outbox: &Outbox, sku: &str, on_hand: i64) -> Result<(), sqlx::Error> {
        // Nothing is reserved yet (reservations come with checkout), so everything on hand can be sold.
        outbox.enqueue(connection, &StockChanged { sku: sku.to_owned(), on_hand, available: on_hand }).await
    }

    /// Sets a SKU's level and announces it, in one transaction.
    pub async fn set_level(db: &AnyPool, outbox: &Outbox, sku: &str, on_hand: i64) -> Result<(), sqlx::Error> {
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO stock_levels (sku, location, on_hand, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sku, location) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at",
        )
        .bind(sku)
        .bind(MAIN_LOCATION)
        .bind(on_hand)
        .bind(now_seconds())
        .execute(&mut *tx)
        .await?;
        announce(&mut tx, outbox, sku, on_hand).await?;
        tx.commit().await?;
        outbox.committed();
        Ok(())
    }

    /// Applies a delta in one statement that cannot take stock below zero, reads the new level and
    /// announces it: change and event commit together.
    pub async fn adjust(db: &AnyPool, outbox: &Outbox, sku: &Sku, delta: i64) -> Result<StockLevel, ApiError> {
        let mut tx = db.begin().await.map_err(tessera_kit::internal)?;
        let updated = sqlx::query(
            "UPDATE stock_levels SET on_hand = on_hand + $1, updated_at = $2 \
             WHERE sku = $3 AND location = $4 AND on_hand + $1 >= 0",
        )
        .bind(delta)
        .bind(now_seconds())
        .bind(sku.as_str())
        .bind(MAIN_LOCATION)
        .execute(&mut *tx)
        .await
        .map_err(tessera_kit::internal)?;
        let current: Option<(i64,)> = sqlx::query_as("SELECT on_hand FROM stock_levels WHERE sku = $1 AND location = $2")
            .bind(sku.as_str())
            .bind(MAIN_LOCATION)
            .fetch_optional(&mut *tx)
            .await
            .map_err(tessera_kit::internal)?;
        let Some((on_hand,)) = current else {
            return Err(ApiError::NotFound(format!("there is no stock record for {sku}")));
        };
        if updated.rows_affected() == 0 {
            return Err(ApiError::Conflict(format!("only {on_hand} of {sku} on hand; cannot remove {}", -delta)));
        }
        announce(&mut tx, outbox, sku.as_str(), on_hand).await.map_err(tessera_kit::internal)?;
        tx.commit().await.map_err(tessera_kit::internal)?;
        outbox.committed();
        Ok(StockLevel { sku: sku.to_string(), location: MAIN_LOCATION.to_owned(), on_hand })
    }
}

/// The stock table with receive/remove buttons.
#[component]
pub fn StockPage() -> impl IntoView {
    let stock = Resource::new(|| (), |_| stock_levels());
    view! {
        <section class="inventory">
            <h1>"Inventory"</h1>
            <Suspense fallback=|| view! { <p>"Loading stock…"</p> }>
                {move || stock.get().map(|result| match result {
                    Ok(StockView { user, levels }) => view! {
                        <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{user.name}</strong></p>
                        <StockTable initial=levels/>
                    }.into_any(),
                    Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn StockTable(initial: Vec<StockLevel>) -> impl IntoView {
    let rows = initial
        .into_iter()
        .map(|level| {
            let (on_hand, set_on_hand) = signal(level.on_hand);
            let (message, set_message) = signal(None::<String>);
            let adjust = move |sku: String, delta: i64| {
                leptos::task::spawn_local(async move {
                    match adjust_stock(sku, delta).await {
                        Ok(updated) => {
                            set_on_hand.set(updated.on_hand);
                            set_message.set(None);
                        }
                        Err(error) => set_message.set(Some(error.to_string())),
                    }
                });
            };
            let (receive_sku, remove_sku) = (level.sku.clone(), level.sku.clone());
            view! {
                <tr data-sku=level.sku.clone() class:low=move || on_hand.get() < LOW_STOCK>
                    <td>{level.sku.clone()}</td>
                    <td>{level.location.clone()}</td>
                    <td class="on-hand" data-testid="on-hand">{move || on_hand.get()}</td>
                    <td>
                        <button type="button" on:click=move |_| adjust(receive_sku.clone(), 1)>"Receive 1"</button>
                        <button type="button" on:click=move |_| adjust(remove_sku.clone(), -1)>"Remove 1"</button>
                        <span class="error" role="status">{move || message.get()}</span>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="stock" data-testid="stock-table">
            <thead><tr><th>"SKU"</th><th>"Location"</th><th>"On hand"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
