//! Failed attempts by class, and what each class earns: how many retries
//! (`retry_policy`) and how many failures before the deployment cools down
//! (`allowed_fails_policy`). LiteLLM's classes and field names.

use serde::Deserialize;

use crate::actors::provider::CallError;
use crate::providers::is_retryable_status;

/// LiteLLM's exception families for an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    BadRequest,
    Authentication,
    Timeout,
    RateLimit,
    ContentPolicy,
    InternalServer,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::BadRequest,
        ErrorClass::Authentication,
        ErrorClass::Timeout,
        ErrorClass::RateLimit,
        ErrorClass::ContentPolicy,
        ErrorClass::InternalServer,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The class of a failed call.
    pub fn of(err: &CallError) -> ErrorClass {
        match err {
            CallError::Timeout => ErrorClass::Timeout,
            CallError::Connect(_) | CallError::Protocol(_) => ErrorClass::InternalServer,
            CallError::Status(u) => {
                let code = u.code.as_deref().unwrap_or("");
                let kind = u.error_type.as_deref().unwrap_or("");
                if matches!(code, "content_policy_violation" | "content_filter")
                    || kind == "content_policy_violation"
                {
                    ErrorClass::ContentPolicy
                } else {
                    match u.status {
                        401 | 403 => ErrorClass::Authentication,
                        408 => ErrorClass::Timeout,
                        429 => ErrorClass::RateLimit,
                        s if s >= 500 => ErrorClass::InternalServer,
                        // 409 (conflict, "try again") is transient like a 5xx.
                        409 => ErrorClass::InternalServer,
                        _ => ErrorClass::BadRequest,
                    }
                }
            }
        }
    }

    /// Without a policy: retried, and counted against the deployment's
    /// health (the classes that say the deployment, not the request, is
    /// the problem).
    pub fn transient(self, err: &CallError) -> bool {
        match err {
            CallError::Status(u) => is_retryable_status(u.status),
            _ => true,
        }
    }
}

/// Retries per error class; a class left out keeps the default (the
/// router's `num_retries` for transient failures, none for the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(alias = "BadRequestErrorRetries")]
    pub bad_request: Option<u32>,
    #[serde(alias = "AuthenticationErrorRetries")]
    pub authentication: Option<u32>,
    #[serde(alias = "TimeoutErrorRetries")]
    pub timeout: Option<u32>,
    #[serde(alias = "RateLimitErrorRetries")]
    pub rate_limit: Option<u32>,
    #[serde(alias = "ContentPolicyViolationErrorRetries")]
    pub content_policy: Option<u32>,
    #[serde(alias = "InternalServerErrorRetries")]
    pub internal_server: Option<u32>,
}

/// Failures per error class before a deployment cools down; a class left
/// out keeps the default (`allowed_fails` for transient failures; the
/// rest never cool a deployment down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedFailsPolicy {
    #[serde(alias = "BadRequestErrorAllowedFails")]
    pub bad_request: Option<u32>,
    #[serde(alias = "AuthenticationErrorAllowedFails")]
    pub authentication: Option<u32>,
    #[serde(alias = "TimeoutErrorAllowedFails")]
    pub timeout: Option<u32>,
    #[serde(alias = "RateLimitErrorAllowedFails")]
    pub rate_limit: Option<u32>,
    #[serde(alias = "ContentPolicyViolationErrorAllowedFails")]
    pub content_policy: Option<u32>,
    #[serde(alias = "InternalServerErrorAllowedFails")]
    pub internal_server: Option<u32>,
}

fn per_class(
    class: ErrorClass,
    [bad_request, authentication, timeout, rate_limit, content_policy, internal_server]: [Option<u32>;
        6],
) -> Option<u32> {
    match class {
        ErrorClass::BadRequest => bad_request,
        ErrorClass::Authentication => authentication,
        ErrorClass::Timeout => timeout,
        ErrorClass::RateLimit => rate_limit,
        ErrorClass::ContentPolicy => content_policy,
        ErrorClass::InternalServer => internal_server,
    }
}

impl RetryPolicy {
    fn fields(&self) -> [Option<u32>; 6] {
        [
            self.bad_request,
            self.authentication,
            self.timeout,
            self.rate_limit,
            self.content_policy,
            self.internal_server,
        ]
    }

