//! The routes every fragment has, under its prefix, in one place: its page and widget, its server
//! functions, its bundle, the event endpoint with its status and replay for site admins, and a 404 page
//! for anything else ([`fragment_router`]); and how a page is rendered into the fragment document
//! ([`page_renderer`], [`render_with_head`]).

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use leptos::prelude::IntoView;

use crate::api::{self, IntoHttpResponse};
use crate::assets::asset_service;
use crate::event_admin;
use crate::inbox::{self, MAX_EVENT_BYTES};
use crate::page;
use crate::runtime::{internal, FragmentRuntime};
use crate::subscriptions::HandlerError;
use tessera_contracts::events::Envelope;

/// `GET <prefix>/events/status`: outbox depth, oldest undelivered age, dead letters (site admins only).
async fn event_status(
    axum::extract::State(runtime): axum::extract::State<FragmentRuntime>,
    shared_auth::extract::RequireRole(_, _): shared_auth::extract::RequireRole<shared_auth::extract::SiteAdmin>,
) -> Response {
    match event_admin::status(&runtime.db, &runtime.name, runtime.events.max_lag_ms).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(error) => internal(error).into_http_response(),
    }
}

#[derive(serde::Deserialize)]
struct ReplayForm {
    seq: Option<i64>,
}

/// `POST <prefix>/events/replay` (`seq` optional): puts dead letters back in line (site admins only).
async fn replay_dead_letters(
    axum::extract::State(runtime): axum::extract::State<FragmentRuntime>,
    shared_auth::extract::RequireRole(_, _): shared_auth::extract::RequireRole<shared_auth::extract::SiteAdmin>,
    form: Result<axum::Form<ReplayForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return tessera_contracts::ApiError::BadRequest("seq must be a number".into()).into_http_response();
    };
    let replayed = async {
        let outgoing = event_admin::replay_dead_letters(&runtime.db, &runtime.events.outbox, form.seq).await?;
        let received = event_admin::replay_received(&runtime, form.seq).await?;
        Ok::<_, sqlx::Error>(outgoing + received)
    };
    match replayed.await {
        Ok(count) => {
            tracing::info!(service = %runtime.name, count, "dead letters replayed");
            // Back to the page the admin came from.
            (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, "/admin/events")]).into_response()
        }
        Err(error) => internal(error).into_http_response(),
    }
}

/// `POST <prefix>/events`: the one event endpoint of every consuming fragment. The request must be signed
/// by a Tessera service (401 otherwise); the envelope must be one the fragment subscribed to, in the version
/// its handler decodes (422 otherwise: the producer dead-letters it, visibly). The inbox row and the
/// handler's effect commit in one transaction, so a redelivered event has its effect once.
async fn receive_event(
    axum::extract::State(runtime): axum::extract::State<FragmentRuntime>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let envelope = match inbox::accept_envelope(&runtime.events.signer, &headers, &body) {
        Ok(envelope) => envelope,
        Err(error) => return error.into_http_response(),
    };
    let refuse = |message: String| {
        tracing::error!(event = %envelope.id, event_type = %envelope.event_type, %message, "event refused");
        (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(tessera_contracts::ApiError::BadRequest(message))).into_response()
    };
    match inbox::admissible(&envelope, runtime.events.max_age_ms, crate::db::now_ms()) {
        Ok(()) => {}
        Err(error @ inbox::Inadmissible::NotItsOwn { .. }) => {
            tracing::warn!(producer = %envelope.producer, event_type = %envelope.event_type, "an event of another producer's type refused");
            return tessera_contracts::ApiError::Forbidden(error.to_string()).into_http_response();
        }
        Err(error) => return refuse(error.to_string()),
    }
    let Some(subscription) = runtime.events.subscriptions.get(&envelope.event_type) else {
        return refuse(format!("the {} service does not subscribe to {:?}", runtime.name, envelope.event_type));
    };
    match inbox::apply(&runtime, subscription, &envelope).await {
        Ok(applied) => axum::Json(serde_json::json!({ "applied": applied, "duplicate": !applied })).into_response(),
        Err(HandlerError::Refused(message)) => refuse(message),
        Err(HandlerError::Database(error)) => internal(error).into_http_response(),
    }
}

