//! HealthActor: the single owner of each deployment's failure counts and
//! cooldown. Workers' RouterActors report failures (and the success that
//! ends a run of them); when a deployment reaches its allowed failures it
//! cools down and every router hears of it at once. With background health
//! checks on, it also probes every deployment on an interval: a failed
//! probe takes the deployment out of rotation until a probe succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use crate::actors::provider::ProviderActor;
use crate::actors::router::{CooldownChanged, GetLoad, RouterActor};
use crate::config::RouterConfig;
use crate::metrics::{ActorMeter, DeploymentLabels, Metrics};
use crate::probe;
use crate::routing::ErrorClass;
use crate::topology::{SharedTopology, Topology};

struct Health {
    /// Failures in a row per error class (`ErrorClass::index`).
    fails: [u32; 6],
    cooldown_until: Option<Instant>,
    /// The cooldown is a failed probe's (ended by a probe that succeeds).
    probe_down: bool,
    last_probe: Option<ProbeState>,
    healthy_gauge: Gauge,
    /// Failing but not cooled down (LiteLLM's "partial outage") until
    /// then, unless it fails again.
    partial_until: Option<Instant>,
}

/// The latest background probe of a deployment.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeState {
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
    /// Unix ms.
    pub checked_at: i64,
}

pub struct HealthActor {
    topology: SharedTopology,
    config: RouterConfig,
    health: Vec<Health>,
    routers: Vec<Addr<RouterActor>>,
    /// Background health checks' client.
    prober: Option<Addr<ProviderActor>>,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl HealthActor {
    pub fn new(topology: SharedTopology, config: RouterConfig, metrics: Arc<Metrics>) -> Self {
        let mut actor = HealthActor {
            meter: metrics.actor("health"),
            topology,
            config,
            health: Vec::new(),
            routers: Vec::new(),
            prober: None,
            metrics,
        };
        let now = actor.topology.load_full();
        actor.track(&now);
        actor
    }

    /// Starts tracking deployments added since (indexes only grow).
    fn track(&mut self, topology: &Topology) {
        let start = self.health.len().min(topology.deployments.len());
        if start == topology.deployments.len() {
            return;
        }
        let live = topology.live_deployments();
        for (i, d) in topology.deployments.iter().enumerate().skip(start) {
            // A slot already removed gets a gauge of its own, not exported.
            let g = if live.contains(&i) {
                self.metrics
                    .deployment_healthy
                    .get_or_create_owned(&DeploymentLabels {
                        model: d.group.to_string(),
                        deployment: d.id.clone(),
                    })
            } else {
                Default::default()
            };
            g.set(1);
            self.health.push(Health {
                fails: [0; 6],
                cooldown_until: None,
                probe_down: false,
                last_probe: None,
                healthy_gauge: g,
                partial_until: None,
            });
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
                h.probe_down = false;
                h.healthy_gauge.set(1);
                let topology = act.topology.load_full();
                if let Some(d) = topology.deployments.get(idx) {
                    act.metrics.litellm.deployment_state(d, 0);
                }
                act.announce(idx, None);
            }
        });
    }

    fn schedule_partial_end(&self, ctx: &mut Context<Self>, idx: usize, after: Duration) {
        ctx.run_later(after, move |act, _| {
            let now = Instant::now();
            let Some(h) = act.health.get_mut(idx) else {
                return;
            };
            if h.partial_until.is_some_and(|u| u <= now) {
                // A cooldown's length without a failure: the failures
                // before it no longer count towards the next cooldown
                // (as LiteLLM counts allowed fails per window).
                h.partial_until = None;
                h.fails = [0; 6];
                if h.cooldown_until.is_none_or(|u| u <= now) {
                    if let Some(d) = act.topology.load_full().deployments.get(idx) {
                        act.metrics.litellm.deployment_state(d, 0);
                    }
                }
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
        if self.config.background_health_checks {
            // Its own client, on this thread (awc clients cannot move).
            let draining = tokio::sync::watch::channel(false).1;
            let provider = ProviderActor::new(draining, self.metrics.actor("provider")).start();
            self.prober = Some(provider);
            ctx.run_later(Duration::from_millis(200), |act, ctx| act.probe_round(ctx));
            ctx.run_interval(
                Duration::from_secs(self.config.health_check_interval_secs),
                |act, ctx| act.probe_round(ctx),
            );
        }
    }
}

impl HealthActor {
    /// Probes every serving deployment; results arrive as they finish.
    fn probe_round(&mut self, ctx: &mut Context<Self>) {
        let Some(provider) = self.prober.clone() else {
            return;
        };
        let topology = self.topology.load_full();
        self.track(&topology);
        let targets: Vec<_> = topology
            .groups
            .iter()
            .flat_map(|g| {
                g.deployments
                    .iter()
                    .map(|&i| topology.deployments[i].clone())
            })
            .collect();
        let timeout = Duration::from_secs(self.config.health_check_timeout_secs);
        ctx.spawn(
            async move { probe::probe_all(&provider, targets, timeout).await }
                .into_actor(self)
                .map(|results, act, ctx| {
                    for p in results {
                        act.apply_probe(p, ctx);
                    }
                }),
        );
    }

    fn apply_probe(&mut self, p: probe::Probed, ctx: &mut Context<Self>) {
        let idx = p.deployment;
        if idx >= self.health.len() {
            return;
        }
        let topology = self.topology.load_full();
        let d = topology.deployments[idx].clone();
        let interval = Duration::from_secs(self.config.health_check_interval_secs);
        let now = Instant::now();
        let h = &mut self.health[idx];
        h.last_probe = Some(ProbeState {
            healthy: p.result.is_ok(),
            error: p.result.as_ref().err().cloned(),
            latency_ms: p.result.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
            checked_at: crate::store::now_ms(),
        });
        match p.result {
            Err(error) => {
                // Out of rotation until the next round says otherwise.
                let until = now + interval + Duration::from_secs(1);
                let was_healthy = h.cooldown_until.is_none_or(|u| u <= now);
                h.cooldown_until = Some(until.max(h.cooldown_until.unwrap_or(until)));
                h.probe_down = true;
                h.healthy_gauge.set(0);
                if was_healthy {
                    tracing::warn!(deployment = %d.id, model = %d.group, %error, "health probe failed: deployment taken out of rotation");
                }
                let until = h.cooldown_until;
                self.announce(idx, until);
                self.schedule_recovery(ctx, idx, interval + Duration::from_secs(1));
            }
            Ok(_) if h.probe_down => {
                h.probe_down = false;
                h.cooldown_until = None;
                h.fails = [0; 6];
                h.healthy_gauge.set(1);
                tracing::info!(deployment = %d.id, model = %d.group, "health probe succeeded: deployment back in rotation");
                self.announce(idx, None);
            }
            Ok(_) => {}
        }
    }
}

/// The latest background probe of every serving deployment (empty when
/// background health checks are off).
#[derive(Message)]
#[rtype(result = "Vec<(usize, ProbeState)>")]
pub struct GetProbes;

impl Handler<GetProbes> for HealthActor {
    type Result = MessageResult<GetProbes>;

    fn handle(&mut self, _: GetProbes, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        MessageResult(
            self.health
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((i, h.last_probe.clone()?)))
                .collect(),
        )
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

/// A failed attempt (`failure: Some`) or the success that ends a run of
/// failures (`None`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Report {
    pub deployment: usize,
    pub failure: Option<Failed>,
}

#[derive(Debug, Clone, Copy)]
pub struct Failed {
    pub retry_after: Option<Duration>,
    pub class: ErrorClass,
    /// Counts against health without a policy for its class.
    pub transient: bool,
}

impl Handler<Report> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) {
        let _t = self.meter.handling();
        let idx = msg.deployment;
        let topology = self.topology.load_full();
        if idx >= self.health.len() {
            self.track(&topology);
        }
        if idx >= self.health.len() {
            return;
        }
        let Some(failed) = msg.failure else {
            self.health[idx].fails = [0; 6];
            return;
        };
        let Some(threshold) = self.config.allowed_fails_policy.threshold(
            failed.class,
            failed.transient,
            self.config.allowed_fails,
        ) else {
            // This class says nothing about the deployment's health.
            return;
        };
        let retry_after = failed.retry_after;
        let d = &topology.deployments[idx];
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
        let count = &mut h.fails[failed.class.index()];
        *count = count.saturating_add(1);
        if *count < threshold || self.config.disable_cooldowns {
            // Failing, still in rotation: a partial outage for LiteLLM's
            // `litellm_deployment_state` (1), over (and its failures
            // forgotten) once a cooldown's length passes without another.
            let window = Duration::from_secs(self.config.cooldown_secs);
            if h.partial_until.replace(now + window).is_none() {
                self.metrics.litellm.deployment_state(d, 1);
            }
            self.schedule_partial_end(ctx, idx, window);
            return;
        }
        h.partial_until = None;
        let cooldown =
            Duration::from_secs(self.config.cooldown_secs).max(retry_after.unwrap_or_default());
        let secs = cooldown.as_secs_f64();
        let until = now + cooldown;
        h.cooldown_until = Some(until);
        h.fails = [0; 6];
        h.healthy_gauge.set(0);
        tracing::warn!(deployment = %d.id, model = %d.group, cooldown_secs = secs, error_class = ?failed.class, "deployment cooling down after repeated failures");
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
                    let topology = act.topology.load_full();
                    // Deployments still serving (removed ones keep their
                    // index but belong to no group).
                    let mut live: Vec<usize> = topology
                        .groups
                        .iter()
                        .flat_map(|g| g.deployments.iter().copied())
                        .filter(|&i| i < n)
                        .collect();
                    live.sort_unstable();
                    live.into_iter()
                        .map(|i| {
                            let h = &act.health[i];
                            let d = &topology.deployments[i];
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
                                consecutive_fails: h.fails.iter().copied().max().unwrap_or(0),
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
