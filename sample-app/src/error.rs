//! The error every handler returns at the HTTP boundary: each variant maps to one status code
//! and a JSON body `{"error": "<machine-readable kind>", "detail": "<what went wrong>"}`.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { error: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { error: &'static str, detail: String },
    #[error("{detail}")]
    NotFound { error: &'static str, detail: String },
    #[error("{detail}")]
    MethodNotAllowed { detail: String },
    #[error("{detail}")]
    PayloadTooLarge { detail: String },
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    /// The client stopped sending a body it announced.
    #[error("{detail}")]
    RequestTimeout { detail: String },
    #[error("{detail}")]
    TooManyRequests { detail: String },
    /// A failure injected by the fault plan or an `x-fault-error-status` header.
    #[error("injected fault: this request was failed on purpose with {status}")]
    Injected { status: StatusCode },
    /// Deliberate failures of the demo endpoints (`/error?type=500`).
    #[error("{detail}")]
    Simulated { status: StatusCode, detail: String },
    #[error("{detail}")]
    BadGateway { error: &'static str, detail: String },
    #[error("{detail}")]
    GatewayTimeout { detail: String },
    #[error("{detail}")]
    Unavailable { error: &'static str, detail: String },
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
}

impl ApiError {
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            error,
            detail: detail.into(),
        }
    }

    /// The machine-readable kind, also used as the span's `error.type` for server errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest { error, .. }
            | Self::Unprocessable { error, .. }
            | Self::NotFound { error, .. }
            | Self::BadGateway { error, .. }
            | Self::Unavailable { error, .. } => error,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::RequestTimeout { .. } => "body_timeout",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Simulated { .. } => "simulated_error",
            Self::Injected { .. } => "fault_injected",
            Self::GatewayTimeout { .. } => "downstream_timeout",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Simulated { status, .. } | Self::Injected { status } => *status,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.kind(),
            detail: self.to_string(),
        })
    }
}
