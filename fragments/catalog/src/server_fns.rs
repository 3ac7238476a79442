//! The catalog's server functions (`/catalog/api/*`): each checks its input and the caller, then asks `store`.

use leptos::prelude::*;
use shared_auth::SessionUser;
use tessera_contracts::ApiError;

use crate::model::{Detail, Listing, ListingQuery, ProductInput};

/// What the catalog says about stock.
pub fn availability_label(available: Option<i64>) -> (&'static str, &'static str) {
    match available {
        None => ("unknown", "Availability unknown"),
        Some(n) if n <= 0 => ("out", "Out of stock"),
        Some(n) if n < tessera_contracts::events::LOW_STOCK_BELOW => ("low", "Only a few left"),
        Some(_) => ("in", "In stock"),
    }
}

/// One page of products for the listing's filters (search, category, brand, price, attribute, stock).
#[server(prefix = "/catalog/api", endpoint = "search_products")]
pub async fn search_products(#[server(default)] query: ListingQuery) -> Result<Listing, ApiError> {
    let filters = query.validate()?;
    let runtime = tessera_fragment::use_runtime()?;
    tessera_fragment::timing::data(crate::store::listing(&runtime.db, &filters)).await.map_err(tessera_fragment::internal)
}

/// A product page's data; 404 for an unknown product.
#[server(prefix = "/catalog/api", endpoint = "product_detail")]
pub async fn product_detail(id: String) -> Result<Detail, ApiError> {
    let runtime = tessera_fragment::use_runtime()?;
    tessera_fragment::timing::data(crate::store::detail(&runtime.db, &id))
        .await
        .map_err(tessera_fragment::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no product {:?}", id.chars().take(80).collect::<String>())))
}

/// The signed-in user as this fragment sees it (verified here from the shared cookie).
#[server(prefix = "/catalog/api", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<SessionUser>, ApiError> {
    Ok(shared_auth::extract::current_user().await)
}

/// Creates (empty `id`) or edits a product (catalog editors only); announces `catalog.product_changed`.
#[server(prefix = "/catalog/api", endpoint = "save_product")]
pub async fn save_product(#[server(default)] input: ProductInput) -> Result<Detail, ApiError> {
    shared_auth::extract::require_role(shared_auth::Role::CatalogEditor).await?;
    let valid = input.validate()?;
    let runtime = tessera_fragment::use_runtime()?;
    crate::store::save(&runtime.db, &runtime.events.outbox, &valid).await?;
    crate::store::detail(&runtime.db, &valid.id).await.map_err(tessera_fragment::internal)?.ok_or(ApiError::Internal)
}
