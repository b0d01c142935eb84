//! Request records as OTLP trace spans (protobuf, for OTLP/HTTP): one
//! server span for the request, one client span per upstream attempt, with
//! the GenAI semantic conventions' `gen_ai.*` attributes. The Langfuse
//! flavour adds Langfuse's `langfuse.*` attributes (trace name, user,
//! session, tags, metadata, observation type `generation`, input/output,
//! usage and cost details), read from the request's `metadata` the way
//! LiteLLM reads them. Pure: records in, bytes out.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;
use serde_json::{Map, Value};

use super::record::{output_message, LogRecord, TraceContext};
use super::sink::{Exporter, Payload};
use crate::providers::Endpoint;

pub const REDACTED: &str = "redacted-by-tollgate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Otel,
    Langfuse,
}

pub struct OtlpExporter {
    pub flavor: Flavor,
    /// Never ship prompts or outputs.
    pub redact: bool,
}

impl Exporter for OtlpExporter {
    type Item = Arc<LogRecord>;

    fn encode(&self, batch: &[Arc<LogRecord>]) -> Result<Payload, String> {
        let spans = batch
            .iter()
            .flat_map(|r| spans(r, self.flavor, self.redact))
            .collect();
        Ok(Payload {
            body: export_request(spans).encode_to_vec().into(),
            content_type: "application/x-protobuf",
            headers: Vec::new(),
        })
    }
}

pub fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("tollgate")),
                    kv("service.version", s(env!("CARGO_PKG_VERSION"))),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tollgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn int(v: impl TryInto<i64>) -> any_value::Value {
    any_value::Value::IntValue(v.try_into().unwrap_or(i64::MAX))
}

fn strings(v: impl IntoIterator<Item = String>) -> any_value::Value {
    any_value::Value::ArrayValue(ArrayValue {
        values: v
            .into_iter()
            .map(|x| AnyValue { value: Some(s(x)) })
            .collect(),
    })
}

