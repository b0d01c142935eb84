//! A request's record, carried to its end (for a stream: the last chunk, or
//! the client leaving), and what happens then, off the client's clock:
//! metrics, the request log line, and the spend log row that settles it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};

use serde_json::value::RawValue;

use crate::access::KeyInfo;
use crate::actors::budget::{Release, Reservation};
use crate::actors::logger::RequestLog;
use crate::actors::rate_limit::Permit;
use crate::actors::spend_buffer::SpendBuffer;
use crate::metrics::{ModelLabels, RequestLabels};
use crate::observe::record::{AttemptRecord, LogRecord, Output, TraceContext};
use crate::pricing::cost_usd;
use crate::providers::{Endpoint, Usage};
use crate::store::{now_ms, SpendLogRow};
use crate::topology::DeploymentTarget;
use crate::Gateway;

pub struct RequestRecord {
    pub gw: Arc<Gateway>,
    /// Where this request's spend is settled (the worker's SpendBuffer).
    pub spend: SpendBuffer,
    /// `x-request-id`: the caller's, or one we made.
    pub request_id: String,
    /// Ours alone (`x-litellm-call-id`), unique per request: the spend log's
    /// primary key, which a caller-chosen id could not safely be.
    pub call_id: String,
    pub started: Instant,
    /// Wall-clock start, unix ms.
    pub started_ms: i64,
    /// Streams: when the first chunk went out, unix ms.
    pub first_chunk_ms: Option<i64>,
    pub endpoint: Endpoint,
    pub key: Option<Arc<KeyInfo>>,
    pub model: String,
    /// The model groups as they were when the request arrived.
    pub topology: Arc<crate::topology::Topology>,
    /// Index of the model group, once the model name resolved to one.
    pub group: Option<usize>,
    pub deployment: Option<Arc<DeploymentTarget>>,
    pub attempts: u32,
    /// Fallback groups tried after the requested one failed.
    pub fallbacks: u32,
    pub upstream: Duration,
    pub stream: bool,
    /// The request's `user`: the end user (customer) it is for.
    pub end_user: Option<String>,
    /// The request's `metadata` object, kept for the spend log.
    pub metadata: Option<Box<RawValue>>,
    /// The usage was counted by us, not reported by the upstream.
    pub usage_estimated: bool,
    /// Prompt tokens, estimated from the request's size, for when the
    /// upstream reports none.
    pub prompt_estimate: u64,
    /// Cost reserved against budgets at admission, settled in `finish`.
    pub reservation: Option<Reservation>,
    /// Admission under rate limits, given back in `finish` (or on drop).
    pub permit: Option<Permit>,
    /// What admission left of the key's limits for this model group
    /// (requests, tokens), for LiteLLM's remaining-for-model gauges.
    pub key_model_remaining: (Option<u64>, Option<u64>),
    /// Admission under the chosen deployment's rpm/tpm, likewise.
    pub deployment_permit: Option<Permit>,
    /// For log destinations only (all empty when none is configured):
    /// the trace this request continues, its upstream attempts, its
    /// prompt and its answer.
    pub trace: Option<TraceContext>,
    pub attempt_log: Vec<AttemptRecord>,
    pub input: Option<Box<RawValue>>,
    pub output: Output,
    /// Some destination takes this request's prompt and answer.
    pub keep_content: bool,
}

impl RequestRecord {
    /// The metrics of the request's model group.
    pub fn meters(&self) -> Option<&crate::metrics::GroupMeters> {
        self.group
            .and_then(|g| self.topology.groups.get(g))
            .and_then(|g| g.meters.as_ref())
    }

    pub fn new(
        gw: Arc<Gateway>,
        spend: SpendBuffer,
        request_id: String,
        endpoint: Endpoint,
    ) -> Self {
        let topology = gw.topology();
        let started_ms = now_ms();
        RequestRecord {
            gw,
            spend,
            request_id,
            call_id: crate::store::spend_log_id(started_ms),
            started: Instant::now(),
            started_ms,
            first_chunk_ms: None,
            endpoint,
            key: None,
            model: String::new(),
            topology,
            group: None,
            deployment: None,
            attempts: 0,
            fallbacks: 0,
            upstream: Duration::ZERO,
            stream: false,
            end_user: None,
            metadata: None,
            usage_estimated: false,
            prompt_estimate: 0,
            reservation: None,
            permit: None,
            key_model_remaining: (None, None),
            deployment_permit: None,
            trace: None,
            attempt_log: Vec::new(),
            input: None,
            output: Output::None,
            keep_content: false,
        }
    }

