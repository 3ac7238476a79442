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
use tessera_fragment::api::IntoHttpResponse;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{published, BoxFuture, Fragment, SeedError};
use tessera_fragment::page::PageHead;
use tessera_fragment::runtime::Subscriptions;
use tessera_fragment::FragmentRuntime;

use crate::availability;
use crate::model::{Detail, ListingQuery};
use crate::store::{self, NewProduct};
use crate::{App, ListingPage, Page, NAME, PREFIX};

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
    let postgres = store::is_postgres(db);
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
    let start = tessera_fragment::db::now_ms() - 1_000_000;
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
            variants: product.variants.into_iter().map(|v| (v.sku.to_string(), v.label, v.attributes)).collect(),
        };
        store::insert(&mut tx, postgres, &new).await?;
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
    fn name(&self) -> tessera_contracts::domain::ServiceName {
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
    tessera_fragment::routes::fragment_router(&runtime, get(listing_page), get(widget))
        .route(&format!("{PREFIX}/c/{{slug}}"), get(category_page))
        .route(&format!("{PREFIX}/p/{{id}}"), get(product_page))
        .route(&format!("{PREFIX}/p/{{id}}/edit"), get(editor_page))
        .route(&format!("{PREFIX}/new"), get(editor_page))
        .route(&format!("{PREFIX}/img/{{file}}"), get(image))
        .with_state(runtime)
}

fn status_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(tessera_fragment::page::status_document(NAME.as_str(), title, message, Some((PREFIX, "Browse the catalog"))))).into_response()
}

fn head(title: &str, description: &str, canonical: Option<String>) -> PageHead {
    PageHead { title: title.to_owned(), description: Some(description.to_owned()), canonical, json_ld: None }
}

/// Renders `page` in the catalog's document with `head`.
async fn render(runtime: &FragmentRuntime, head: PageHead, page: Page, request: Request) -> Response {
    tessera_fragment::routes::render_with_head(runtime, head, move || view! { <App page=page.clone()/> }, request).await
}

/// The listing page for `query` (whose `cat` is already the category of the address, if any).
async fn listing(runtime: &FragmentRuntime, head: PageHead, query: ListingQuery, user: Option<shared_auth::SessionUser>, request: Request) -> Response {
    let filters = match query.validate() {
        Ok(filters) => filters,
        Err(error) => return status_page(StatusCode::BAD_REQUEST, "Cannot show these products", &error.to_string()),
    };
    match tessera_fragment::timing::data(store::listing(&runtime.db, &filters)).await {
        Ok(listing) => render(runtime, head, Page::Listing(Box::new(ListingPage { query, listing, user })), request).await,
        Err(error) => tessera_fragment::internal(error).into_http_response(),
    }
}

fn listing_query(request: &Request) -> ListingQuery {
    serde_qs::from_str(request.uri().query().unwrap_or_default()).unwrap_or_default()
}

/// `/catalog?…`: the listing; a malformed filter is a 400 page that says which.
async fn listing_page(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser, request: Request) -> Response {
    let query = listing_query(&request);
    let head = head("Catalog", "Every product in the Tessera demo shop: search, filter by category, brand, price and colour.", Some(PREFIX.to_owned()));
    listing(&runtime, head, query, user, request).await
}

/// `/catalog/c/<slug>`: a category's listing; 404 for an unknown category.
async fn category_page(State(runtime): State<FragmentRuntime>, Path(slug): Path<String>, MaybeUser(user): MaybeUser, request: Request) -> Response {
    let mut query = listing_query(&request);
    if let Err(error) = query.validate() {
        return status_page(StatusCode::BAD_REQUEST, "Cannot show these products", &error.to_string());
    }
    let categories = match tessera_fragment::timing::data(store::categories(&runtime.db)).await {
        Ok(categories) => categories,
        Err(error) => return tessera_fragment::internal(error).into_http_response(),
    };
    let Some(category) = categories.into_iter().find(|c| c.slug == slug) else {
        return status_page(StatusCode::NOT_FOUND, "No such category", "There is no category at this address.");
    };
    let head = head(&category.name, &format!("{} in the Tessera demo shop.", category.name), Some(format!("{PREFIX}/c/{slug}")));
    query.cat = slug;
    listing(&runtime, head, query, user, request).await
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
    let detail = match tessera_fragment::timing::data(store::detail(&runtime.db, &id)).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return status_page(StatusCode::NOT_FOUND, "No such product", "There is no product at this address."),
        Err(error) => return tessera_fragment::internal(error).into_http_response(),
    };
    let description: String = detail.description.chars().take(160).collect();
    let head = PageHead {
        title: format!("{} · {}", detail.name, detail.brand),
        description: Some(description),
        canonical: Some(format!("{PREFIX}/p/{}", detail.id)),
        json_ld: Some(json_ld(&detail)),
    };
    render(&runtime, head, Page::Product(detail), request).await
}

