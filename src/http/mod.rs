//! actix-web handlers. They parse, ask actors, and write back; all state
//! they touch belongs to an actor.

pub mod admin;
pub mod budgets;
pub mod customers;
pub mod dispatch;
pub mod health;
pub mod inference;
pub mod keys;
pub mod messages;
pub mod model_info;
pub mod models;
pub mod models_admin;
pub mod orgs;
pub mod record;
pub mod reply_headers;
pub mod roles;
pub mod route_table;
pub mod spend;
pub mod stream;
pub mod team_callbacks;
pub mod teams;
pub mod users;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::access::KeyInfo;
use crate::actors::auth::{hash_key, AuthActor, Authenticate};
use crate::actors::provider::ProviderActor;
use crate::actors::rate_limit::RateLimitActor;
use crate::actors::router::RouterActor;
use crate::actors::spend_buffer::SpendBuffer;
use crate::actors::Metered;
use crate::error::GatewayError;
use crate::Gateway;

/// What each HTTP worker holds: the shared gateway plus the ProviderActors
/// that live on this worker's thread (index = deployment index).
pub struct WorkerState {
    pub gw: Arc<Gateway>,
    /// This worker's AuthActor: the key cache lives next to the handlers,
    /// so a cached key costs no cross-thread hop.
    pub auth: Metered<AuthActor>,
    /// This worker's RouterActor: routing never leaves the thread.
    pub router: Metered<RouterActor>,
    /// This worker's batch of spend on its way to SpendActor.
    pub spend: SpendBuffer,
    /// Rate limits: this worker's own member of the fleet when Redis is
    /// configured (admission never leaves the thread), else the replica's
    /// one limiter.
    pub limiter: Metered<RateLimitActor>,
    pub providers: Metered<ProviderActor>,
}

pub use route_table::Routes;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let mut r = Routes::new(cfg);
    register(&mut r);
    r.finish();
}

fn register(cfg: &mut Routes<'_>) {
    for prefix in ["/v1", ""] {
        cfg.post(
            &format!("{prefix}/chat/completions"),
            inference::chat_completions,
        )
        .post(&format!("{prefix}/completions"), inference::completions)
        .post(&format!("{prefix}/embeddings"), inference::embeddings)
        .post(&format!("{prefix}/messages"), messages::messages)
        .post(
            &format!("{prefix}/messages/count_tokens"),
            messages::count_tokens,
        )
        .get(&format!("{prefix}/models"), models::list)
        .get(&format!("{prefix}/models/{{model:.+}}"), models::retrieve);
    }
    cfg.get("/model/info", model_info::model_info)
        .get("/v1/model/info", model_info::model_info)
        .get("/model_group/info", model_info::model_group_info)
        .post("/model/new", models_admin::new_model)
        .post("/model/update", models_admin::update_model)
        .patch("/model/{model_id}/update", models_admin::patch_model)
        .post("/model/delete", models_admin::delete_model);
    keys::routes(cfg);
    users::routes(cfg);
    teams::routes(cfg);
    team_callbacks::routes(cfg);
    spend::routes(cfg);
    customers::routes(cfg);
    orgs::routes(cfg);
    budgets::routes(cfg);
    cfg.get("/health/liveliness", health::liveliness)
        .get("/health/liveness", health::liveliness)
        .get("/health/readiness", health::readiness)
        .get("/health", health::deployments)
        .get("/health/router", health::router_view)
        .get("/health/readiness/details", health::readiness_details)
        .get("/metrics", health::metrics)
        .get("/routes", route_table::list);
}

/// The OpenAI/Anthropic-compatible inference routes (LiteLLM's
/// `llm_api_routes`), with or without the `/v1` prefix.
pub fn is_llm_route(path: &str) -> bool {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    matches!(
        p,
        "/chat/completions"
            | "/completions"
            | "/embeddings"
            | "/messages"
            | "/messages/count_tokens"
            | "/models"
    ) || p.starts_with("/models/")
}

/// Query-string errors (`/key/list?page=abc`) in the JSON error shape,
/// naming what was wrong, instead of actix's plain-text default.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        GatewayError::invalid(format!("Invalid query string: {err}"), None).into()
    })
}

/// Path-segment errors in the JSON error shape too.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        GatewayError::invalid(format!("Invalid path: {err}"), None).into()
    })
}

/// Unknown paths and methods get an OpenAI-shaped error too.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    GatewayError::RouteNotFound(format!("{} {}", req.method(), req.path())).error_response()
}

/// The caller's key from `Authorization: Bearer`, `api-key` (Azure style)
/// or `x-api-key` (Anthropic style).
pub fn presented_key(req: &HttpRequest) -> Result<&str, GatewayError> {
    let headers = req.headers();
    if let Some(v) = headers.get("authorization") {
        let v = v.to_str().map_err(|_| GatewayError::InvalidKey)?.trim();
        let token = match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => v,
        };
        if token.is_empty() {
            return Err(GatewayError::MissingKey);
        }
        return Ok(token);
    }
    for name in ["api-key", "x-api-key"] {
        if let Some(v) = headers.get(name) {
            let token = v.to_str().map_err(|_| GatewayError::InvalidKey)?.trim();
            if !token.is_empty() {
                return Ok(token);
            }
        }
    }
    Err(GatewayError::MissingKey)
}

/// Test-only fault hook (`Config::fault_injection`): makes the actor named
/// by `x-tollgate-crash` panic, to prove supervision restarts it.
pub(crate) fn inject_crash(st: &WorkerState, req: &HttpRequest) {
    use crate::actors::supervise::Crash;
    let Some(name) = req
        .headers()
        .get("x-tollgate-crash")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let gw = &st.gw;
    match name {
        "auth" => st.auth.do_send(Crash),
        "router" => st.router.do_send(Crash),
        "provider" => st.providers.do_send(Crash),
        "rate_limit" => st.limiter.do_send(Crash),
        "health" => gw.health.do_send(Crash),
        "spend" => gw.spend.do_send(Crash),
        "logger" => gw.logger.do_send(Crash),
        "auth_hub" => gw.auth_hub.do_send(Crash),
        other => tracing::warn!(actor = other, "x-tollgate-crash names no actor"),
    }
}

pub async fn authenticate(
    st: &WorkerState,
    req: &HttpRequest,
) -> Result<Arc<KeyInfo>, GatewayError> {
    let token = presented_key(req)?;
    let key_hash = hash_key(token);
    let lookup = keys::could_be_virtual_key(token);
    st.auth
        .send(Authenticate { key_hash, lookup })
        .await
        .map_err(|_| GatewayError::Unavailable("the auth service is restarting".into()))?
}

/// Reads the body up to `server.max_body_bytes`; larger bodies are refused
/// with 413 without buffering them, and a body not complete within
/// `server.body_read_timeout_secs` with 408 (a client that stalls mid-body
/// must not hold its connection and buffer for minutes).
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    server: &crate::config::ServerConfig,
) -> Result<bytes::Bytes, GatewayError> {
    let secs = server.body_read_timeout_secs;
    actix_rt::time::timeout(
        std::time::Duration::from_secs(secs),
        read_body_unbounded(req, payload, server.max_body_bytes),
    )
    .await
    .map_err(|_| GatewayError::BodyTimeout { secs })?
}

async fn read_body_unbounded(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, GatewayError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            GatewayError::invalid(format!("could not read the request body: {e}"), None)
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
