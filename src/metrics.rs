//! Prometheus metrics. Counters and histograms are atomic, so recording one is
//! a few nanoseconds from any thread; `/metrics` encodes the registry on demand.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub model: String,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabels {
    pub actor: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~105 s: covers gateway overhead and long generations alike.
    Histogram::new(exponential_buckets(0.00005, 2.0, 22))
}

fn handling_histogram() -> Histogram {
    // 1 µs … ~1 s.
    Histogram::new(exponential_buckets(0.000001, 2.0, 21))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<ModelLabels>,
    pub upstream_duration: HistogramFamily<ModelLabels>,
    pub overhead_duration: HistogramFamily<ModelLabels>,
    pub time_to_first_chunk: HistogramFamily<ModelLabels>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    pub retries: Family<ModelLabels, Counter>,
    pub deployment_healthy: Family<DeploymentLabels, Gauge>,
    pub deployment_in_flight: Family<DeploymentLabels, Gauge>,
    pub deployment_failures: Family<DeploymentLabels, Counter>,
    pub mailbox_depth: Family<ActorLabels, Gauge>,
    pub message_duration: HistogramFamily<ActorLabels>,
    pub actor_restarts: Family<ActorLabels, Counter>,
    pub log_events_dropped: Counter,
    pub dependency_up: Family<DependencyLabels, Gauge>,
    pub key_lookups: Family<OutcomeLabels, Counter>,
    pub key_spend: Family<KeySpendLabels, Counter<f64, AtomicU64>>,
    pub budget_refusals: Family<EntityLabels, Counter>,
    pub soft_budget_crossed: Family<EntityLabels, Counter>,
    pub budget_resets: Family<EntityLabels, Counter>,
    pub spend_batches: Counter,
    pub spend_rows_written: Counter,
    pub spend_write_failures: Counter,
    pub spend_spool_errors: Counter,
    pub spend_batch_rows: Histogram,
    pub spend_batch_seconds: Histogram,
    pub spend_queue_rows: Gauge,
    pub spend_spool_bytes: Gauge,
    pub rate_limit_fallback: Gauge,
    pub rate_limit_leases: Counter,
    pub log_destination_queued: Family<DestinationLabels, Gauge>,
    pub log_destination_sent: Family<DestinationLabels, Counter>,
    pub log_destination_dropped: Family<DestinationLabels, Counter>,
    pub log_destination_failures: Family<DestinationLabels, Counter>,
    /// Where actors raise alerts (`[logging.alerts]`); inert when unset.
    pub alerts: crate::observe::alerts::AlertHook,
    /// LiteLLM's metric names, encoded after ours once enabled.
    pub litellm: crate::observe::litellm::LiteLlmMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeySpendLabels {
    pub key_alias: String,
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntityLabels {
    pub entity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            overhead_duration: Family::new_with_constructor(latency_histogram),
            time_to_first_chunk: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            cost: Family::default(),
            retries: Family::default(),
            deployment_healthy: Family::default(),
            deployment_in_flight: Family::default(),
            deployment_failures: Family::default(),
            mailbox_depth: Family::default(),
            message_duration: Family::new_with_constructor(handling_histogram),
            actor_restarts: Family::default(),
            log_events_dropped: Counter::default(),
            dependency_up: Family::default(),
            key_lookups: Family::default(),
            key_spend: Family::default(),
            budget_refusals: Family::default(),
            soft_budget_crossed: Family::default(),
            budget_resets: Family::default(),
            spend_batches: Counter::default(),
            spend_rows_written: Counter::default(),
            spend_write_failures: Counter::default(),
            spend_spool_errors: Counter::default(),
            spend_batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            spend_batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            spend_queue_rows: Gauge::default(),
            spend_spool_bytes: Gauge::default(),
            rate_limit_fallback: Gauge::default(),
            rate_limit_leases: Counter::default(),
            log_destination_queued: Family::default(),
            log_destination_sent: Family::default(),
            log_destination_dropped: Family::default(),
            log_destination_failures: Family::default(),
            alerts: Default::default(),
            litellm: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by model group, endpoint and HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Total time from request to the last byte of the response",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time spent waiting on upstream providers",
            m.upstream_duration.clone(),
        );
        registry.register(
            "overhead_duration_seconds",
            "Gateway's own time: total minus upstream",
            m.overhead_duration.clone(),
        );
        registry.register(
            "time_to_first_chunk_seconds",
            "Streaming: time until the first chunk reached the client",
            m.time_to_first_chunk.clone(),
        );
        registry.register("tokens", "Tokens by model group and kind", m.tokens.clone());
        registry.register("spend_usd", "Cost in USD by model group", m.cost.clone());
        registry.register(
            "retries",
            "Upstream attempts beyond the first",
            m.retries.clone(),
        );
        registry.register(
            "deployment_healthy",
            "1 if the deployment takes traffic, 0 while it cools down",
            m.deployment_healthy.clone(),
        );
        registry.register(
            "deployment_in_flight",
            "Requests in flight per deployment",
            m.deployment_in_flight.clone(),
        );
        registry.register(
            "deployment_failures",
            "Failed upstream calls per deployment",
            m.deployment_failures.clone(),
        );
        registry.register(
            "actor_mailbox_depth",
            "Messages sent to an actor and not yet handled",
            m.mailbox_depth.clone(),
        );
        registry.register(
            "actor_message_duration_seconds",
            "Time an actor spends handling one message",
            m.message_duration.clone(),
        );
        registry.register(
            "actor_restarts",
            "Supervised actor restarts",
            m.actor_restarts.clone(),
        );
        registry.register(
            "log_events_dropped",
            "Request log events dropped because the logger queue was full",
            m.log_events_dropped.clone(),
        );
        registry.register(
            "dependency_up",
            "1 while a dependency (database, redis) answers, 0 while its circuit breaker is open",
            m.dependency_up.clone(),
        );
        registry.register(
            "key_lookups",
            "Lookups of uncached virtual keys (Redis, then database) by outcome: found, absent, failed, or shed (queue full)",
            m.key_lookups.clone(),
        );
        registry.register(
            "key_spend_usd",
            "Spend in USD by key alias and team",
            m.key_spend.clone(),
        );
        registry.register(
            "budget_refusals",
            "Requests refused for a budget, by entity (key, user, team, customer, key_model)",
            m.budget_refusals.clone(),
        );
        registry.register(
            "soft_budget_crossed",
            "Soft budgets crossed, by entity",
            m.soft_budget_crossed.clone(),
        );
        registry.register(
            "budget_resets",
            "Budget periods reset by this replica (each period is reset by exactly one replica)",
            m.budget_resets.clone(),
        );
        registry.register(
            "spend_batches",
            "Spend batches committed to the database",
            m.spend_batches.clone(),
        );
        registry.register(
            "spend_rows_written",
            "Spend log rows written",
            m.spend_rows_written.clone(),
        );
        registry.register(
            "spend_write_failures",
            "Failed spend writes (retried)",
            m.spend_write_failures.clone(),
        );
        registry.register(
            "spend_spool_errors",
            "Failures to append to the local spend spool",
            m.spend_spool_errors.clone(),
        );
        registry.register(
            "spend_batch_rows",
            "Rows per committed spend batch",
            m.spend_batch_rows.clone(),
        );
        registry.register(
            "spend_batch_seconds",
            "Time to write one spend batch",
            m.spend_batch_seconds.clone(),
        );
        registry.register(
            "spend_queue_rows",
            "Settlements waiting to be written to the database",
            m.spend_queue_rows.clone(),
        );
        registry.register(
            "spend_spool_bytes",
            "Bytes of spend spool not yet committed",
            m.spend_spool_bytes.clone(),
        );
        registry.register(
            "rate_limit_fallback",
            "1 while Redis is unreachable and rate limits are counted on this replica alone (its share of each limit)",
            m.rate_limit_fallback.clone(),
        );
        registry.register(
            "rate_limit_leases",
            "Blocks of rate-limit quota leased from the fleet's counters in Redis (each a round trip; requests are admitted from the blocks locally)",
            m.rate_limit_leases.clone(),
        );
        registry.register(
            "log_destination_queued",
            "Log records accepted for a destination (Langfuse, OTLP, webhook, alerts) and not yet delivered or dropped",
            m.log_destination_queued.clone(),
        );
        registry.register(
            "log_destination_sent",
            "Log records delivered to a destination",
            m.log_destination_sent.clone(),
        );
        registry.register(
            "log_destination_dropped",
            "Log records dropped: the destination's queue was full, or it kept failing past its retries",
            m.log_destination_dropped.clone(),
        );
        registry.register(
            "log_destination_failures",
            "Failed POSTs to a destination (each retried or dropped)",
            m.log_destination_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String cannot fail except on fmt errors we never produce.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if self.litellm.enabled() {
            // One exposition: a single `# EOF`, at the end.
            if out.ends_with("# EOF\n") {
                out.truncate(out.len() - "# EOF\n".len());
            }
            let _ = prometheus_client::encoding::text::encode(&mut out, &self.litellm.registry);
        }
        out
    }

    pub fn actor(&self, actor: &'static str) -> ActorMeter {
        ActorMeter {
            name: actor,
            depth: self
                .mailbox_depth
                .get_or_create_owned(&ActorLabels { actor }),
            duration: self
                .message_duration
                .get_or_create_owned(&ActorLabels { actor }),
            restarts: self
                .actor_restarts
                .get_or_create_owned(&ActorLabels { actor }),
        }
    }
}

/// Metric handles for one model group, made once at start-up so the hot
/// path records without hashing label sets.
#[derive(Clone)]
pub struct GroupMeters {
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub overhead_duration: Histogram,
    pub time_to_first_chunk: Histogram,
    pub retries: Counter,
    /// `requests{status="200"}` by `Endpoint::index`.
    pub ok: [Counter; 3],
    /// `tokens{kind}` for the parts of usage counted inside prompt and
    /// completion: cache reads, cache writes, reasoning.
    pub cached_prompt_tokens: Counter,
    pub cache_creation_tokens: Counter,
    pub reasoning_tokens: Counter,
}

impl Metrics {
    /// Takes a deployment that no longer serves out of the gauges (the
    /// actors' handles to them stay valid; nothing is re-created).
    pub fn forget_deployment(&self, d: &crate::topology::DeploymentTarget) {
        let labels = DeploymentLabels {
            model: d.group.to_string(),
            deployment: d.id.clone(),
        };
        self.deployment_healthy.remove(&labels);
        self.deployment_in_flight.remove(&labels);
        self.litellm.forget_deployment(d);
    }

    pub fn group(&self, model: &str) -> GroupMeters {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        let ok = |endpoint: &'static str| {
            self.requests.get_or_create_owned(&RequestLabels {
                model: model.to_string(),
                endpoint,
                status: 200,
            })
        };
        let tokens = |kind: &'static str| {
            self.tokens.get_or_create_owned(&TokenLabels {
                model: model.to_string(),
                kind,
            })
        };
        GroupMeters {
            request_duration: self.request_duration.get_or_create_owned(&labels),
            upstream_duration: self.upstream_duration.get_or_create_owned(&labels),
            overhead_duration: self.overhead_duration.get_or_create_owned(&labels),
            time_to_first_chunk: self.time_to_first_chunk.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            ok: [ok("chat"), ok("completions"), ok("embeddings")],
            cached_prompt_tokens: tokens("cached_prompt"),
            cache_creation_tokens: tokens("cache_creation"),
            reasoning_tokens: tokens("reasoning"),
        }
    }
}

