//! The cart's server half: router, migrations, the badge summary, the mini-cart widget, the payment
//! webhook, the events it consumes and the background pass.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leptos::prelude::*;
use shared_auth::extract::MaybeUser;
use sqlx::migrate::Migrator;
use tessera_contracts::cart::{CartSummary, SUMMARY_PATH};
use tessera_contracts::events::{
    OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort, ProductChanged, StockChanged,
};
use tessera_contracts::payments::{SIGNATURE_HEADER, WEBHOOK_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::api::IntoHttpResponse;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{published, BoxFuture, Fragment, SeedError};
use tessera_fragment::runtime::Subscriptions;
use tessera_fragment::subscriptions::HandlerError;
use tessera_fragment::FragmentRuntime;

use crate::orders::Applied;
use crate::payments::{PaymentProvider, WebhookRefusal};
use crate::store::Shopper;
use crate::{App, NAME, PREFIX};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The cart's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// How often the background pass runs (pending holds, due refunds, interrupted checkouts).
const BACKGROUND_EVERY: Duration = Duration::from_secs(2);

/// Largest webhook body accepted.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// The cart & checkout, as the runtime assembles it.
pub struct Cart;

impl Fragment for Cart {
    fn name(&self) -> tessera_contracts::domain::ServiceName {
        NAME
    }
    fn prefix(&self) -> &'static str {
        PREFIX
    }
    fn title(&self) -> &'static str {
        "Cart"
    }
    fn migrations(&self) -> &'static Migrations {
        &MIGRATIONS
    }
    fn router(&self, runtime: FragmentRuntime) -> Router {
        router(runtime)
    }
    fn background(&self, runtime: &FragmentRuntime) -> Vec<tokio::task::JoinHandle<()>> {
        background(runtime)
    }
    fn seed_demo<'a>(&'a self, runtime: &'a FragmentRuntime, extra: usize) -> BoxFuture<'a, Result<(), SeedError>> {
        Box::pin(async move { Ok(seed_demo(runtime, extra).await?) })
    }
    fn publishes(&self) -> &'static [(&'static str, u32)] {
        const PUBLISHES: &[(&str, u32)] = &[published::<OrderPaid>(), published::<OrderCancelled>(), published::<OrderCancelRequested>()];
        PUBLISHES
    }
    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new()
            // Prices are a projection of the catalog's product events.
            .on::<ProductChanged>(|_, tx, envelope, event| {
                Box::pin(async move { Ok(crate::store::apply_product_changed(tx, &event, envelope.sequence).await?) })
            })
            // Availability, for guests' lines (they hold nothing): a projection of inventory's stock events.
            .on::<StockChanged>(|_, tx, envelope, event| {
                Box::pin(async move {
                    if event.available < 0 || event.sku.as_str() != envelope.aggregate_id {
                        return Err(HandlerError::Refused(format!("the {} payload is malformed: inconsistent stock figures", envelope.event_type)));
                    }
                    Ok(crate::store::apply_stock_changed(tx, &event, envelope.sequence).await?)
                })
            })
            .on::<OrderFulfilled>(|_, tx, _, event| Box::pin(async move { Ok(crate::orders::apply_fulfilled(tx, &event).await?) }))
            // A short order is cancelled; its refund is requested at once rather than at the next pass.
            .on_then::<OrderShort>(
                |_, tx, _, event| Box::pin(async move { Ok(crate::orders::apply_short(tx, &event).await?) }),
                |runtime| Box::pin(async move { crate::orders::settle_refunds(&runtime).await }),
            )
            // A cancellation inventory confirmed is refunded at once too; a refused one only tells the shopper.
            .on_then::<OrderCancelConfirmed>(
                |_, tx, _, event| Box::pin(async move { Ok(crate::orders::apply_cancel_confirmed(tx, &event).await?) }),
                |runtime| Box::pin(async move { crate::orders::settle_refunds(&runtime).await }),
            )
            .on::<OrderCancelRefused>(|_, tx, _, event| Box::pin(async move { Ok(crate::orders::apply_cancel_refused(tx, &event).await?) }))
    }
}

/// Every route the cart owns, under `/cart`.
pub fn router(runtime: FragmentRuntime) -> Router {
    let render = tessera_fragment::routes::page_renderer(&runtime, "Cart", || view! { <App/> });
    let page = get(move |request: Request| render(request));
    let order_render = tessera_fragment::routes::page_renderer(&runtime, "Your order", || view! { <App/> });
    // Another user's order (or none) is a real 404 before anything renders.
    let order_page = get(move |State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser, Path(id): Path<String>, request: Request| {
        let render = order_render.clone();
        async move {
            if let Some(user) = user {
                if tessera_fragment::timing::data(crate::orders::own_order(&runtime.db, &user.id, &id)).await.is_err() {
                    let html = tessera_fragment::page::status_document(
                        NAME.as_str(),
                        "Order not found",
                        "There is no such order in your account.",
                        Some(("/cart/orders", "Your orders")),
                    );
                    return (StatusCode::NOT_FOUND, Html(html)).into_response();
                }
            }
            render(request).await
        }
    });
    tessera_fragment::routes::fragment_router(&runtime, page.clone(), get(widget))
        .route(&format!("{PREFIX}/checkout"), page.clone())
        .route(&format!("{PREFIX}/orders"), page)
        .route(&format!("{PREFIX}/orders/{{id}}"), order_page)
        .route(SUMMARY_PATH, get(summary))
        .route(WEBHOOK_PATH, post(webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)))
        .with_state(runtime)
}

