//! The one error type of the request path and its mapping to HTTP.
//!
//! Every failure a client can see is an OpenAI-shaped body
//! `{"error":{"message","type","param","code"}}` with the status OpenAI
//! would use, so the official SDKs raise their own typed exceptions.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use std::borrow::Cow;

use serde::Serialize;

/// Rate-limit details carried to the response headers (the tightest
/// requests and tokens limits that applied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitInfo {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    /// Seconds until the current window ends.
    pub reset_requests_secs: Option<f64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens_secs: Option<f64>,
    /// What is left of the key's own limits for this model group
    /// (`model_rpm_limit` / `model_tpm_limit`), for LiteLLM's
    /// `litellm_remaining_api_key_{requests,tokens}_for_model` gauges.
    pub key_model_requests: Option<u64>,
    pub key_model_tokens: Option<u64>,
}

impl RateLimitInfo {
    /// Reports a requests-per-minute limit unless a tighter one is already
    /// reported (the headers name the limit closest to refusing).
    pub fn requests(&mut self, limit: u64, remaining: u64, reset_secs: f64) {
        if self.limit_requests.is_none() || Some(remaining) < self.remaining_requests {
            self.limit_requests = Some(limit);
            self.remaining_requests = Some(remaining);
            self.reset_requests_secs = Some(reset_secs);
        }
    }

    /// As `requests`, for a tokens-per-minute limit.
    pub fn tokens(&mut self, limit: u64, remaining: u64, reset_secs: f64) {
        if self.limit_tokens.is_none() || Some(remaining) < self.remaining_tokens {
            self.limit_tokens = Some(limit);
            self.remaining_tokens = Some(remaining);
            self.reset_tokens_secs = Some(reset_secs);
        }
    }
}