/// Per-actor mailbox and handling-time meters. actix does not expose mailbox
/// length, so senders call [`ActorMeter::sent`] and handlers hold a
/// [`HandlingTimer`], which together keep the depth gauge exact.
#[derive(Clone)]
pub struct ActorMeter {
    name: &'static str,
    depth: Gauge,
    duration: Histogram,
    restarts: Counter,
}

impl ActorMeter {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn sent(&self) {
        self.depth.inc();
    }
    /// A message that was counted as sent but never reached the actor.
    pub fn unsent(&self) {
        self.depth.dec();
    }
    pub fn handling(&self) -> HandlingTimer {
        self.depth.dec();
        HandlingTimer {
            start: Instant::now(),
            duration: self.duration.clone(),
        }
    }
    pub fn restarted(&self) {
        self.restarts.inc();
    }
}

pub struct HandlingTimer {
    start: Instant,
    duration: Histogram,
}

impl Drop for HandlingTimer {
    fn drop(&mut self) {
        self.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

impl std::fmt::Debug for GroupMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMeters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_families() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                model: "gpt".into(),
                endpoint: "chat",
                status: 200,
            })
            .inc();
        let meter = m.actor("router");
        meter.sent();
        drop(meter.handling());
        let text = m.encode();
        assert!(
            text.contains(
                "tollgate_requests_total{model=\"gpt\",endpoint=\"chat\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tollgate_actor_mailbox_depth{actor=\"router\"} 0"),
            "{text}"
        );
    }
}
