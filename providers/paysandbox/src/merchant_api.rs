//! The merchant API: create, read, refund and cancel payments. JSON over signed service calls only.
//!
//! Every handler first checks the call's signature over method, path and body
//! ([`tessera_fragment::service::verify_caller`]): the signing service (e.g. `cart`) owns the payments it
//! creates, and no other caller, nor any browser, can see or touch them. Refund and cancel are idempotent
//! by state: asking again for what already happened answers 200 with the payment unchanged.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::payments::{CancelRequest, CreatePayment, PaymentStatus, RefundRequest, WebhookKind, PAYMENTS_PATH};
use tessera_contracts::ApiError;
use tessera_fragment::api::IntoHttpResponse;
use tessera_fragment::db::now_ms;
use tessera_fragment::service::verify_caller;

use crate::error::Error;
use crate::payments::{self, Change, Created, NewPayment, PaymentRecord};
use crate::Sandbox;

/// The merchant API's routes.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(PAYMENTS_PATH, post(create_payment))
        .route(&format!("{PAYMENTS_PATH}/{{id}}"), get(show_payment))
        .route(&format!("{PAYMENTS_PATH}/{{id}}/refund"), post(refund_payment))
        .route(&format!("{PAYMENTS_PATH}/{{id}}/cancel"), post(cancel_payment))
}

/// What a signature is checked over: the method, path, headers and body as they arrived.
struct Call {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    /// The calling service, or the 403 for an unsigned or forged call. The path checked is the one the
    /// request arrived with, which is the one the caller signed.
    fn caller(&self, sandbox: &Sandbox) -> Result<ServiceName, ApiError> {
        let signed = self.uri.path_and_query().map_or(self.uri.path(), |path_and_query| path_and_query.as_str());
        verify_caller(&sandbox.signer, &self.headers, &self.method, signed, &self.body)
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|error| ApiError::BadRequest(format!("invalid request body: {error}")))
    }
}

/// The JSON answer, or the error's status and JSON.
fn respond(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|error| error.into_api().into_http_response())
}

fn payment_json(status: StatusCode, record: &PaymentRecord) -> Response {
    (status, Json(record.to_contract())).into_response()
}

/// `POST /sandbox-pay/v1/payments`: 201 with a new payment, 200 with the same one for a retried request.
async fn create_payment(State(sandbox): State<Sandbox>, method: Method, OriginalUri(uri): OriginalUri, headers: HeaderMap, body: Bytes) -> Response {
    let call = Call { method, uri, headers, body };
    respond(create(&sandbox, &call).await)
}

async fn create(sandbox: &Sandbox, call: &Call) -> Result<Response, Error> {
    let caller = call.caller(sandbox)?;
    let request = NewPayment::parse(call.json::<CreatePayment>()?)?;
    match payments::create(&sandbox.db, &caller, &request, now_ms()).await? {
        Created::New(record) => {
            tracing::info!(payment = %record.id, %caller, reference = %record.reference, amount = %record.amount(), "sandbox payment created");
            Ok(payment_json(StatusCode::CREATED, &record))
        }
        Created::Replayed(record) => Ok(payment_json(StatusCode::OK, &record)),
    }
}

/// The signed caller and its payment `id`, or why not (403, then 404).
async fn callers_payment(sandbox: &Sandbox, call: &Call, id: &str) -> Result<(ServiceName, PaymentRecord), Error> {
    let caller = call.caller(sandbox)?;
    if !payments::plausible_id(id) {
        return Err(payments::not_found(id).into());
    }
    let record = payments::find_for_caller(&sandbox.db, id, &caller).await?;
    Ok((caller, record))
}

/// `GET /sandbox-pay/v1/payments/{id}`: the payment as it stands.
async fn show_payment(State(sandbox): State<Sandbox>, method: Method, OriginalUri(uri): OriginalUri, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let call = Call { method, uri, headers, body: Bytes::new() };
    respond(callers_payment(&sandbox, &call, &id).await.map(|(_, record)| payment_json(StatusCode::OK, &record)))
}

/// `POST /sandbox-pay/v1/payments/{id}/refund`: refunds a succeeded payment in full.
async fn refund_payment(
    State(sandbox): State<Sandbox>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let call = Call { method, uri, headers, body };
    respond(refund(&sandbox, &call, &id).await)
}

async fn refund(sandbox: &Sandbox, call: &Call, id: &str) -> Result<Response, Error> {
    let (caller, _) = callers_payment(sandbox, call, id).await?;
    let request: RefundRequest = call.json()?;
    payments::check_key("idempotency_key", &request.idempotency_key)?;
    payments::check_reason(&request.reason)?;
    let change = Change {
        from: &[PaymentStatus::Succeeded],
        to: PaymentStatus::Refunded,
        attempt: None,
        webhook: Some((WebhookKind::PaymentRefunded, non_empty(&request.reason))),
    };
    if let Some(record) = sandbox.apply(id, &change).await? {
        tracing::info!(payment = id, %caller, amount = %record.amount(), "sandbox payment refunded");
        return Ok(payment_json(StatusCode::OK, &record));
    }
    // Not refunded now: say why, from the payment as it is.
    let record = payments::find_for_caller(&sandbox.db, id, &caller).await?;
    match record.status {
        PaymentStatus::Refunded => Ok(payment_json(StatusCode::OK, &record)),
        other => Err(ApiError::Conflict(format!("only a succeeded payment can be refunded; this one is {}", other.as_str())).into()),
    }
}

/// `POST /sandbox-pay/v1/payments/{id}/cancel`: the merchant gives up on an unpaid payment.
async fn cancel_payment(
    State(sandbox): State<Sandbox>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let call = Call { method, uri, headers, body };
    respond(cancel(&sandbox, &call, &id).await)
}

async fn cancel(sandbox: &Sandbox, call: &Call, id: &str) -> Result<Response, Error> {
    let (caller, _) = callers_payment(sandbox, call, id).await?;
    let request: CancelRequest = call.json()?;
    payments::check_reason(&request.reason)?;
    let change = Change {
        from: &[PaymentStatus::RequiresPaymentMethod, PaymentStatus::RequiresAction],
        to: PaymentStatus::Canceled,
        attempt: None,
        webhook: Some((WebhookKind::PaymentCanceled, non_empty(&request.reason))),
    };
    if let Some(record) = sandbox.apply(id, &change).await? {
        tracing::info!(payment = id, %caller, "sandbox payment canceled");
        return Ok(payment_json(StatusCode::OK, &record));
    }
    let record = payments::find_for_caller(&sandbox.db, id, &caller).await?;
    match record.status {
        PaymentStatus::Canceled => Ok(payment_json(StatusCode::OK, &record)),
        PaymentStatus::Succeeded | PaymentStatus::Refunded => Err(ApiError::Conflict("the payment is already paid; refund it instead".into()).into()),
        // Only reachable if the payment changed between the update and this read; the caller may retry.
        other => Err(ApiError::Conflict(format!("the payment changed while cancelling (now {}); try again", other.as_str())).into()),
    }
}

/// A reason as a webhook message: none when the merchant gave none.
fn non_empty(reason: &str) -> Option<String> {
    let reason = reason.trim();
    (!reason.is_empty()).then(|| reason.to_owned())
}
