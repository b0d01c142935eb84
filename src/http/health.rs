//! Liveness, readiness, deployment health and Prometheus metrics.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;

use super::WorkerState;
use crate::actors::health::{GetHealth, GetProbes, ProbeState};
use crate::error::GatewayError;
use crate::probe;

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

#[derive(Deserialize)]
pub struct HealthQuery {
    /// Only this model group's deployments (LiteLLM's `?model=`).
    model: Option<String>,
}

/// LiteLLM's `/health`: every deployment probed with a tiny real request
/// (or, with background health checks on, the latest round's results),
/// split into healthy and unhealthy endpoints; each entry also carries
/// the router's view (in flight, latency, failures, cooldown). Master key
/// only: it names upstream deployments.
pub async fn deployments(
    req: HttpRequest,
    query: web::Query<HealthQuery>,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    if let Err(e) = require_master_for_health(&st, &req).await {
        return e.error_response();
    }
    let topology = st.gw.topology();
    let targets: Vec<_> = topology
        .live_groups()
        .filter(|g| query.model.as_deref().is_none_or(|m| *g.name == *m))
        .flat_map(|g| {
            g.deployments
                .iter()
                .map(|&i| topology.deployments[i].clone())
        })
        .collect();
    if let Some(m) = &query.model {
        if targets.is_empty() {
            return GatewayError::ModelNotFound(m.clone()).error_response();
        }
    }
    let router = &st.gw.config.router;
    let probes: Vec<(usize, ProbeState)> = if router.background_health_checks {
        st.gw.health.send(GetProbes).await.unwrap_or_default()
    } else {
        let timeout = std::time::Duration::from_secs(router.health_check_timeout_secs);
        probe::probe_all(&st.providers.addr, targets.clone(), timeout)
            .await
            .into_iter()
            .map(|p| {
                (
                    p.deployment,
                    ProbeState {
                        healthy: p.result.is_ok(),
                        latency_ms: p.result.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
                        error: p.result.err(),
                        checked_at: crate::store::now_ms(),
                    },
                )
            })
            .collect()
    };
    let views = st.gw.health.send(GetHealth).await.unwrap_or_default();
    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    for t in &targets {
        let view = views.iter().find(|v| v.id == t.id);
        let probe = probes.iter().find(|(i, _)| *i == t.idx).map(|(_, p)| p);
        // Without a probe yet (background checks just started), the
        // router's view decides.
        let ok = probe.map_or_else(|| view.is_some_and(|v| v.healthy), |p| p.healthy);
        let mut entry = json!({
            "model": format!("{}/{}", t.provider.name(), t.upstream_model),
            "model_name": &*t.group,
            "id": t.id,
            "api_base": t.api_base,
        });
        if let Some(p) = probe {
            entry["latency_ms"] = json!(p.latency_ms);
            entry["checked_at"] = json!(p.checked_at);
            if let Some(e) = &p.error {
                entry["error"] = json!(e);
            }
        }
        if let Some(v) = view {
            entry["in_flight"] = json!(v.in_flight);
            entry["latency_ewma_ms"] = json!(v.latency_ewma_ms);
            entry["consecutive_fails"] = json!(v.consecutive_fails);
            entry["cooldown_remaining_secs"] = json!(v.cooldown_remaining_secs);
        }
        if ok {
            healthy.push(entry)
        } else {
            unhealthy.push(entry)
        }
    }
    HttpResponse::Ok().json(json!({
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
    }))
}

async fn require_master_for_health(
    st: &WorkerState,
    req: &HttpRequest,
) -> Result<(), GatewayError> {
    super::admin::require_reader(st, req).await.map(|_| ())
}

/// Deployment health as the router sees it, without calling any upstream:
/// cooling down or not, in flight, latency, failures (master key only).
pub async fn router_view(req: HttpRequest, st: web::Data<WorkerState>) -> HttpResponse {
    if let Err(e) = require_master_for_health(&st, &req).await {
        return e.error_response();
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

/// Readiness with the detail an operator wants: each dependency, the
/// model list's version and size, and the latest background probe round.
pub async fn readiness_details(req: HttpRequest, st: web::Data<WorkerState>) -> HttpResponse {
    if let Err(e) = require_master_for_health(&st, &req).await {
        return e.error_response();
    }
    let topology = st.gw.topology();
    let probes = st.gw.health.send(GetProbes).await.unwrap_or_default();
    let failing: Vec<&str> = probes
        .iter()
        .filter(|(_, p)| !p.healthy)
        .filter_map(|(i, _)| topology.deployments.get(*i).map(|d| d.id.as_str()))
        .collect();
    let breaker = |open: Option<bool>| match open {
        None => "not configured",
        Some(true) => "down",
        Some(false) => "up",
    };
    HttpResponse::Ok().json(json!({
        "db": breaker(st.gw.store.as_ref().map(|s| s.breaker().is_open())),
        "db_backend": st.gw.store.as_ref().map(|s| s.backend()),
        "redis": breaker(st.gw.redis.as_ref().map(|r| r.breaker().is_open())),
        "models": topology.by_name.len(),
        "deployments": topology.groups.iter().map(|g| g.deployments.len()).sum::<usize>(),
        "topology_version": topology.version,
        "background_health_checks": st.gw.config.router.background_health_checks,
        "probed_deployments": probes.len(),
        "failing_probes": failing,
        "spend_spool_full": st.gw.spool_full.load(std::sync::atomic::Ordering::Relaxed),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn metrics(st: web::Data<WorkerState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(st.gw.metrics.encode())
}
