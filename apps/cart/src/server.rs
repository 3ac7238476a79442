//! The cart's server half: router, migrations, the badge summary and the mini-cart widget.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use leptos::prelude::*;
use shared_auth::extract::MaybeUser;
use sqlx::migrate::Migrator;
use tessera_contracts::cart::{CartSummary, SUMMARY_PATH};
use tessera_kit::api::IntoHttpResponse;
use tessera_kit::db::Migrations;
use tessera_kit::FragmentRuntime;

use crate::lines::queries;
use crate::{App, NAME, PREFIX};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The cart's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// Every route the cart owns, under `/cart`, including the summary behind the shell's badge.
pub fn router(runtime: FragmentRuntime) -> Router {
    let render = tessera_kit::routes::page_renderer(&runtime, "Cart", || view! { <App/> });
    let page = get(move |request: Request| render(request));
    tessera_kit::routes::fragment_router(&runtime, page, get(widget)).route(SUMMARY_PATH, get(summary)).with_state(runtime)
}

/// `GET /cart/api/summary`: the badge count; zero for anonymous visitors.
async fn summary(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser) -> Response {
    let Some(user) = user else {
        return Json(CartSummary { item_count: 0 }).into_response();
    };
    match queries::item_count(&runtime.db, &user.id).await {
        Ok(item_count) => Json(CartSummary { item_count }).into_response(),
        Err(error) => tessera_kit::internal(error).into_http_response(),
    }
}

/// Server-rendered mini cart for the shell's home page (not hydrated).
async fn widget(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser) -> Response {
    let body = match user {
        None => view! { <p>"Sign in to start a cart."</p> }.into_any(),
        Some(user) => match queries::lines(&runtime.db, &user.id).await {
            Ok(lines) if lines.is_empty() => view! { <p>"Your cart is empty."</p> }.into_any(),
            Ok(lines) => {
                let count: i64 = lines.iter().map(|line| line.quantity).sum();
                let items = lines
                    .into_iter()
                    .take(3)
                    .map(|line| view! { <li>{line.quantity} " × " {line.sku}</li> })
                    .collect_view();
                view! { <p>{count} " items"</p> <ul>{items}</ul> }.into_any()
            }
            Err(error) => {
                tracing::error!(%error, "cart widget query failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "cart widget unavailable").into_response();
            }
        },
    };
    let html = view! {
        <section class="widget widget-cart" data-fragment=NAME>
            <h2>"Your cart"</h2>
            {body}
            <a href=PREFIX>"Open the cart"</a>
        </section>
    }
    .to_html();
    Html(html).into_response()
}