/// An error an upstream provider returned, kept as close to the original as
/// we can without passing its raw bytes (which might not be JSON at all).
#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub status: u16,
    pub message: String,
    pub error_type: Option<String>,
    pub param: Option<String>,
    pub code: Option<String>,
    /// The upstream's hint, already clamped where it was parsed.
    pub retry_after: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("Request body too large: the limit is {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Missing API key. Pass it as `Authorization: Bearer <key>`.")]
    MissingKey,
    #[error("Incorrect API key provided.")]
    InvalidKey,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.")]
    KeyBlocked,
    #[error(
        "Authentication Error, Team={0} is blocked. Update via `/team/unblock` if you're an admin."
    )]
    TeamBlocked(String),
    #[error("Authentication Error - Expired Key. Key Expiry time {} and current time {}", fmt_ms(*.expires_ms), fmt_ms(chrono::Utc::now().timestamp_millis()))]
    KeyExpired { expires_ms: i64 },
    /// LiteLLM's wording per entity; 400 or 429 (`spend.budget_exceeded_status`).
    #[error("{message}")]
    BudgetExceeded { message: String, status: u16 },
    #[error("User blocked from making LLM API Calls. User={0}")]
    CustomerBlocked(String),
    #[error("{scope} not allowed to access model. This {scope} can only access models={allowed:?}. Tried to access {model}")]
    ModelAccessDenied {
        scope: &'static str,
        model: String,
        allowed: Vec<String>,
    },
    /// A management-API failure with LiteLLM's status, type and parameter.
    #[error("{message}")]
    Management {
        status: u16,
        kind: &'static str,
        message: String,
        param: Option<&'static str>,
    },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Not found: {0}")]
    RouteNotFound(String),
    #[error("Rate limit exceeded for {scope}: {limit} {kind}{}. Retry after {retry_after_secs:.1}s.", if *kind == "parallel requests" { "" } else { " per minute" })]
    RateLimited {
        /// Whose limit, e.g. "key sk-...abcd", "team search", "the gateway".
        scope: String,
        /// "requests", "tokens" or "parallel requests".
        kind: &'static str,
        limit: u64,
        retry_after_secs: f64,
    },
    #[error(
        "No deployment of `{model}` is available right now: all are cooling down after failures."
    )]
    NoHealthyDeployment {
        model: String,
        retry_after_secs: f64,
    },
    #[error("{}", .0.message)]
    Upstream(UpstreamError),
    /// No deployment of the group has a context window the prompt fits
    /// (checked before any call, with the tokenizer).
    #[error("This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens (model group `{model}`).")]
    ContextWindowExceeded {
        model: String,
        tokens: u64,
        window: u64,
    },
    /// The request's tags match no deployment of the group, and none is
    /// tagged `default`.
    #[error("No deployment of `{model}` carries any of the request's tags {tags:?}, and none is tagged \"default\".")]
    NoDeploymentForTags { model: String, tags: Vec<String> },
    #[error("The upstream provider did not answer in time.")]
    UpstreamTimeout,
    #[error("The request did not complete within its deadline of {secs}s ({attempts} upstream attempt(s) made).")]
    DeadlineExceeded { secs: f64, attempts: u32 },
    #[error("The request body was not received within {secs}s.")]
    BodyTimeout { secs: u64 },
    #[error("Could not reach the upstream provider: {0}")]
    UpstreamUnreachable(String),
    #[error("The upstream provider sent an invalid response: {0}")]
    UpstreamProtocol(String),
    #[error("Service unavailable: {0}")]
    Unavailable(String),
    #[error("Internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    /// OpenAI's `error.type` for this failure.
    pub fn error_type(&self) -> &str {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::ModelNotFound(_)
            | GatewayError::RouteNotFound(_)
            | GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::ContextWindowExceeded { .. }
            | GatewayError::NoDeploymentForTags { .. } => "invalid_request_error",
            GatewayError::PermissionDenied(_) => "permission_error",
            GatewayError::KeyBlocked | GatewayError::TeamBlocked(_) => "auth_error",
            GatewayError::CustomerBlocked(_) => "invalid_request_error",
            GatewayError::KeyExpired { .. } => "expired_key",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
            GatewayError::ModelAccessDenied { scope, .. } => match *scope {
                "team" => "team_model_access_denied",
                "user" => "user_model_access_denied",
                "customer" => "customer_model_access_denied",
                "org" => "org_model_access_denied",
                _ => "key_model_access_denied",
            },
            GatewayError::Management { kind, .. } => kind,
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::NoHealthyDeployment { .. } | GatewayError::Unavailable(_) => {
                "service_unavailable"
            }
            GatewayError::Upstream(u) => u.error_type.as_deref().unwrap_or("upstream_error"),
            GatewayError::UpstreamTimeout | GatewayError::DeadlineExceeded { .. } => "timeout",
            GatewayError::BodyTimeout { .. } => "invalid_request_error",
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamProtocol(_) => {
                "upstream_error"
            }
            GatewayError::Internal(_) => "server_error",
        }
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => Some("invalid_api_key".into()),
            GatewayError::ModelNotFound(_) => Some("model_not_found".into()),
            GatewayError::PayloadTooLarge { .. } => Some("request_too_large".into()),
            GatewayError::RateLimited { .. } => Some("rate_limit_exceeded".into()),
            GatewayError::ContextWindowExceeded { .. } => Some("context_length_exceeded".into()),
            GatewayError::Upstream(u) => Some(match u.code.as_deref() {
                Some(c) => Cow::Borrowed(c),
                None => u.status.to_string().into(),
            }),
            // Otherwise LiteLLM's convention: the status, as a string.
            _ => Some(self.status_code().as_u16().to_string().into()),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::ModelNotFound(_) | GatewayError::ModelAccessDenied { .. } => {
                Some("model")
            }
            GatewayError::ContextWindowExceeded { .. } => Some("messages"),
            GatewayError::NoDeploymentForTags { .. } => Some("tags"),
            GatewayError::Management { param, .. } => *param,
            GatewayError::Upstream(u) => u.param.as_deref(),
            _ => None,
        }
    }

    pub fn retry_after_secs(&self) -> Option<f64> {
        match self {
            GatewayError::RateLimited {
                retry_after_secs, ..
            }
            | GatewayError::NoHealthyDeployment {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            GatewayError::Upstream(u) => u.retry_after.map(|d| d.as_secs_f64()),
            _ => None,
        }
    }

    /// The JSON body a client sees for this error.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                r#type: self.error_type(),
                param: self.param(),
                code: self.code(),
            },
        }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub message: String,
    pub r#type: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<Cow<'a, str>>,
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::ContextWindowExceeded { .. }
            | GatewayError::NoDeploymentForTags { .. } => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MissingKey | GatewayError::InvalidKey => StatusCode::UNAUTHORIZED,
            GatewayError::PermissionDenied(_) | GatewayError::ModelAccessDenied { .. } => {
                StatusCode::FORBIDDEN
            }
            GatewayError::KeyBlocked
            | GatewayError::TeamBlocked(_)
            | GatewayError::KeyExpired { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::CustomerBlocked(_) => StatusCode::BAD_REQUEST,
            GatewayError::BudgetExceeded { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            GatewayError::Management { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            GatewayError::ModelNotFound(_) | GatewayError::RouteNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::NoHealthyDeployment { .. } | GatewayError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Upstream(u) => {
                StatusCode::from_u16(u.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            GatewayError::UpstreamTimeout | GatewayError::DeadlineExceeded { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs() {
            // retry-after is whole seconds; round up so a client never comes back early.
            let whole = secs.max(0.0).ceil() as u64;
            resp.insert_header(("retry-after", whole.to_string()));
            resp.insert_header((
                "retry-after-ms",
                ((secs * 1000.0).ceil() as u64).to_string(),
            ));
        }
        if let GatewayError::RateLimited {
            kind,
            limit,
            retry_after_secs,
            ..
        } = self
        {
            let mut info = RateLimitInfo::default();
            if *kind == "tokens" {
                info.limit_tokens = Some(*limit);
                info.remaining_tokens = Some(0);
                info.reset_tokens_secs = Some(*retry_after_secs);
            } else {
                info.limit_requests = Some(*limit);
                info.remaining_requests = Some(0);
                info.reset_requests_secs = Some(*retry_after_secs);
            }
            for (name, value) in rate_limit_headers(&info) {
                resp.insert_header((name, value));
            }
        }
        resp.json(self.body())
    }
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// `x-ratelimit-*` headers in OpenAI's names, for the limits that apply.
pub fn rate_limit_headers(info: &RateLimitInfo) -> Vec<(HeaderName, HeaderValue)> {
    let secs = |s: f64| {
        HeaderValue::from_str(&format!("{:.3}s", s.max(0.0)))
            .unwrap_or(HeaderValue::from_static("0s"))
    };
    let mut out = Vec::with_capacity(6);
    let mut push = |name: &'static str, v: Option<HeaderValue>| {
        if let Some(v) = v {
            out.push((HeaderName::from_static(name), v));
        }
    };
    push(
        "x-ratelimit-limit-requests",
        info.limit_requests.map(HeaderValue::from),
    );
    push(
        "x-ratelimit-remaining-requests",
        info.remaining_requests.map(HeaderValue::from),
    );
    push(
        "x-ratelimit-reset-requests",
        info.reset_requests_secs.map(secs),
    );
    push(
        "x-ratelimit-limit-tokens",
        info.limit_tokens.map(HeaderValue::from),
    );
    push(
        "x-ratelimit-remaining-tokens",
        info.remaining_tokens.map(HeaderValue::from),
    );
    push("x-ratelimit-reset-tokens", info.reset_tokens_secs.map(secs));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_json(e: &GatewayError) -> serde_json::Value {
        let resp = e.error_response();
        let bytes = resp.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn unknown_model_is_404_with_openai_code() {
        let e = GatewayError::ModelNotFound("gpt-9".into());
        assert_eq!(e.status_code(), StatusCode::NOT_FOUND);
        let v = body_json(&e);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn rate_limited_carries_retry_after_and_headers() {
        let e = GatewayError::RateLimited {
            scope: "key k".into(),
            kind: "requests",
            limit: 10,
            retry_after_secs: 1.2,
        };
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "2");
        assert_eq!(
            resp.headers()
                .get("x-ratelimit-remaining-requests")
                .unwrap(),
            "0"
        );
    }

    #[test]
    fn upstream_status_is_kept() {
        let e = GatewayError::Upstream(UpstreamError {
            status: 503,
            message: "overloaded".into(),
            error_type: Some("server_error".into()),
            param: None,
            code: None,
            retry_after: None,
        });
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(&e)["error"]["message"], "overloaded");
    }
}