/// A JSON value as an attribute: strings as they are, anything else as
/// its JSON text (how Langfuse reads metadata values).
fn json_attr(v: &Value) -> any_value::Value {
    match v {
        Value::String(x) => s(x.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => int(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        other => s(other.to_string()),
    }
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

fn metadata(rec: &LogRecord) -> Map<String, Value> {
    rec.metadata
        .as_ref()
        .and_then(|m| serde_json::from_str::<Map<String, Value>>(m.get()).ok())
        .unwrap_or_default()
}

fn truthy(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || matches!(v, Some(Value::String(s)) if s == "true")
}

fn iso(unix_nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_nanos as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The request's span and its attempts' spans.
pub fn spans(rec: &LogRecord, flavor: Flavor, redact: bool) -> Vec<Span> {
    let meta = metadata(rec);
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
    let mask_input = redact || truthy(meta.get("mask_input"));
    let mask_output = redact || truthy(meta.get("mask_output"));

    let mut a = vec![
        kv("gen_ai.operation.name", s(op)),
        kv("gen_ai.request.model", s(rec.model.clone())),
        kv("gen_ai.usage.input_tokens", int(rec.usage.prompt_tokens)),
        kv(
            "gen_ai.usage.output_tokens",
            int(rec.usage.completion_tokens),
        ),
        kv("http.response.status_code", int(rec.status)),
        kv("tollgate.request_id", s(rec.request_id.clone())),
        kv("tollgate.call_id", s(rec.call_id.clone())),
        kv("tollgate.cost_usd", any_value::Value::DoubleValue(rec.cost)),
        kv("tollgate.attempts", int(rec.attempts.len().max(1))),
        kv("tollgate.fallbacks", int(rec.fallbacks)),
        kv("tollgate.stream", any_value::Value::BoolValue(rec.stream)),
    ];
    if let Some(d) = d {
        a.push(kv("gen_ai.provider.name", s(d.provider.name())));
        a.push(kv("gen_ai.system", s(d.provider.name())));
        a.push(kv("gen_ai.response.model", s(d.upstream_model.clone())));
        a.push(kv("tollgate.deployment", s(d.id.clone())));
        a.push(kv("tollgate.model_group", s(d.group.to_string())));
    }
    if rec.usage.cached_tokens > 0 {
        a.push(kv(
            "gen_ai.usage.cache_read.input_tokens",
            int(rec.usage.cached_tokens),
        ));
    }
    if let Some(k) = &rec.key {
        if let Some(alias) = &k.alias {
            a.push(kv("tollgate.key_alias", s(alias.clone())));
        }
        a.push(kv("tollgate.key_hash", s(k.id.clone())));
        if let Some(t) = &k.team_id {
            a.push(kv("tollgate.team_id", s(t.clone())));
        }
        if let Some(u) = &k.user_id {
            a.push(kv("tollgate.user_id", s(u.clone())));
        }
    }
    if let Some(u) = &rec.end_user {
        a.push(kv("tollgate.end_user", s(u.clone())));
    }
    if let Some(t) = rec.ttft() {
        a.push(kv(
            "gen_ai.server.time_to_first_token",
            any_value::Value::DoubleValue(t.as_secs_f64()),
        ));
    }
    if failed {
        a.push(kv("error.type", s(rec.status.to_string())));
    }

    let output = (!mask_output)
        .then(|| output_message(&rec.output))
        .flatten();
    if let Some((_, _, Some(finish))) = &output {
        a.push(kv(
            "gen_ai.response.finish_reasons",
            strings([finish.clone()]),
        ));
    }
    let input_json = match (&rec.input, mask_input) {
        (_, true) => Some(format!(
            "[{{\"role\":\"user\",\"content\":\"{REDACTED}\"}}]"
        )),
        (Some(i), false) => Some(i.get().to_string()),
        (None, false) => None,
    };
    let output_json = if mask_output {
        Some(format!(
            "{{\"role\":\"assistant\",\"content\":\"{REDACTED}\"}}"
        ))
    } else {
        output.as_ref().map(|(role, content, _)| {
            serde_json::json!({"role": role, "content": content}).to_string()
        })
    };
    if let Some(i) = &input_json {
        a.push(kv("gen_ai.input.messages", s(i.clone())));
    }
    if let Some(o) = &output_json {
        a.push(kv("gen_ai.output.messages", s(format!("[{o}]"))));
    }

    let mut name = format!("{op} {}", rec.model);
    if langfuse {
        let default_name = format!("litellm-{}", rec.endpoint.call_type());
        let generation = meta
            .get("generation_name")
            .and_then(Value::as_str)
            .map_or(default_name.clone(), str::to_string);
        let trace_name = meta
            .get("trace_name")
            .and_then(Value::as_str)
            .map_or(generation.clone(), str::to_string);
        name = generation;
        a.push(kv("langfuse.observation.type", s("generation")));
        a.push(kv("langfuse.trace.name", s(trace_name)));
        let user = meta
            .get("trace_user_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| rec.end_user.clone());
        if let Some(u) = user {
            a.push(kv("user.id", s(u.clone())));
            a.push(kv("langfuse.user.id", s(u)));
        }
        if let Some(sid) = meta.get("session_id").and_then(Value::as_str) {
            a.push(kv("session.id", s(sid)));
            a.push(kv("langfuse.session.id", s(sid)));
        }
        if let Some(Value::Array(tags)) = meta.get("tags") {
            let tags = tags
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect::<Vec<_>>();
            a.push(kv("langfuse.trace.tags", strings(tags)));
        }
        if let Some(v) = meta.get("version").and_then(Value::as_str) {
            a.push(kv("langfuse.version", s(v)));
        }
        if let Some(v) = meta.get("trace_release").and_then(Value::as_str) {
            a.push(kv("langfuse.release", s(v)));
        }
        if let Some(Value::Object(tm)) = meta.get("trace_metadata") {
            for (k, v) in tm {
                a.push(kv(&format!("langfuse.trace.metadata.{k}"), json_attr(v)));
            }
        }
        for (k, v) in meta
            .iter()
            .filter(|(k, _)| !LANGFUSE_KEYS.contains(&k.as_str()))
        {
            a.push(kv(
                &format!("langfuse.observation.metadata.{k}"),
                json_attr(v),
            ));
        }
        if let Some(key) = &rec.key {
            let fields = [
                ("user_api_key_alias", key.alias.as_deref()),
                ("user_api_key_hash", Some(key.id.as_str())),
                ("user_api_key_team_id", key.team_id.as_deref()),
                ("user_api_key_user_id", key.user_id.as_deref()),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    a.push(kv(&format!("langfuse.observation.metadata.{k}"), s(v)));
                }
            }
        }
        a.push(kv(
            "langfuse.observation.metadata.request_id",
            s(rec.request_id.clone()),
        ));
        if let Some(d) = d {
            a.push(kv(
                "langfuse.observation.model.name",
                s(d.upstream_model.clone()),
            ));
        }
        a.push(kv(
            "langfuse.observation.usage_details",
            s(serde_json::json!({
                "input": rec.usage.prompt_tokens,
                "output": rec.usage.completion_tokens,
                "total": rec.usage.prompt_tokens + rec.usage.completion_tokens,
            })
            .to_string()),
        ));
        a.push(kv(
            "langfuse.observation.cost_details",
            s(serde_json::json!({ "total": rec.cost }).to_string()),
        ));
        if let Some(first) = rec.first_chunk_ms {
            a.push(kv(
                "langfuse.observation.completion_start_time",
                s(iso(u64::try_from(first).unwrap_or(0) * 1_000_000)),
            ));
        }
        if let Some(i) = input_json {
            a.push(kv("langfuse.observation.input", s(i.clone())));
            a.push(kv("langfuse.trace.input", s(i)));
        }
        if let Some(o) = output_json {
            a.push(kv("langfuse.observation.output", s(o.clone())));
            a.push(kv("langfuse.trace.output", s(o)));
        }
        if failed {
            a.push(kv("langfuse.observation.level", s("ERROR")));
            if let Some(e) = &rec.error {
                a.push(kv("langfuse.observation.status_message", s(e.clone())));
            }
        }
    }

    let status = |failed: bool, message: Option<&String>| {
        Some(Status {
            message: if failed {
                message.cloned().unwrap_or_default()
            } else {
                String::new()
            },
            code: if failed {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
        })
    };
    let mut out = Vec::with_capacity(1 + rec.attempts.len());
    out.push(Span {
        trace_id: trace_id.to_vec(),
        span_id: trace.span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(trace.flags) | 0x100 | (u32::from(parent.is_some()) << 9),
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: rec.start_unix_nanos,
        end_time_unix_nano: rec.end_unix_nanos.max(rec.start_unix_nanos),
        attributes: a,
        status: status(failed, rec.error.as_ref()),
        ..Default::default()
    });
    for at in &rec.attempts {
        let t = &at.deployment;
        let mut a = vec![
            kv("gen_ai.operation.name", s(op)),
            kv("gen_ai.provider.name", s(t.provider.name())),
            kv("gen_ai.system", s(t.provider.name())),
            kv("gen_ai.request.model", s(t.upstream_model.clone())),
            kv("tollgate.deployment", s(t.id.clone())),
        ];
        if let Ok(u) = url::Url::parse(&t.api_base) {
            if let Some(h) = u.host_str() {
                a.push(kv("server.address", s(h)));
            }
            if let Some(p) = u.port_or_known_default() {
                a.push(kv("server.port", int(p)));
            }
        }
        if let Some(st) = at.status {
            a.push(kv("http.response.status_code", int(st)));
        }
        if at.error.is_some() {
            a.push(kv(
                "error.type",
                s(at.status.map_or("error".into(), |s| s.to_string())),
            ));
        }
        if langfuse {
            a.push(kv("langfuse.observation.type", s("span")));
        }
        let start = rec.start_unix_nanos + at.start.as_nanos() as u64;
        out.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: at.span_id.to_vec(),
            parent_span_id: trace.span_id.to_vec(),
            flags: u32::from(trace.flags) | 0x100,
            name: format!("{op} {}", t.upstream_model),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + at.duration.as_nanos() as u64,
            attributes: a,
            status: status(at.error.is_some(), at.error.as_ref()),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::access::{KeyInfo, Owner};
    use crate::observe::record::{AttemptRecord, Output};
    use crate::providers::Usage;

    fn record(metadata: &str) -> LogRecord {
        let config = crate::config::Config::from_toml(
            "[[models.gpt.deployments]]\nprovider = \"openai_compatible\"\nmodel = \"up-model\"\napi_base = \"http://up.example:8080/v1\"\n",
        )
        .unwrap();
        let topo = crate::topology::Topology::build(&config, None);
        let d = topo.deployments[0].clone();
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
        }
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
        // The whole request encodes and decodes as an OTLP export.
        let bytes = export_request(spans.clone()).encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.resource_spans[0].scope_spans[0].spans, spans);
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
            Some(r#"{"content":"secret answer","role":"assistant"}"#)
        );
        let usage: serde_json::Value =
            serde_json::from_str(str_attr(root, "langfuse.observation.usage_details").unwrap())
                .unwrap();
        assert_eq!(usage["input"], 11);
        assert_eq!(usage["output"], 7);
        assert!(str_attr(root, "langfuse.observation.completion_start_time")
            .unwrap()
            .starts_with("2023-11-14T22:13:20.1"));
        // Without a name in the metadata: LiteLLM's default.
        let plain = spans_for_default();
        assert_eq!(plain.name, "litellm-acompletion");
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
                let bytes = export_request(spans(&record(meta), flavor, redact)).encode_to_vec();
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("secret prompt"), "{flavor:?} {meta}");
                assert!(!text.contains("secret answer"), "{flavor:?} {meta}");
                assert!(text.contains(REDACTED));
            }
        }
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
