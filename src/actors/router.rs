//! RouterActor: one per HTTP worker. Picks a deployment for each attempt
//! from its own view — in-flight counts and latency of the calls it routed,
//! and the cooldowns HealthActor announces — so routing a request never
//! leaves the worker's thread.
//!
//! Failures travel to HealthActor (the single owner of failure counts and
//! cooldowns); successes only when they end a run of failures. In steady
//! state a request sends the router nothing across threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;

use crate::actors::health::{HealthActor, RegisterRouter, Report};
use crate::config::RouterConfig;
use crate::error::GatewayError;
use crate::metrics::{ActorMeter, DeploymentLabels, Metrics};
use crate::topology::Topology;
use prometheus_client::metrics::gauge::Gauge;

struct Local {
    in_flight: u32,
    /// Exponentially weighted latency of successful calls, in ms.
    latency_ewma_ms: f64,
    cooldown_until: Option<Instant>,
    /// A failure was reported and no success since: the next success is
    /// reported too, so HealthActor can reset its count.
    failing: bool,
    /// This worker's own run of failures. Reaching `allowed_fails` cools the
    /// deployment down here at once, without waiting for HealthActor's
    /// announcement (which covers failures seen by other workers).
    consecutive_fails: u32,
    in_flight_gauge: Gauge,
}

pub struct RouterActor {
    topology: Arc<Topology>,
    config: RouterConfig,
    local: Vec<Local>,
    health: Addr<HealthActor>,
    meter: ActorMeter,
}

impl RouterActor {
    pub fn new(
        topology: Arc<Topology>,
        config: RouterConfig,
        health: Addr<HealthActor>,
        metrics: &Metrics,
    ) -> Self {
        let local = topology
            .deployments
            .iter()
            .map(|d| Local {
                in_flight: 0,
                latency_ewma_ms: 0.0,
                cooldown_until: None,
                failing: false,
                consecutive_fails: 0,
                in_flight_gauge: metrics.deployment_in_flight.get_or_create_owned(
                    &DeploymentLabels {
                        model: d.group.to_string(),
                        deployment: d.id.clone(),
                    },
                ),
            })
            .collect();
        RouterActor {
            meter: metrics.actor("router"),
            topology,
            config,
            local,
            health,
        }
    }

    fn is_cooling(&mut self, idx: usize, now: Instant) -> bool {
        let l = &mut self.local[idx];
        match l.cooldown_until {
            Some(until) if until > now => true,
            Some(_) => {
                l.cooldown_until = None;
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

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.do_send(RegisterRouter(ctx.address()));
    }
}

/// In-flight counts stay (the attempts they count still report their
/// outcome); this worker's own failure runs and cooldown copies are dropped
/// and re-learnt from HealthActor, which `started` registers with again.
impl Supervised for RouterActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        for l in &mut self.local {
            l.cooldown_until = None;
            l.failing = false;
            l.consecutive_fails = 0;
        }
    }
}

crate::actors::supervise::crashable!(RouterActor);

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
                .filter_map(|&d| self.local[d].cooldown_until)
                .min()
                .map(|until| until.saturating_duration_since(now))
                .unwrap_or_default();
            return Err(GatewayError::NoHealthyDeployment {
                model: group.name.to_string(),
                retry_after_secs: wait.as_secs_f64().max(1.0),
            });
        }
        let chosen = if healthy.iter().any(|d| !msg.exclude.contains(d)) {
            let fresh: Vec<usize> = healthy
                .iter()
                .copied()
                .filter(|d| !msg.exclude.contains(d))
                .collect();
            self.pick(&fresh)
        } else {
            self.pick(&healthy)
        };
        let l = &mut self.local[chosen];
        l.in_flight += 1;
        l.in_flight_gauge.inc();
        Ok(chosen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutcomeKind {
    Success,
    /// A failure that says something about the deployment's health
    /// (connect error, timeout, 429, 5xx).
    Failure {
        retry_after: Option<Duration>,
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

    fn handle(&mut self, msg: Outcome, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        let Some(l) = self.local.get_mut(msg.deployment) else {
            return;
        };
        l.in_flight = l.in_flight.saturating_sub(1);
        l.in_flight_gauge.dec();
        match msg.kind {
            OutcomeKind::Success => {
                let ms = msg.latency.as_secs_f64() * 1000.0;
                l.latency_ewma_ms = if l.latency_ewma_ms == 0.0 {
                    ms
                } else {
                    0.8 * l.latency_ewma_ms + 0.2 * ms
                };
                l.consecutive_fails = 0;
                if l.failing {
                    l.failing = false;
                    self.health.do_send(Report {
                        deployment: msg.deployment,
                        failure: None,
                    });
                }
            }
            OutcomeKind::Failure { retry_after } => {
                l.failing = true;
                l.consecutive_fails += 1;
                let now = Instant::now();
                let cooling = l.cooldown_until.is_some_and(|u| u > now);
                if !cooling && l.consecutive_fails >= self.config.allowed_fails {
                    let cooldown = Duration::from_secs(self.config.cooldown_secs)
                        .max(retry_after.unwrap_or_default());
                    l.cooldown_until = Some(now + cooldown);
                    l.consecutive_fails = 0;
                }
                self.health.do_send(Report {
                    deployment: msg.deployment,
                    failure: Some(retry_after),
                });
            }
            OutcomeKind::Neutral => {}
        }
    }
}

/// HealthActor announces a cooldown (or its end) for a deployment.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CooldownChanged {
    pub deployment: usize,
    pub until: Option<Instant>,
}

impl Handler<CooldownChanged> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: CooldownChanged, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        if let Some(l) = self.local.get_mut(msg.deployment) {
            l.cooldown_until = msg.until;
        }
    }
}

/// This worker's in-flight count and latency per deployment.
#[derive(Message)]
#[rtype(result = "Vec<(u32, f64)>")]
pub struct GetLoad;

impl Handler<GetLoad> for RouterActor {
    type Result = MessageResult<GetLoad>;

    fn handle(&mut self, _: GetLoad, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        MessageResult(
            self.local
                .iter()
                .map(|l| (l.in_flight, l.latency_ewma_ms))
                .collect(),
        )
    }
}
