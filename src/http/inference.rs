//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the hot path.
//!
//! authenticate → read + parse body → model access → rate limit →
//! (route → call)* with retries → respond; everything after the response is
//! fire-and-forget (`RequestRecord::finish`).

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};

use super::record::{settle, RequestRecord};
use super::stream::SseBody;
use super::{authenticate, read_body, WorkerState};
use crate::actors::auth::LookupCustomer;
use crate::actors::provider::{Call, CallError, Reply};
use crate::actors::rate_limit::{checks_for, Acquire, Caps, Check, Scope};
use crate::actors::router::{Outcome, OutcomeKind, Route, RouterActor};
use crate::actors::Metered;
use crate::error::{rate_limit_headers, GatewayError, RateLimitInfo};
use crate::fallbacks;
use crate::pricing::{cost_usd, python_float};
use crate::providers::{self, AnswerCtx, Endpoint, Wire};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

pub async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    handle(Endpoint::ChatCompletions, req, payload, st).await
}

pub async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    handle(Endpoint::Completions, req, payload, st).await
}

pub async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    handle(Endpoint::Embeddings, req, payload, st).await
}

/// One attempt on one deployment; tells the router how it ended, also when
/// the handler is dropped mid-call (client gone), so in-flight counts stay
/// true.
pub struct Attempt {
    router: Metered<RouterActor>,
    deployment: usize,
    started: Instant,
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
async fn estimate_tokens(
    cache: &mut Option<u64>,
    body: &crate::request::RawObject,
    max_tokens: u64,
) -> u64 {
    if let Some(t) = *cache {
        return t;
    }
    let t = crate::tokens::prompt_tokens(body).await + max_tokens;
    *cache = Some(t);
    t
}

/// The id the root span chose (so logs and responses agree), else the
/// caller's `x-request-id` or a new one.
fn request_id(req: &HttpRequest) -> String {
    use actix_web::HttpMessage as _;
    match req.extensions().get::<crate::telemetry::RequestId>() {
        Some(id) => id.0.clone(),
        None => crate::telemetry::request_id_from(req.headers()),
    }
}

/// Where the OpenAI-shaped request body comes from.
pub enum Body {
    /// Read from the client (OpenAI's own API).
    Payload(web::Payload),
    /// Already read and translated from another API (Anthropic's).
    Ready(bytes::Bytes),
}

async fn handle(
    endpoint: Endpoint,
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    handle_body(endpoint, req, Body::Payload(payload), st).await
}

/// The whole pipeline for one request whose body is OpenAI-shaped.
pub async fn handle_body(
    endpoint: Endpoint,
    req: HttpRequest,
    payload: Body,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let mut record =
        RequestRecord::new(st.gw.clone(), st.spend.clone(), request_id(&req), endpoint);
    record.start_trace(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    match run(&st, &req, payload, &mut record).await {
        Ok(resp) => resp,
        Err(err) => {
            let mut resp = err.error_response();
            let headers = resp.headers_mut();
            for (name, value) in [
                ("x-request-id", record.request_id.as_str()),
                ("x-litellm-call-id", record.call_id.as_str()),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            }
            if record.attempts > 0 {
                headers.insert(
                    HeaderName::from_static("x-tollgate-attempts"),
                    HeaderValue::from(record.attempts),
                );
                headers.insert(
                    HeaderName::from_static("x-tollgate-fallbacks"),
                    HeaderValue::from(record.fallbacks),
                );
            }
            let row = record.finish(resp.status().as_u16(), None, Some(err.to_string()));
            settle(st.spend.clone(), row).await;
            resp
        }
    }
}

async fn run(
    st: &WorkerState,
    req: &HttpRequest,
    payload: Body,
    record: &mut RequestRecord,
) -> Result<HttpResponse, GatewayError> {
    let gw = &st.gw;
    if gw.config.fault_injection {
        super::inject_crash(st, req);
    }
    let key = authenticate(st, req).await?;
    record.key = Some(key.clone());
    key.check_active(crate::store::now_ms())?;
    if !key.is_master && gw.spool_full.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(GatewayError::Unavailable(
            "spend cannot be recorded right now (the database has been unreachable and the local spend spool is full); retry later".into(),
        ));
    }

    let body = match payload {
        Body::Payload(p) => read_body(req, p, &gw.config.server).await?,
        Body::Ready(b) => b,
    };
    let parsed = InferenceRequest::parse(record.endpoint, &body)?;
    // About four bytes of JSON per token: only used when an upstream
    // reports no usage.
    record.prompt_estimate = (body.len() / 4) as u64;
    drop(body);
    record.model = parsed.model.clone();
    record.stream = parsed.stream;
    record.end_user = parsed.user.clone();
    record.metadata = parsed
        .body
        .get("metadata")
        .filter(|m| m.get().starts_with('{'))
        .map(|m| m.to_owned());
    record.capture_input(&parsed.body);

    let group = match gw.topology.group(key.resolve_model(&parsed.model)) {
        Some(g) => g,
        None => return Err(GatewayError::ModelNotFound(parsed.model)),
    };
    record.group = Some(group.idx);
    if let Some(denied) = key.model_denial(&group.name) {
        return Err(denied);
    }

    // The end user the request is for (`user`), if the database knows it.
    let customer = match &parsed.user {
        Some(id) if gw.store.is_some() => {
            st.auth
                .send(LookupCustomer { id: id.clone() })
                .await
                .map_err(|_| GatewayError::Unavailable("the auth service is restarting".into()))??
        }
        _ => None,
    };
    if let Some(c) = &customer {
        if c.blocked {
            return Err(GatewayError::CustomerBlocked(c.id.clone()));
        }
        if !crate::access::list_allows(&c.allowed_models, &group.name) {
            return Err(GatewayError::ModelAccessDenied {
                scope: "customer",
                model: group.name.to_string(),
                allowed: c.allowed_models.clone(),
            });
        }
    }

    let max_tokens = parsed
        .max_tokens
        .unwrap_or(gw.config.spend.default_max_tokens);
    // Budgets: reserve the most this request can cost before it runs.
    let limits = crate::actors::budget::limits_for(&key, &group.name, customer.as_deref());
    if !limits.is_empty() {
        let estimate = record.prompt_estimate as f64 * group.max_input_cost_per_token
            + max_tokens as f64 * group.max_output_cost_per_token;
        let reservation = gw
            .budget
            .send(crate::actors::budget::Reserve { limits, estimate })
            .await
            .map_err(|_| GatewayError::Unavailable("the budget ledger is restarting".into()))??;
        record.reservation = Some(reservation);
    }

    // Rate limits: every level decided at once; none: no round trip.
    // Tokens a request is counted as until its real usage is known:
    // counted once, when a tokens-per-minute limit first needs it.
    let mut tokens_estimate: Option<u64> = None;
    let checks = checks_for(&gw.config.limits, &key, &group.name);
    let limits = if checks.is_empty() {
        None
    } else {
        let tokens = if checks.iter().any(|c| c.caps.tpm.is_some()) {
            estimate_tokens(&mut tokens_estimate, &parsed.body, max_tokens).await
        } else {
            0
        };
        let permit = Acquire {
            checks,
            tokens,
            key_name: key.display_name().to_string(),
        }
        .send(&st.limiter)
        .await?;
        let info = permit.info.clone();
        record.permit = Some(permit);
        Some(info)
    };

    let router_cfg = &gw.config.router;
    // One deadline for every attempt and every wait between them; the
    // request's own `timeout` may shorten it, never lengthen it.
    let budget = {
        let configured = Duration::from_secs(router_cfg.request_timeout_secs);
        parsed.timeout.map_or(configured, |t| t.min(configured))
    };
    let deadline = record.started + budget;
    // The requested group, then (once it has failed) its fallbacks, each
    // with its own attempts, under the one deadline.
    let mut current = group;
    let mut plan: Option<std::collections::VecDeque<&str>> = None;
    loop {
        let attempt = GroupAttempt {
            group: current,
            parsed: &parsed,
            key: &key,
            limits: limits.as_ref(),
            max_tokens,
            deadline,
            budget,
        };
        let err = match try_group(st, record, attempt, &mut tokens_estimate).await {
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
            let Some(g) = gw.topology.group(name) else {
                // The request's own list may name anything; the config's
                // was checked at start-up.
                tracing::debug!(fallback = name, "fallback names no model group; skipped");
                continue;
            };
            // The caller's key must be allowed the group it falls back to.
            if key.model_denial(&g.name).is_none() {
                break g;
            }
        };
        if deadline <= Instant::now() {
            return Err(err);
        }
        tracing::info!(from = %current.name, to = %next.name, error = %err, "falling back to another model group");
        record.fallbacks += 1;
        record.group = Some(next.idx);
        current = next;
    }
}

/// What one model group's attempts need to know of the request.
struct GroupAttempt<'a> {
    group: &'a crate::topology::Group,
    parsed: &'a InferenceRequest,
    key: &'a crate::access::KeyInfo,
    limits: Option<&'a RateLimitInfo>,
    max_tokens: u64,
    deadline: Instant,
    budget: Duration,
}

