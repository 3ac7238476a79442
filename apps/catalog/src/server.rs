//! The catalog's server half: router, page handlers (404/400 pages, per-page `<head>`), generated
//! product images, migrations, demo seed, home-page widget, event inbox.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::*;
use shared_auth::extract::MaybeUser;
use shared_auth::Role;
use sqlx::migrate::Migrator;
use tessera_contracts::demo;
use tessera_contracts::events::{ProductChanged, StockChanged};
use tessera_kit::api::IntoHttpResponse;
use tessera_kit::db::Migrations;
use tessera_kit::fragment::{published, BoxFuture, Fragment, SeedError, Subscriptions};
use tessera_kit::page::PageHead;
use tessera_kit::FragmentRuntime;

use crate::availability;
use crate::model::{Detail, ListingQuery};
use crate::products::queries::{self, NewProduct};
use crate::{App, NAME, PREFIX};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The catalog's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// Seeds the demo categories and the classic products plus `extra` generated ones (the same SKUs the
/// inventory seeds), when the catalog has no categories yet. One transaction: fast, and all or nothing.
pub async fn seed_demo(runtime: &FragmentRuntime, extra: usize) -> Result<(), sqlx::Error> {
    let db = &runtime.db;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM categories").fetch_one(db).await?;
    if count > 0 {
        return Ok(());
    }
    let postgres = queries::is_postgres(db);
    let mut tx = db.begin().await?;
    for (position, (slug, name, parent)) in demo::CATEGORIES.iter().enumerate() {
        sqlx::query("INSERT INTO categories (slug, name, parent_slug, position) VALUES ($1, $2, $3, $4)")
            .bind(*slug)
            .bind(*name)
            .bind(*parent)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
    }
    // Products from an earlier version of the catalog (no category yet) get theirs.
    for product in demo::catalog(0) {
        sqlx::query("UPDATE products SET category_slug = $1, brand = $2 WHERE id = $3")
            .bind(product.category)
            .bind(&product.brand)
            .bind(&product.id)
            .execute(&mut *tx)
            .await?;
    }
    let start = tessera_kit::events::now_ms() - 1_000_000;
    for (n, product) in demo::catalog(extra).into_iter().enumerate() {
        let (exists,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products WHERE id = $1").bind(&product.id).fetch_one(&mut *tx).await?;
        if exists > 0 {
            continue;
        }
        let new = NewProduct {
            id: &product.id,
            name: &product.name,
            brand: &product.brand,
            category: Some(product.category),
            description: &product.description,
            price_minor: product.price_minor,
            currency: demo::CURRENCY,
            // The classic products are the newest, so they lead "new in the shop".
            created_at: if n < demo::PRODUCTS.len() { start + 1_000_000 - n as i64 } else { start + n as i64 },
            variants: product.variants.into_iter().map(|v| (v.sku, v.label, v.attributes)).collect(),
        };
        queries::insert(&mut tx, postgres, &new).await?;
    }
    sqlx::query("UPDATE products SET featured = 1 WHERE id IN ('mug-stn-01', 'bag-cnv-01', 'ntb-a5-dot')").execute(&mut *tx).await?;
    tx.commit().await?;
    if postgres {
        // Fresh statistics for the bulk-loaded tables, so the planner uses their indexes at once instead of
        // waiting for autovacuum (without them every card subquery scans all variants).
        sqlx::query("ANALYZE").execute(db).await?;
    }
    Ok(())
}

/// The catalog, as the runtime assembles it.
pub struct Catalog;

impl Fragment for Catalog {
    fn name(&self) -> &'static str {
        NAME
    }
    fn prefix(&self) -> &'static str {
        PREFIX
    }
    fn title(&self) -> &'static str {
        "Catalog"
    }
    fn migrations(&self) -> &'static Migrations {
        &MIGRATIONS
    }
    fn router(&self, runtime: FragmentRuntime) -> Router {
        router(runtime)
    }
    fn seed_demo<'a>(&'a self, runtime: &'a FragmentRuntime, extra: usize) -> BoxFuture<'a, Result<(), SeedError>> {
        Box::pin(async move { Ok(seed_demo(runtime, extra).await?) })
    }
    fn publishes(&self) -> &'static [(&'static str, u32)] {
        const PUBLISHES: &[(&str, u32)] = &[published::<ProductChanged>()];
        PUBLISHES
    }
    fn subscriptions(&self) -> Subscriptions {
        // Availability is a projection of inventory's stock events; the catalog never calls inventory.
        Subscriptions::new().on::<StockChanged>(|_, tx, envelope, event| Box::pin(async move { availability::apply_stock_changed(tx, envelope, &event).await }))
    }
}

