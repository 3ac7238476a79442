use serde::{Deserialize, Serialize};
use server_fn::codec::JsonEncoding;
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

/// The one error type of every Tessera server function and JSON API.
///
/// It crosses the wire as JSON (`{"kind":"bad_request","message":"…"}`), so the browser shows the
/// server's message and the server maps each kind to its HTTP status in one place ([`ApiError::status`]).
/// `server_fn` answers every error with 500; the fragment runtime rewrites the status from the kind, so a
/// malformed request is a 400 and never looks like a server fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("please sign in first")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Details are logged on the server, never sent.
    #[error("something went wrong on our side; please try again")]
    Internal,
}

/// A value that is not what the request said it is (a SKU, a quantity): the request is refused, saying why.
impl From<crate::domain::SkuError> for ApiError {
    fn from(error: crate::domain::SkuError) -> ApiError {
        ApiError::BadRequest(error.to_string())
    }
}

impl From<crate::domain::QuantityError> for ApiError {
    fn from(error: crate::domain::QuantityError) -> ApiError {
        ApiError::BadRequest(error.to_string())
    }
}

impl ApiError {
    /// HTTP status for this error: the single place where kinds map to codes.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal => 500,
        }
    }
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            // The request could not be turned into arguments: the caller's fault, said plainly.
            ServerFnErrorErr::Args(message) | ServerFnErrorErr::MissingArg(message) => ApiError::BadRequest(format!("invalid request: {message}")),
            ServerFnErrorErr::UnsupportedRequestMethod(message) => ApiError::BadRequest(message),
            ServerFnErrorErr::Request(message) => ApiError::Unavailable(format!("the request could not be sent: {message}")),
            _ => ApiError::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_as_tagged_json() {
        let error = ApiError::BadRequest("quantity must be between 1 and 99".into());
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(json, r#"{"kind":"bad_request","message":"quantity must be between 1 and 99"}"#);
        assert_eq!(serde_json::from_str::<ApiError>(&json).unwrap(), error);
        let unit = serde_json::to_string(&ApiError::Unauthorized).unwrap();
        assert_eq!(serde_json::from_str::<ApiError>(&unit).unwrap(), ApiError::Unauthorized);
    }

    #[test]
    fn argument_errors_are_client_errors() {
        let error = ApiError::from_server_fn_error(ServerFnErrorErr::Args("missing field `sku`".into()));
        assert_eq!(error.status(), 400);
        assert!(error.to_string().contains("sku"));
        assert_eq!(ApiError::from_server_fn_error(ServerFnErrorErr::ServerError("x".into())).status(), 500);
    }
}
