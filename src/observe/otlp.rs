//! Request records as OTLP trace spans (protobuf, for OTLP/HTTP): one
//! server span for the request, one client span per upstream attempt, with
//! the GenAI semantic conventions' `gen_ai.*` attributes. The Langfuse
//! flavour adds Langfuse's `langfuse.*` attributes (trace name, user,
//! session, tags, metadata, observation type `generation`, input/output,
//! usage and cost details), read from the request's `metadata` the way
//! LiteLLM reads them. Pure: records in, bytes out (written directly in
//! protobuf's wire format, see [`super::otlp_wire`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;

use super::otlp_wire::{self as wire, span as sp, Val};
use super::record::{LogRecord, TraceContext};
use super::sink::{Exporter, Payload};
use crate::access::KeyInfo;
use crate::providers::Endpoint;
use crate::topology::DeploymentTarget;

pub const REDACTED: &str = "redacted-by-tollgate";
const REDACTED_INPUT: &str = "[{\"role\":\"user\",\"content\":\"redacted-by-tollgate\"}]";
const REDACTED_OUTPUT: &str = "[{\"role\":\"assistant\",\"content\":\"redacted-by-tollgate\"}]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Otel,
    Langfuse,
}

pub struct OtlpExporter {
    pub flavor: Flavor,
    /// Never ship prompts or outputs.
    pub redact: bool,
    /// Bytes per record of the last batch, to size the next one's buffer.
    pub per_record: Cell<usize>,
}

impl OtlpExporter {
    pub fn new(flavor: Flavor, redact: bool) -> Self {
        OtlpExporter {
            flavor,
            redact,
            per_record: Cell::new(2048),
        }
    }
}

impl Exporter for OtlpExporter {
    type Item = Arc<LogRecord>;

    fn encode(&self, batch: &[Arc<LogRecord>]) -> Result<Payload, String> {
        // A little over the last batch's size: one allocation, no regrowth.
        let hint = self.per_record.get() * batch.len() * 9 / 8;
        let export = export_into(
            wire::Export::with_capacity(hint),
            batch.iter().map(|r| &**r),
            self.flavor,
            self.redact,
        );
        self.per_record
            .set((export.spans_len() / batch.len().max(1)).clamp(256, 64 * 1024));
        Ok(Payload {
            body: export.finish(),
            content_type: "application/x-protobuf",
            headers: Vec::new(),
        })
    }
}

/// An `ExportTraceServiceRequest` with the spans of `records`.
pub fn export<'a>(
    records: impl IntoIterator<Item = &'a LogRecord>,
    flavor: Flavor,
    redact: bool,
) -> bytes::Bytes {
    export_into(wire::Export::with_capacity(4096), records, flavor, redact).finish()
}

fn export_into<'a>(
    mut export: wire::Export,
    records: impl IntoIterator<Item = &'a LogRecord>,
    flavor: Flavor,
    redact: bool,
) -> wire::Export {
    let mut scratch = Scratch::default();
    for rec in records {
        encode_spans(rec, flavor, redact, export.spans(), &mut scratch);
    }
    export
}

/// Buffers reused from span to span.
#[derive(Default)]
struct Scratch {
    span: Vec<u8>,
    key: String,
    name: String,
    text: String,
}

pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// The metadata keys LiteLLM reads for Langfuse; the rest is the
/// observation's metadata.
const LANGFUSE_KEYS: &[&str] = &[
    "generation_name",
    "generation_id",
    "parent_observation_id",
    "version",
    "trace_id",
    "existing_trace_id",
    "trace_name",
    "trace_user_id",
    "trace_metadata",
    "trace_version",
    "trace_release",
    "session_id",
    "tags",
    "mask_input",
    "mask_output",
];

