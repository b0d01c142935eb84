//! Which deployments of a model group a request may use at all, before any
//! health or load is considered: its tags (LiteLLM's tag routing) and the
//! size of its prompt against each deployment's context window (LiteLLM's
//! pre-call checks). Pure; decided once per request and group.

use crate::error::GatewayError;
use crate::topology::{Group, Topology};

/// The tag an untagged request is routed by, when deployments carry it.
pub const DEFAULT_TAG: &str = "default";

/// Does the prompt need counting for this group? A token is at least one
/// byte of the body, so a body smaller than every window cannot overflow
/// any, and the (costly) count is skipped for almost every request.
pub fn needs_token_count(group: &Group, body_len: usize) -> bool {
    group.min_input_window.is_some_and(|w| body_len as u64 > w)
}

/// The deployments of `group` this request may use; `None` means all
/// (nothing to filter: the common case allocates nothing).
///
/// * Tags: a request with tags goes to deployments carrying one of them,
///   else to those tagged `default`; one without tags goes to the
///   `default`-tagged deployments if any, else anywhere.
/// * Context window: a deployment whose window is smaller than the prompt
///   is skipped; when none fits, the request fails as the provider would
///   (`context_length_exceeded`), which lets context-window fallbacks act.
pub fn eligible(
    topology: &Topology,
    group: &Group,
    tags: &[String],
    prompt_tokens: Option<u64>,
) -> Result<Option<Vec<usize>>, GatewayError> {
    if !group.tagged && prompt_tokens.is_none() {
        return Ok(None);
    }
    let deployments = |f: &dyn Fn(usize) -> bool| -> Vec<usize> {
        group
            .deployments
            .iter()
            .copied()
            .filter(|&d| f(d))
            .collect()
    };
    let mut allowed = group.deployments.clone();
    if let Some(tokens) = prompt_tokens {
        allowed = deployments(&|d| {
            topology.deployments[d]
                .max_input_tokens
                .is_none_or(|w| tokens <= w)
        });
        if allowed.is_empty() {
            let window = group
                .deployments
                .iter()
                .filter_map(|&d| topology.deployments[d].max_input_tokens)
                .max()
                .unwrap_or(0);
            return Err(GatewayError::ContextWindowExceeded {
                model: group.name.to_string(),
                tokens,
                window,
            });
        }
    }
    if group.tagged {
        let has = |d: usize, tag: &str| topology.deployments[d].tags.iter().any(|t| t == tag);
        let matching: Vec<usize> = if tags.is_empty() {
            Vec::new()
        } else {
            allowed
                .iter()
                .copied()
                .filter(|&d| tags.iter().any(|t| has(d, t)))
                .collect()
        };
        let chosen = if !matching.is_empty() {
            matching
        } else {
            let defaults: Vec<usize> = allowed
                .iter()
                .copied()
                .filter(|&d| has(d, DEFAULT_TAG))
                .collect();
            match (defaults.is_empty(), tags.is_empty()) {
                (false, _) => defaults,
                (true, true) => allowed,
                (true, false) => {
                    return Err(GatewayError::NoDeploymentForTags {
                        model: group.name.to_string(),
                        tags: tags.to_vec(),
                    })
                }
            }
        };
        allowed = chosen;
    }
    Ok(Some(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn topology(toml: &str) -> Topology {
        let mut c: Config = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        Topology::build(&c, None)
    }

    fn ids(t: &Topology, list: Option<Vec<usize>>) -> Vec<String> {
        let g = &t.groups[0];
        list.unwrap_or_else(|| g.deployments.clone())
            .into_iter()
            .map(|d| t.deployments[d].id.clone())
            .collect()
    }

    const TAGGED: &str = r#"
[[models.m.deployments]]
id = "free"
provider = "mock"
model = "x"
tags = ["free"]
[[models.m.deployments]]
id = "paid"
provider = "mock"
model = "x"
tags = ["paid", "pro"]
[[models.m.deployments]]
id = "fallback"
provider = "mock"
model = "x"
tags = ["default"]
"#;

    #[test]
    fn tagged_requests_go_to_deployments_with_one_of_their_tags() {
        let t = topology(TAGGED);
        let g = &t.groups[0];
        let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(&t, eligible(&t, g, &tags(&["pro"]), None).unwrap()),
            ["paid"]
        );
        assert_eq!(
            ids(&t, eligible(&t, g, &tags(&["free", "paid"]), None).unwrap()),
            ["free", "paid"]
        );
        // Unknown tags and untagged requests go to the default deployment.
        assert_eq!(
            ids(&t, eligible(&t, g, &tags(&["gold"]), None).unwrap()),
            ["fallback"]
        );
        assert_eq!(ids(&t, eligible(&t, g, &[], None).unwrap()), ["fallback"]);
    }

    #[test]
    fn without_a_default_deployment_an_unmatched_tag_is_refused() {
        let t = topology(&TAGGED.replace("tags = [\"default\"]", "tags = [\"x\"]"));
        let g = &t.groups[0];
        let err = eligible(&t, g, &["gold".to_string()], None).unwrap_err();
        assert!(
            matches!(err, GatewayError::NoDeploymentForTags { .. }),
            "{err}"
        );
        // Untagged requests may go anywhere.
        assert_eq!(ids(&t, eligible(&t, g, &[], None).unwrap()).len(), 3);
    }

    #[test]
    fn untagged_groups_need_no_filtering() {
        let t = topology("[[models.m.deployments]]\nprovider = \"mock\"\nmodel = \"x\"\n");
        assert!(eligible(&t, &t.groups[0], &["free".into()], None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_prompt_larger_than_a_window_skips_that_deployment() {
        let t = topology(
            r#"
[[models.m.deployments]]
id = "small"
provider = "mock"
model = "x"
max_input_tokens = 1000
[[models.m.deployments]]
id = "large"
provider = "mock"
model = "x"
max_input_tokens = 100000
"#,
        );
        let g = &t.groups[0];
        assert!(needs_token_count(g, 5_000));
        assert!(!needs_token_count(g, 900));
        assert_eq!(
            ids(&t, eligible(&t, g, &[], Some(5_000)).unwrap()),
            ["large"]
        );
        assert_eq!(ids(&t, eligible(&t, g, &[], Some(500)).unwrap()).len(), 2);
        let err = eligible(&t, g, &[], Some(200_000)).unwrap_err();
        assert!(
            matches!(
                err,
                GatewayError::ContextWindowExceeded {
                    tokens: 200_000,
                    window: 100_000,
                    ..
                }
            ),
            "{err}"
        );
    }
}
