//! SpendActor: owns spend and token totals per key and per model group.
//!
//! Kept in memory for now; the storage issue makes these durable with
//! batched writes, and budgets check against them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::metrics::{ActorMeter, Metrics, ModelLabels, TokenLabels};
use crate::providers::Usage;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend_usd: f64,
}

impl Totals {
    fn add(&mut self, usage: &Usage, cost: f64) {
        self.requests += 1;
        self.prompt_tokens = self.prompt_tokens.saturating_add(usage.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(usage.completion_tokens);
        self.spend_usd += cost;
    }
}

pub struct SpendActor {
    by_key: HashMap<String, Totals>,
    by_model: HashMap<Arc<str>, Totals>,
    metrics: Arc<Metrics>,
    meter: ActorMeter,
}

impl SpendActor {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        SpendActor {
            by_key: HashMap::new(),
            by_model: HashMap::new(),
            meter: metrics.actor("spend"),
            metrics,
        }
    }
}

impl Actor for SpendActor {
    type Context = Context<Self>;
}

impl Supervised for SpendActor {}

crate::actors::supervise::crashable!(SpendActor);

/// The final usage and cost of one request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub key_id: String,
    pub model: Arc<str>,
    pub usage: Usage,
    pub cost_usd: f64,
}

impl Handler<Settle> for SpendActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.by_key
            .entry(msg.key_id)
            .or_default()
            .add(&msg.usage, msg.cost_usd);
        self.by_model
            .entry(msg.model.clone())
            .or_default()
            .add(&msg.usage, msg.cost_usd);
        let model = msg.model.to_string();
        for (kind, n) in [
            ("prompt", msg.usage.prompt_tokens),
            ("completion", msg.usage.completion_tokens),
        ] {
            if n > 0 {
                self.metrics
                    .tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if msg.cost_usd > 0.0 {
            self.metrics
                .cost
                .get_or_create(&ModelLabels { model })
                .inc_by(msg.cost_usd);
        }
    }
}

/// Many settlements at once, from a worker's SpendBuffer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleBatch(pub Vec<Settle>);

impl Handler<SettleBatch> for SpendActor {
    type Result = ();

    fn handle(&mut self, msg: SettleBatch, ctx: &mut Context<Self>) {
        for settle in msg.0 {
            // Each one is counted in as if it had been sent alone.
            self.meter.sent();
            self.handle(settle, ctx);
        }
    }
}

/// Persist anything pending (a no-op while spend lives in memory); answered
/// once done, so shutdown can wait for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for SpendActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        let _t = self.meter.handling();
    }
}
