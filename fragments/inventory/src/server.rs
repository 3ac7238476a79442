//! The inventory's server half: router with the role gate, migrations, demo seed, low-stock widget,
//! reservation sweeper.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::*;
use shared_auth::extract::MaybeUser;
use shared_auth::Role;
use sqlx::migrate::Migrator;
use tessera_contracts::demo;
use tessera_contracts::descriptor::NavEntry;
use tessera_contracts::events::{
    OrderCancelConfirmed, OrderCancelRefused, OrderCancelRequested, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort, StockChanged,
};
use tessera_fragment::db::now_ms;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{published, BoxFuture, Fragment, SeedError};
use tessera_fragment::runtime::Subscriptions;
use tessera_fragment::subscriptions::HandlerError;
use tessera_fragment::FragmentRuntime;

use crate::ledger::Cause;
use crate::model::{LOW_STOCK, MAIN_LOCATION};
use crate::movements::{self, OpError};
use crate::reservations;
use crate::store as queries;
use crate::{App, NAME, PREFIX};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The inventory's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// How often the sweeper expires lapsed soft reservations.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Seeds demo stock for the demo catalogue (the classic products and `extra` generated ones) when there
/// is none: a receipt per SKU, recorded and announced like any other, so the ledger replays and the
/// catalog's availability fills in through events. One transaction: all or nothing.
pub async fn seed_demo(runtime: &FragmentRuntime, extra: usize) -> Result<(), movements::OpError> {
    use crate::ledger::{self, Deltas, Kind, Movement};
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM stock_levels").fetch_one(&runtime.db).await?;
    if count > 0 {
        return Ok(());
    }
    let now = tessera_fragment::db::now_ms();
    let cause = Cause { reason: Some("demo stock".into()), ..Cause::by("demo seed") };
    let mut tx = runtime.db.begin().await?;
    for variant in demo::catalog(extra).into_iter().flat_map(|product| product.variants) {
        let sku = variant.sku;
        ledger::ensure_stock(&mut tx, &sku, MAIN_LOCATION, now).await?;
        if variant.stock == 0 {
            // Stocked, none on hand: a row without movements, announced so the catalog shows "sold out".
            ledger::announce(&mut tx, &runtime.events.outbox, &sku).await?;
            continue;
        }
        let movement = Movement {
            sku: &sku,
            location: MAIN_LOCATION,
            kind: Kind::Received,
            quantity: variant.stock,
            deltas: Deltas { on_hand: variant.stock, ..Deltas::default() },
            needs_available: 0,
        };
        ledger::post(&mut tx, &runtime.events.outbox, &movement, &cause, now)
            .await?
            .map_err(|refused| movements::OpError::Api(tessera_contracts::ApiError::Conflict(format!("cannot seed {sku}: {refused:?}"))))?;
    }
    tx.commit().await?;
    runtime.events.outbox.committed();
    Ok(())
}

/// The inventory's background work: the reservation sweeper.
pub fn background(runtime: &FragmentRuntime) -> Vec<tokio::task::JoinHandle<()>> {
    vec![crate::reservations::spawn_sweeper(runtime.clone(), SWEEP_EVERY)]
}

/// The inventory service and its admin pages, as the runtime assembles it.
pub struct Inventory;

impl Fragment for Inventory {
    fn name(&self) -> tessera_contracts::domain::ServiceName {
        NAME
    }
    fn prefix(&self) -> &'static str {
        PREFIX
    }
    fn title(&self) -> &'static str {
        "Inventory"
    }
    fn nav(&self) -> Option<NavEntry> {
        Some(NavEntry { label: self.title().to_owned(), role: Some(Role::InventoryAdmin) })
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
        const PUBLISHES: &[(&str, u32)] = &[
            published::<StockChanged>(),
            published::<OrderFulfilled>(),
            published::<OrderShort>(),
            published::<OrderCancelConfirmed>(),
            published::<OrderCancelRefused>(),
        ];
        PUBLISHES
    }
    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new()
            .lock_first(|_, tx, envelopes| Box::pin(reservations::lock_for_events(tx, envelopes)))
            .on::<OrderPaid>(|runtime, tx, envelope, event| {
                Box::pin(async move { order_event(reservations::order_paid(tx, &runtime.events.outbox, envelope, &event, now_ms()).await) })
            })
            .on::<OrderCancelled>(|runtime, tx, envelope, event| {
                Box::pin(async move { order_event(reservations::order_cancelled(tx, &runtime.events.outbox, envelope, &event, now_ms()).await) })
            })
            .on::<OrderCancelRequested>(|runtime, tx, envelope, event| {
                Box::pin(async move { order_event(reservations::order_cancel_requested(tx, &runtime.events.outbox, envelope, &event, now_ms()).await) })
            })
    }
}

