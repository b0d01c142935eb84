//! The routing policy of one request, as one function: route → call →
//! retry → fall back, under one deadline. Handlers admit a request (key,
//! budgets, limits) and hand it here; what comes back is the response.
//!
//! * Each model group tried gets its own attempts: a deployment chosen by
//!   the router per attempt (never one already tried while another is
//!   left), retried while the error's class earns it (`retry_policy`, the
//!   request's `num_retries`) and the deadline allows.
//! * Once a group has failed, its fallbacks (`routing::fallbacks`) follow,
//!   each with its own attempts.
//! * Deployments the request cannot use (tags, context window) are ruled
//!   out before any attempt; one at its own rpm/tpm is skipped without
//!   counting as an attempt.
//! * Bytes already streamed are never replayed: once a stream has begun,
//!   its failure ends the request.

use std::time::{Duration, Instant};

use actix_web::HttpResponse;

use super::record::{settle, RequestRecord};
use super::stream::SseBody;
use super::WorkerState;
use crate::access::KeyInfo;
use crate::actors::health::{Failed, Report};
use crate::actors::provider::{Call, CallError, Reply};
use crate::actors::rate_limit::{Acquire, Caps, Check, DeploymentUsage, Scope};
use crate::actors::router::{Outcome, OutcomeKind, Route, RouterActor};
use crate::actors::Metered;
use crate::error::{GatewayError, RateLimitInfo};
use crate::pricing::cost_usd;
use crate::providers::{self, AnswerCtx, Inbound, Wire};
use crate::request::{InferenceRequest, RawObject};
use crate::routing::{candidates, fallbacks, ErrorClass, Strategy};
use crate::topology::{DeploymentTarget, Group, Topology};

/// One attempt on one deployment; tells the router how it ended, also when
/// the handler is dropped mid-call (client gone), so in-flight counts stay
/// true.
pub struct Attempt {
    router: Metered<RouterActor>,
    deployment: usize,
    started: Instant,
    /// When a stream's first event arrived.
    ttft: Option<Duration>,
    done: bool,
}

impl Attempt {
    pub fn finish(mut self, kind: OutcomeKind) {
        self.report(kind);
    }

    fn report(&mut self, kind: OutcomeKind) {
        if !self.done {
            self.done = true;
            self.router.do_send(Outcome {
                deployment: self.deployment,
                latency: self.started.elapsed(),
                ttft: self.ttft,
                kind,
            });
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.report(OutcomeKind::Neutral);
    }
}

/// The tokens a request counts as against tokens-per-minute limits until
/// its real usage is known (prompt + the completion it may ask for),
/// counted once however many limits need it.
pub async fn estimate_tokens(cache: &mut Option<u64>, body: &RawObject, max_tokens: u64) -> u64 {
    if let Some(t) = *cache {
        return t;
    }
    let t = crate::tokens::prompt_tokens(body).await + max_tokens;
    *cache = Some(t);
    t
}

/// What the routing policy needs to know of an admitted request.
pub struct Dispatch<'a> {
    /// The snapshot the request started with.
    pub topology: &'a Topology,
    pub group: &'a Group,
    pub parsed: &'a InferenceRequest,
    pub key: &'a KeyInfo,
    /// The caller's rate limits, for the response headers.
    pub limits: Option<&'a RateLimitInfo>,
    pub max_tokens: u64,
    /// Routing tags (body and `x-litellm-tags`).
    pub tags: &'a [String],
    /// The request body's size: bounds its token count from above.
    pub body_len: usize,
}

/// What holds across the groups a request tries.
struct Run {
    deadline: Instant,
    /// The deadline's length, for the error that reports it.
    budget: Duration,
    /// The prompt's tokens, once a context-window check counted them.
    prompt_tokens: Option<u64>,
}

