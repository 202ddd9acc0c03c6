//! The one place where failures become HTTP statuses and the one error shape
//! `{"error": "…", "error_type": "snake_case"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::{ErrorKind, ServiceError};

/// Everything a handler can fail with: the service's errors, and the transport's own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the server is not ready: {0}")]
    NotReady(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Unauthorized(String),
    #[error("the request body was not received within {0} ms")]
    RequestTimeout(u64),
}

impl ApiError {
    /// The request's structure is wrong (multipart, JSON, base64, missing image).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServiceError::BadRequest(message.into()).into()
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        ServiceError::InvalidParameter(message.into()).into()
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    error_type: &'a str,
}

impl ApiError {
    /// Status and machine-readable type, decided here and nowhere else.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Service(e) => {
                let kind = e.kind();
                (status_of(kind), kind.as_str())
            }
        }
    }
}

impl ApiError {
    /// Seconds a refused client should wait: the service's estimate from the queue, else 1.
    fn retry_after(&self) -> u64 {
        match self {
            ApiError::Service(e) => e.retry_after().unwrap_or(1),
            _ => 1,
        }
    }
}

/// The status of each kind of service failure.
fn status_of(kind: ErrorKind) -> StatusCode {
    use ErrorKind as K;
    match kind {
        K::BadRequest | K::EmptyImage | K::Cancelled => StatusCode::BAD_REQUEST,
        K::InvalidParameter | K::InvalidTarget | K::UnsupportedByModel | K::InvalidImage | K::ImageTooLarge => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        K::UnknownModel => StatusCode::NOT_FOUND,
        K::UnsupportedImageFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        K::ModelUnavailable | K::NotReady | K::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        K::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        K::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        K::ModelFailure | K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        if status.is_server_error() {
            tracing::error!(error = %self, error_type, "request failed");
        } else {
            tracing::info!(error = %self, error_type, "request rejected");
        }
        let retry_after = self.retry_after();
        let mut response = (status, Json(ErrorBody { error: self.to_string(), error_type })).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scorecam\""));
        }
        response
    }
}
