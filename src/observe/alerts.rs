//! Alerts to a Slack-compatible incoming webhook (`{"text": …}`): budgets
//! and soft budgets crossed, deployments cooled down, the spend spool
//! filling. The actors where these happen call [`AlertHook::raise`], which
//! never waits; the alert sink drops repeats of the same alert for
//! `repeat_secs` and gathers the rest into one message per flush.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix::Recipient;
use prometheus_client::metrics::gauge::Gauge;

use super::sink::{Enqueue, Exporter, Payload};

#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    BudgetExceeded {
        entity: &'static str,
        name: String,
        spend: f64,
        max_budget: f64,
    },
    SoftBudgetCrossed {
        entity: &'static str,
        name: String,
        spend: f64,
        soft_budget: f64,
    },
    DeploymentCooledDown {
        model: String,
        deployment: String,
        secs: f64,
    },
    SpendSpoolGrowing {
        bytes: u64,
        limit: u64,
    },
}

impl Alert {
    /// Alerts with the same key are one alert, repeated.
    pub fn key(&self) -> String {
        match self {
            Alert::BudgetExceeded { entity, name, .. } => format!("budget:{entity}:{name}"),
            Alert::SoftBudgetCrossed { entity, name, .. } => format!("soft:{entity}:{name}"),
            Alert::DeploymentCooledDown { deployment, .. } => format!("cooldown:{deployment}"),
            Alert::SpendSpoolGrowing { .. } => "spool".into(),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Alert::BudgetExceeded {
                entity,
                name,
                spend,
                max_budget,
            } => format!(
                ":rotating_light: Budget exceeded: {entity} `{name}` spent ${spend:.4} of its ${max_budget:.4} budget; its requests are refused"
            ),
            Alert::SoftBudgetCrossed {
                entity,
                name,
                spend,
                soft_budget,
            } => format!(
                ":warning: Soft budget crossed: {entity} `{name}` spent ${spend:.4} (soft budget ${soft_budget:.4})"
            ),
            Alert::DeploymentCooledDown {
                model,
                deployment,
                secs,
            } => format!(
                ":warning: Deployment `{deployment}` of model `{model}` cooled down for {secs:.0}s after repeated failures"
            ),
            Alert::SpendSpoolGrowing { bytes, limit } => format!(
                ":rotating_light: The spend spool is {:.0}% full ({bytes} of {limit} bytes): the database is not taking spend; at 100% requests are refused",
                *bytes as f64 * 100.0 / (*limit).max(1) as f64
            ),
        }
    }
}

/// Where the actors raise alerts; unset (no `[logging.alerts]`): raising
/// costs one atomic load.
#[derive(Default)]
pub struct AlertHook {
    sink: OnceLock<(Recipient<Enqueue<Alert>>, Gauge)>,
}

impl AlertHook {
    pub fn set(&self, sink: Recipient<Enqueue<Alert>>, queued: Gauge) {
        let _ = self.sink.set((sink, queued));
    }

    pub fn enabled(&self) -> bool {
        self.sink.get().is_some()
    }

    pub fn raise(&self, alert: Alert) {
        if let Some((sink, queued)) = self.sink.get() {
            queued.inc();
            if sink.try_send(Enqueue(alert)).is_err() {
                queued.dec();
            }
        }
    }
}

pub struct SlackExporter {
    pub repeat: Duration,
    last: HashMap<String, Instant>,
}

impl SlackExporter {
    pub fn new(repeat: Duration) -> Self {
        SlackExporter {
            repeat,
            last: HashMap::new(),
        }
    }
}

impl Exporter for SlackExporter {
    type Item = Alert;

    fn admit(&mut self, alert: &Alert) -> bool {
        let now = Instant::now();
        // Bounded: forget what is past its repeat window.
        if self.last.len() > 10_000 {
            let repeat = self.repeat;
            self.last.retain(|_, t| now.duration_since(*t) < repeat);
        }
        let key = alert.key();
        match self.last.get(&key) {
            Some(t) if now.duration_since(*t) < self.repeat => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }

    fn encode(&self, batch: &[Alert]) -> Result<Payload, String> {
        let text = batch.iter().map(Alert::text).collect::<Vec<_>>().join("\n");
        let body = serde_json::to_vec(&serde_json::json!({ "text": format!("tollgate: {text}") }))
            .map_err(|e| e.to_string())?;
        Ok(Payload {
            body: body.into(),
            content_type: "application/json",
            headers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_within_the_window_and_batches_join_lines() {
        let mut e = SlackExporter::new(Duration::from_secs(60));
        let a = Alert::SoftBudgetCrossed {
            entity: "team",
            name: "t1".into(),
            spend: 5.0,
            soft_budget: 4.0,
        };
        let b = Alert::DeploymentCooledDown {
            model: "gpt".into(),
            deployment: "gpt-0".into(),
            secs: 30.0,
        };
        assert!(e.admit(&a));
        assert!(!e.admit(&a));
        assert!(e.admit(&b));
        let p = e.encode(&[a, b]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("Soft budget crossed: team `t1`"), "{text}");
        assert!(text.contains("`gpt-0`"), "{text}");
        assert_eq!(text.lines().count(), 2);
        let mut e = SlackExporter::new(Duration::ZERO);
        let c = Alert::SpendSpoolGrowing { bytes: 1, limit: 2 };
        assert!(e.admit(&c) && e.admit(&c));
    }
}
