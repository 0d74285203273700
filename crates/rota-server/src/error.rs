//! Errors of the API, and the one place where domain errors become HTTP
//! statuses with stable codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rota_core::{SourceError, StoreError};
use rota_ingest::IngestError;
use serde::Serialize;

/// An error answered to a client: a status, a stable code clients can match
/// on, and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, lowercase code (`not_found`, `lease_lost`, …).
    pub code: &'static str,
    /// What went wrong, with no secret in it.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The request is malformed or asks for something impossible (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// Nothing by that name (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The body of this error as JSON text (for the parts of the API that
    /// answer per item).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code, "message": self.message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound { .. } => Self::not_found(message),
            StoreError::LeaseLost { .. } => Self::new(StatusCode::CONFLICT, "lease_lost", message),
            StoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::Invalid { .. } => Self::invalid(message),
            StoreError::Transient(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            _ => {
                tracing::error!(error = %message, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "store failure",
                )
            }
        }
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        let message = e.to_string();
        match e {
            SourceError::NotFound { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "source_not_found",
                message,
            ),
            SourceError::AccessDenied { .. } | SourceError::PermissionDenied { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "source_access_denied",
                message,
            ),
            SourceError::InvalidLocation { .. } => Self::invalid(message),
            _ => Self::new(StatusCode::BAD_GATEWAY, "source_failed", message),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(m) => Self::invalid(m),
            IngestError::Source(s) => s.into(),
            IngestError::Store(s) | IngestError::StoreHeld { cause: s, .. } => s.into(),
            IngestError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ingest_failed",
                other.to_string(),
            ),
        }
    }
}

/// A query string read as `T`; one that does not fit is a JSON `invalid`
/// error, like every other error of the API.
pub(crate) struct Query<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Path parameters read as `T`; ones that do not fit are a JSON `invalid`
/// error.
pub(crate) struct Path<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for Path<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}