    /// Moves the record out, leaving a husk behind in the handler.
    pub fn take(&mut self) -> RequestRecord {
        RequestRecord {
            gw: self.gw.clone(),
            spend: self.spend.clone(),
            request_id: std::mem::take(&mut self.request_id),
            call_id: std::mem::take(&mut self.call_id),
            started: self.started,
            started_ms: self.started_ms,
            first_chunk_ms: self.first_chunk_ms,
            endpoint: self.endpoint,
            key: self.key.take(),
            model: std::mem::take(&mut self.model),
            topology: self.topology.clone(),
            group: self.group,
            deployment: self.deployment.take(),
            attempts: self.attempts,
            fallbacks: self.fallbacks,
            upstream: self.upstream,
            stream: self.stream,
            end_user: self.end_user.take(),
            metadata: self.metadata.take(),
            usage_estimated: self.usage_estimated,
            prompt_estimate: self.prompt_estimate,
            reservation: self.reservation.take(),
            permit: self.permit.take(),
            key_model_remaining: self.key_model_remaining,
            deployment_permit: self.deployment_permit.take(),
            trace: self.trace.take(),
            attempt_log: std::mem::take(&mut self.attempt_log),
            input: self.input.take(),
            output: std::mem::take(&mut self.output),
            keep_content: self.keep_content,
        }
    }

