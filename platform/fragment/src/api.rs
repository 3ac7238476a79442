//! Server-function routing and the status mapping of [`ApiError`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use leptos::prelude::{provide_context, use_context};
use leptos::server_fn::error::SERVER_FN_ERROR_HEADER;
use tessera_contracts::ApiError;

use crate::runtime::FragmentRuntime;

/// Largest server-function request body accepted (form fields of a few small values).
pub const MAX_API_BODY_BYTES: usize = 16 * 1024;

/// What a fragment provides to its SSR renders and server functions.
pub fn context(runtime: &FragmentRuntime) -> impl Fn() + Clone + Send + Sync + 'static {
    let runtime = runtime.clone();
    move || {
        provide_context(runtime.verifier.clone());
        provide_context(runtime.clone());
        crate::timing::provide();
        // The shell's nonce for this page's inline scripts (its Content-Security-Policy names it): Leptos'
        // streaming scripts and the boot script carry it. Reached directly, Leptos' own nonce stays.
        let shell_nonce = use_context::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(tessera_contracts::CSP_NONCE_HEADER)?.to_str().ok().map(str::to_owned))
            .filter(|nonce| (16..=64).contains(&nonce.len()) && nonce.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=')));
        if let Some(nonce) = shell_nonce {
            provide_context(leptos::nonce::Nonce::from_value(nonce));
        }
    }
}

/// `POST <prefix>/api/{name}`: dispatches to the fragment's server functions with its context.
pub fn server_fn_route<S: Clone + Send + Sync + 'static>(runtime: &FragmentRuntime) -> MethodRouter<S> {
    let context = context(runtime);
    post(move |request: Request<Body>| {
        let context = context.clone();
        async move {
            if let Some(refusal) = refuse_other_contract(request.headers()) {
                return refusal;
            }
            // Buffer (bounded) before server_fn sees the body: an oversized request is a clear 413.
            let (parts, body) = request.into_parts();
            let bytes = match axum::body::to_bytes(body, MAX_API_BODY_BYTES).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    let error = ApiError::BadRequest(format!("the request body is larger than {MAX_API_BODY_BYTES} bytes"));
                    return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(error)).into_response();
                }
            };
            let request = Request::from_parts(parts, Body::from(bytes));
            with_api_error_status(leptos_axum::handle_server_fns_with_context(context, request).await.into_response()).await
        }
    })
}

/// A 409 with the reload header for a page that speaks another contract version than this server (a
/// page of another build whose contract differs); `None` when the call may go on. A call without the
/// header (a script, a test, another service) is not a page's and goes on.
fn refuse_other_contract(headers: &axum::http::HeaderMap) -> Option<Response> {
    let theirs = headers.get(tessera_contracts::CONTRACT_HEADER)?.to_str().ok()?.trim().to_owned();
    let ours = tessera_contracts::CONTRACT_VERSION.to_string();
    if theirs == ours {
        return None;
    }
    tracing::info!(page = %theirs, server = %ours, "API call from a page of another contract version: asking it to reload");
    let error = ApiError::Conflict("This page comes from another version of the site. It reloads now to the current one.".into());
    let mut response = (StatusCode::CONFLICT, axum::Json(error)).into_response();
    response.headers_mut().insert(tessera_contracts::RELOAD_HEADER, axum::http::HeaderValue::from_static("1"));
    Some(response)
}

/// `server_fn` answers every error with 500. This reads the [`ApiError`] in the body and sets the status
/// its kind maps to, so bad input is a 4xx and only real faults are 5xx.
async fn with_api_error_status(response: Response) -> Response {
    if !response.headers().contains_key(SERVER_FN_ERROR_HEADER) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::Internal.into_http_response(),
    };
    if let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Rendering an [`ApiError`] as a JSON HTTP response outside server functions (plain axum routes).
pub trait IntoHttpResponse {
    fn into_http_response(self) -> Response;
}

impl IntoHttpResponse for ApiError {
    fn into_http_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self)).into_response()
    }
}
