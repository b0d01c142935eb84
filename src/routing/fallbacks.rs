//! LiteLLM's fallbacks as a policy: once a model group's own attempts have
//! failed, which other groups the request goes to, in order. Chosen once,
//! from the group and the class of its final error; pure, no I/O.

use crate::config::RouterConfig;
use crate::error::GatewayError;

/// What a group's final error says about trying another group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The prompt did not fit the model's context window.
    ContextWindow,
    /// The provider refused the content.
    ContentPolicy,
    /// The group could not answer (rate limited, 5xx, timeouts,
    /// unreachable, misconfigured credentials): another group may.
    Upstream,
    /// The request itself is wrong, or no time is left: no other group
    /// would do better.
    Final,
}

pub fn classify(err: &GatewayError) -> Failure {
    match err {
        GatewayError::Upstream(u) => {
            let code = u.code.as_deref().unwrap_or("");
            let kind = u.error_type.as_deref().unwrap_or("");
            if code == "context_length_exceeded" {
                Failure::ContextWindow
            } else if matches!(code, "content_policy_violation" | "content_filter")
                || kind == "content_policy_violation"
            {
                Failure::ContentPolicy
            } else if matches!(u.status, 401 | 403 | 404 | 408 | 409 | 429) || u.status >= 500 {
                Failure::Upstream
            } else {
                Failure::Final
            }
        }
        GatewayError::ContextWindowExceeded { .. } => Failure::ContextWindow,
        GatewayError::UpstreamTimeout
        | GatewayError::UpstreamUnreachable(_)
        | GatewayError::UpstreamProtocol(_)
        | GatewayError::NoHealthyDeployment { .. }
        | GatewayError::RateLimited { .. } => Failure::Upstream,
        _ => Failure::Final,
    }
}

/// The groups to try after `group` failed with `failure`, in order.
/// `requested` is the request's own `fallbacks`, which replace the
/// configured general ones (as in LiteLLM); the context-window and
/// content-policy lists win for their class, and without one the general
/// list applies.
pub fn plan<'a>(
    router: &'a RouterConfig,
    group: &str,
    failure: Failure,
    requested: &'a [String],
) -> Vec<&'a str> {
    let general = || -> &'a [String] {
        if !requested.is_empty() {
            requested
        } else if let Some(list) = router.fallbacks.get(group) {
            list
        } else {
            &router.default_fallbacks
        }
    };
    let list: &[String] = match failure {
        Failure::Final => &[],
        Failure::Upstream => general(),
        Failure::ContextWindow => router
            .context_window_fallbacks
            .get(group)
            .map_or_else(general, Vec::as_slice),
        Failure::ContentPolicy => router
            .content_policy_fallbacks
            .get(group)
            .map_or_else(general, Vec::as_slice),
    };
    let mut out: Vec<&str> = Vec::with_capacity(list.len());
    for name in list {
        // A group falls back to others, never to itself or twice to one.
        if name != group && !out.contains(&name.as_str()) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;

    fn upstream(status: u16, code: Option<&str>) -> GatewayError {
        GatewayError::Upstream(UpstreamError {
            status,
            message: "x".into(),
            error_type: None,
            param: None,
            code: code.map(str::to_string),
            retry_after: None,
        })
    }

    fn router() -> RouterConfig {
        let mut r = RouterConfig::default();
        r.fallbacks.insert(
            "gpt".into(),
            vec!["claude".into(), "gpt".into(), "gemini".into()],
        );
        r.context_window_fallbacks
            .insert("gpt".into(), vec!["gpt-long".into()]);
        r.default_fallbacks = vec!["cheap".into()];
        r
    }

    #[test]
    fn errors_are_classed_by_what_another_group_could_change() {
        assert_eq!(
            classify(&upstream(400, Some("context_length_exceeded"))),
            Failure::ContextWindow
        );
        assert_eq!(
            classify(&upstream(400, Some("content_policy_violation"))),
            Failure::ContentPolicy
        );
        for status in [429, 500, 503, 401, 404] {
            assert_eq!(
                classify(&upstream(status, None)),
                Failure::Upstream,
                "{status}"
            );
        }
        assert_eq!(classify(&upstream(400, None)), Failure::Final);
        assert_eq!(classify(&GatewayError::UpstreamTimeout), Failure::Upstream);
        assert_eq!(
            classify(&GatewayError::DeadlineExceeded {
                secs: 1.0,
                attempts: 3
            }),
            Failure::Final
        );
    }

    #[test]
    fn each_class_picks_its_list_and_the_request_overrides_the_general_one() {
        let r = router();
        assert_eq!(
            plan(&r, "gpt", Failure::Upstream, &[]),
            ["claude", "gemini"]
        );
        assert_eq!(plan(&r, "gpt", Failure::ContextWindow, &[]), ["gpt-long"]);
        // No content-policy list: the general one.
        assert_eq!(
            plan(&r, "gpt", Failure::ContentPolicy, &[]),
            ["claude", "gemini"]
        );
        assert_eq!(plan(&r, "other", Failure::Upstream, &[]), ["cheap"]);
        let asked = vec!["mine".to_string()];
        assert_eq!(plan(&r, "gpt", Failure::Upstream, &asked), ["mine"]);
        assert!(plan(&r, "gpt", Failure::Final, &asked).is_empty());
    }
}