/// Every route the catalog owns, under `/catalog`.
pub fn router(runtime: FragmentRuntime) -> Router {
    tessera_kit::routes::fragment_router(&runtime, get(listing_page), get(widget))
        .route(&format!("{PREFIX}/c/{{slug}}"), get(category_page))
        .route(&format!("{PREFIX}/p/{{id}}"), get(product_page))
        .route(&format!("{PREFIX}/p/{{id}}/edit"), get(editor_page))
        .route(&format!("{PREFIX}/new"), get(editor_page))
        .route(&format!("{PREFIX}/img/{{file}}"), get(image))
        .with_state(runtime)
}

fn status_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(tessera_kit::page::status_document(NAME, title, message, Some((PREFIX, "Browse the catalog"))))).into_response()
}

fn head(title: &str, description: &str, canonical: Option<String>) -> PageHead {
    PageHead { title: title.to_owned(), description: Some(description.to_owned()), canonical, json_ld: None }
}

/// `/catalog?…`: the listing; a malformed filter is a 400 page that says which.
async fn listing_page(State(runtime): State<FragmentRuntime>, request: Request) -> Response {
    let query: ListingQuery = serde_qs::from_str(request.uri().query().unwrap_or_default()).unwrap_or_default();
    if let Err(error) = query.validate() {
        return status_page(StatusCode::BAD_REQUEST, "Cannot show these products", &error.to_string());
    }
    let head = head("Catalog", "Every product in the Tessera demo shop: search, filter by category, brand, price and colour.", Some(PREFIX.to_owned()));
    tessera_kit::routes::render_with_head(&runtime, head, || view! { <App/> }, request).await
}

/// `/catalog/c/<slug>`: a category's listing; 404 for an unknown category.
async fn category_page(State(runtime): State<FragmentRuntime>, Path(slug): Path<String>, request: Request) -> Response {
    let query: ListingQuery = serde_qs::from_str(request.uri().query().unwrap_or_default()).unwrap_or_default();
    if let Err(error) = query.validate() {
        return status_page(StatusCode::BAD_REQUEST, "Cannot show these products", &error.to_string());
    }
    let categories = match tessera_kit::timing::data(queries::categories(&runtime.db)).await {
        Ok(categories) => categories,
        Err(error) => return tessera_kit::internal(error).into_http_response(),
    };
    let Some(category) = categories.into_iter().find(|c| c.slug == slug) else {
        return status_page(StatusCode::NOT_FOUND, "No such category", "There is no category at this address.");
    };
    let head = head(&category.name, &format!("{} in the Tessera demo shop.", category.name), Some(format!("{PREFIX}/c/{slug}")));
    tessera_kit::routes::render_with_head(&runtime, head, || view! { <App/> }, request).await
}