/// `/catalog/new`, `/catalog/p/<id>/edit`: catalog editors only (401/403 pages for others, 404 for an
/// unknown product).
async fn editor_page(State(runtime): State<FragmentRuntime>, id: Option<Path<String>>, MaybeUser(user): MaybeUser, request: Request) -> Response {
    match user {
        None => return status_page(StatusCode::UNAUTHORIZED, "Please sign in", "Editing the catalog is for staff. Sign in with a staff account."),
        Some(user) if !user.has_role(Role::CatalogEditor) => {
            return status_page(StatusCode::FORBIDDEN, "Not allowed", "Your account does not have the catalog editor role.")
        }
        Some(_) => {}
    }
    let existing = match id {
        None => None,
        Some(Path(id)) => match tessera_fragment::timing::data(store::detail(&runtime.db, &id)).await {
            Ok(Some(detail)) => Some(detail),
            Ok(None) => return status_page(StatusCode::NOT_FOUND, "No such product", "There is no product at this address."),
            Err(error) => return tessera_fragment::internal(error).into_http_response(),
        },
    };
    render(&runtime, head("Edit the catalog", "Catalog editor", None), Page::Editor(existing), request).await
}

/// `/catalog/img/<id>.svg`: a generated picture for products without one, drawn like a studio shot: the
/// product's silhouette (a tee, a mug, a cap… from the words of its id) in its colour on a soft backdrop
/// with a floor shadow. Stable for an id, so it caches well.
async fn image(Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".svg").filter(|id| !id.is_empty() && id.len() <= 80 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) else {
        return (StatusCode::NOT_FOUND, "no such image").into_response();
    };
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], product_shot(id)).into_response()
}

/// The product's colour and a darker shade of it for outlines: a colour its id names, else one of its own.
fn product_colours(id: &str) -> (String, String) {
    let named = [
        (["blk", "black"], (0, 0, 18)),
        (["blu", "blue"], (222, 62, 48)),
        (["red", "crimson"], (4, 66, 48)),
        (["grn", "green"], (140, 40, 40)),
        (["wht", "white"], (40, 12, 94)),
        (["stn", "stone"], (36, 14, 72)),
        (["cnv", "canvas"], (38, 38, 78)),
    ];
    let words: Vec<&str> = id.split('-').collect();
    let (hue, saturation, lightness) =
        named.iter().find(|(names, _)| words.iter().any(|word| names.contains(word))).map(|(_, hsl)| *hsl).unwrap_or_else(|| {
            let hash = id.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
            (hash % 360, 45 + hash / 360 % 20, 45 + hash / 7200 % 15)
        });
    (format!("hsl({hue},{saturation}%,{lightness}%)"), format!("hsl({hue},{saturation}%,{}%)", lightness.saturating_sub(18)))
}

