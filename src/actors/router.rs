//! RouterActor: one per HTTP worker. Picks a deployment for each attempt
//! from its own view — in-flight counts and latency of the calls it routed,
//! and the cooldowns HealthActor announces — so routing a request never
//! leaves the worker's thread.
//!
//! Failures travel to HealthActor (the single owner of failure counts and
//! cooldowns, which it announces back); successes only when they end a
//! run of failures. In steady state a request sends nothing across threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::health::{Failed, HealthActor, RegisterRouter, Report};
use crate::config::RouterConfig;
use crate::error::GatewayError;
use crate::metrics::{ActorMeter, DeploymentLabels, Metrics};
use crate::routing::strategy::{self, Candidate};
use crate::routing::ErrorClass;
use crate::topology::{SharedTopology, Topology};
use prometheus_client::metrics::gauge::Gauge;

struct Local {
    in_flight: u32,
    /// Moving average of the time to a whole answer, in ms (0: unmeasured).
    latency_ewma_ms: f64,
    /// Moving average of a stream's time to its first token, in ms.
    ttft_ewma_ms: f64,
    /// As HealthActor announced it (the owner of failure counts).
    cooldown_until: Option<Instant>,
    /// A failure was reported and no success since: the next success is
    /// reported too, so HealthActor can reset its count.
    failing: bool,
    /// Tokens served this minute (`minute`), through this worker.
    minute: u64,
    tokens: u64,
    in_flight_gauge: Gauge,
}

fn ewma(current: f64, sample: Duration) -> f64 {
    let ms = sample.as_secs_f64() * 1000.0;
    if current == 0.0 {
        ms
    } else {
        0.8 * current + 0.2 * ms
    }
}

fn minute_now() -> u64 {
    (crate::store::now_ms().max(0) / 60_000) as u64
}

pub struct RouterActor {
    topology: SharedTopology,
    local: Vec<Local>,
    health: Addr<HealthActor>,
    meter: ActorMeter,
    rng: rand::rngs::SmallRng,
    metrics: Arc<Metrics>,
}

impl RouterActor {
    pub fn new(
        topology: SharedTopology,
        _config: RouterConfig,
        health: Addr<HealthActor>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut router = RouterActor {
            meter: metrics.actor("router"),
            topology,
            local: Vec::new(),
            health,
            rng: rand::SeedableRng::from_os_rng(),
            metrics,
        };
        let now = router.topology.load_full();
        router.track(&now);
        router
    }

    /// Starts tracking deployments added since (indexes only grow).
    fn track(&mut self, topology: &Topology) {
        let start = self.local.len().min(topology.deployments.len());
        if start == topology.deployments.len() {
            return;
        }
        let live = topology.live_deployments();
        for (i, d) in topology.deployments.iter().enumerate().skip(start) {
            self.local.push(Local {
                in_flight: 0,
                latency_ewma_ms: 0.0,
                ttft_ewma_ms: 0.0,
                cooldown_until: None,
                failing: false,
                minute: 0,
                tokens: 0,
                // A slot already removed gets a gauge of its own, not exported.
                in_flight_gauge: if live.contains(&i) {
                    self.metrics
                        .deployment_in_flight
                        .get_or_create_owned(&DeploymentLabels {
                            model: d.group.to_string(),
                            deployment: d.id.clone(),
                        })
                } else {
                    Default::default()
                },
            });
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

    fn candidate(
        &self,
        topology: &Topology,
        idx: usize,
        stream: bool,
        usage: f64,
        minute: u64,
    ) -> Candidate {
        let d = &topology.deployments[idx];
        let l = &self.local[idx];
        let (first, second) = if stream {
            (l.ttft_ewma_ms, l.latency_ewma_ms)
        } else {
            (l.latency_ewma_ms, l.ttft_ewma_ms)
        };
        Candidate {
            idx,
            weight: d.weight,
            in_flight: l.in_flight,
            latency_ms: if first > 0.0 { first } else { second },
            usage,
            tokens: if l.minute == minute { l.tokens } else { 0 },
            cost: d.input_cost_per_token + d.output_cost_per_token,
        }
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.do_send(RegisterRouter(ctx.address()));
    }
}

/// In-flight counts stay (the attempts they count still report their
/// outcome); cooldown copies are dropped and re-learnt from HealthActor,
/// which `started` registers with again.
impl Supervised for RouterActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        for l in &mut self.local {
            l.cooldown_until = None;
            l.failing = false;
        }
    }
}

