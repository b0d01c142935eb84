//! Fixtures written from Anthropic's Messages API reference (request and
//! response bodies, the streaming event sequence, error shapes).

use super::*;
use crate::providers::test_support::chunks;
use crate::providers::Endpoint;
use crate::topology::Topology;

fn target(drop_params: bool) -> std::sync::Arc<DeploymentTarget> {
    let mut config = crate::config::Config::from_toml(&format!(
        r#"
drop_params = {drop_params}
[[models.claude.deployments]]
provider = "anthropic"
model = "claude-3-5-haiku-20241022"
api_key = "sk-ant-test"
"#
    ))
    .unwrap();
    config.validate().unwrap();
    Topology::build(&config, None).deployments[0].clone()
}

fn body(json: &str) -> Value {
    let req = InferenceRequest::parse(Endpoint::ChatCompletions, json.as_bytes()).unwrap();
    serde_json::from_slice(&request(&req, &target(false)).unwrap()).unwrap()
}

fn ctx(wants_usage: bool) -> AnswerCtx {
    AnswerCtx {
        id: "chatcmpl-req1".into(),
        created: 1_700_000_000,
        model: "claude-3-5-haiku-20241022".into(),
        wants_usage,
    }
}

#[test]
fn system_messages_become_the_system_prompt_and_max_tokens_is_always_set() {
    let b = body(
        r#"{"model":"claude","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":"Hello"}],
          "temperature":0.2,"stop":"END","user":"u-1"}"#,
    );
    assert_eq!(b["model"], "claude-3-5-haiku-20241022");
    assert_eq!(b["system"], json!([{"type":"text","text":"Be brief."}]));
    assert_eq!(
        b["messages"],
        json!([{"role":"user","content":[{"type":"text","text":"Hello"}]}])
    );
    assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(b["temperature"], 0.2);
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["metadata"], json!({"user_id":"u-1"}));
    assert!(b.get("stream").is_none());
}

#[test]
fn tool_calls_and_results_become_tool_use_and_tool_result_blocks() {
    let b = body(
        r#"{"model":"claude","max_tokens":50,"messages":[
            {"role":"user","content":"Weather in Paris?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"toolu_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"18C"},
            {"role":"tool","tool_call_id":"toolu_2","content":"noon"}],
          "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
          "tool_choice":"required","parallel_tool_calls":false}"#,
    );
    assert_eq!(b["max_tokens"], 50);
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "the two tool results share one user turn");
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][0]["input"], json!({"city":"Paris"}));
    assert_eq!(msgs[1]["content"][1]["name"], "get_time");
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(
        msgs[2]["content"][1],
        json!({"type":"tool_result","tool_use_id":"toolu_2","content":"noon"})
    );
    assert_eq!(
        b["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type":"any","disable_parallel_tool_use":true})
    );
}

#[test]
fn images_go_as_base64_or_url_sources() {
    let b = body(
        r#"{"model":"claude","messages":[{"role":"user","content":[
            {"type":"text","text":"What is this?","cache_control":{"type":"ephemeral"}},
            {"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}},
            {"type":"image_url","image_url":"https://example.com/cat.png"}]}]}"#,
    );
    let c = &b["messages"][0]["content"];
    assert_eq!(c[0]["cache_control"], json!({"type":"ephemeral"}));
    assert_eq!(
        c[1]["source"],
        json!({"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"})
    );
    assert_eq!(
        c[2]["source"],
        json!({"type":"url","url":"https://example.com/cat.png"})
    );
}

