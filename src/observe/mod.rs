//! Logging destinations and observability off the request path: Langfuse
//! and OpenTelemetry traces (OTLP/HTTP protobuf), generic webhooks, alerts,
//! and LiteLLM's metric names.
//!
//! A request that ends builds one [`LogRecord`] (only when a destination is
//! configured) and [`Observer::dispatch`] hands it to each matching
//! destination's [`SinkActor`] with `try_send`: no await, no lock; a full
//! queue drops the record and counts it.

pub mod alerts;
pub mod config;
pub mod keyed;
pub mod litellm;
pub mod otlp;
pub mod otlp_wire;
pub mod record;
pub mod sink;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use self::config::{DestinationConfig, DestinationKind};
use self::record::LogRecord;
use self::sink::{Drain, Enqueue, Inbox, SinkActor, SinkMeters};
use crate::actors::supervise;
use crate::config::Config;
use crate::metrics::{DestinationLabels, Metrics};

struct Route {
    teams: Vec<String>,
    keys: Vec<String>,
    inbox: Arc<Inbox<Arc<LogRecord>>>,
    meters: SinkMeters,
}

impl Route {
    fn matches(&self, key: Option<&crate::access::KeyInfo>) -> bool {
        let team = key.and_then(|k| k.team_id.as_deref());
        (self.teams.is_empty() || team.is_some_and(|t| self.teams.iter().any(|x| x == t)))
            && (self.keys.is_empty()
                || key.is_some_and(|k| {
                    self.keys.iter().any(|x| {
                        k.alias.as_deref() == Some(x.as_str())
                            || k.key_name.as_deref() == Some(x.as_str())
                    })
                }))
    }
}

/// The configured destinations, as the request side sees them.
pub struct Observer {
    routes: Vec<Route>,
    /// Key/team-based logging (`logging.key_logging`): records of keys
    /// whose (or whose team's) metadata names a Langfuse project.
    hub: Option<(Recipient<Enqueue<Arc<LogRecord>>>, SinkMeters)>,
    drains: Vec<Recipient<Drain>>,
    /// Some destination takes traces: requests get a trace context
    /// (the client's `traceparent` continued) and propagate it upstream.
    pub traces: bool,
    /// Some destination takes prompts and outputs: requests keep them.
    pub content: bool,
}

fn meters(metrics: &Metrics, name: &str) -> SinkMeters {
    let l = DestinationLabels {
        destination: name.to_string(),
    };
    SinkMeters {
        queued: metrics.log_destination_queued.get_or_create_owned(&l),
        sent: metrics.log_destination_sent.get_or_create_owned(&l),
        dropped: metrics.log_destination_dropped.get_or_create_owned(&l),
        failures: metrics.log_destination_failures.get_or_create_owned(&l),
    }
}

impl Observer {
    /// Starts one sink per destination (and the alert sink) on `arbiter`.
    /// None when no destination is configured: requests then build nothing.
    pub fn start(
        config: &Config,
        metrics: &Arc<Metrics>,
        arbiter: &ArbiterHandle,
    ) -> Option<Arc<Observer>> {
        if let Some(a) = &config.logging.alerts {
            if let Some(url) = a.resolved_url.clone() {
                let m = meters(metrics, "alerts");
                let m2 = m.clone();
                let settings = config::SinkSettings {
                    batch_size: 20,
                    flush_interval: Duration::from_millis(a.flush_interval_ms),
                    queue_size: 1000,
                    max_retries: 3,
                    retry_backoff: Duration::from_secs(1),
                    max_backoff: Duration::from_secs(30),
                    timeout: Duration::from_secs(10),
                };
                let repeat = Duration::from_secs(a.repeat_secs);
                let addr =
                    supervise::start_in_arbiter(arbiter, metrics.actor("log_sink"), move |_| {
                        SinkActor::new(
                            "alerts".into(),
                            url.expose().to_string(),
                            Vec::new(),
                            settings,
                            alerts::SlackExporter::new(repeat),
                            m2,
                        )
                    });
                metrics.alerts.set(addr.recipient(), m.queued);
            }
        }
        let global_redact = config.logging.turn_off_message_logging;
        let mut routes = Vec::new();
        let mut drains = Vec::new();
        let (mut traces, mut content) = (false, false);
        for d in &config.logging.destinations {
            let Some(r) = d.resolved.clone() else {
                continue;
            };
            let redact = global_redact || d.turn_off_message_logging;
            content |= !redact;
            traces |= d.kind != DestinationKind::Webhook;
            let m = meters(metrics, &r.name);
            let (inbox, drain) = start_sink(d, r, redact, m.clone(), metrics, arbiter);
            routes.push(Route {
                teams: d.teams.clone(),
                keys: d.keys.clone(),
                inbox,
                meters: m,
            });
            drains.push(drain);
        }
        let hub = config.logging.key_logging.then(|| {
            let redact = global_redact;
            content |= !redact;
            traces = true;
            let m = metrics.clone();
            let addr = supervise::start_in_arbiter(arbiter, metrics.actor("log_sink"), move |_| {
                keyed::KeyedHub::new(keyed::default_settings(), redact, m)
            });
            (addr.recipient(), meters(metrics, "key-logging"))
        });
        // Alerts alone need no observer: the actors raise them directly.
        if routes.is_empty() && hub.is_none() {
            return None;
        }
        Some(Arc::new(Observer {
            routes,
            hub,
            drains,
            traces,
            content,
        }))
    }

