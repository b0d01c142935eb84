//! HealthActor: the single owner of each deployment's failure count and
//! cooldown. Workers' RouterActors report failures (and the success that
//! ends a run of them); when a deployment reaches `allowed_fails` it cools
//! down and every router hears of it at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use crate::actors::router::{CooldownChanged, GetLoad, RouterActor};
use crate::config::RouterConfig;
use crate::metrics::{ActorMeter, DeploymentLabels, Metrics};
use crate::topology::Topology;

struct Health {
    consecutive_fails: u32,
    cooldown_until: Option<Instant>,
    healthy_gauge: Gauge,
}

pub struct HealthActor {
    topology: Arc<Topology>,
    config: RouterConfig,
    health: Vec<Health>,
    routers: Vec<Addr<RouterActor>>,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl HealthActor {
    pub fn new(topology: Arc<Topology>, config: RouterConfig, metrics: Arc<Metrics>) -> Self {
        let health = topology
            .deployments
            .iter()
            .map(|d| {
                let g = metrics
                    .deployment_healthy
                    .get_or_create_owned(&DeploymentLabels {
                        model: d.group.to_string(),
                        deployment: d.id.clone(),
                    });
                g.set(1);
                Health {
                    consecutive_fails: 0,
                    cooldown_until: None,
                    healthy_gauge: g,
                }
            })
            .collect();
        HealthActor {
            meter: metrics.actor("health"),
            topology,
            config,
            health,
            routers: Vec::new(),
            metrics,
        }
    }

    fn announce(&mut self, deployment: usize, until: Option<Instant>) {
        self.routers.retain(|r| r.connected());
        for r in &self.routers {
            r.do_send(CooldownChanged { deployment, until });
        }
    }

    fn schedule_recovery(&self, ctx: &mut Context<Self>, idx: usize, after: Duration) {
        ctx.run_later(after, move |act, _| {
            let h = &mut act.health[idx];
            if h.cooldown_until.is_some_and(|u| u <= Instant::now()) {
                h.cooldown_until = None;
                h.healthy_gauge.set(1);
                act.metrics
                    .litellm
                    .deployment_state(&act.topology.deployments[idx], 0);
                act.announce(idx, None);
            }
        });
    }

    fn cooling(&self, idx: usize, now: Instant) -> bool {
        self.health[idx].cooldown_until.is_some_and(|u| u > now)
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After a restart the timers that end cooldowns are gone: set them
        // again for every deployment still cooling down.
        let now = Instant::now();
        for idx in 0..self.health.len() {
            if let Some(until) = self.health[idx].cooldown_until {
                self.schedule_recovery(ctx, idx, until.saturating_duration_since(now));
            }
        }
    }
}

/// Failure counts and cooldowns survive a restart as they are: they are
/// plain numbers, and forgetting a cooldown would send traffic to a
/// deployment known to be failing.
impl Supervised for HealthActor {}

crate::actors::supervise::crashable!(HealthActor);

#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterRouter(pub Addr<RouterActor>);

impl Handler<RegisterRouter> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterRouter, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        // A router that starts (or restarts) mid-cooldown learns of it.
        let now = Instant::now();
        for (idx, h) in self.health.iter().enumerate() {
            if let Some(until) = h.cooldown_until.filter(|u| *u > now) {
                msg.0.do_send(CooldownChanged {
                    deployment: idx,
                    until: Some(until),
                });
            }
        }
        // A restarted router registers again: keep one entry per router.
        if !self.routers.contains(&msg.0) {
            self.routers.push(msg.0);
        }
    }
}

/// A failed attempt (`failure: Some(retry_after)`) or the success that ends
/// a run of failures (`None`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Report {
    pub deployment: usize,
    pub failure: Option<Option<Duration>>,
}

impl Handler<Report> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) {
        let _t = self.meter.handling();
        let idx = msg.deployment;
        if idx >= self.health.len() {
            return;
        }
        let Some(retry_after) = msg.failure else {
            self.health[idx].consecutive_fails = 0;
            return;
        };
        let d = &self.topology.deployments[idx];
        self.metrics
            .deployment_failures
            .get_or_create(&DeploymentLabels {
                model: d.group.to_string(),
                deployment: d.id.clone(),
            })
            .inc();
        let now = Instant::now();
        if self.cooling(idx, now) {
            return;
        }
        let h = &mut self.health[idx];
        h.consecutive_fails += 1;
        if h.consecutive_fails < self.config.allowed_fails {
            return;
        }
        let cooldown =
            Duration::from_secs(self.config.cooldown_secs).max(retry_after.unwrap_or_default());
        let secs = cooldown.as_secs_f64();
        let until = now + cooldown;
        h.cooldown_until = Some(until);
        h.consecutive_fails = 0;
        h.healthy_gauge.set(0);
        tracing::warn!(deployment = %d.id, model = %d.group, cooldown_secs = secs, "deployment cooling down after repeated failures");
        self.metrics.litellm.deployment_cooled_down(d, None);
        self.metrics
            .alerts
            .raise(crate::observe::alerts::Alert::DeploymentCooledDown {
                model: d.group.to_string(),
                deployment: d.id.clone(),
                secs,
            });
        self.announce(idx, Some(until));
        self.schedule_recovery(ctx, idx, cooldown);
    }
}

/// A snapshot of one deployment's health, for `/health` and tests.
#[derive(Debug, Clone, Serialize)]
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

impl Handler<GetHealth> for HealthActor {
    type Result = ResponseActFuture<Self, Vec<DeploymentStatus>>;

    fn handle(&mut self, _: GetHealth, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let asks: Vec<_> = self.routers.iter().map(|r| r.send(GetLoad)).collect();
        Box::pin(
            futures_util::future::join_all(asks)
                .into_actor(self)
                .map(|loads, act, _| {
                    let now = Instant::now();
                    let n = act.health.len();
                    let mut in_flight = vec![0u32; n];
                    let mut latency = vec![(0.0f64, 0u32); n];
                    for load in loads.into_iter().flatten() {
                        for (i, (f, ms)) in load.into_iter().enumerate().take(n) {
                            in_flight[i] += f;
                            if ms > 0.0 {
                                latency[i].0 += ms;
                                latency[i].1 += 1;
                            }
                        }
                    }
                    (0..n)
                        .map(|i| {
                            let h = &act.health[i];
                            let d = &act.topology.deployments[i];
                            DeploymentStatus {
                                id: d.id.clone(),
                                model: d.group.to_string(),
                                healthy: !act.cooling(i, now),
                                in_flight: in_flight[i],
                                latency_ewma_ms: if latency[i].1 > 0 {
                                    latency[i].0 / latency[i].1 as f64
                                } else {
                                    0.0
                                },
                                consecutive_fails: h.consecutive_fails,
                                cooldown_remaining_secs: h
                                    .cooldown_until
                                    .map(|u| u.saturating_duration_since(now).as_secs_f64())
                                    .unwrap_or(0.0),
                            }
                        })
                        .collect()
                }),
        )
    }
}
