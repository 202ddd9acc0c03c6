//! The API-key check, as middleware in front of every route (see `keys` for the keys).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::state::AppState;

/// Rejects requests without a valid key (when keys are configured) with 401.
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let keys = &state.api_keys;
    if !keys.enabled() || keys.exempt(req.uri().path()) {
        return Ok(next.run(req).await);
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
    match bearer.or(api_key) {
        Some(k) if keys.accepts(k.as_bytes()) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::Unauthorized("the API key is not valid".into())),
        None => Err(ApiError::Unauthorized("an API key is required: send `Authorization: Bearer <key>`".into())),
    }
}
