//! RouterActor: owns the health of every deployment (in-flight count,
//! latency, consecutive failures, cooldown) and picks one per attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;

use crate::config::RouterConfig;
use crate::error::GatewayError;
use crate::metrics::{ActorMeter, DeploymentLabels, Metrics};
use crate::topology::Topology;

struct Health {
    in_flight: u32,
    /// Exponentially weighted latency of successful calls, in ms.
    latency_ewma_ms: f64,
    consecutive_fails: u32,
    cooldown_until: Option<Instant>,
    healthy_gauge: Gauge,
    in_flight_gauge: Gauge,
}

pub struct RouterActor {
    topology: Arc<Topology>,
    config: RouterConfig,
    health: Vec<Health>,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl RouterActor {
    pub fn new(topology: Arc<Topology>, config: RouterConfig, metrics: Arc<Metrics>) -> Self {
        let health = topology
            .deployments
            .iter()
            .map(|d| {
                let labels = DeploymentLabels {
                    model: d.group.to_string(),
                    deployment: d.id.clone(),
                };
                let healthy_gauge = metrics.deployment_healthy.get_or_create_owned(&labels);
                healthy_gauge.set(1);
                Health {
                    in_flight: 0,
                    latency_ewma_ms: 0.0,
                    consecutive_fails: 0,
                    cooldown_until: None,
                    healthy_gauge,
                    in_flight_gauge: metrics.deployment_in_flight.get_or_create_owned(&labels),
                }
            })
            .collect();
        RouterActor {
            meter: metrics.actor("router"),
            topology,
            config,
            health,
            metrics,
        }
    }

    fn is_cooling(&mut self, idx: usize, now: Instant) -> bool {
        let h = &mut self.health[idx];
        match h.cooldown_until {
            Some(until) if until > now => true,
            Some(_) => {
                h.cooldown_until = None;
                h.healthy_gauge.set(1);
                false
            }
            None => false,
        }
    }

    /// Weighted random choice among the candidates.
    fn pick(&self, candidates: &[usize]) -> usize {
        let total: f64 = candidates
            .iter()
            .map(|&i| self.topology.deployments[i].weight)
            .sum();
        let mut x = rand::rng().random_range(0.0..total.max(f64::MIN_POSITIVE));
        for &i in candidates {
            x -= self.topology.deployments[i].weight;
            if x < 0.0 {
                return i;
            }
        }
        candidates[candidates.len() - 1]
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

impl Supervised for RouterActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.meter.restarted();
    }
}

/// Choose a deployment of `group`, avoiding `exclude` (already tried) when
/// any other healthy deployment exists.
#[derive(Message)]
#[rtype(result = "Result<usize, GatewayError>")]
pub struct Route {
    pub group: usize,
    pub exclude: Vec<usize>,
}

impl Handler<Route> for RouterActor {
    type Result = Result<usize, GatewayError>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let topology = self.topology.clone();
        let group = topology
            .groups
            .get(msg.group)
            .ok_or_else(|| GatewayError::Internal("unknown model group index".into()))?;
        let now = Instant::now();
        let mut healthy = Vec::with_capacity(group.deployments.len());
        for &d in &group.deployments {
            if !self.is_cooling(d, now) {
                healthy.push(d);
            }
        }
        if healthy.is_empty() {
            let wait = group
                .deployments
                .iter()
                .filter_map(|&d| self.health[d].cooldown_until)
                .min()
                .map(|until| until.saturating_duration_since(now))
                .unwrap_or_default();
            return Err(GatewayError::NoHealthyDeployment {
                model: group.name.to_string(),
                retry_after_secs: wait.as_secs_f64().max(1.0),
            });
        }
        let fresh: Vec<usize> = healthy
            .iter()
            .copied()
            .filter(|d| !msg.exclude.contains(d))
            .collect();
        let chosen = if fresh.is_empty() {
            self.pick(&healthy)
        } else {
            self.pick(&fresh)
        };
        let h = &mut self.health[chosen];
        h.in_flight += 1;
        h.in_flight_gauge.set(h.in_flight as i64);
        Ok(chosen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutcomeKind {
    Success,
    /// A failure that says something about the deployment's health
    /// (connect error, timeout, 429, 5xx).
    Failure {
        retry_after_secs: Option<f64>,
    },
    /// Finished without telling us anything about health (client error,
    /// client went away).
    Neutral,
}

/// The end of one attempt on a deployment chosen by `Route`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outcome {
    pub deployment: usize,
    pub latency: Duration,
    pub kind: OutcomeKind,
}

impl Handler<Outcome> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: Outcome, ctx: &mut Context<Self>) {
        let _t = self.meter.handling();
        let Some(h) = self.health.get_mut(msg.deployment) else {
            return;
        };
        h.in_flight = h.in_flight.saturating_sub(1);
        h.in_flight_gauge.set(h.in_flight as i64);
        match msg.kind {
            OutcomeKind::Success => {
                h.consecutive_fails = 0;
                let ms = msg.latency.as_secs_f64() * 1000.0;
                h.latency_ewma_ms = if h.latency_ewma_ms == 0.0 {
                    ms
                } else {
                    0.8 * h.latency_ewma_ms + 0.2 * ms
                };
            }
            OutcomeKind::Failure { retry_after_secs } => {
                let d = &self.topology.deployments[msg.deployment];
                self.metrics
                    .deployment_failures
                    .get_or_create(&DeploymentLabels {
                        model: d.group.to_string(),
                        deployment: d.id.clone(),
                    })
                    .inc();
                h.consecutive_fails += 1;
                if h.consecutive_fails >= self.config.allowed_fails && h.cooldown_until.is_none() {
                    let secs =
                        (self.config.cooldown_secs as f64).max(retry_after_secs.unwrap_or(0.0));
                    let cooldown = Duration::from_secs_f64(secs);
                    h.cooldown_until = Some(Instant::now() + cooldown);
                    h.consecutive_fails = 0;
                    h.healthy_gauge.set(0);
                    tracing::warn!(deployment = %d.id, model = %d.group, cooldown_secs = secs, "deployment cooling down after repeated failures");
                    let idx = msg.deployment;
                    // Flip the gauge back when the cooldown ends, even with no traffic.
                    ctx.run_later(cooldown, move |act, _| {
                        let now = Instant::now();
                        act.is_cooling(idx, now);
                    });
                }
            }
            OutcomeKind::Neutral => {}
        }
    }
}

/// A snapshot of one deployment's health, for `/health` and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    pub model: String,
    pub healthy: bool,
    pub in_flight: u32,
    pub latency_ewma_ms: f64,
    pub consecutive_fails: u32,
    pub cooldown_remaining_secs: f64,
}

#[derive(Message)]
#[rtype(result = "Vec<DeploymentStatus>")]
pub struct GetHealth;

impl Handler<GetHealth> for RouterActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.health.len());
        for idx in 0..self.health.len() {
            let cooling = self.is_cooling(idx, now);
            let h = &self.health[idx];
            let d = &self.topology.deployments[idx];
            out.push(DeploymentStatus {
                id: d.id.clone(),
                model: d.group.to_string(),
                healthy: !cooling,
                in_flight: h.in_flight,
                latency_ewma_ms: h.latency_ewma_ms,
                consecutive_fails: h.consecutive_fails,
                cooldown_remaining_secs: h
                    .cooldown_until
                    .map(|u| u.saturating_duration_since(now).as_secs_f64())
                    .unwrap_or(0.0),
            });
        }
        MessageResult(out)
    }
}