/// An order event's outcome as the event endpoint needs it: an event that contradicts what inventory
/// knows is refused (and dead-letters, visibly) rather than applied half-way.
fn order_event(outcome: Result<reservations::Applied, OpError>) -> Result<(), HandlerError> {
    match outcome {
        Ok(reservations::Applied::Nothing(why)) => {
            tracing::info!(why, "order event changed nothing");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(OpError::Db(error)) => Err(HandlerError::Database(error)),
        Err(OpError::Api(error)) => Err(error.into()),
        Err(OpError::Short(short)) => Err(HandlerError::Refused(short.message)),
    }
}

/// Every route the inventory owns, under `/admin/inventory`.
pub fn router(runtime: FragmentRuntime) -> Router {
    let render = tessera_fragment::routes::page_renderer(&runtime, "Inventory", || view! { <App/> });
    // The role gate runs before rendering, so visitors and shoppers get a real 401/403 page.
    let page = get(move |MaybeUser(user): MaybeUser, request: Request| {
        let render = render.clone();
        async move {
            match user {
                None => gate_page(
                    StatusCode::UNAUTHORIZED,
                    "Please sign in",
                    "The inventory is for staff. Sign in with a staff account.",
                    Some(("/login?next=/admin/inventory", "Sign in")),
                ),
                Some(user) if !user.has_role(Role::InventoryAdmin) => {
                    gate_page(StatusCode::FORBIDDEN, "Not allowed", "Your account does not have the inventory admin role.", Some(("/", "Go to the home page")))
                }
                Some(_) => render(request).await,
            }
        }
    });
    tessera_fragment::routes::fragment_router(&runtime, page.clone(), get(widget))
        .route(&format!("{PREFIX}/sku/{{sku}}"), page.clone())
        .route(&format!("{PREFIX}/reservations"), page)
        .merge(crate::service::routes())
        .with_state(runtime)
}

fn gate_page(status: StatusCode, title: &str, message: &str, link: Option<(&str, &str)>) -> Response {
    (status, Html(tessera_fragment::page::status_document(NAME.as_str(), title, message, link))).into_response()
}

/// Server-rendered low-stock list for the shell's home page; 403 for anyone but inventory admins (the
/// shell leaves the widget out then).
async fn widget(State(runtime): State<FragmentRuntime>, MaybeUser(user): MaybeUser) -> Response {
    if !user.is_some_and(|user| user.has_role(Role::InventoryAdmin)) {
        return (StatusCode::FORBIDDEN, "inventory admins only").into_response();
    }
    match tessera_fragment::timing::data(queries::low_stock(&runtime.db, LOW_STOCK, tessera_fragment::db::now_ms(), 5)).await {
        Ok((levels, count)) => {
            let items = levels
                .into_iter()
                .map(|level| {
                    let href = format!("{PREFIX}/sku/{}", level.sku);
                    view! { <li><a href=href>{level.sku.to_string()}</a> ": " {level.available} " available"</li> }
                })
                .collect_view();
            let html = view! {
                <section class="widget widget-inventory" data-fragment=NAME.to_string()>
                    <h2>"Low stock"</h2>
                    <p>{count} " SKUs with fewer than " {LOW_STOCK} " available"</p>
                    <ul>{items}</ul>
                    <a href=format!("{PREFIX}?low=true")>"Manage stock"</a>
                </section>
            }
            .to_html();
            Html(tessera_fragment::page::widget_html(&runtime, html)).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "inventory widget query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "inventory widget unavailable").into_response()
        }
    }
}
