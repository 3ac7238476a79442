//! Service-to-service calls: signed requests for the few places where a user waits for another
//! service's answer (the cart reserving stock).
//!
//! A call is an ordinary JSON request whose method, path with query, timestamp and body are signed
//! ([`CallSigner`]: with the caller's own keys between fragments, with `TESSERA_PAYMENT_API_SECRET` to the
//! payment provider; see `crate::secrets`). The callee learns which service is
//! calling and refuses anything unsigned, so such endpoints are closed to browsers even though they sit
//! under the fragment's public prefix. [`ServiceClient`] reaches the callee through a `crate::peers::Target`:
//! in process (its router) or over HTTP (the host's instance pools), like the event relay. Signing is
//! `crate::signature::CallSigner`.

use std::time::Duration;

use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::inventory::InsufficientStock;
use tessera_contracts::ApiError;

use crate::db::{now_ms, now_seconds};
use crate::peers::{Outgoing, Target};
use crate::signature::{CallSigner, UNKNOWN_KEY_REFUSAL};

/// How long a call refused for an unknown key waits before it is sent again.
const UNKNOWN_KEY_PAUSE: Duration = Duration::from_millis(700);

/// Largest answer a client reads.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a call failed, as the caller needs to tell it apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The callee refused with one of the usual API errors.
    #[error("{0}")]
    Api(ApiError),
    /// Not enough stock (inventory's reservation endpoint).
    #[error("{}", .0.message)]
    InsufficientStock(InsufficientStock),
    /// The callee could not be reached or answered something unreadable.
    #[error("the {service} service is unavailable: {message}")]
    Unavailable { service: ServiceName, message: String },
}

/// Calls one service on behalf of another.
#[derive(Clone)]
pub struct ServiceClient {
    service: ServiceName,
    signer: CallSigner,
    target: Target,
    timeout: Duration,
}

impl ServiceClient {
    /// A client that calls `service` (reached through `target`) as the service `signer` signs for.
    pub fn new(service: ServiceName, signer: CallSigner, target: Target, timeout: Duration) -> ServiceClient {
        ServiceClient { service, signer, target, timeout }
    }

    /// `GET path`.
    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, CallError> {
        self.call(Method::GET, path, Vec::new()).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R, CallError> {
        let body = serde_json::to_vec(body).map_err(|error| self.unavailable(error))?;
        self.call(Method::POST, path, body).await
    }

    fn unavailable(&self, message: impl std::fmt::Display) -> CallError {
        CallError::Unavailable { service: self.service.clone(), message: message.to_string() }
    }

    async fn send(&self, method: &Method, path: &str, body: &[u8]) -> Result<crate::peers::Reply, CallError> {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(self.signer.sign(method.as_str(), path, body, now_ms() / 1000));
        let outgoing = Outgoing { method: method.clone(), path, headers: &headers, body: body.to_vec(), max_bytes: MAX_RESPONSE_BYTES, timeout: self.timeout };
        self.target.send(outgoing).await.map_err(|error| self.unavailable(error))
    }

    async fn call<R: DeserializeOwned>(&self, method: Method, path: &str, body: Vec<u8>) -> Result<R, CallError> {
        let mut reply = self.send(&method, path, &body).await?;
        if reply.status == 503 && String::from_utf8_lossy(&reply.body).contains(UNKNOWN_KEY_REFUSAL) {
            // The callee has not learned this instance's key yet and is reading descriptions now; the
            // refused call changed nothing, so it is safe to send once more.
            tokio::time::sleep(UNKNOWN_KEY_PAUSE).await;
            reply = self.send(&method, path, &body).await?;
        }
        let (status, bytes) = (reply.status, reply.body);
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|error| self.unavailable(format!("unreadable answer: {error}")));
        }
        if let Ok(refusal) = serde_json::from_slice::<InsufficientStock>(&bytes) {
            if refusal.kind == InsufficientStock::KIND {
                return Err(CallError::InsufficientStock(refusal));
            }
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(CallError::Api(error)),
            Err(_) => Err(self.unavailable(format!("answered {status}: {}", String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>()))),
        }
    }
}

/// The calling service of a signed request if it is one of `callers` (the API's contract names them), or
/// the 403 to answer: another service holding the secret is refused like a forger.
pub fn verify_caller_among(
    signer: &CallSigner,
    headers: &HeaderMap,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
    callers: &[ServiceName],
) -> Result<ServiceName, ApiError> {
    let caller = verify_caller(signer, headers, method, path_and_query, body)?;
    if !callers.contains(&caller) {
        tracing::warn!(%caller, path = path_and_query, "a service this API is not for called it");
        let allowed: Vec<&str> = callers.iter().map(ServiceName::as_str).collect();
        return Err(ApiError::Forbidden(format!("this endpoint is for Tessera services only: {} (not {caller})", allowed.join(", "))));
    }
    Ok(caller)
}

/// The calling service of a signed request, or the 403 to answer an unsigned or forged one (signing in
/// as a person does not help, so it is not a 401); a 503 when it is signed with a key this process has
/// not learned yet (a caller's new instance: it may try again in a few seconds). `path` is what the
/// caller signed: the path with its query string, so a captured call cannot be sent again with other
/// parameters.
pub fn verify_caller(signer: &CallSigner, headers: &HeaderMap, method: &Method, path: &str, body: &[u8]) -> Result<ServiceName, ApiError> {
    signer.verify(headers, method.as_str(), path, body, now_seconds()).map_err(|error| {
        tracing::warn!(%error, path, "service call refused");
        if error.is_transient() {
            ApiError::Unavailable(format!("{UNKNOWN_KEY_REFUSAL}; try again shortly ({error})"))
        } else {
            ApiError::Forbidden(format!("this endpoint is for Tessera services only ({error})"))
        }
    })
}
