//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the hot path.
//!
//! authenticate → read + parse body → model access → rate limit →
//! (route → call)* with retries → respond; everything after the response is
//! fire-and-forget (`RequestRecord::finish`).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::dispatch::{self, estimate_tokens, Dispatch};
use super::record::{settle, RequestRecord};
use super::{authenticate, read_body, WorkerState};
use crate::actors::auth::LookupCustomer;
use crate::actors::rate_limit::{checks_for, Acquire};
use crate::error::GatewayError;
use crate::providers::Endpoint;
use crate::request::InferenceRequest;

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
            settle(&st.spend, row);
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
    if !key.allowed_routes.is_empty()
        && !super::roles::route_listed(&key.allowed_routes, req.path())
    {
        return Err(super::roles::route_refused(&key.allowed_routes, req.path()));
    }
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
    let body_len = body.len();
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

    let topology = record.topology.clone();
    let group = match topology.group(key.resolve_model(&parsed.model)) {
        Some(g) => g,
        None => return Err(GatewayError::ModelNotFound(parsed.model)),
    };
    record.group = Some(group.idx);
    if let Some(denied) = key.group_denial(group) {
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
        record.key_model_remaining = (info.key_model_requests, info.key_model_tokens);
        Some(info)
    };

    let tags = request_tags(req, &parsed);
    dispatch::dispatch(
        st,
        record,
        Dispatch {
            topology: &topology,
            group,
            parsed: &parsed,
            key: &key,
            limits: limits.as_ref(),
            max_tokens,
            tags: &tags,
            body_len,
        },
        &mut tokens_estimate,
    )
    .await
}

/// The request's routing tags: the body's `tags` (or `metadata.tags`),
/// and the `x-litellm-tags` header (comma-separated), as LiteLLM reads them.
fn request_tags(req: &HttpRequest, parsed: &InferenceRequest) -> Vec<String> {
    let mut tags = parsed.tags.clone();
    if let Some(h) = req
        .headers()
        .get("x-litellm-tags")
        .and_then(|v| v.to_str().ok())
    {
        tags.extend(
            h.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .take(16)
                .map(str::to_string),
        );
    }
    tags
}