/// Begins the message of a batch outcome (409) for an event not tried because an earlier event of its
/// aggregate in the batch was not applied: the producer sends it again, without counting an attempt.
pub const HELD_BACK: &str = "held back";

/// One event's outcome in a batch answer (`POST <prefix>/events/batch`), in the order of the request:
/// the status the single endpoint would have answered, and why when it is not a 200.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST <prefix>/events/batch`: a JSON array of envelopes (at most [`inbox::MAX_BATCH_EVENTS`]) from one
/// producer, signed once as one body, an aggregate's events in their order. Each is checked as
/// `POST <prefix>/events` checks one, and those that may be applied are applied in one transaction, each
/// in a savepoint of its own (`inbox::apply_batch`). The answer is 200 with one [`BatchOutcome`] per
/// envelope, in order: a refused event is retried or dead-lettered alone by the producer, the later
/// events of its aggregate are held back (409, [`HELD_BACK`]), the rest are done.
async fn receive_events(
    axum::extract::State(runtime): axum::extract::State<FragmentRuntime>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let producer = match inbox::signed_by(&runtime.events.signer, &headers, &body) {
        Ok(producer) => producer,
        Err(error) => return error.into_http_response(),
    };
    let envelopes: Vec<Envelope> = match serde_json::from_slice(&body) {
        Ok(envelopes) => envelopes,
        Err(error) => return tessera_contracts::ApiError::BadRequest(format!("not a list of event envelopes: {error}")).into_http_response(),
    };
    if envelopes.len() > inbox::MAX_BATCH_EVENTS {
        let message = format!("a batch holds at most {} events, not {}", inbox::MAX_BATCH_EVENTS, envelopes.len());
        return tessera_contracts::ApiError::BadRequest(message).into_http_response();
    }
    let refused = |status: StatusCode, message: String| BatchOutcome { status: status.as_u16(), message: Some(message) };
    let now = crate::db::now_ms();
    let mut outcomes: Vec<Option<BatchOutcome>> = Vec::with_capacity(envelopes.len());
    let mut admitted = Vec::new();
    // Aggregates with an event refused before applying: their later events wait (order comes first).
    let mut held: Vec<(String, String)> = Vec::new();
    let held_back = |envelope: &Envelope| BatchOutcome {
        status: StatusCode::CONFLICT.as_u16(),
        message: Some(format!("{HELD_BACK}: an earlier event of {} {} in this batch was not applied", envelope.aggregate_type, envelope.aggregate_id)),
    };
    for (index, envelope) in envelopes.iter().enumerate() {
        let (kind, id) = inbox::aggregate_of(envelope);
        let key = (kind.to_owned(), id.to_owned());
        let outcome = if held.contains(&key) {
            Some(held_back(envelope))
        } else if envelope.producer != producer {
            Some(refused(StatusCode::BAD_REQUEST, format!("signed by {producer} but claims to come from {}", envelope.producer)))
        } else {
            match (inbox::admissible(envelope, runtime.events.max_age_ms, now), runtime.events.subscriptions.get(&envelope.event_type)) {
                (Err(error @ inbox::Inadmissible::NotItsOwn { .. }), _) => Some(refused(StatusCode::FORBIDDEN, error.to_string())),
                (Err(error), _) => Some(refused(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())),
                (Ok(()), None) => {
                    Some(refused(StatusCode::UNPROCESSABLE_ENTITY, format!("the {} service does not subscribe to {:?}", runtime.name, envelope.event_type)))
                }
                (Ok(()), Some(subscription)) => {
                    admitted.push((index, subscription));
                    None
                }
            }
        };
        if let Some(outcome) = &outcome {
            tracing::warn!(event = %envelope.id, event_type = %envelope.event_type, status = outcome.status, "event refused");
            if !held.contains(&key) {
                held.push(key);
            }
        }
        outcomes.push(outcome);
    }
    let batch: Vec<(&inbox::Subscription, &Envelope)> = admitted.iter().map(|(index, subscription)| (*subscription, &envelopes[*index])).collect();
    let applied = match inbox::apply_batch(&runtime, &batch, &held).await {
        Ok(applied) => applied,
        Err(error) => return internal(error).into_http_response(),
    };
    for ((index, _), result) in admitted.iter().zip(applied) {
        outcomes[*index] = Some(match result {
            inbox::Applied::Done(_) => BatchOutcome { status: StatusCode::OK.as_u16(), message: None },
            inbox::Applied::Failed(HandlerError::Refused(message)) => {
                tracing::error!(event = %envelopes[*index].id, %message, "event refused");
                refused(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            inbox::Applied::Failed(HandlerError::Database(error)) => {
                tracing::error!(event = %envelopes[*index].id, %error, "applying an event failed");
                refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
            inbox::Applied::HeldBack => held_back(&envelopes[*index]),
        });
    }
    axum::Json(outcomes.into_iter().map(|outcome| outcome.expect("every event has an outcome")).collect::<Vec<_>>()).into_response()
}

/// Renders `app` inside the fragment document, with the fragment's context (runtime, verifier). The page
/// is rendered whole (its resources loaded) and then sent: in document order, complete, for the shell's
/// rewriter and for crawlers, never with out-of-order Suspense templates whose ids could collide with
/// another app's. Streaming it in order instead sent the head a few milliseconds sooner but every
/// header before the data had loaded, so neither the page's `Server-Timing` (`crate::timing`) nor a
/// cookie or status set while loading could reach the browser; the shell still streams what it sends.
pub fn page_renderer<F, V>(
    runtime: &FragmentRuntime,
    title: &'static str,
    app: F,
) -> impl Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response> + Send>> + Clone + Send + Sync + 'static
where
    F: Fn() -> V + Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    let document_runtime = runtime.clone();
    leptos_axum::render_app_async_with_context(api::context(runtime), move || page::document(&document_runtime, title, app.clone()))
}

/// Renders `app` like [`page_renderer`], with a `<head>` chosen for this request (title, description,
/// canonical URL, JSON-LD), e.g. from the product the handler looked up first.
pub async fn render_with_head<F, V>(runtime: &FragmentRuntime, head: page::PageHead, app: F, request: Request<Body>) -> Response
where
    F: Fn() -> V + Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    let document_runtime = runtime.clone();
    let render = leptos_axum::render_app_async_with_context(api::context(runtime), move || page::document_with(&document_runtime, &head, app.clone()));
    render(request).await
}

/// `<prefix>` and `<prefix>/` (the page), `<prefix>/api/*` (server functions), `<prefix>/widget` (the
/// home-page widget), `<prefix>/pkg/*` (the bundle), `<prefix>/events` (the event endpoint) and its status
/// and replay, and a 404 page under the prefix for anything else.
/// Fragments add their own extra routes to the result before `with_state`.
pub fn fragment_router(runtime: &FragmentRuntime, page: MethodRouter<FragmentRuntime>, widget: MethodRouter<FragmentRuntime>) -> Router<FragmentRuntime> {
    let prefix = runtime.prefix;
    let (name, home) = (runtime.name.clone(), runtime.prefix);
    Router::new()
        .route(prefix, page.clone())
        .route(&format!("{prefix}/"), page)
        .route(&format!("{prefix}/api/{{*name}}"), api::server_fn_route(runtime))
        .route(&format!("{prefix}{}", tessera_contracts::WIDGET_PATH), widget)
        .route(&format!("{prefix}/events/status"), axum::routing::get(event_status))
        .route(&format!("{prefix}/events/replay"), axum::routing::post(replay_dead_letters))
        .route(&format!("{prefix}/events"), axum::routing::post(receive_event).layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT_BYTES)))
        .route(&format!("{prefix}/events/batch"), axum::routing::post(receive_events).layer(axum::extract::DefaultBodyLimit::max(inbox::MAX_BATCH_BYTES)))
        .nest_service(&format!("{prefix}/pkg"), asset_service(&runtime.manifests.bundle_dir()))
        .fallback(move || async move {
            let message = format!("There is no {name} page at this address.");
            let html = page::status_document(name.as_str(), "Not found", &message, Some((home, "Back to the start")));
            (StatusCode::NOT_FOUND, Html(html)).into_response()
        })
        // Zero trust: the fragment checks cross-site requests itself, whether or not a shell is in front.
        .layer(axum::middleware::from_fn_with_state(runtime.csrf.clone(), shared_auth::csrf::reject_cross_site))
}