crate::actors::supervise::crashable!(RouterActor);

/// Choose a deployment of `group` for one attempt.
#[derive(Message)]
#[rtype(result = "Result<usize, GatewayError>")]
pub struct Route {
    pub group: usize,
    /// Already tried: avoided while any other healthy deployment is left.
    pub exclude: Vec<usize>,
    /// The deployments this request may use at all (tags, context
    /// window); `None`: all of the group's.
    pub allowed: Option<Vec<usize>>,
    /// Streams are routed by time to first token.
    pub stream: bool,
    /// Usage-based routing: each of the group's deployments' share of its
    /// limits used this minute, in the group's order.
    pub usage: Option<Vec<f64>>,
}

impl Handler<Route> for RouterActor {
    type Result = Result<usize, GatewayError>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        let topology = self.topology.load_full();
        if self.local.len() < topology.deployments.len() {
            self.track(&topology);
        }
        let group = topology
            .groups
            .get(msg.group)
            .ok_or_else(|| GatewayError::Internal("unknown model group index".into()))?;
        let now = Instant::now();
        let members: &[usize] = msg.allowed.as_deref().unwrap_or(&group.deployments);
        let mut healthy = Vec::with_capacity(members.len());
        for &d in members {
            if !self.is_cooling(d, now) {
                healthy.push(d);
            }
        }
        if healthy.is_empty() {
            let wait = members
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
        if healthy.iter().any(|d| !msg.exclude.contains(d)) {
            healthy.retain(|d| !msg.exclude.contains(d));
        }
        if group.ordered {
            // The first priority tier that has a deployment left.
            let first = healthy
                .iter()
                .map(|&d| topology.deployments[d].order)
                .min()
                .unwrap_or(u32::MAX);
            healthy.retain(|&d| topology.deployments[d].order == first);
        }
        let chosen = if healthy.len() == 1 {
            healthy[0]
        } else {
            let minute = minute_now();
            let usage_of = |d: usize| -> f64 {
                msg.usage
                    .as_ref()
                    .and_then(|u| {
                        let pos = group.deployments.iter().position(|&x| x == d)?;
                        u.get(pos).copied()
                    })
                    .unwrap_or(0.0)
            };
            let candidates: Vec<Candidate> = healthy
                .iter()
                .map(|&d| self.candidate(&topology, d, msg.stream, usage_of(d), minute))
                .collect();
            strategy::choose(group.strategy, &candidates, &mut self.rng)
        };
        let l = &mut self.local[chosen];
        l.in_flight += 1;
        l.in_flight_gauge.inc();
        Ok(chosen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutcomeKind {
    /// `tokens`: what the answer used (0 when unknown).
    Success { tokens: u64 },
    /// A failure of `class`; `transient`: the class that, without a
    /// policy, says the deployment (not the request) is the problem.
    Failure {
        retry_after: Option<Duration>,
        class: ErrorClass,
        transient: bool,
        /// Already reported to HealthActor (and answered) by the caller,
        /// which waited so that its retry sees a resulting cooldown.
        reported: bool,
    },
    /// Finished without telling us anything about health (client went
    /// away, the gateway's own deadline cut it short).
    Neutral,
}

/// The end of one attempt on a deployment chosen by `Route`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outcome {
    pub deployment: usize,
    pub latency: Duration,
    /// A stream's time to its first token.
    pub ttft: Option<Duration>,
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
            OutcomeKind::Success { tokens } => {
                match msg.ttft {
                    Some(ttft) => l.ttft_ewma_ms = ewma(l.ttft_ewma_ms, ttft),
                    None => l.latency_ewma_ms = ewma(l.latency_ewma_ms, msg.latency),
                }
                if tokens > 0 {
                    let minute = minute_now();
                    if l.minute != minute {
                        l.minute = minute;
                        l.tokens = 0;
                    }
                    l.tokens += tokens;
                }
                if l.failing {
                    l.failing = false;
                    self.health.do_send(Report {
                        deployment: msg.deployment,
                        failure: None,
                    });
                }
            }
            OutcomeKind::Failure {
                retry_after,
                class,
                transient,
                reported,
            } => {
                l.failing = true;
                if reported {
                    return;
                }
                self.health.do_send(Report {
                    deployment: msg.deployment,
                    failure: Some(Failed {
                        retry_after,
                        class,
                        transient,
                    }),
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
        if msg.deployment >= self.local.len() {
            let now = self.topology.load_full();
            self.track(&now);
        }
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