/// Seeds the price projection with the demo catalog (the same generator the catalog seeds from).
pub async fn seed_demo(runtime: &FragmentRuntime, extra: usize) -> Result<(), sqlx::Error> {
    crate::store::seed_prices(&runtime.db, extra).await
}

/// The background pass: retries pending holds, requests due refunds, releases checkout holds whose
/// answer never came, frees interrupted checkouts, deletes guest carts no cookie can reach.
pub fn background(runtime: &FragmentRuntime) -> Vec<tokio::task::JoinHandle<()>> {
    let runtime = runtime.clone();
    vec![tokio::spawn(async move {
        let mut ticker = tokio::time::interval(BACKGROUND_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Every cart instance schedules the pass; one of them runs it each period.
            let pass = async {
                if let Err(error) = crate::carts::retry_pending(&runtime).await {
                    tracing::warn!(%error, "retrying pending cart holds failed");
                }
                crate::orders::settle_refunds(&runtime).await;
                if let Err(error) = crate::orders::release_unanswered_checkouts(&runtime).await {
                    tracing::warn!(%error, "releasing unanswered checkouts failed");
                }
                if let Err(error) = crate::orders::fail_stale_placing(&runtime.db).await {
                    tracing::warn!(%error, "freeing interrupted checkouts failed");
                }
                match crate::store::prune_guest_carts(&runtime.db, tessera_fragment::db::now_ms()).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "deleted guest carts no cookie can reach"),
                    Err(error) => tracing::warn!(%error, "pruning abandoned guest carts failed"),
                }
            };
            if let Err(error) = tessera_fragment::lease::once_per_period(&runtime.db, "cart-upkeep", BACKGROUND_EVERY, pass).await {
                tracing::warn!(%error, "could not take the upkeep lease");
            }
        }
    })]
}

/// `GET /cart/api/summary`: the badge count (it never creates or merges carts; it does keep the
/// shopper's holds alive, in the background).
async fn summary(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser, headers: HeaderMap) -> Response {
    let shopper = Shopper::from_headers(user, &headers);
    match tessera_fragment::timing::data(crate::carts::count(&runtime, &shopper)).await {
        Ok(item_count) => {
            if item_count > 0 {
                crate::carts::touch(&runtime, &shopper);
            }
            Json(CartSummary { item_count, message: None }).into_response()
        }
        Err(error) => tessera_fragment::internal(error).into_http_response(),
    }
}

/// Server-rendered mini cart for the shell's home page (not hydrated).
async fn widget(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser, headers: HeaderMap) -> Response {
    let shopper = Shopper::from_headers(user, &headers);
    let items = tessera_fragment::timing::data(crate::carts::visible_items(&runtime, &shopper)).await;
    let body = match items {
        Ok(items) if items.is_empty() => view! { <p>"Your cart is empty."</p> }.into_any(),
        Ok(items) => {
            let count: i64 = items.iter().map(|item| item.quantity.get()).sum();
            let rows = items
                .into_iter()
                .take(3)
                .map(|item| {
                    let name = item.price.map(|price| price.name).unwrap_or_else(|| item.sku.to_string());
                    view! { <li>{format!("{} × {name}", item.quantity)}</li> }
                })
                .collect_view();
            let count = if count == 1 { "1 item".to_owned() } else { format!("{count} items") };
            view! { <p data-testid="mini-cart-count">{count}</p> <ul>{rows}</ul> }.into_any()
        }
        Err(error) => {
            tracing::error!(%error, "cart widget query failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cart widget unavailable").into_response();
        }
    };
    let html = view! {
        <section class="widget widget-cart" data-fragment=NAME.to_string()>
            <h2>"Your cart"</h2>
            {body}
            <a href=PREFIX>"Open the cart"</a>
        </section>
    }
    .to_html();
    Html(tessera_fragment::page::widget_html(&runtime, html)).into_response()
}

/// `POST /cart/payments/webhook`: the payment provider's signed callback. The signature is checked on
/// the raw body before anything is parsed; the event's effect and its id commit together.
async fn webhook(State(runtime): State<FragmentRuntime>, headers: HeaderMap, body: Bytes) -> Response {
    let provider = crate::payments::provider(&runtime);
    let signature = headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok());
    let event = match provider.verify_webhook(signature, &body, tessera_fragment::db::now_seconds()) {
        Ok(event) => event,
        Err(WebhookRefusal::BadRequest(message)) => {
            tracing::warn!(message, "payment webhook refused");
            return ApiError::BadRequest(message).into_http_response();
        }
        Err(WebhookRefusal::Unauthorized(message)) => {
            tracing::warn!(message, "payment webhook with a bad signature");
            return ApiError::Unauthorized.into_http_response();
        }
        Err(WebhookRefusal::Unavailable(message)) => {
            tracing::error!(message, "payment webhook secrets unavailable");
            return ApiError::Unavailable("the cart cannot check webhook signatures right now; send it again later".into()).into_http_response();
        }
    };
    match crate::orders::apply_payment_event(&runtime, &event).await {
        Ok(applied) => {
            let outcome = match applied {
                Applied::Changed => "applied",
                Applied::Duplicate => "duplicate",
                Applied::Ignored => "ignored",
            };
            if applied == Applied::Changed {
                crate::orders::settle_refunds(&runtime).await;
            }
            Json(serde_json::json!({ "received": true, "outcome": outcome })).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, event = event.id, "payment webhook not applied");
            ApiError::from(error).into_http_response()
        }
    }
}
