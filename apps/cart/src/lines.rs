//! Cart lines: the cart page, its server functions and queries.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use shared_auth::SessionUser;
use tessera_contracts::cart::CartSummary;
use tessera_contracts::ApiError;

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: String,
    pub quantity: i64,
}

/// What the cart page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    pub user: Option<SessionUser>,
    pub lines: Vec<CartLine>,
}

/// The signed-in user's cart; anonymous visitors get an empty view without a user.
#[server(prefix = "/cart/api", endpoint = "my_cart")]
pub async fn my_cart() -> Result<CartView, ApiError> {
    let runtime = tessera_kit::use_runtime()?;
    let Some(user) = shared_auth::extract::current_user().await else {
        return Ok(CartView { user: None, lines: Vec::new() });
    };
    let lines = queries::lines(&runtime.db, &user.id).await.map_err(tessera_kit::internal)?;
    Ok(CartView { user: Some(user), lines })
}

/// Adds `quantity` of `sku` to the signed-in user's cart (the typed API the catalog calls).
#[server(prefix = "/cart/api", endpoint = "add_item")]
pub async fn add_item(sku: String, quantity: i64) -> Result<CartSummary, ApiError> {
    use tessera_contracts::domain::{Quantity, Sku};
    let user = shared_auth::extract::require_user().await?;
    let sku = Sku::parse(&sku).map_err(ApiError::BadRequest)?;
    let quantity = Quantity::parse(quantity).map_err(ApiError::BadRequest)?;
    let runtime = tessera_kit::use_runtime()?;
    queries::add(&runtime.db, &user.id, &sku, quantity).await?;
    let item_count = queries::item_count(&runtime.db, &user.id).await.map_err(tessera_kit::internal)?;
    Ok(CartSummary { item_count })
}

/// Sets the quantity of a line; 0 removes it. Returns the updated lines.
#[server(prefix = "/cart/api", endpoint = "set_quantity")]
pub async fn set_quantity(sku: String, quantity: i64) -> Result<Vec<CartLine>, ApiError> {
    use tessera_contracts::domain::{Quantity, Sku};
    let user = shared_auth::extract::require_user().await?;
    let sku = Sku::parse(&sku).map_err(ApiError::BadRequest)?;
    let runtime = tessera_kit::use_runtime()?;
    if quantity == 0 {
        queries::remove(&runtime.db, &user.id, &sku).await.map_err(tessera_kit::internal)?;
    } else {
        let quantity = Quantity::parse(quantity).map_err(ApiError::BadRequest)?;
        queries::set(&runtime.db, &user.id, &sku, quantity).await?;
    }
    queries::lines(&runtime.db, &user.id).await.map_err(tessera_kit::internal)
}

#[cfg(feature = "ssr")]
pub mod queries {
    use sqlx::AnyPool;
    use tessera_contracts::domain::{Quantity, Sku};
    use tessera_contracts::ApiError;
    use tessera_kit::db::now_seconds;

    use super::CartLine;