/// The silhouette for the kind of product the id names, in a 160 × 120 box.
fn silhouette(id: &str, fill: &str, shade: &str) -> String {
    let words: Vec<&str> = id.split('-').collect();
    let has = |names: &[&str]| words.iter().any(|word| names.contains(word));
    let body = format!("fill=\"{fill}\" stroke=\"{shade}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"");
    if has(&["hoodie", "hod"]) {
        format!(
            "<path {body} d=\"M54 32 Q80 14 106 32 L122 64 L108 69 L106 100 L54 100 L52 69 L38 64 Z\"/>\
             <path fill=\"none\" stroke=\"{shade}\" stroke-width=\"1.5\" d=\"M66 32 Q80 46 94 32 M64 80 L96 80 L92 94 L68 94 Z\"/>"
        )
    } else if has(&["tee", "shirt"]) {
        format!(
            "<path {body} d=\"M52 30 L67 24 Q80 33 93 24 L108 30 L120 47 L105 54 L104 98 L56 98 L55 54 L40 47 Z\"/>\
             <path fill=\"none\" stroke=\"{shade}\" stroke-width=\"1.5\" d=\"M67 24 Q80 38 93 24\"/>"
        )
    } else if has(&["cap", "hat"]) {
        format!(
            "<path {body} d=\"M46 80 Q46 40 80 38 Q112 40 112 78 Z\"/>\
             <path {body} d=\"M104 74 Q130 76 136 86 Q114 90 96 82 Z\"/><circle cx=\"79\" cy=\"38\" r=\"3\" fill=\"{shade}\"/>"
        )
    } else if has(&["mug", "cup"]) {
        format!(
            "<path fill=\"none\" stroke=\"{fill}\" stroke-width=\"8\" d=\"M98 52 q20 0 20 17 q0 17 -20 17\"/>\
             <rect {body} x=\"52\" y=\"36\" width=\"48\" height=\"62\" rx=\"7\"/><ellipse cx=\"76\" cy=\"38\" rx=\"22\" ry=\"3\" fill=\"{shade}\"/>"
        )
    } else if has(&["tote", "bag"]) {
        format!(
            "<path fill=\"none\" stroke=\"{shade}\" stroke-width=\"4\" d=\"M64 52 Q64 26 80 26 Q96 26 96 52\"/>\
             <path {body} d=\"M48 50 L112 50 L117 102 L43 102 Z\"/>"
        )
    } else if has(&["notebook", "ntb"]) {
        format!(
            "<rect {body} x=\"52\" y=\"24\" width=\"56\" height=\"76\" rx=\"4\"/>\
             <rect x=\"52\" y=\"24\" width=\"9\" height=\"76\" rx=\"3\" fill=\"{shade}\"/><rect x=\"98\" y=\"24\" width=\"3\" height=\"76\" fill=\"{shade}\"/>"
        )
    } else if has(&["pen", "pencil"]) {
        format!(
            "<g transform=\"rotate(-28 80 62)\"><rect {body} x=\"34\" y=\"56\" width=\"78\" height=\"12\" rx=\"4\"/>\
             <path fill=\"{shade}\" d=\"M112 56 L128 62 L112 68 Z\"/><rect x=\"40\" y=\"53\" width=\"22\" height=\"3\" rx=\"1.5\" fill=\"{shade}\"/></g>"
        )
    } else if has(&["sticker", "stk"]) {
        format!(
            "<rect {body} x=\"44\" y=\"34\" width=\"44\" height=\"44\" rx=\"10\" transform=\"rotate(-12 66 56)\"/>\
             <rect fill=\"#fff\" stroke=\"{shade}\" stroke-width=\"1.5\" x=\"70\" y=\"44\" width=\"44\" height=\"44\" rx=\"22\"/>\
             <circle cx=\"92\" cy=\"66\" r=\"11\" fill=\"{fill}\"/>"
        )
    } else {
        format!("<rect {body} x=\"50\" y=\"40\" width=\"60\" height=\"56\" rx=\"4\"/><path fill=\"{shade}\" d=\"M50 52 L110 52 L110 56 L50 56 Z\"/>")
    }
}

fn product_shot(id: &str) -> String {
    let (fill, shade) = product_colours(id);
    let shape = silhouette(id, &fill, &shade);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 160 120\" width=\"160\" height=\"120\">\
         <defs><linearGradient id=\"backdrop\" x1=\"0\" y1=\"0\" x2=\"0\" y2=\"1\"><stop offset=\"0\" stop-color=\"#f6f6f3\"/>\
         <stop offset=\"1\" stop-color=\"#e2e0da\"/></linearGradient>\
         <radialGradient id=\"floor\"><stop offset=\"0\" stop-color=\"#000\" stop-opacity=\"0.22\"/><stop offset=\"1\" stop-color=\"#000\" stop-opacity=\"0\"/></radialGradient></defs>\
         <rect width=\"160\" height=\"120\" fill=\"url(#backdrop)\"/><ellipse cx=\"80\" cy=\"104\" rx=\"46\" ry=\"7\" fill=\"url(#floor)\"/>{shape}</svg>"
    )
}

/// Server-rendered featured products for the shell's home page (not hydrated).
async fn widget(State(runtime): State<FragmentRuntime>) -> Response {
    match tessera_fragment::timing::data(store::featured(&runtime.db, 3)).await {
        Ok(cards) => {
            let items = cards
                .into_iter()
                .map(|card| {
                    let href = format!("{PREFIX}/p/{}", card.id);
                    view! { <li><a href=href>{card.name}</a> " " <span class="price">{card.price.to_string()}</span></li> }
                })
                .collect_view();
            let html = view! {
                <section class="widget widget-catalog" data-fragment=NAME.to_string()>
                    <h2>"Featured"</h2>
                    <ul>{items}</ul>
                    <a href=PREFIX>"Browse the catalog"</a>
                </section>
            }
            .to_html();
            Html(tessera_fragment::page::widget_html(&runtime, html)).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "catalog widget query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "catalog widget unavailable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{product_colours, product_shot};

    #[test]
    fn each_kind_of_product_has_its_own_shape_and_a_named_colour_is_kept() {
        let shapes: Vec<String> =
            ["classic-tee-1", "classic-hoodie-2", "cap-blk-01", "mug-stn-01", "bag-cnv-01", "ntb-a5-dot", "classic-pen-3", "classic-sticker-pack-4"]
                .iter()
                .map(|id| {
                    let svg = product_shot(id);
                    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
                    // The shape is what follows the backdrop and the floor shadow.
                    svg.split("fill=\"url(#floor)\"/>").nth(1).unwrap().replace(&product_colours(id).0, "").replace(&product_colours(id).1, "")
                })
                .collect();
        for (n, shape) in shapes.iter().enumerate() {
            assert!(!shapes[..n].contains(shape), "shape {n} repeats an earlier one");
        }
        assert_eq!(product_colours("cap-blk-01").0, "hsl(0,0%,18%)");
        assert_eq!(product_shot("classic-mug-7"), product_shot("classic-mug-7"), "stable for an id");
    }
}