    /// Whether any destination takes the requests of `key` (a cheap check
    /// before building a record at all).
    pub fn wants(&self, key: Option<&crate::access::KeyInfo>) -> bool {
        if key.is_some_and(|k| k.logging_off) {
            return false;
        }
        (self.hub.is_some() && key.is_some_and(|k| !k.logging.is_empty()))
            || self.routes.iter().any(|r| r.matches(key))
    }

    /// Hands the record to every destination it belongs to. Never waits.
    pub fn dispatch(&self, rec: LogRecord) {
        let rec = Arc::new(rec);
        let key = rec.key.as_deref();
        if let Some((hub, m)) = &self.hub {
            if key.is_some_and(|k| !k.logging.is_empty()) {
                m.queued.inc();
                if hub.try_send(Enqueue(rec.clone())).is_err() {
                    m.queued.dec();
                    m.dropped.inc();
                }
            }
        }
        for r in &self.routes {
            if !r.matches(key) {
                continue;
            }
            // Counted before the push: the sink may take it (and count it
            // out) before `push` even returns.
            r.meters.queued.inc();
            if !r.inbox.push(rec.clone()) {
                r.meters.queued.dec();
                r.meters.dropped.inc();
            }
        }
    }

    /// Shutdown: sends what is queued, waiting at most until `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        for d in &self.drains {
            while let Ok(left) = d.send(Drain).await {
                if left == 0 || Instant::now() > deadline {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

type Started = (Arc<Inbox<Arc<LogRecord>>>, Recipient<Drain>);

fn start_sink(
    d: &DestinationConfig,
    r: config::ResolvedDestination,
    redact: bool,
    m: SinkMeters,
    metrics: &Metrics,
    arbiter: &ArbiterHandle,
) -> Started {
    let meter = metrics.actor("log_sink");
    let config::ResolvedDestination {
        name,
        url,
        headers,
        hmac_secret,
        sink,
    } = r;
    let inbox = Inbox::new(sink.queue_size, sink.batch_size);
    let theirs = inbox.clone();
    let (wake, drain) = match d.kind {
        DestinationKind::Langfuse | DestinationKind::Otel => {
            let flavor = if d.kind == DestinationKind::Langfuse {
                otlp::Flavor::Langfuse
            } else {
                otlp::Flavor::Otel
            };
            let addr = supervise::start_in_arbiter(arbiter, meter, move |_| {
                SinkActor::new(
                    name,
                    url,
                    headers,
                    sink,
                    otlp::OtlpExporter::new(flavor, redact),
                    m,
                )
                .with_inbox(theirs)
            });
            (addr.clone().recipient(), addr.recipient())
        }
        DestinationKind::Webhook => {
            let addr = supervise::start_in_arbiter(arbiter, meter, move |_| {
                SinkActor::new(
                    name,
                    url,
                    headers,
                    sink,
                    webhook::WebhookExporter {
                        redact,
                        hmac_secret,
                    },
                    m,
                )
                .with_inbox(theirs)
            });
            (addr.clone().recipient(), addr.recipient())
        }
    };
    inbox.set_waker(wake);
    (inbox, drain)
}