/// One model group's attempts: a deployment chosen by the router per
/// attempt, retried on another (or the same, after a wait) while the error
/// is worth it and the group's retries and the deadline allow.
async fn try_group(
    st: &WorkerState,
    record: &mut RequestRecord,
    a: GroupAttempt<'_>,
    tokens_estimate: &mut Option<u64>,
) -> Result<HttpResponse, GatewayError> {
    let gw = &st.gw;
    let router_cfg = &gw.config.router;
    let GroupAttempt {
        group,
        parsed,
        key,
        limits,
        max_tokens,
        deadline,
        budget,
    } = a;
    // Retries are counted per group: a fallback gets its own. The
    // request's `num_retries` replaces the configured count.
    let first = record.attempts;
    let retries = parsed.num_retries.unwrap_or(router_cfg.num_retries);
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
        let routed = st
            .router
            .send(Route {
                group: group.idx,
                exclude: tried.clone(),
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
        let target = gw.topology.deployments[idx].clone();
        record.deployment = Some(target.clone());
        let attempt = Attempt {
            router: st.router.clone(),
            deployment: idx,
            started: Instant::now(),
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
            endpoint: record.endpoint,
            outbound,
            stream: parsed.stream,
            answer: answer_ctx(&target, &record.request_id, parsed.client_wants_usage),
            timeout: target.timeout.min(remaining),
        };
        let result = st.providers[idx]
            .send(call)
            .await
            .map_err(|_| GatewayError::Unavailable("the provider client is restarting".into()))?;
        record.upstream += attempt.started.elapsed();
        record.note_attempt(span, &target, attempt.started, result.as_ref().err());
        match result {
            Ok(Reply::Full { body, usage }) => {
                attempt.finish(OutcomeKind::Success);
                let cost = usage.map(|u| cost_usd(&target, &u));
                let mut resp = HttpResponse::Ok();
                resp.content_type("application/json");
                response_headers(&mut resp, record, &target, limits, cost);
                record.capture_output(&body);
                let row = record.take().finish(200, usage, None);
                settle(st.spend.clone(), row).await;
                return Ok(resp.body(body));
            }
            Ok(Reply::Stream { first, rest }) => {
                let mut resp = HttpResponse::Ok();
                resp.content_type("text/event-stream")
                    .insert_header(("cache-control", "no-cache"))
                    .insert_header(("x-accel-buffering", "no"));
                response_headers(&mut resp, record, &target, limits, None);
                let record = record.take();
                return Ok(resp.streaming(SseBody::new(first, rest, record, attempt)));
            }
            Err(err) => {
                let retryable = err.retryable();
                let deadline_hit = cut_by_deadline && matches!(err, CallError::Timeout);
                attempt.finish(if retryable && !deadline_hit {
                    OutcomeKind::Failure {
                        retry_after: err.retry_after(),
                    }
                } else {
                    OutcomeKind::Neutral
                });
                if !retryable || record.attempts - first > retries {
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
                tracing::debug!(deployment = %target.id, attempt = record.attempts, wait_ms = wait.as_millis() as u64, "retrying upstream call");
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

fn response_headers(
    resp: &mut HttpResponseBuilder,
    record: &RequestRecord,
    target: &DeploymentTarget,
    limits: Option<&RateLimitInfo>,
    cost: Option<f64>,
) {
    let overhead = record.started.elapsed().saturating_sub(record.upstream);
    let retries = record.attempts.saturating_sub(1);
    resp.insert_header(("x-request-id", record.request_id.as_str()))
        .insert_header(("x-tollgate-deployment", target.id.as_str()))
        .insert_header(("x-tollgate-attempts", record.attempts))
        .insert_header(("x-tollgate-retries", retries))
        .insert_header((
            "x-tollgate-overhead-ms",
            format!("{:.3}", overhead.as_secs_f64() * 1000.0),
        ))
        // LiteLLM's names, for clients written against it.
        .insert_header(("x-litellm-call-id", record.call_id.as_str()))
        .insert_header(("x-litellm-model-id", target.id.as_str()))
        .insert_header(("x-litellm-model-group", &*target.group))
        .insert_header(("x-litellm-model-api-base", target.api_base.as_str()))
        .insert_header(("x-litellm-attempted-retries", retries))
        .insert_header(("x-tollgate-fallbacks", record.fallbacks))
        .insert_header(("x-litellm-attempted-fallbacks", record.fallbacks));
    if let Some(cost) = cost {
        resp.insert_header(("x-tollgate-response-cost", format!("{cost:.10}")));
        if cost > 0.0 {
            resp.insert_header(("x-litellm-response-cost", python_float(cost)));
        }
    }
    if let Some(info) = limits {
        for (k, v) in rate_limit_headers(info) {
            resp.insert_header((k, v));
        }
    }
}