/// A Langfuse `trace_id` from the request's metadata as an OTel trace id:
/// 32 hex digits as they are, anything else hashed (the same id always
/// maps to the same trace, so generations group as the caller meant).
pub fn trace_id_from_metadata(id: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let lower = id.to_ascii_lowercase();
    if lower.len() == 32 && hex::decode_to_slice(&lower, &mut out).is_ok() && out != [0; 16] {
        return out;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    out.copy_from_slice(&digest[..16]);
    out
}

fn iso(unix_nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_nanos as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn int(v: impl TryInto<i64>) -> Val<'static> {
    Val::Int(v.try_into().unwrap_or(i64::MAX))
}

/// A span attribute.
fn at(buf: &mut Vec<u8>, key: &str, v: Val) {
    wire::attr(buf, sp::ATTRIBUTES, key, v);
}

/// A span attribute under `prefix` + `name` (built in a reused buffer).
fn at_prefixed(buf: &mut Vec<u8>, key: &mut String, prefix: &str, name: &str, v: Val) {
    key.clear();
    key.push_str(prefix);
    key.push_str(name);
    at(buf, key, v);
}

/// A metadata value as an attribute: strings as they are, anything else as
/// its JSON text (how Langfuse reads metadata values).
fn at_json(buf: &mut Vec<u8>, key: &mut String, prefix: &str, name: &str, v: &Value) {
    match v {
        Value::String(x) => at_prefixed(buf, key, prefix, name, Val::Str(x)),
        Value::Bool(b) => at_prefixed(buf, key, prefix, name, Val::Bool(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => at_prefixed(buf, key, prefix, name, Val::Int(i)),
            None => at_prefixed(buf, key, prefix, name, Val::F64(n.as_f64().unwrap_or(0.0))),
        },
        other => at_prefixed(buf, key, prefix, name, Val::Str(&other.to_string())),
    }
}

/// The head of a span: ids, name, kind, times.
#[allow(clippy::too_many_arguments)]
fn span_head(
    buf: &mut Vec<u8>,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    parent: Option<&[u8; 8]>,
    flags: u32,
    name: &str,
    kind: u64,
    start: u64,
    end: u64,
) {
    wire::bytes_field(buf, sp::TRACE_ID, trace_id);
    wire::bytes_field(buf, sp::SPAN_ID, span_id);
    if let Some(p) = parent {
        wire::bytes_field(buf, sp::PARENT_SPAN_ID, p);
    }
    wire::bytes_field(buf, sp::NAME, name.as_bytes());
    wire::varint_field(buf, sp::KIND, kind);
    wire::fixed64_field(buf, sp::START, start);
    wire::fixed64_field(buf, sp::END, end);
    wire::fixed32_field(buf, sp::FLAGS, flags);
}

/// The attributes that depend only on the deployment or only on the key,
/// encoded once per logging thread and copied into every span after:
/// about a third of a request span's attributes. Entries hold their
/// `Arc`, so the pointer they are found by cannot be reused by another
/// deployment or key while they exist; a changed key or deployment is a
/// new `Arc`, hence a new entry. Bounded: emptied when full.
#[derive(Default)]
struct StaticAttrs {
    deployments: HashMap<usize, (Arc<DeploymentTarget>, Rc<DeploymentAttrs>)>,
    keys: HashMap<usize, (Arc<KeyInfo>, Rc<[u8]>)>,
}

/// A deployment's attributes on the request span and on an attempt's span
/// (by `Endpoint::index`, as the operation is one of them).
struct DeploymentAttrs {
    request: Vec<u8>,
    attempt: [Vec<u8>; 3],
}

const STATIC_ATTRS_CAP: usize = 4096;

thread_local! {
    static CACHE: RefCell<StaticAttrs> = RefCell::new(StaticAttrs::default());
}

impl StaticAttrs {
    fn deployment(&mut self, d: &Arc<DeploymentTarget>) -> Rc<DeploymentAttrs> {
        cached(&mut self.deployments, d, |d| {
            Rc::new(DeploymentAttrs::of(d))
        })
    }

    fn key(&mut self, k: &Arc<KeyInfo>) -> Rc<[u8]> {
        cached(&mut self.keys, k, |k| {
            let mut a = Vec::with_capacity(256);
            if let Some(alias) = &k.alias {
                at(&mut a, "tollgate.key_alias", Val::Str(alias));
            }
            at(&mut a, "tollgate.key_hash", Val::Str(&k.id));
            if let Some(t) = &k.team_id {
                at(&mut a, "tollgate.team_id", Val::Str(t));
            }
            if let Some(u) = &k.user_id {
                at(&mut a, "tollgate.user_id", Val::Str(u));
            }
            a.into()
        })
    }
}

/// `of`'s entry in `cache`, made by `make` the first time.
fn cached<T, V: Clone>(
    cache: &mut HashMap<usize, (Arc<T>, V)>,
    of: &Arc<T>,
    make: impl FnOnce(&T) -> V,
) -> V {
    if cache.len() >= STATIC_ATTRS_CAP {
        cache.clear();
    }
    let entry = cache
        .entry(Arc::as_ptr(of) as usize)
        .or_insert_with(|| (of.clone(), make(of)));
    entry.1.clone()
}

impl DeploymentAttrs {
    fn of(d: &DeploymentTarget) -> DeploymentAttrs {
        let mut request = Vec::with_capacity(256);
        let a = &mut request;
        at(a, "gen_ai.provider.name", Val::Str(d.provider.name()));
        at(a, "gen_ai.system", Val::Str(d.provider.name()));
        at(a, "gen_ai.response.model", Val::Str(&d.upstream_model));
        at(a, "tollgate.deployment", Val::Str(&d.id));
        at(a, "tollgate.model_group", Val::Str(&d.group));
        let attempt = |endpoint| {
            let mut a = Vec::with_capacity(256);
            at(
                &mut a,
                "gen_ai.operation.name",
                Val::Str(operation(endpoint)),
            );
            at(&mut a, "gen_ai.provider.name", Val::Str(d.provider.name()));
            at(&mut a, "gen_ai.system", Val::Str(d.provider.name()));
            at(&mut a, "gen_ai.request.model", Val::Str(&d.upstream_model));
            at(&mut a, "tollgate.deployment", Val::Str(&d.id));
            if let Some((host, port)) = &d.server_address {
                at(&mut a, "server.address", Val::Str(host));
                if let Some(p) = port {
                    at(&mut a, "server.port", int(*p));
                }
            }
            a
        };
        DeploymentAttrs {
            request,
            attempt: [
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Embeddings,
            ]
            .map(attempt),
        }
    }
}

/// The attributes of a record's spans that do not depend on the flavour
/// or on redaction: encoded once per record, whatever the number of OTLP
/// destinations (protobuf lets a span's fields come in any order, so a
/// span is its head, these bytes, then its flavour's own).
#[derive(Debug, Default)]
pub struct SharedAttrs {
    bytes: Vec<u8>,
    /// Where the request span's part ends, then each attempt's.
    ends: Vec<usize>,
}

impl SharedAttrs {
    fn of(rec: &LogRecord) -> SharedAttrs {
        let mut bytes = Vec::with_capacity(1024);
        let a = &mut bytes;
        let mut ends = Vec::with_capacity(1 + rec.attempts.len());
        let op = operation(rec.endpoint);
        let failed = rec.status != 200;
        at(a, "gen_ai.operation.name", Val::Str(op));
        at(a, "gen_ai.request.model", Val::Str(&rec.model));
        at(a, "gen_ai.usage.input_tokens", int(rec.usage.prompt_tokens));
        at(
            a,
            "gen_ai.usage.output_tokens",
            int(rec.usage.completion_tokens),
        );
        at(a, "http.response.status_code", int(rec.status));
        at(a, "tollgate.request_id", Val::Str(&rec.request_id));
        at(a, "tollgate.call_id", Val::Str(&rec.call_id));
        at(a, "tollgate.cost_usd", Val::F64(rec.cost));
        at(a, "tollgate.attempts", int(rec.attempts.len().max(1)));
        at(a, "tollgate.fallbacks", int(rec.fallbacks));
        at(a, "tollgate.stream", Val::Bool(rec.stream));
        if let Some(d) = &rec.deployment {
            CACHE.with(|c| a.extend_from_slice(&c.borrow_mut().deployment(d).request));
        }
        if rec.usage.cached_tokens > 0 {
            at(
                a,
                "gen_ai.usage.cache_read.input_tokens",
                int(rec.usage.cached_tokens),
            );
        }
        if let Some(k) = &rec.key {
            CACHE.with(|c| a.extend_from_slice(&c.borrow_mut().key(k)));
        }
        if let Some(u) = &rec.end_user {
            at(a, "tollgate.end_user", Val::Str(u));
        }
        if let Some(t) = rec.ttft() {
            at(
                a,
                "gen_ai.server.time_to_first_token",
                Val::F64(t.as_secs_f64()),
            );
        }
        if failed {
            at(a, "error.type", Val::Str(&rec.status.to_string()));
        }
        ends.push(a.len());
        for attempt in &rec.attempts {
            CACHE.with(|c| {
                a.extend_from_slice(
                    &c.borrow_mut().deployment(&attempt.deployment).attempt[rec.endpoint.index()],
                );
            });
            if let Some(st) = attempt.status {
                at(a, "http.response.status_code", int(st));
            }
            if attempt.error.is_some() {
                let kind = attempt.status.map_or("error".into(), |s| s.to_string());
                at(a, "error.type", Val::Str(&kind));
            }
            if let Some(e) = &attempt.error {
                wire::error_status(a, e);
            }
            ends.push(a.len());
        }
        SharedAttrs { bytes, ends }
    }

    fn request(&self) -> &[u8] {
        &self.bytes[..self.ends[0]]
    }

    fn attempt(&self, i: usize) -> &[u8] {
        match (self.ends.get(i), self.ends.get(i + 1)) {
            (Some(&from), Some(&to)) => &self.bytes[from..to],
            _ => &[],
        }
    }
}

/// Appends the request's span and its attempts' spans to `out`, each as a
/// `ScopeSpans.spans` entry (field 2).
fn encode_spans(
    rec: &LogRecord,
    flavor: Flavor,
    redact: bool,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) {
    let derived = rec.derived();
    let meta = &derived.metadata;
    let trace = rec
        .trace
        .unwrap_or_else(|| TraceContext::from_traceparent(None));
    let (mut trace_id, mut parent) = (trace.trace_id, trace.parent_span_id);
    let langfuse = flavor == Flavor::Langfuse;
    if langfuse {
        let id = meta
            .get("existing_trace_id")
            .or_else(|| meta.get("trace_id"))
            .and_then(Value::as_str);
        if let Some(id) = id {
            trace_id = trace_id_from_metadata(id);
            parent = None;
        }
    }
    let op = operation(rec.endpoint);
    let d = rec.deployment.as_deref();
    let failed = rec.status != 200;
    let mask_input = redact || derived.flag("mask_input");
    let mask_output = redact || derived.flag("mask_output");
    let input = match (&rec.input, mask_input) {
        (_, true) => Some(REDACTED_INPUT),
        (Some(i), false) => Some(i.get()),
        (None, false) => None,
    };
    // `[{…}]`: OTel's messages array; Langfuse shows the message itself.
    let output = if mask_output {
        Some(REDACTED_OUTPUT)
    } else {
        derived.output.as_ref().map(|o| o.as_messages())
    };

    let Scratch {
        span: a,
        key,
        name: name_buf,
        text,
    } = scratch;
    a.clear();
    name_buf.clear();
    if langfuse {
        name_buf.push_str("litellm-");
        name_buf.push_str(rec.endpoint.call_type());
    } else {
        name_buf.push_str(op);
        name_buf.push(' ');
        name_buf.push_str(&rec.model);
    }
    let name: &str = match meta.get("generation_name").and_then(Value::as_str) {
        Some(n) if langfuse => n,
        _ => name_buf,
    };
    span_head(
        a,
        &trace_id,
        &trace.span_id,
        parent.as_ref(),
        u32::from(trace.flags) | 0x100 | (u32::from(parent.is_some()) << 9),
        name,
        sp::KIND_SERVER,
        rec.start_unix_nanos,
        rec.end_unix_nanos.max(rec.start_unix_nanos),
    );
    let shared = derived.span_attrs.get_or_init(|| SharedAttrs::of(rec));
    a.extend_from_slice(shared.request());
    if let Some(finish) = (!mask_output)
        .then_some(derived.output.as_ref())
        .flatten()
        .and_then(|o| o.finish_reason.as_ref())
    {
        at(a, "gen_ai.response.finish_reasons", Val::Strs(&[&**finish]));
    }

    if !langfuse {
        if let Some(i) = input {
            at(a, "gen_ai.input.messages", Val::Str(i));
        }
        if let Some(o) = output {
            at(a, "gen_ai.output.messages", Val::Str(o));
        }
    } else {
        // Langfuse reads `langfuse.*` before `gen_ai.*`: the content goes
        // once per place Langfuse shows it, not again as `gen_ai.*`.
        let trace_name = meta
            .get("trace_name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        at(a, "langfuse.observation.type", Val::Str("generation"));
        at(a, "langfuse.trace.name", Val::Str(trace_name));
        let user = meta
            .get("trace_user_id")
            .and_then(Value::as_str)
            .or(rec.end_user.as_deref());
        if let Some(u) = user {
            at(a, "user.id", Val::Str(u));
            at(a, "langfuse.user.id", Val::Str(u));
        }
        if let Some(sid) = meta.get("session_id").and_then(Value::as_str) {
            at(a, "session.id", Val::Str(sid));
            at(a, "langfuse.session.id", Val::Str(sid));
        }
        if let Some(Value::Array(tags)) = meta.get("tags") {
            let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
            at(a, "langfuse.trace.tags", Val::Strs(&tags));
        }
        if let Some(v) = meta.get("version").and_then(Value::as_str) {
            at(a, "langfuse.version", Val::Str(v));
        }
        if let Some(v) = meta.get("trace_release").and_then(Value::as_str) {
            at(a, "langfuse.release", Val::Str(v));
        }
        if let Some(Value::Object(tm)) = meta.get("trace_metadata") {
            for (k, v) in tm {
                at_json(a, key, "langfuse.trace.metadata.", k, v);
            }
        }
        const OBS_META: &str = "langfuse.observation.metadata.";
        for (k, v) in meta
            .iter()
            .filter(|(k, _)| !LANGFUSE_KEYS.contains(&k.as_str()))
        {
            at_json(a, key, OBS_META, k, v);
        }
        if let Some(k) = &rec.key {
            let fields = [
                (
                    "langfuse.observation.metadata.user_api_key_alias",
                    k.alias.as_deref(),
                ),
                (
                    "langfuse.observation.metadata.user_api_key_hash",
                    Some(k.id.as_str()),
                ),
                (
                    "langfuse.observation.metadata.user_api_key_team_id",
                    k.team_id.as_deref(),
                ),
                (
                    "langfuse.observation.metadata.user_api_key_user_id",
                    k.user_id.as_deref(),
                ),
            ];
            for (name, v) in fields {
                if let Some(v) = v {
                    at(a, name, Val::Str(v));
                }
            }
        }
        if let Some(d) = d {
            at(
                a,
                "langfuse.observation.model.name",
                Val::Str(&d.upstream_model),
            );
        }
        // Two small JSON objects, written by hand into a reused buffer:
        // through `format!` and `serde_json` they were a tenth of this
        // flavour's cost.
        let (prompt, completion) = (rec.usage.prompt_tokens, rec.usage.completion_tokens);
        let mut n = itoa::Buffer::new();
        text.clear();
        text.push_str("{\"input\":");
        text.push_str(n.format(prompt));
        text.push_str(",\"output\":");
        text.push_str(n.format(completion));
        text.push_str(",\"total\":");
        text.push_str(n.format(prompt + completion));
        text.push('}');
        at(a, "langfuse.observation.usage_details", Val::Str(text));
        // serde_json's number formatting (shortest round trip; null if not
        // finite).
        text.clear();
        text.push_str("{\"total\":");
        if rec.cost.is_finite() {
            text.push_str(ryu::Buffer::new().format_finite(rec.cost));
        } else {
            text.push_str("null");
        }
        text.push('}');
        at(a, "langfuse.observation.cost_details", Val::Str(text));
        if let Some(first) = rec.first_chunk_ms {
            let t = iso(u64::try_from(first).unwrap_or(0) * 1_000_000);
            at(
                a,
                "langfuse.observation.completion_start_time",
                Val::Str(&t),
            );
        }
        // Langfuse copies a root observation's input and output to its
        // trace (and deprecates `langfuse.trace.*` for it): said again only
        // when this span continues someone else's trace.
        if let Some(i) = input {
            at(a, "langfuse.observation.input", Val::Str(i));
            if parent.is_some() {
                at(a, "langfuse.trace.input", Val::Str(i));
            }
        }
        if let Some(o) = output {
            // The message itself, without the array around it.
            let o = &o[1..o.len() - 1];
            at(a, "langfuse.observation.output", Val::Str(o));
            if parent.is_some() {
                at(a, "langfuse.trace.output", Val::Str(o));
            }
        }
        if failed {
            at(a, "langfuse.observation.level", Val::Str("ERROR"));
            if let Some(e) = &rec.error {
                at(a, "langfuse.observation.status_message", Val::Str(e));
            }
        }
    }
    if failed {
        wire::error_status(a, rec.error.as_deref().unwrap_or(""));
    }
    wire::bytes_field(out, 2, a);

    for (i, attempt) in rec.attempts.iter().enumerate() {
        let t = &attempt.deployment;
        a.clear();
        key.clear();
        key.push_str(op);
        key.push(' ');
        key.push_str(&t.upstream_model);
        let start = rec.start_unix_nanos + attempt.start.as_nanos() as u64;
        span_head(
            a,
            &trace_id,
            &attempt.span_id,
            Some(&trace.span_id),
            u32::from(trace.flags) | 0x100,
            key,
            sp::KIND_CLIENT,
            start,
            start + attempt.duration.as_nanos() as u64,
        );
        a.extend_from_slice(shared.attempt(i));
        if langfuse {
            at(a, "langfuse.observation.type", Val::Str("span"));
        }
        wire::bytes_field(out, 2, a);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::{span, Span};
    use prost::Message as _;

    use super::*;
    use crate::access::{KeyInfo, Owner};
    use crate::observe::record::{AttemptRecord, Output};
    use crate::providers::Usage;

    fn deployment(model: &str) -> Arc<DeploymentTarget> {
        let config = crate::config::Config::from_toml(&format!(
            "[[models.gpt.deployments]]\nprovider = \"openai_compatible\"\nmodel = \"{model}\"\napi_base = \"http://up.example:8080/v1\"\n",
        ))
        .unwrap();
        crate::topology::Topology::build(&config, None).deployments[0].clone()
    }

    fn record(metadata: &str) -> LogRecord {
        let d = deployment("up-model");
        let key = KeyInfo {
            id: "hash1".into(),
            alias: Some("alias1".into()),
            team_id: Some("team1".into()),
            team: Some(Owner {
                id: "team1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let trace = TraceContext::from_traceparent(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        LogRecord {
            request_id: "req-1".into(),
            call_id: "call-1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gpt".into(),
            deployment: Some(d.clone()),
            key: Some(Arc::new(key)),
            end_user: Some("end-user-1".into()),
            metadata: serde_json::value::RawValue::from_string(metadata.into()).ok(),
            status: 200,
            error: None,
            stream: true,
            usage: Usage {
                prompt_tokens: 11,
                completion_tokens: 7,
                total_tokens: 18,
                ..Default::default()
            },
            usage_estimated: false,
            cost: 0.25,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_500_000_000,
            first_chunk_ms: Some(1_700_000_000_100),
            upstream: Duration::from_millis(450),
            attempts: vec![AttemptRecord {
                span_id: [9; 8],
                deployment: d,
                start: Duration::from_millis(5),
                duration: Duration::from_millis(440),
                error: None,
                status: Some(200),
            }],
            fallbacks: 0,
            trace: Some(trace),
            input: serde_json::value::RawValue::from_string(
                r#"[{"role":"user","content":"secret prompt"}]"#.into(),
            )
            .ok(),
            output: Output::Frames(
                vec![Bytes::from_static(
                    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"secret answer\"},\"finish_reason\":\"stop\"}]}\n\n",
                )],
                0,
            ),
            derived: Default::default(),
        }
    }

    /// What a collector reads: the record exported, then decoded with
    /// `opentelemetry-proto`.
    fn spans(rec: &LogRecord, flavor: Flavor, redact: bool) -> Vec<Span> {
        let bytes = export([rec], flavor, redact);
        let mut back = ExportTraceServiceRequest::decode(bytes).unwrap();
        let rs = back.resource_spans.remove(0);
        assert_eq!(rs.resource.unwrap().attributes[0].key, "service.name");
        let mut ss = rs.scope_spans.into_iter().next().unwrap();
        assert_eq!(ss.scope.take().unwrap().name, "tollgate");
        ss.spans
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
        match attr(span, key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn deployment_and_key_attributes_follow_each_record_through_the_cache() {
        // The per-deployment and per-key attributes are cached by their
        // Arc: records of another key or deployment (say, the same id
        // edited at run time) must show their own, in every later span.
        let first = record("{}");
        let mut second = record("{}");
        let d = deployment("edited-model");
        second.deployment = Some(d.clone());
        second.attempts[0].deployment = d;
        let mut k = (**second.key.as_ref().unwrap()).clone();
        k.alias = Some("alias2".into());
        second.key = Some(Arc::new(k));
        for _ in 0..2 {
            for (rec, model, alias) in [
                (&first, "up-model", "alias1"),
                (&second, "edited-model", "alias2"),
            ] {
                for flavor in [Flavor::Otel, Flavor::Langfuse] {
                    let spans = spans(rec, flavor, false);
                    assert_eq!(str_attr(&spans[0], "gen_ai.response.model"), Some(model));
                    assert_eq!(str_attr(&spans[0], "tollgate.key_alias"), Some(alias));
                    assert_eq!(str_attr(&spans[1], "gen_ai.request.model"), Some(model));
                    assert_eq!(str_attr(&spans[1], "server.address"), Some("up.example"));
                }
            }
        }
    }

    #[test]
    fn a_record_sent_to_both_flavours_reads_as_if_each_were_alone() {
        // The attributes both flavours share are encoded once per record:
        // whichever destination goes first, the other sees its own spans.
        let meta = r#"{"session_id":"s1","trace_id":"t-1","mask_output":true}"#;
        for (first, second) in [
            (Flavor::Otel, Flavor::Langfuse),
            (Flavor::Langfuse, Flavor::Otel),
        ] {
            for redact in [false, true] {
                let shared = record(meta);
                let _ = export([&shared], first, !redact);
                let mut alone = record(meta);
                alone.trace = shared.trace; // the same span ids
                assert_eq!(
                    export([&shared], second, redact),
                    export([&alone], second, redact),
                    "{second:?} after {first:?}, redact {redact}"
                );
            }
        }
    }

    #[test]
    fn otel_spans_continue_the_client_trace_with_gen_ai_attributes() {
        let spans = spans(&record("{}"), Flavor::Otel, false);
        assert_eq!(spans.len(), 2);
        let (root, attempt) = (&spans[0], &spans[1]);
        assert_eq!(
            hex::encode(&root.trace_id),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(hex::encode(&root.parent_span_id), "b7ad6b7169203331");
        assert_eq!(root.kind, span::SpanKind::Server as i32);
        assert_eq!(root.name, "chat gpt");
        assert_eq!(str_attr(root, "gen_ai.operation.name"), Some("chat"));
        assert_eq!(str_attr(root, "gen_ai.request.model"), Some("gpt"));
        assert_eq!(str_attr(root, "gen_ai.response.model"), Some("up-model"));
        assert_eq!(
            attr(root, "gen_ai.usage.input_tokens"),
            Some(&any_value::Value::IntValue(11))
        );
        assert_eq!(
            attr(root, "gen_ai.usage.output_tokens"),
            Some(&any_value::Value::IntValue(7))
        );
        assert_eq!(str_attr(root, "tollgate.request_id"), Some("req-1"));
        assert!(str_attr(root, "gen_ai.output.messages")
            .unwrap()
            .contains("secret answer"));
        // No Langfuse attributes on a plain OTel destination.
        assert!(root
            .attributes
            .iter()
            .all(|kv| !kv.key.starts_with("langfuse.")));
        assert_eq!(attempt.parent_span_id, root.span_id);
        assert_eq!(attempt.trace_id, root.trace_id);
        assert_eq!(attempt.span_id, vec![9; 8]);
        assert_eq!(attempt.kind, span::SpanKind::Client as i32);
        assert_eq!(str_attr(attempt, "server.address"), Some("up.example"));
        assert_eq!(
            attempt.start_time_unix_nano,
            1_700_000_000_000_000_000 + 5_000_000
        );
        assert_eq!(attempt.status, None);
        assert_eq!(
            str_attr(root, "gen_ai.output.messages"),
            Some(r#"[{"role":"assistant","content":"secret answer"}]"#)
        );
        match attr(root, "gen_ai.response.finish_reasons") {
            Some(any_value::Value::ArrayValue(a)) => assert_eq!(a.values.len(), 1),
            other => panic!("finish reasons: {other:?}"),
        }
        assert_eq!(
            attr(root, "gen_ai.server.time_to_first_token"),
            Some(&any_value::Value::DoubleValue(0.1))
        );
    }

    #[test]
    fn langfuse_attributes_come_from_litellm_metadata_keys() {
        let meta = r#"{"generation_name":"gen-x","trace_name":"trace-x","trace_id":"my-trace","session_id":"sess-1","trace_user_id":"user-x","tags":["a","b"],"trace_metadata":{"env":"prod"},"project":"p1"}"#;
        let spans = spans(&record(meta), Flavor::Langfuse, false);
        let root = &spans[0];
        assert_eq!(root.name, "gen-x");
        assert_eq!(
            str_attr(root, "langfuse.observation.type"),
            Some("generation")
        );
        assert_eq!(str_attr(root, "langfuse.trace.name"), Some("trace-x"));
        assert_eq!(str_attr(root, "user.id"), Some("user-x"));
        assert_eq!(str_attr(root, "session.id"), Some("sess-1"));
        assert_eq!(str_attr(root, "langfuse.trace.metadata.env"), Some("prod"));
        assert_eq!(
            str_attr(root, "langfuse.observation.metadata.project"),
            Some("p1")
        );
        assert_eq!(
            str_attr(root, "langfuse.observation.metadata.user_api_key_alias"),
            Some("alias1")
        );
        match attr(root, "langfuse.trace.tags") {
            Some(any_value::Value::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
            other => panic!("tags: {other:?}"),
        }
        // The caller's trace_id groups generations: same id, same trace.
        assert_eq!(root.trace_id, trace_id_from_metadata("my-trace").to_vec());
        assert!(root.parent_span_id.is_empty());
        assert_eq!(spans[1].trace_id, root.trace_id);
        assert!(str_attr(root, "langfuse.observation.input")
            .unwrap()
            .contains("secret prompt"));
        assert_eq!(
            str_attr(root, "langfuse.observation.output"),
            Some(r#"{"role":"assistant","content":"secret answer"}"#)
        );
        // The generation is its trace's root: Langfuse takes the trace's
        // input and output from it, nothing is said twice.
        assert_eq!(str_attr(root, "langfuse.trace.output"), None);
        // Continuing a client's trace, the trace's own are said too.
        let continued = spans_for_default();
        assert!(!continued.parent_span_id.is_empty());
        assert_eq!(
            str_attr(&continued, "langfuse.trace.output"),
            str_attr(&continued, "langfuse.observation.output")
        );
        assert_eq!(str_attr(root, "tollgate.request_id"), Some("req-1"));
        // Langfuse reads its own keys first: no second copy as gen_ai.*.
        assert_eq!(str_attr(root, "gen_ai.input.messages"), None);
        let usage: serde_json::Value =
            serde_json::from_str(str_attr(root, "langfuse.observation.usage_details").unwrap())
                .unwrap();
        assert_eq!(usage["input"], 11);
        assert_eq!(usage["output"], 7);
        assert_eq!(
            str_attr(root, "langfuse.observation.cost_details"),
            Some(r#"{"total":0.25}"#)
        );
        assert!(str_attr(root, "langfuse.observation.completion_start_time")
            .unwrap()
            .starts_with("2023-11-14T22:13:20.1"));
        // Without a name in the metadata: LiteLLM's default.
        let plain = spans_for_default();
        assert_eq!(plain.name, "litellm-acompletion");
    }

    fn spans_of(rec: &LogRecord) -> Vec<Span> {
        spans(rec, Flavor::Otel, false)
    }

    fn spans_for_default() -> Span {
        spans(&record("{}"), Flavor::Langfuse, false).remove(0)
    }

    #[test]
    fn redaction_ships_no_prompt_and_no_output() {
        for (redact, meta) in [
            (true, "{}"),
            (false, r#"{"mask_input":true,"mask_output":true}"#),
        ] {
            for flavor in [Flavor::Otel, Flavor::Langfuse] {
                let bytes = export([&record(meta)], flavor, redact);
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("secret prompt"), "{flavor:?} {meta}");
                assert!(!text.contains("secret answer"), "{flavor:?} {meta}");
                assert!(text.contains(REDACTED));
            }
        }
    }

    #[test]
    fn failures_carry_an_error_status_on_the_request_and_the_attempt() {
        let mut rec = record("{}");
        rec.status = 502;
        rec.error = Some("upstream down".into());
        rec.attempts[0].error = Some("connection refused".into());
        rec.attempts[0].status = None;
        for flavor in [Flavor::Otel, Flavor::Langfuse] {
            let spans = spans(&rec, flavor, false);
            let status = spans[0].status.clone().unwrap();
            assert_eq!(status.code, 2, "{flavor:?}");
            assert_eq!(status.message, "upstream down");
            assert_eq!(str_attr(&spans[0], "error.type"), Some("502"));
            let attempt = spans[1].status.clone().unwrap();
            assert_eq!(
                (attempt.code, attempt.message.as_str()),
                (2, "connection refused")
            );
            assert_eq!(str_attr(&spans[1], "error.type"), Some("error"));
        }
        // A failure without a message still decodes as an error status.
        let mut quiet = record("{}");
        quiet.status = 500;
        quiet.error = None;
        let status = spans_of(&quiet)[0].status.clone().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, ""));
        let spans = spans(&rec, Flavor::Langfuse, false);
        assert_eq!(
            str_attr(&spans[0], "langfuse.observation.level"),
            Some("ERROR")
        );
        assert_eq!(
            str_attr(&spans[0], "langfuse.observation.status_message"),
            Some("upstream down")
        );
    }

    #[test]
    fn metadata_trace_ids_are_kept_when_hex_and_hashed_otherwise() {
        assert_eq!(
            hex::encode(trace_id_from_metadata("0AF7651916CD43DD8448EB211C80319C")),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(trace_id_from_metadata("x"), trace_id_from_metadata("x"));
        assert_ne!(trace_id_from_metadata("x"), trace_id_from_metadata("y"));
    }
}