#[test]
fn json_schema_is_forced_through_a_tool_and_comes_back_as_content() {
    let b = body(
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],
          "response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object","properties":{"name":{"type":"string"}}}}}}"#,
    );
    assert_eq!(b["tools"][0]["name"], JSON_TOOL);
    assert_eq!(b["tool_choice"], json!({"type":"tool","name":JSON_TOOL}));
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022",
        "content":[{"type":"tool_use","id":"toolu_9","name":"json_tool_call","input":{"name":"Ada"}}],
        "stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5}}"#;
    let (out, _) = response(answer, &ctx(false)).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], r#"{"name":"Ada"}"#);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(out["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn reasoning_effort_turns_thinking_on_with_room_beyond_the_budget() {
    let b = body(
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"high"}"#,
    );
    assert_eq!(
        b["thinking"],
        json!({"type":"enabled","budget_tokens":4096})
    );
    assert!(b["max_tokens"].as_u64().unwrap() > 4096);
}

#[test]
fn unsupported_parameters_are_refused_by_name_or_dropped() {
    let json =
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"logprobs":true,"n":2}"#;
    let req = InferenceRequest::parse(Endpoint::ChatCompletions, json.as_bytes()).unwrap();
    let err = request(&req, &target(false)).unwrap_err().to_string();
    assert!(err.contains("logprobs"), "{err}");
    let b: Value = serde_json::from_slice(&request(&req, &target(true)).unwrap()).unwrap();
    assert!(b.get("logprobs").is_none() && b.get("n").is_none());
}