/// Serves an admitted request: its model group, then (once that has
/// failed) its fallbacks, under the one deadline.
pub async fn dispatch(
    st: &WorkerState,
    record: &mut RequestRecord,
    d: Dispatch<'_>,
    tokens_estimate: &mut Option<u64>,
) -> Result<HttpResponse, GatewayError> {
    let gw = &st.gw;
    let router_cfg = &gw.config.router;
    let Dispatch {
        group, parsed, key, ..
    } = d;
    // One deadline for every attempt and every wait between them; the
    // request's own `timeout` may shorten it, never lengthen it.
    let budget = {
        let configured = Duration::from_secs(router_cfg.request_timeout_secs);
        parsed.timeout.map_or(configured, |t| t.min(configured))
    };
    let mut run = Run {
        deadline: record.started + budget,
        budget,
        prompt_tokens: None,
    };
    let mut current = group;
    let mut plan: Option<std::collections::VecDeque<&str>> = None;
    loop {
        let err = match try_group(st, record, &d, current, &mut run, tokens_estimate).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let failure = fallbacks::classify(&err);
        let plan = match &mut plan {
            Some(p) if failure != fallbacks::Failure::Final => p,
            Some(_) => return Err(err),
            None => plan.insert(
                fallbacks::plan(router_cfg, &group.name, failure, &parsed.fallbacks).into(),
            ),
        };
        let next = loop {
            let Some(name) = plan.pop_front() else {
                return Err(err);
            };
            let Some(g) = d.topology.group(name) else {
                // The request's own list may name anything; the config's
                // was checked at start-up.
                tracing::debug!(fallback = name, "fallback names no model group; skipped");
                continue;
            };
            // The caller's key must be allowed the group it falls back to.
            if key.group_denial(g).is_none() {
                break g;
            }
        };
        if run.deadline <= Instant::now() {
            return Err(err);
        }
        tracing::info!(from = %current.name, to = %next.name, error = %err, "falling back to another model group");
        record.fallbacks += 1;
        record.group = Some(next.idx);
        current = next;
    }
}

/// The deployments of `group` this request may use (`None`: all),
/// counting the prompt's tokens only when it could overflow a window.
async fn eligible(
    group: &Group,
    d: &Dispatch<'_>,
    prompt_tokens: &mut Option<u64>,
) -> Result<Option<Vec<usize>>, GatewayError> {
    let tokens = if candidates::needs_token_count(group, d.body_len) {
        if prompt_tokens.is_none() {
            *prompt_tokens = Some(crate::tokens::prompt_tokens(&d.parsed.body).await);
        }
        *prompt_tokens
    } else {
        None
    };
    candidates::eligible(d.topology, group, d.tags, tokens)
}

/// Usage-based routing: each deployment's share of its own limits used
/// this minute, from the limiter (the fleet's view where shared).
async fn deployment_usage(
    st: &WorkerState,
    topology: &Topology,
    group: &Group,
) -> Option<Vec<f64>> {
    let ids = group
        .deployments
        .iter()
        .map(|&i| {
            let t = &topology.deployments[i];
            (
                t.id.clone(),
                Caps {
                    rpm: t.rpm,
                    tpm: t.tpm,
                    parallel: None,
                },
            )
        })
        .collect();
    st.limiter.send(DeploymentUsage(ids)).await.ok()
}

