//! The inventory's endpoints for other services: the reservation API (signed calls, see
//! `tessera_fragment::service`). Order events from the cart reach it through the runtime's event endpoint
//! (see `crate::server::Inventory::subscriptions`).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tessera_contracts::domain::{ReservationId, ServiceName};
use tessera_contracts::inventory::{ExtendRequest, ReserveRequest, RESERVATIONS_PATH, RESERVATION_CALLERS};
use tessera_contracts::ApiError;
use tessera_fragment::api::IntoHttpResponse;
use tessera_fragment::db::now_ms;
use tessera_fragment::FragmentRuntime;

use crate::movements::OpError;
use crate::reservations::{self, ValidRequest};

/// Largest service request body.
const MAX_BODY: usize = 16 * 1024;

/// The service routes, to merge into the fragment router.
pub fn routes() -> Router<FragmentRuntime> {
    Router::new()
        .route(RESERVATIONS_PATH, post(create))
        .route(&format!("{RESERVATIONS_PATH}/{{id}}"), get(show))
        .route(&format!("{RESERVATIONS_PATH}/{{id}}/extend"), post(extend))
        .route(&format!("{RESERVATIONS_PATH}/{{id}}/release"), post(release))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn op_response(error: OpError) -> Response {
    match error {
        OpError::Short(short) => (StatusCode::CONFLICT, Json(short)).into_response(),
        other => other.into_api().into_http_response(),
    }
}

/// The calling service, or the refusal to answer.
fn caller(runtime: &FragmentRuntime, headers: &HeaderMap, method: &Method, uri: &Uri, body: &[u8]) -> Result<ServiceName, ApiError> {
    let signer = runtime.service_calls();
    let signed = uri.path_and_query().map_or(uri.path(), |path_and_query| path_and_query.as_str());
    tessera_fragment::service::verify_caller_among(&signer, headers, method, signed, body, &RESERVATION_CALLERS)
}

/// The reservation a path names; a text that cannot be one names none.
fn reservation_id(id: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse(id).map_err(|error| ApiError::NotFound(format!("there is no reservation {:?}", error.text)))
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::BadRequest(format!("invalid request body: {error}")))
}

/// `POST …/reservations`: soft-reserve every line or none. 201 when created, 200 when replayed.
async fn create(State(runtime): State<FragmentRuntime>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match caller(&runtime, &headers, &method, &uri, &body) {
        Ok(caller) => caller,
        Err(error) => return error.into_http_response(),
    };
    let request: ReserveRequest = match json(&body) {
        Ok(request) => request,
        Err(error) => return error.into_http_response(),
    };
    let request = match ValidRequest::parse(&request) {
        Ok(request) => request,
        Err(error) => return error.into_http_response(),
    };
    let result = reservations::reserve(&runtime.db, &runtime.events.outbox, &caller, &request, now_ms()).await;
    let outcome = match &result {
        Ok(reservation) if reservation.replayed => "replayed",
        Ok(_) => "held",
        Err(OpError::Short(_)) => "short",
        Err(_) => "refused",
    };
    metrics::counter!("tessera_reservations_total", "outcome" => outcome).increment(1);
    match result {
        Ok(reservation) if reservation.replayed => Json(reservation).into_response(),
        Ok(reservation) => (StatusCode::CREATED, Json(reservation)).into_response(),
        Err(error) => op_response(error),
    }
}

/// `GET …/reservations/{id}`: one of the caller's reservations.
async fn show(State(runtime): State<FragmentRuntime>, method: Method, uri: Uri, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (caller, id) = match caller_of(&runtime, &headers, &method, &uri, &id, &[]) {
        Ok(found) => found,
        Err(error) => return error.into_http_response(),
    };
    let mut connection = match runtime.db.acquire().await {
        Ok(connection) => connection,
        Err(error) => return tessera_fragment::internal(error).into_http_response(),
    };
    match reservations::find(&mut connection, &id, Some(&caller), now_ms()).await {
        Ok(Some(row)) => Json(reservations::to_contract(row, false)).into_response(),
        Ok(None) => ApiError::NotFound(format!("there is no reservation {id}")).into_http_response(),
        Err(error) => tessera_fragment::internal(error).into_http_response(),
    }
}

/// The calling service of a signed call about reservation `id`, and the reservation, or the refusal to
/// answer.
fn caller_of(
    runtime: &FragmentRuntime,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    id: &str,
    body: &[u8],
) -> Result<(ServiceName, ReservationId), ApiError> {
    let caller = caller(runtime, headers, method, uri, body)?;
    Ok((caller, reservation_id(id)?))
}

/// `POST …/reservations/{id}/extend`: hold for `ttl_seconds` more from now.
async fn extend(State(runtime): State<FragmentRuntime>, method: Method, uri: Uri, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let result = match caller_of(&runtime, &headers, &method, &uri, &id, &body).and_then(|found| Ok((found, json::<ExtendRequest>(&body)?))) {
        Ok(((caller, id), request)) => reservations::extend(&runtime.db, &caller, &id, request.ttl_seconds, now_ms()).await,
        Err(error) => return error.into_http_response(),
    };
    match result {
        Ok(reservation) => Json(reservation).into_response(),
        Err(error) => op_response(error),
    }
}

/// `POST …/reservations/{id}/release`: the cart lets go of the stock.
async fn release(State(runtime): State<FragmentRuntime>, method: Method, uri: Uri, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let result = match caller_of(&runtime, &headers, &method, &uri, &id, &body) {
        Ok((caller, id)) => reservations::release(&runtime.db, &runtime.events.outbox, &caller, &id, now_ms()).await,
        Err(error) => return error.into_http_response(),
    };
    match result {
        Ok(reservation) => Json(reservation).into_response(),
        Err(error) => op_response(error),
    }
}