#[test]
fn a_documented_answer_with_thinking_tools_and_cache_usage() {
    let answer = br#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",
        "model":"claude-3-7-sonnet-20250219",
        "content":[
          {"type":"thinking","thinking":"Let me check.","signature":"EqQB"},
          {"type":"text","text":"I'll look that up."},
          {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"location":"San Francisco, CA"}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000}}"#;
    let (out, usage) = response(answer, &ctx(false)).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    let m = &out["choices"][0]["message"];
    assert_eq!(out["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(m["content"], "I'll look that up.");
    assert_eq!(m["reasoning_content"], "Let me check.");
    assert_eq!(m["thinking_blocks"][0]["signature"], "EqQB");
    assert_eq!(m["tool_calls"][0]["id"], "toolu_01A");
    assert_eq!(
        m["tool_calls"][0]["function"]["arguments"],
        r#"{"location":"San Francisco, CA"}"#
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    let u = usage.unwrap();
    assert_eq!(u.prompt_tokens, 2095 + 100 + 1000);
    assert_eq!((u.cached_tokens, u.cache_creation_tokens), (1000, 100));
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(out["usage"]["total_tokens"], 2095 + 100 + 1000 + 503);
}

#[test]
fn a_body_that_is_not_a_message_is_an_error_to_retry() {
    assert!(response(br#"{"ok":true}"#, &ctx(false)).is_err());
    assert!(response(b"<html>", &ctx(false)).is_err());
}

#[test]
fn errors_keep_the_message_and_get_openai_classes() {
    let e = error(
        400,
        None,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#,
    );
    assert_eq!(e.status, 400);
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    assert!(e.message.contains("prompt is too long"));
    let e = error(
        529,
        None,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(e.status, 503);
    assert!(crate::providers::is_retryable_status(e.status));
    let e = error(
        429,
        Some(Duration::from_secs(7)),
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    );
    assert_eq!(
        (e.status, e.retry_after),
        (429, Some(Duration::from_secs(7)))
    );
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    // Not Anthropic's shape (a proxy's page): kept as text.
    assert!(error(502, None, b"Bad gateway")
        .message
        .contains("Bad gateway"));
}

/// Feeds a stream cut into pieces of `step` bytes.
fn run_stream(wire: &str, step: usize, wants_usage: bool) -> (Vec<StreamStep>, Result<(), String>) {
    crate::providers::test_support::feed(
        crate::providers::Wire::Anthropic,
        ctx(wants_usage),
        wire.as_bytes(),
        step,
    )
}

const TOOL_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_read_input_tokens\":28}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, checking\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Paris\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

#[test]
fn a_tool_use_stream_becomes_openai_chunks_wherever_it_is_cut() {
    let (reference, end) = run_stream(TOOL_STREAM, TOOL_STREAM.len(), true);
    assert!(end.is_ok());
    for step in [1, 7, 64] {
        let (steps, end) = run_stream(TOOL_STREAM, step, true);
        assert!(end.is_ok());
        assert_eq!(steps, reference, "cut every {step} bytes");
    }
    let c = chunks(&reference);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(c[0]["id"], "msg_014p");
    assert_eq!(c[0]["object"], "chat.completion.chunk");
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Okay, checking");
    let call = &c[2]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (
            call["index"].as_u64(),
            call["id"].as_str(),
            call["function"]["name"].as_str()
        ),
        (Some(0), Some("toolu_01T1"), Some("get_weather"))
    );
    let args: String = c[3..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(args, r#"{"location": "Paris"}"#);
    assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c[6]["choices"], json!([]));
    assert_eq!(c[6]["usage"]["prompt_tokens"], 500);
    assert_eq!(c[6]["usage"]["completion_tokens"], 89);
    let usage = reference.iter().find_map(|s| match s {
        StreamStep::Usage { usage, .. } => Some(*usage),
        _ => None,
    });
    assert_eq!(
        usage.map(|u| (u.prompt_tokens, u.cached_tokens)),
        Some((500, 28))
    );
    assert!(matches!(reference.last(), Some(StreamStep::Done(_))));
}

#[test]
fn the_usage_chunk_is_sent_only_when_asked_for_but_always_counted() {
    let (steps, _) = run_stream(TOOL_STREAM, 4096, false);
    assert!(chunks(&steps).iter().all(|c| c.get("usage").is_none()));
    assert!(steps
        .iter()
        .any(|s| matches!(s, StreamStep::Usage { forward: None, .. })));
}

#[test]
fn thinking_streams_as_reasoning_content() {
    let wire = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":5}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQ\"}}\n\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
    let (steps, end) = run_stream(wire, 5, false);
    assert!(end.is_ok());
    let c = chunks(&steps);
    assert_eq!(c[1]["choices"][0]["delta"]["reasoning_content"], "Hmm.");
    assert_eq!(
        c[2]["choices"][0]["delta"]["thinking_blocks"][0]["signature"],
        "EqQ"
    );
    assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[test]
fn an_error_event_or_an_early_close_fails_the_stream() {
    let wire = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5}}}\n\n\
event: error\n\
data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (steps, _) = run_stream(wire, 9, false);
    match steps.last() {
        Some(StreamStep::Failed(m)) => assert!(m.contains("Overloaded"), "{m}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let cut = &TOOL_STREAM[..TOOL_STREAM.len() / 2];
    let (_, end) = run_stream(cut, 100, false);
    assert!(end.is_err());
}

#[test]
fn a_hostile_block_index_allocates_nothing_and_breaks_nothing() {
    let wire = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":18446744073709551615,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":18446744073709551615,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
    let (steps, end) = run_stream(wire, 11, false);
    assert!(end.is_ok());
    assert!(matches!(steps.last(), Some(StreamStep::Done(_))));
}

/// Not a test: prints what translating one small request and its answer
/// costs (`cargo test --release --lib translation_cost -- --ignored --nocapture`).
#[test]
#[ignore]
fn translation_cost() {
    let t = target(false);
    let body = br#"{"model":"claude","messages":[{"role":"user","content":"hello"}]}"#;
    let answer = br#"{"id":"msg_mock0123456789abcdef0123","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"This is a mock response from tollgate."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5}}"#;
    let n = 200_000;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let req = InferenceRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        std::hint::black_box(request(&req, &t).unwrap());
    }
    let req_ns = started.elapsed().as_nanos() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(response(answer, &ctx(false)).unwrap());
    }
    let resp_ns = started.elapsed().as_nanos() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let req = InferenceRequest::parse(Endpoint::ChatCompletions, body).unwrap();
        std::hint::black_box(crate::providers::openai::upstream_body(&req, "m"));
    }
    let openai_ns = started.elapsed().as_nanos() / n;
    println!("anthropic request {req_ns} ns, response {resp_ns} ns; openai request {openai_ns} ns");
}