/// One model group's attempts: a deployment chosen by the router per
/// attempt, retried on another (or the same, after a wait) while the
/// error's class earns it and the deadline allows.
async fn try_group(
    st: &WorkerState,
    record: &mut RequestRecord,
    d: &Dispatch<'_>,
    group: &Group,
    run: &mut Run,
    tokens_estimate: &mut Option<u64>,
) -> Result<HttpResponse, GatewayError> {
    let gw = &st.gw;
    let router_cfg = &gw.config.router;
    let (parsed, key, limits, max_tokens) = (d.parsed, d.key, d.limits, d.max_tokens);
    let (deadline, budget) = (run.deadline, run.budget);
    let allowed = eligible(group, d, &mut run.prompt_tokens).await?;
    // Retries are counted per group: a fallback gets its own.
    let first = record.attempts;
    let mut tried: Vec<usize> = Vec::new();
    let mut last_err: Option<CallError> = None;
    // A deployment at its own rpm/tpm is skipped, not tried; if none has
    // room, the caller hears of that limit.
    let mut deployment_full: Option<GatewayError> = None;
    let mut full: Vec<usize> = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GatewayError::DeadlineExceeded {
                secs: budget.as_secs_f64(),
                attempts: record.attempts,
            });
        }
        record.attempts += 1;
        let usage = if group.strategy == Strategy::UsageBased {
            deployment_usage(st, d.topology, group).await
        } else {
            None
        };
        let routed = st
            .router
            .send(Route {
                group: group.idx,
                exclude: tried.clone(),
                allowed: allowed.clone(),
                stream: parsed.stream,
                usage,
            })
            .await
            .map_err(|_| GatewayError::Unavailable("the router is restarting".into()))?;
        let idx = match (routed, last_err.take()) {
            (Ok(idx), _) => idx,
            // Everything cooled down under our retries: the upstream's own
            // error says more than "no deployment".
            (Err(_), Some(prev)) => return Err(prev.into_gateway_error()),
            (Err(e), None) => return Err(deployment_full.take().unwrap_or(e)),
        };
        let target = d.topology.deployments[idx].clone();
        record.deployment = Some(target.clone());
        let mut attempt = Attempt {
            router: st.router.clone(),
            deployment: idx,
            started: Instant::now(),
            ttft: None,
            done: false,
        };
        // Every deployment with room was tried: the router offers a full
        // one again only when nothing else is left.
        if full.contains(&idx) {
            attempt.finish(OutcomeKind::Neutral);
            return Err(deployment_full
                .take()
                .unwrap_or_else(|| GatewayError::Internal("no deployment with room".into())));
        }
        if target.rpm.is_some() || target.tpm.is_some() {
            let tokens = match target.tpm {
                None => 0,
                Some(_) => estimate_tokens(tokens_estimate, &parsed.body, max_tokens).await,
            };
            let admitted = Acquire {
                checks: vec![Check {
                    scope: Scope::Deployment(target.id.clone()),
                    caps: Caps {
                        rpm: target.rpm,
                        tpm: target.tpm,
                        parallel: None,
                    },
                }],
                tokens,
                key_name: key.display_name().to_string(),
            }
            .send(&st.limiter)
            .await;
            match admitted {
                Ok(permit) => record.deployment_permit = Some(permit),
                Err(e @ GatewayError::RateLimited { .. }) => {
                    // Not an attempt: nothing was sent, nothing learnt.
                    attempt.finish(OutcomeKind::Neutral);
                    record.attempts -= 1;
                    tried.push(idx);
                    full.push(idx);
                    deployment_full = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }

        // Cut short by the request's deadline, a timeout says nothing
        // about the deployment's health.
        let cut_by_deadline = remaining < target.timeout;
        let mut outbound = match providers::outbound(&target, parsed) {
            Ok(o) => o,
            Err(e) => {
                // The request cannot be said to this provider: nothing sent.
                attempt.finish(OutcomeKind::Neutral);
                return Err(e);
            }
        };
        let span = record.attempt_span(&mut outbound.headers);
        let call = Call {
            target: target.clone(),
            endpoint: record.endpoint,
            outbound,
            stream: parsed.stream,
            answer: answer_ctx(&target, &record.request_id, parsed.client_wants_usage),
            timeout: target.timeout.min(remaining),
        };
        let result =
            st.providers.send(call).await.map_err(|_| {
                GatewayError::Unavailable("the provider client is restarting".into())
            })?;
        record.upstream += attempt.started.elapsed();
        record.note_attempt(span, &target, attempt.started, result.as_ref().err());
        match result {
            Ok(Reply::Full(Inbound {
                body,
                usage,
                choices,
            })) => {
                attempt.finish(OutcomeKind::Success {
                    tokens: usage.map_or(0, |u| u.prompt_tokens + u.completion_tokens),
                });
                let cost = usage.map(|u| cost_usd(&target, &u));
                let mut resp = HttpResponse::Ok();
                resp.content_type("application/json");
                super::reply_headers::write(&mut resp, record, &target, limits, cost);
                record.capture_output(&body, choices);
                let row = record.take().finish(200, usage, None);
                settle(&st.spend, row);
                return Ok(resp.body(body));
            }
            Ok(Reply::Stream { first, rest }) => {
                attempt.ttft = Some(attempt.started.elapsed());
                let mut resp = HttpResponse::Ok();
                resp.content_type("text/event-stream")
                    .insert_header(("cache-control", "no-cache"))
                    .insert_header(("x-accel-buffering", "no"));
                super::reply_headers::write(&mut resp, record, &target, limits, None);
                let record = record.take();
                return Ok(resp.streaming(SseBody::new(first, rest, record, attempt)));
            }
            Err(err) => {
                let class = ErrorClass::of(&err);
                let transient = class.transient(&err);
                let deadline_hit = cut_by_deadline && matches!(err, CallError::Timeout);
                if deadline_hit {
                    attempt.finish(OutcomeKind::Neutral);
                } else {
                    // HealthActor decides on cooldowns; waiting for it
                    // (only on this failure path) means its announcement
                    // reached this worker's router before the retry routes.
                    let failed = Failed {
                        retry_after: err.retry_after(),
                        class,
                        transient,
                    };
                    let _ = gw
                        .health
                        .send(Report {
                            deployment: idx,
                            failure: Some(failed),
                        })
                        .await;
                    attempt.finish(OutcomeKind::Failure {
                        retry_after: failed.retry_after,
                        class,
                        transient,
                        reported: true,
                    });
                }
                let retries =
                    group
                        .retry_policy
                        .retries(&err, router_cfg.num_retries, parsed.num_retries);
                if record.attempts - first > retries {
                    return Err(err.into_gateway_error());
                }
                let backoff = Duration::from_millis(
                    router_cfg
                        .retry_backoff_ms
                        .saturating_mul(1 << (record.attempts - first - 1).min(10)),
                );
                let wait = deadline.saturating_duration_since(Instant::now()).min(
                    match err.retry_after() {
                        Some(asked) => {
                            if asked > Duration::from_millis(router_cfg.max_retry_wait_ms)
                                && group.deployments.len() <= 1
                            {
                                // Waiting that long on the client's clock helps no one.
                                return Err(err.into_gateway_error());
                            }
                            if group.deployments.len() > 1 {
                                backoff
                            } else {
                                asked.max(backoff)
                            }
                        }
                        None => backoff,
                    },
                );
                tracing::debug!(deployment = %target.id, attempt = record.attempts, error_class = ?class, wait_ms = wait.as_millis() as u64, "retrying upstream call");
                tried.push(idx);
                last_err = Some(err);
                if !wait.is_zero() {
                    actix_rt::time::sleep(wait).await;
                }
            }
        }
    }
}

/// What a translated answer says about itself: a `chatcmpl-…` id for
/// providers that give none, the time, the model. OpenAI-wire answers pass
/// through with their own, so they get nothing to allocate.
fn answer_ctx(target: &DeploymentTarget, request_id: &str, wants_usage: bool) -> AnswerCtx {
    let translated = !matches!(target.wire, Wire::OpenAi | Wire::Azure);
    AnswerCtx {
        id: if translated {
            format!("chatcmpl-{request_id}")
        } else {
            String::new()
        },
        created: if translated { unix_now() } else { 0 },
        model: if translated {
            target.upstream_model.clone()
        } else {
            String::new()
        },
        wants_usage,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