    pub async fn lines(db: &AnyPool, user_id: &str) -> Result<Vec<CartLine>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT sku, quantity FROM cart_lines WHERE user_id = $1 ORDER BY sku")
                .bind(user_id)
                .fetch_all(db)
                .await?;
        Ok(rows.into_iter().map(|(sku, quantity)| CartLine { sku, quantity }).collect())
    }

    pub async fn item_count(db: &AnyPool, user_id: &str) -> Result<i64, sqlx::Error> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM cart_lines WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(db)
                .await?;
        Ok(count)
    }

    /// Adds to a line, refusing (409, nothing changed) when the line would exceed the maximum quantity.
    pub async fn add(db: &AnyPool, user_id: &str, sku: &Sku, quantity: Quantity) -> Result<(), ApiError> {
        let mut tx = db.begin().await.map_err(tessera_kit::internal)?;
        let current: Option<(i64,)> = sqlx::query_as("SELECT quantity FROM cart_lines WHERE user_id = $1 AND sku = $2")
            .bind(user_id)
            .bind(sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(tessera_kit::internal)?;
        let total = current.map(|(q,)| q).unwrap_or(0) + quantity.get();
        if total > Quantity::MAX {
            return Err(ApiError::Conflict(format!(
                "you can have at most {} of {sku} in your cart",
                Quantity::MAX
            )));
        }
        sqlx::query(
            "INSERT INTO cart_lines (user_id, sku, quantity, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, sku) DO UPDATE SET quantity = excluded.quantity, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(sku.as_str())
        .bind(total)
        .bind(now_seconds())
        .execute(&mut *tx)
        .await
        .map_err(tessera_kit::internal)?;
        tx.commit().await.map_err(tessera_kit::internal)
    }

    /// Sets an existing line's quantity; 404 when the user has no such line.
    pub async fn set(db: &AnyPool, user_id: &str, sku: &Sku, quantity: Quantity) -> Result<(), ApiError> {
        let result = sqlx::query("UPDATE cart_lines SET quantity = $1, updated_at = $2 WHERE user_id = $3 AND sku = $4")
            .bind(quantity.get())
            .bind(now_seconds())
            .bind(user_id)
            .bind(sku.as_str())
            .execute(db)
            .await
            .map_err(tessera_kit::internal)?;
        if result.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("{sku} is not in your cart")));
        }
        Ok(())
    }

    pub async fn remove(db: &AnyPool, user_id: &str, sku: &Sku) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cart_lines WHERE user_id = $1 AND sku = $2")
            .bind(user_id)
            .bind(sku.as_str())
            .execute(db)
            .await?;
        Ok(())
    }
}

/// The cart page: the user's lines with quantity buttons.
#[component]
pub fn CartPage() -> impl IntoView {
    let cart = Resource::new(|| (), |_| my_cart());
    view! {
        <section class="cart">
            <h1>"Your cart"</h1>
            <Suspense fallback=|| view! { <p>"Loading your cart…"</p> }>
                {move || cart.get().map(|result| match result {
                    Ok(CartView { user: Some(user), lines }) => view! {
                        <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{user.name}</strong></p>
                        <CartLines initial=lines/>
                    }.into_any(),
                    Ok(CartView { user: None, .. }) => view! {
                        <p class="signed-in" data-testid="fragment-user">"Browsing as a guest"</p>
                        <p><a href="/login?next=/cart" rel="external">"Sign in"</a>" to see your cart."</p>
                    }.into_any(),
                    Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn CartLines(initial: Vec<CartLine>) -> impl IntoView {
    let (lines, set_lines) = signal(initial);
    let (message, set_message) = signal(None::<String>);
    let change = move |sku: String, quantity: i64| {
        leptos::task::spawn_local(async move {
            match set_quantity(sku, quantity).await {
                Ok(updated) => {
                    let count = updated.iter().map(|line| line.quantity).sum::<i64>();
                    set_lines.set(updated);
                    set_message.set(None);
                    tessera_contracts::dom_events::announce_cart_count(count);
                }
                Err(error) => set_message.set(Some(error.to_string())),
            }
        });
    };
    view! {
        <Show when=move || !lines.get().is_empty() fallback=|| view! { <p data-testid="cart-empty">"Your cart is empty."</p> }>
            <table class="cart-lines" data-testid="cart-lines">
                <thead><tr><th>"SKU"</th><th>"Quantity"</th><th></th></tr></thead>
                <tbody>
                    <For each=move || lines.get() key=|line| (line.sku.clone(), line.quantity) let:line>
                        {
                            let (minus_sku, plus_sku, remove_sku) = (line.sku.clone(), line.sku.clone(), line.sku.clone());
                            let quantity = line.quantity;
                            view! {
                                <tr data-sku=line.sku.clone()>
                                    <td>{line.sku.clone()}</td>
                                    <td>
                                        <button type="button" aria-label="one less" on:click=move |_| change(minus_sku.clone(), quantity - 1)>"−"</button>
                                        <span class="quantity" data-testid="quantity">{quantity}</span>
                                        <button type="button" aria-label="one more" on:click=move |_| change(plus_sku.clone(), quantity + 1)>"+"</button>
                                    </td>
                                    <td><button type="button" class="link" on:click=move |_| change(remove_sku.clone(), 0)>"Remove"</button></td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
        </Show>
        <p class="error" role="status">{move || message.get()}</p>
    }
}
