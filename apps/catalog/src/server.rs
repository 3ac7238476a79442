//! The catalog's server half: router, migrations, demo seed, home-page widget.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use tessera_contracts::events::{DecodeError, Event, StockChanged};
use tessera_contracts::ApiError;
use tessera_kit::api::IntoHttpResponse;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::*;
use sqlx::migrate::Migrator;
use tessera_contracts::demo;
use tessera_contracts::domain::Money;
use tessera_kit::db::Migrations;
use tessera_kit::FragmentRuntime;

use crate::availability;
use crate::products::{queries, Product};
use crate::{App, NAME, PREFIX};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The catalog's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// Seeds the demo products when the catalog is empty.
pub async fn seed_demo(runtime: &FragmentRuntime) -> Result<(), sqlx::Error> {
    let db = &runtime.db;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products").fetch_one(db).await?;
    if count > 0 {
        return Ok(());
    }
    for (position, item) in demo::PRODUCTS.iter().enumerate() {
        let product = Product {
            sku: item.sku.to_owned(),
            name: item.name.to_owned(),
            description: item.description.to_owned(),
            price: Money { minor: item.price_minor, currency: demo::CURRENCY.to_owned() },
            available: None,
        };
        queries::insert_product(db, &product, position as i64).await?;
    }
    Ok(())
}

/// Every route the catalog owns, under `/catalog`.
pub fn router(runtime: FragmentRuntime) -> Router {
    let render = tessera_kit::routes::page_renderer(&runtime, "Catalog", || view! { <App/> });
    let page = get(move |request: Request| render(request));
    tessera_kit::routes::fragment_router(&runtime, page, get(widget))
        .route(&format!("{PREFIX}/events"), post(receive_event).layer(DefaultBodyLimit::max(tessera_kit::events::MAX_EVENT_BYTES)))
        .with_state(runtime)
}

/// `POST /catalog/events`: events from other services, signed by them (see `tessera_kit::events`).
async fn receive_event(State(runtime): State<FragmentRuntime>, headers: HeaderMap, body: Bytes) -> Response {
    let envelope = match tessera_kit::events::accept_envelope(&runtime.events.signer, &headers, &body) {
        Ok(envelope) => envelope,
        Err(error) => return error.into_http_response(),
    };
    let result = match envelope.event_type.as_str() {
        StockChanged::TYPE => match envelope.decode::<StockChanged>() {
            Ok(event) => availability::apply_stock_changed(&runtime.db, &envelope, &event).await,
            Err(error) => Err(error.into()),
        },
        other => Err(DecodeError::UnknownType(other.to_owned()).into()),
    };
    match result {
        Ok(applied) => Json(serde_json::json!({ "applied": applied, "duplicate": !applied })).into_response(),
        Err(availability::ApplyError::Decode(error)) => {
            tracing::error!(%error, event = %envelope.id, "event refused");
            (StatusCode::UNPROCESSABLE_ENTITY, Json(ApiError::BadRequest(error.to_string()))).into_response()
        }
        Err(availability::ApplyError::Database(error)) => tessera_kit::internal(error).into_http_response(),
    }
}

/// Server-rendered "new in the shop" widget for the shell's home page (not hydrated).
async fn widget(State(runtime): State<FragmentRuntime>) -> Response {
    match queries::featured_products(&runtime.db, 3).await {
        Ok(products) => {
            let items = products
                .into_iter()
                .map(|product| view! { <li><span>{product.name}</span> " " <span class="price">{product.price.to_string()}</span></li> })
                .collect_view();
            let html = view! {
                <section class="widget widget-catalog" data-fragment=NAME>
                    <h2>"New in the shop"</h2>
                    <ul>{items}</ul>
                    <a href=PREFIX>"Browse the catalog"</a>
                </section>
            }
            .to_html();
            Html(html).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "catalog widget query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "catalog widget unavailable").into_response()
        }
    }
}