    /// Metrics and the request log; returns the spend log row to settle
    /// (for a request that reached an upstream on a key's behalf).
    pub fn finish(
        mut self,
        status: u16,
        usage: Option<Usage>,
        mut error: Option<String>,
    ) -> Option<SpendLogRow> {
        let gw = &self.gw;
        let total = self.started.elapsed();
        let overhead = total.saturating_sub(self.upstream);
        self.observe(status, total, overhead);
        let usage = usage.unwrap_or_default();
        let cost = self
            .deployment
            .as_ref()
            .map(|d| cost_usd(d, &usage))
            .unwrap_or(0.0);
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        if let Some(m) = self.meters() {
            for (counter, n) in [
                (&m.cached_prompt_tokens, usage.cached_tokens),
                (&m.cache_creation_tokens, usage.cache_creation_tokens),
                (&m.reasoning_tokens, usage.reasoning_tokens),
            ] {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
        }
        for permit in [self.permit.take(), self.deployment_permit.take()]
            .into_iter()
            .flatten()
        {
            permit.release((tokens > 0).then_some(tokens));
        }
        if let Some(reservation) = self.reservation.take() {
            gw.budget.do_send(Release {
                reservation,
                actual: cost,
            });
        }
        let row = self.spend_row(status, &usage, cost);
        if gw.metrics.litellm.enabled() {
            self.observe_litellm(status, &usage, cost, total);
        }
        if let Some(obs) = gw.observe.as_ref().filter(|o| o.wants(self.key.as_deref())) {
            // Moves out what nothing after this reads (the spend row is
            // made); what the request log reads is copied only when it is on.
            let start = u64::try_from(self.started_ms).unwrap_or(0) * 1_000_000;
            let logged = gw.request_log_enabled;
            let copy_if_logged = |s: &mut String| {
                if logged {
                    s.clone()
                } else {
                    std::mem::take(s)
                }
            };
            obs.dispatch(LogRecord {
                request_id: copy_if_logged(&mut self.request_id),
                call_id: std::mem::take(&mut self.call_id),
                endpoint: self.endpoint,
                model: copy_if_logged(&mut self.model),
                deployment: self.deployment.clone(),
                key: self.key.clone(),
                end_user: self.end_user.take(),
                metadata: self.metadata.take(),
                status,
                error: if logged { error.clone() } else { error.take() },
                stream: self.stream,
                usage,
                usage_estimated: self.usage_estimated,
                cost,
                start_unix_nanos: start,
                end_unix_nanos: start + total.as_nanos() as u64,
                first_chunk_ms: self.first_chunk_ms,
                upstream: self.upstream,
                attempts: std::mem::take(&mut self.attempt_log),
                fallbacks: self.fallbacks,
                trace: self.trace,
                input: self.input.take(),
                output: std::mem::take(&mut self.output),
                derived: Default::default(),
            });
        }
        if gw.request_log_enabled {
            let log = RequestLog {
                ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                request_id: self.request_id,
                key: self
                    .key
                    .as_ref()
                    .map(|k| k.display_name().to_string())
                    .unwrap_or_else(|| "-".into()),
                endpoint: self.endpoint.label(),
                model: self.model,
                deployment: self.deployment.as_ref().map(|d| d.id.clone()),
                status,
                stream: self.stream,
                attempts: self.attempts,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_usd: cost,
                latency_ms: total.as_secs_f64() * 1000.0,
                upstream_ms: self.upstream.as_secs_f64() * 1000.0,
                overhead_ms: overhead.as_secs_f64() * 1000.0,
                error,
            };
            if !gw.logger.try_send(log) {
                gw.metrics.log_events_dropped.inc();
            }
        }
        row
    }

    fn observe_litellm(&self, status: u16, usage: &Usage, cost: f64, total: Duration) {
        use crate::observe::litellm::Observation;
        self.gw.metrics.litellm.observe(&Observation {
            key: self.key.as_deref(),
            end_user: self.end_user.as_deref(),
            requested_model: &self.model,
            deployment: self.deployment.as_deref(),
            status,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost,
            total,
            upstream: self.upstream,
            ttft: self
                .first_chunk_ms
                .map(|ms| Duration::from_millis((ms - self.started_ms).max(0) as u64)),
            key_model_remaining: self.key_model_remaining,
        });
    }

    /// Starts the request's trace (continuing the client's `traceparent`)
    /// when a destination takes traces; else nothing.
    pub fn start_trace(&mut self, traceparent: Option<&str>) {
        if self.gw.observe.as_ref().is_some_and(|o| o.traces) {
            self.trace = Some(TraceContext::from_traceparent(traceparent));
        }
    }

    /// Keeps the prompt for destinations that take content.
    pub fn capture_input(&mut self, body: &crate::request::RawObject) {
        let key = self.key.as_deref();
        if self
            .gw
            .observe
            .as_ref()
            .is_some_and(|o| o.content && o.wants(key))
        {
            self.keep_content = true;
            self.input = ["messages", "prompt", "input"]
                .iter()
                .find_map(|k| body.get(k))
                .map(|v| v.to_owned());
        }
    }

    /// A new span for an upstream attempt, its `traceparent` added to
    /// the outgoing headers.
    pub fn attempt_span(&self, headers: &mut Vec<(HeaderName, HeaderValue)>) -> Option<[u8; 8]> {
        let trace = self.trace.as_ref()?;
        let span = crate::observe::record::new_span_id();
        if let Ok(v) = HeaderValue::from_bytes(&trace.traceparent(&span)) {
            headers.push((HeaderName::from_static("traceparent"), v));
        }
        Some(span)
    }

    /// Notes how an attempt in span `span` ended.
    pub fn note_attempt(
        &mut self,
        span: Option<[u8; 8]>,
        target: &Arc<DeploymentTarget>,
        started: Instant,
        failure: Option<&crate::actors::provider::CallError>,
    ) {
        let Some(span_id) = span else {
            return;
        };
        use crate::actors::provider::CallError;
        let (status, error) = match failure {
            None => (Some(200), None),
            Some(CallError::Status(u)) => (Some(u.status), Some(u.message.clone())),
            Some(CallError::Timeout) => (None, Some("upstream timed out".to_string())),
            Some(CallError::Connect(e) | CallError::Protocol(e)) => (None, Some(e.clone())),
        };
        self.attempt_log.push(AttemptRecord {
            span_id,
            deployment: target.clone(),
            start: started.saturating_duration_since(self.started),
            duration: started.elapsed(),
            error,
            status,
        });
    }

    /// Keeps a whole answer for destinations that take content.
    pub fn capture_output(&mut self, body: &bytes::Bytes, choices: Option<std::ops::Range<usize>>) {
        if self.keep_content {
            self.output = Output::Json {
                body: body.clone(),
                choices,
            };
        }
    }

    /// Keeps a stream frame for destinations that take content, up to
    /// `MAX_OUTPUT_BYTES` in all.
    pub fn capture_frame(&mut self, frame: &bytes::Bytes) {
        if !self.keep_content {
            return;
        }
        if let Output::None = self.output {
            self.output = Output::Frames(Vec::new(), 0);
        }
        if let Output::Frames(frames, held) = &mut self.output {
            if *held + frame.len() <= crate::observe::record::MAX_OUTPUT_BYTES {
                *held += frame.len();
                frames.push(frame.clone());
            }
        }
    }

    fn observe(&self, status: u16, total: Duration, overhead: Duration) {
        let gw = &self.gw;
        match self.meters() {
            Some(m) => {
                if status == 200 {
                    m.ok[self.endpoint.index()].inc();
                } else {
                    gw.metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            model: self.model.clone(),
                            endpoint: self.endpoint.label(),
                            status,
                        })
                        .inc();
                }
                m.request_duration.observe(total.as_secs_f64());
                if self.deployment.is_some() {
                    m.upstream_duration.observe(self.upstream.as_secs_f64());
                    m.overhead_duration.observe(overhead.as_secs_f64());
                }
                if self.attempts > 1 {
                    m.retries.inc_by(u64::from(self.attempts - 1));
                }
            }
            None => {
                // Unknown names would let any caller grow the metric families.
                gw.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        model: "unknown".into(),
                        endpoint: self.endpoint.label(),
                        status,
                    })
                    .inc();
                gw.metrics
                    .request_duration
                    .get_or_create(&ModelLabels {
                        model: "unknown".into(),
                    })
                    .observe(total.as_secs_f64());
            }
        }
    }

    /// LiteLLM's spend log row for this request.
    fn spend_row(&self, status: u16, usage: &Usage, cost: f64) -> Option<SpendLogRow> {
        let (key, d) = (self.key.as_ref()?, self.deployment.as_ref()?);
        let end = now_ms();
        // Only what no column holds: `/spend/logs` adds the key's alias,
        // user and team from theirs (see `http::spend::metadata_json`).
        // Stored whole, they were a third of a row's bytes, paid on every
        // request in the spool, the database and its log.
        #[derive(serde::Serialize)]
        struct Metadata<'a> {
            x_request_id: &'a str,
            #[serde(skip_serializing_if = "is_one")]
            attempts: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            requester_metadata: Option<&'a RawValue>,
        }
        fn is_one(n: &u32) -> bool {
            *n == 1
        }
        let metadata = serde_json::to_string(&Metadata {
            x_request_id: &self.request_id,
            attempts: self.attempts,
            requester_metadata: self.metadata.as_deref(),
        })
        .unwrap_or_else(|_| "{}".into());
        Some(SpendLogRow {
            request_id: self.call_id.clone(),
            call_type: std::borrow::Cow::Borrowed(self.endpoint.call_type()),
            api_key: key.id.clone(),
            key_alias: key.alias.clone(),
            spend: cost,
            prompt_tokens: usage.prompt_tokens as i64,
            completion_tokens: usage.completion_tokens as i64,
            total_tokens: (usage.prompt_tokens + usage.completion_tokens) as i64,
            start_time: self.started_ms,
            end_time: end,
            completion_start_time: Some(self.first_chunk_ms.unwrap_or(end)),
            model: d.upstream_model.clone(),
            model_group: d.group.to_string(),
            model_id: d.id.clone(),
            api_base: d.api_base.clone(),
            user_id: key.user_id.clone(),
            team_id: key.team_id.clone(),
            end_user: self.end_user.clone(),
            metadata,
            cache_hit: false,
            status: std::borrow::Cow::Borrowed(if status == 200 { "success" } else { "failure" }),
            usage_estimated: self.usage_estimated,
        })
    }
}

/// Puts a settlement in the worker's spool; it is there when this
/// returns, before the response completes, so a crash loses no spend.
pub fn settle(spend: &SpendBuffer, row: Option<SpendLogRow>) {
    if let Some(row) = row {
        spend.settle(row);
    }
}