    /// Retries a failure of this class earns. `default` is the request's
    /// (or router's) `num_retries`; the request's own `num_retries` is
    /// passed as `overrides` and wins over the policy, as in LiteLLM.
    pub fn retries(&self, err: &CallError, default: u32, overrides: Option<u32>) -> u32 {
        let class = ErrorClass::of(err);
        let transient = class.transient(err);
        match (overrides, per_class(class, self.fields())) {
            (Some(n), _) if transient => n,
            (Some(_), policy) => policy.unwrap_or(0),
            (None, Some(n)) => n,
            (None, None) if transient => default,
            (None, None) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }
}

impl AllowedFailsPolicy {
    /// Failures of `class` that cool a deployment down; `None`: this class
    /// says nothing about the deployment's health.
    fn fields(&self) -> [Option<u32>; 6] {
        [
            self.bad_request,
            self.authentication,
            self.timeout,
            self.rate_limit,
            self.content_policy,
            self.internal_server,
        ]
    }

    pub fn threshold(&self, class: ErrorClass, transient: bool, allowed_fails: u32) -> Option<u32> {
        match per_class(class, self.fields()) {
            Some(n) => Some(n.max(1)),
            None if transient => Some(allowed_fails),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;

    fn status(s: u16, code: Option<&str>) -> CallError {
        CallError::Status(UpstreamError {
            status: s,
            message: "x".into(),
            error_type: None,
            param: None,
            code: code.map(str::to_string),
            retry_after: None,
        })
    }

    #[test]
    fn failures_fall_into_litellms_classes() {
        assert_eq!(ErrorClass::of(&status(400, None)), ErrorClass::BadRequest);
        assert_eq!(
            ErrorClass::of(&status(400, Some("content_filter"))),
            ErrorClass::ContentPolicy
        );
        assert_eq!(
            ErrorClass::of(&status(401, None)),
            ErrorClass::Authentication
        );
        assert_eq!(ErrorClass::of(&status(429, None)), ErrorClass::RateLimit);
        assert_eq!(
            ErrorClass::of(&status(503, None)),
            ErrorClass::InternalServer
        );
        assert_eq!(ErrorClass::of(&CallError::Timeout), ErrorClass::Timeout);
        assert_eq!(
            ErrorClass::of(&CallError::Connect("refused".into())),
            ErrorClass::InternalServer
        );
    }

    #[test]
    fn the_policy_sets_retries_per_class_and_the_rest_keep_the_default() {
        let p = RetryPolicy {
            rate_limit: Some(5),
            authentication: Some(1),
            internal_server: Some(0),
            ..Default::default()
        };
        assert_eq!(p.retries(&status(429, None), 2, None), 5);
        assert_eq!(p.retries(&status(401, None), 2, None), 1);
        assert_eq!(p.retries(&status(500, None), 2, None), 0);
        assert_eq!(p.retries(&CallError::Timeout, 2, None), 2);
        assert_eq!(p.retries(&status(400, None), 2, None), 0);
        // The request's own num_retries wins for transient failures.
        assert_eq!(p.retries(&status(429, None), 2, Some(1)), 1);
        assert_eq!(p.retries(&status(401, None), 2, Some(3)), 1);
        assert_eq!(p.retries(&status(400, None), 2, Some(3)), 0);
    }

    #[test]
    fn allowed_fails_per_class_can_make_any_class_count() {
        let p = AllowedFailsPolicy {
            authentication: Some(1),
            rate_limit: Some(10),
            ..Default::default()
        };
        assert_eq!(p.threshold(ErrorClass::Authentication, false, 3), Some(1));
        assert_eq!(p.threshold(ErrorClass::RateLimit, true, 3), Some(10));
        assert_eq!(p.threshold(ErrorClass::Timeout, true, 3), Some(3));
        assert_eq!(p.threshold(ErrorClass::BadRequest, false, 3), None);
    }

    #[test]
    fn litellm_field_names_are_accepted() {
        let p: RetryPolicy =
            toml::from_str("TimeoutErrorRetries = 4\nRateLimitErrorRetries = 1\n").unwrap();
        assert_eq!((p.timeout, p.rate_limit), (Some(4), Some(1)));
        let a: AllowedFailsPolicy =
            toml::from_str("InternalServerErrorAllowedFails = 7\n").unwrap();
        assert_eq!(a.internal_server, Some(7));
    }
}
