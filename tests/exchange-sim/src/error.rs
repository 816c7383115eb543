//! HTTP error responses in Coinbase's shapes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ratelimit::Decision;

/// An error answered instead of a handler's normal response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `INVALID_ARGUMENT`.
    BadRequest(String),
    /// 401 with the plain-text body `Unauthorized`.
    Unauthorized,
    /// 403 `PERMISSION_DENIED` / `Missing required scopes`.
    MissingScopes,
    /// 404 `NOT_FOUND`.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 429 from the rate limiter (JSON) or injected (`html`).
    RateLimited { decision: Decision, html: bool },
    /// A `fail_next` injection with a 5xx status.
    Injected { status: u16, html: bool },
}

fn json_error(status: StatusCode, error: &str, details: &str, message: &str) -> Response {
    let body = json!({ "error": error, "error_details": details, "message": message });
    (status, axum::Json(body)).into_response()
}

fn html_error(status: StatusCode) -> Response {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Adds the `x-ratelimit-*` headers of a limiter decision.
pub fn add_rate_limit_headers(response: &mut Response, decision: &Decision) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: u64| {
        headers.insert(name, HeaderValue::from(value));
    };
    set("x-ratelimit-limit", u64::from(decision.limit));
    set("x-ratelimit-remaining", u64::from(decision.remaining));
    set("x-ratelimit-reset", decision.reset_epoch);
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => {
                json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message, &message)
            }
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Unauthorized",
            )
                .into_response(),
            ApiError::MissingScopes => json_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Missing required scopes",
                "Missing required scopes",
            ),
            ApiError::NotFound(message) => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &message, &message),
            ApiError::MethodNotAllowed => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed",
                "method not allowed",
            ),
            ApiError::RateLimited { decision, html } => {
                let mut response = if html {
                    html_error(StatusCode::TOO_MANY_REQUESTS)
                } else {
                    json_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RATE_LIMIT_EXCEEDED",
                        "Too many requests",
                        "Too many requests",
                    )
                };
                add_rate_limit_headers(&mut response, &decision);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(decision.retry_after_secs));
                response
            }
            ApiError::Injected { status, html } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if html {
                    html_error(status)
                } else {
                    let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
                        "INTERNAL"
                    } else {
                        "UNAVAILABLE"
                    };
                    json_error(
                        status,
                        error,
                        "injected fault",
                        status.canonical_reason().unwrap_or("error"),
                    )
                }
            }
        }
    }
}
