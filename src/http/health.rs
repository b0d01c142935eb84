//! Liveness, readiness, deployment health and Prometheus metrics.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::{authenticate, WorkerState};
use crate::actors::health::GetHealth;
use crate::error::GatewayError;

/// LiteLLM answers liveliness with this exact string; scripts grep for it.
pub async fn liveliness() -> HttpResponse {
    HttpResponse::Ok().json("I'm alive!")
}

/// Ready means able to serve: a database or Redis outage degrades (new keys
/// cannot be verified) but cached keys keep working, so it stays 200 and
/// says what is wrong. It never waits on a dependency: the answer comes
/// from the circuit breakers, which background probes keep current (within
/// two seconds), so a load balancer's probe is never slowed by an outage.
pub async fn readiness(st: web::Data<WorkerState>) -> HttpResponse {
    const DOWN: &str = "disconnected: unreachable, probing in the background";
    let db = match &st.gw.store {
        None => "not configured".to_string(),
        Some(s) if s.breaker().is_open() => DOWN.to_string(),
        Some(_) => "connected".to_string(),
    };
    let cache = match &st.gw.redis {
        None => "in-memory".to_string(),
        Some(r) if r.breaker().is_open() => format!("redis {DOWN}"),
        Some(_) => "redis".to_string(),
    };
    let healthy = !db.starts_with("disconnected") && !cache.contains("disconnected");
    HttpResponse::Ok().json(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "db": db,
        "db_backend": st.gw.store.as_ref().map(|s| s.backend()),
        "cache": cache,
        "models": st.gw.topology().by_name.len(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Deployment health as the router sees it (master key only: it names
/// upstream deployments).
pub async fn deployments(req: HttpRequest, st: web::Data<WorkerState>) -> HttpResponse {
    match authenticate(&st, &req).await {
        Ok(k) if k.is_master => {}
        Ok(_) => {
            return GatewayError::PermissionDenied("only the master key may read /health".into())
                .error_response()
        }
        Err(e) => return e.error_response(),
    }
    let statuses = match st.gw.health.send(GetHealth).await {
        Ok(s) => s,
        Err(_) => {
            return GatewayError::Unavailable("the router is restarting".into()).error_response()
        }
    };
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = statuses.into_iter().partition(|s| s.healthy);
    HttpResponse::Ok().json(json!({
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
    }))
}

pub async fn metrics(st: web::Data<WorkerState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(st.gw.metrics.encode())
}
