//! HTTP status mapping for protocol errors: the body is `{"error": {"code", "message"}}` with the
//! same codes WebSocket clients see.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{debug, warn};

use crate::hub::PostError;
use crate::protocol::{ErrorCode, Rejection};
use crate::store::StoreError;

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The protocol error code.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// An error with the status that fits its code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized | ErrorCode::BadOrigin => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StoreUnavailable | ErrorCode::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RoomFull | ErrorCode::TooManyRooms => StatusCode::CONFLICT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RoomExists => StatusCode::CONFLICT,
            ErrorCode::Muted | ErrorCode::Banned => StatusCode::FORBIDDEN,
            ErrorCode::SlowMode => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NameTaken => StatusCode::CONFLICT,
            ErrorCode::SignupClosed | ErrorCode::BadCsrf => StatusCode::FORBIDDEN,
            ErrorCode::BadType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::new(rejection.code, rejection.message)
    }
}

/// A store failure on a read route: 503 `store_unavailable` with the error's client text; the
/// whole error (which may name files or SQL) goes to the log only.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        warn!(error = %err, "store read failed; answered 503 store_unavailable");
        ApiError::new(ErrorCode::StoreUnavailable, err.client_message())
    }
}

/// A refused post: 503 `store_unavailable` with the error's client text. The committer has
/// logged the failed batch with its cause, so this logs at debug.
impl From<PostError> for ApiError {
    fn from(err: PostError) -> Self {
        debug!(error = %err, "post refused; answered 503 store_unavailable");
        ApiError::new(ErrorCode::StoreUnavailable, err.client_message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