/// schema.org `Product` for search engines.
fn json_ld(detail: &Detail) -> String {
    let in_stock = detail.variants.iter().any(|v| v.available.unwrap_or(0) > 0);
    serde_json::json!({
        "@context": "https://schema.org",
        "@type": "Product",
        "name": detail.name,
        "description": detail.description,
        "image": detail.image,
        "sku": detail.variants.first().map(|v| v.sku.clone()),
        "brand": { "@type": "Brand", "name": detail.brand },
        "category": detail.trail.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" > "),
        "offers": {
            "@type": "Offer",
            "price": format!("{}.{:02}", detail.price.minor / 100, detail.price.minor % 100),
            "priceCurrency": detail.price.currency,
            "availability": if in_stock { "https://schema.org/InStock" } else { "https://schema.org/OutOfStock" },
            "url": format!("{PREFIX}/p/{}", detail.id),
        },
    })
    .to_string()
}

/// `/catalog/p/<id>`: a product page with its own title, description, canonical link and JSON-LD.
async fn product_page(State(runtime): State<FragmentRuntime>, Path(id): Path<String>, request: Request) -> Response {
    let detail = match tessera_kit::timing::data(queries::detail(&runtime.db, &id)).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return status_page(StatusCode::NOT_FOUND, "No such product", "There is no product at this address."),
        Err(error) => return tessera_kit::internal(error).into_http_response(),
    };
    let description: String = detail.description.chars().take(160).collect();
    let head = PageHead {
        title: format!("{} · {}", detail.name, detail.brand),
        description: Some(description),
        canonical: Some(format!("{PREFIX}/p/{}", detail.id)),
        json_ld: Some(json_ld(&detail)),
    };
    tessera_kit::routes::render_with_head(&runtime, head, || view! { <App/> }, request).await
}

/// `/catalog/new`, `/catalog/p/<id>/edit`: catalog editors only (401/403 pages for others).
async fn editor_page(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser, request: Request) -> Response {
    match user {
        None => status_page(StatusCode::UNAUTHORIZED, "Please sign in", "Editing the catalog is for staff. Sign in with a staff account."),
        Some(user) if !user.has_role(Role::CatalogEditor) => {
            status_page(StatusCode::FORBIDDEN, "Not allowed", "Your account does not have the catalog editor role.")
        }
        Some(_) => tessera_kit::routes::render_with_head(&runtime, head("Edit the catalog", "Catalog editor", None), || view! { <App/> }, request).await,
    }
}

/// `/catalog/img/<id>.svg`: a generated picture for products without one (colour and initials from the
/// id, so it is stable).
async fn image(Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".svg").filter(|id| !id.is_empty() && id.len() <= 80 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) else {
        return (StatusCode::NOT_FOUND, "no such image").into_response();
    };
    let hash = id.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
    let hue = hash % 360;
    let initials: String = id.split('-').filter_map(|w| w.chars().next()).take(2).collect::<String>().to_uppercase();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 160 120\" width=\"160\" height=\"120\">\
         <rect width=\"160\" height=\"120\" fill=\"hsl({hue},55%,82%)\"/>\
         <circle cx=\"80\" cy=\"60\" r=\"38\" fill=\"hsl({hue},45%,55%)\"/>\
         <text x=\"80\" y=\"72\" font-family=\"sans-serif\" font-size=\"34\" text-anchor=\"middle\" fill=\"#fff\">{initials}</text></svg>"
    );
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], svg).into_response()
}

/// Server-rendered featured products for the shell's home page (not hydrated).
async fn widget(State(runtime): State<FragmentRuntime>) -> Response {
    match tessera_kit::timing::data(queries::featured(&runtime.db, 3)).await {
        Ok(cards) => {
            let items = cards
                .into_iter()
                .map(|card| {
                    let href = format!("{PREFIX}/p/{}", card.id);
                    view! { <li><a href=href>{card.name}</a> " " <span class="price">{card.price.to_string()}</span></li> }
                })
                .collect_view();
            let html = view! {
                <section class="widget widget-catalog" data-fragment=NAME>
                    <h2>"Featured"</h2>
                    <ul>{items}</ul>
                    <a href=PREFIX>"Browse the catalog"</a>
                </section>
            }
            .to_html();
            Html(tessera_kit::page::widget_html(&runtime, html)).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "catalog widget query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "catalog widget unavailable").into_response()
        }
    }
}
