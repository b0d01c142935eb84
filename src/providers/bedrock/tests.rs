//! Fixtures written from AWS's Bedrock Runtime documentation: Converse
//! request and response shapes, the tool-use walkthrough's `top_song`
//! example, the error classes and `x-amzn-errortype`. Signing and stream
//! tests sit next to their code (`sigv4/tests.rs`, `stream/tests.rs`).

use super::*;
use crate::providers::Endpoint;
use crate::topology::Topology;

pub(super) const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// The SigV4 documentation's example key pair.
pub(super) const ACCESS_KEY: &str = "AKIDEXAMPLE";
pub(super) const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

pub(super) fn target_for(model: &str, drop_params: bool) -> std::sync::Arc<DeploymentTarget> {
    let mut config = crate::config::Config::from_toml(&format!(
        r#"
drop_params = {drop_params}
[[models.claude.deployments]]
provider = "bedrock"
model = "{model}"
aws_region = "us-east-1"
aws_access_key_id = "{ACCESS_KEY}"
aws_secret_access_key = "{SECRET_KEY}"
"#
    ))
    .unwrap();
    config.validate().unwrap();
    Topology::build(&config, None).deployments[0].clone()
}

fn parse(json: &str) -> InferenceRequest {
    InferenceRequest::parse(Endpoint::ChatCompletions, json.as_bytes()).unwrap()
}

fn body_for(model: &str, json: &str) -> Value {
    serde_json::from_slice(&request(&parse(json), &target_for(model, false)).unwrap()).unwrap()
}

fn body(json: &str) -> Value {
    body_for(MODEL, json)
}

fn refused(model: &str, json: &str) -> String {
    request(&parse(json), &target_for(model, false))
        .unwrap_err()
        .to_string()
}

pub(super) fn ctx(wants_usage: bool) -> AnswerCtx {
    AnswerCtx {
        id: "chatcmpl-req1".into(),
        created: 1_700_000_000,
        model: MODEL.into(),
        wants_usage,
    }
}

#[test]
fn system_prompt_and_inference_config_take_converse_names() {
    let b = body(
        r#"{"model":"claude","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"developer","content":[{"type":"text","text":"Answer in English."}]},
            {"role":"user","content":"Hello"},
            {"role":"user","content":[{"type":"text","text":"Are you there?"}]}],
          "max_tokens":512,"temperature":0.5,"top_p":0.9,"top_k":40,"stop":["END"],
          "user":"u-1","stream":true,"stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(
        b["system"],
        json!([{"text":"Be brief."},{"text":"Answer in English."}])
    );
    assert_eq!(
        b["messages"],
        json!([{"role":"user","content":[{"text":"Hello"},{"text":"Are you there?"}]}]),
        "consecutive user messages share one turn"
    );
    assert_eq!(
        b["inferenceConfig"],
        json!({"maxTokens":512,"temperature":0.5,"topP":0.9,"stopSequences":["END"]})
    );
    assert_eq!(b["additionalModelRequestFields"], json!({"top_k":40}));
    for absent in ["model", "stream", "user", "metadata", "toolConfig"] {
        assert!(b.get(absent).is_none(), "{absent} must not be sent");
    }
}

#[test]
fn nothing_optional_is_sent_when_not_asked_for() {
    let b = body(r#"{"model":"claude","messages":[{"role":"user","content":"Hi"}]}"#);
    assert_eq!(
        b,
        json!({"messages":[{"role":"user","content":[{"text":"Hi"}]}]})
    );
}

/// The tool-use walkthrough: a `top_song` tool, the model's `toolUse`,
/// the caller's `toolResult`, and the conversation carrying on.
#[test]
fn tools_calls_and_results_round_trip_as_tool_use_and_tool_result() {
    let b = body(
        r#"{"model":"claude","messages":[
            {"role":"user","content":"What is the most popular song on WZPZ and on WKRP?"},
            {"role":"assistant","content":"Let me look.","tool_calls":[
                {"id":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","type":"function","function":{"name":"top_song","arguments":"{\"sign\":\"WZPZ\"}"}},
                {"id":"tooluse_2","type":"function","function":{"name":"top_song","arguments":"{\"sign\":\"WKRP\"}"}}]},
            {"role":"tool","tool_call_id":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","content":"{\"song\":\"Elemental Hotel\",\"artist\":\"8 Storey Hike\"}"},
            {"role":"tool","tool_call_id":"tooluse_2","content":"Station not found"},
            {"role":"user","content":"Thanks!"}],
          "tools":[{"type":"function","function":{"name":"top_song","description":"Get the most popular song played on a radio station.",
            "parameters":{"type":"object","properties":{"sign":{"type":"string"}},"required":["sign"]}}}],
          "tool_choice":"required"}"#,
    );
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        3,
        "tool results and the next user message share one turn"
    );
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(
        msgs[1]["content"],
        json!([
            {"text":"Let me look."},
            {"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"top_song","input":{"sign":"WZPZ"}}},
            {"toolUse":{"toolUseId":"tooluse_2","name":"top_song","input":{"sign":"WKRP"}}}])
    );
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(
        msgs[2]["content"],
        json!([
            {"toolResult":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                "content":[{"json":{"song":"Elemental Hotel","artist":"8 Storey Hike"}}]}},
            {"toolResult":{"toolUseId":"tooluse_2","content":[{"text":"Station not found"}]}},
            {"text":"Thanks!"}])
    );
    assert_eq!(
        b["toolConfig"],
        json!({"tools":[{"toolSpec":{"name":"top_song",
            "description":"Get the most popular song played on a radio station.",
            "inputSchema":{"json":{"type":"object","properties":{"sign":{"type":"string"}},"required":["sign"]}}}}],
          "toolChoice":{"any":{}}})
    );
}

#[test]
fn tool_choice_modes_map_to_converse_choices() {
    let with = |choice: &str| {
        body(&format!(
            r#"{{"model":"claude","messages":[{{"role":"user","content":"hi"}}],
              "tools":[{{"type":"function","function":{{"name":"top_song"}}}}],"tool_choice":{choice}}}"#
        ))
    };
    assert_eq!(
        with(r#""auto""#)["toolConfig"]["toolChoice"],
        json!({"auto":{}})
    );
    assert_eq!(
        with(r#"{"type":"function","function":{"name":"top_song"}}"#)["toolConfig"]["toolChoice"],
        json!({"tool":{"name":"top_song"}})
    );
    assert_eq!(
        with(r#""auto""#)["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        json!({"type":"object","properties":{}}),
        "a tool without parameters gets an empty object schema"
    );
    assert!(
        with(r#""none""#).get("toolConfig").is_none(),
        "Converse has no `none`: the tools stay home"
    );
    let err = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"tool_choice":"sometimes"}"#,
    );
    assert!(err.contains("tool_choice"), "{err}");
}

#[test]
fn images_go_as_bytes_and_urls_are_refused() {
    let b = body(
        r#"{"model":"claude","messages":[{"role":"user","content":[
            {"type":"text","text":"What is in these?","cache_control":{"type":"ephemeral"}},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
            {"type":"image_url","image_url":"data:image/jpeg;base64,/9j/4AAQ"},
            {"type":"text","text":"  "}]}]}"#,
    );
    assert_eq!(
        b["messages"][0]["content"],
        json!([
            {"text":"What is in these?"},
            {"cachePoint":{"type":"default"}},
            {"image":{"format":"png","source":{"bytes":"iVBORw0KGgo="}}},
            {"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}]),
        "blank text is left out: Bedrock refuses it"
    );
    let url = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}"#,
    );
    assert!(
        url.contains("data:") && url.contains("messages[0]"),
        "{url}"
    );
    let tiff = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]}"#,
    );
    assert!(tiff.contains("image/tiff"), "{tiff}");
    let audio = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
    );
    assert!(audio.contains("text and image_url"), "{audio}");
}

#[test]
fn json_schema_is_forced_through_a_tool_and_comes_back_as_content() {
    let b = body(
        r#"{"model":"claude","messages":[{"role":"user","content":"Name a scientist."}],
          "response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{"type":"object","properties":{"name":{"type":"string"}}}}}}"#,
    );
    assert_eq!(
        b["toolConfig"],
        json!({"tools":[{"toolSpec":{"name":JSON_TOOL,
            "inputSchema":{"json":{"type":"object","properties":{"name":{"type":"string"}}}}}}],
          "toolChoice":{"tool":{"name":JSON_TOOL}}})
    );
    let answer = br#"{"output":{"message":{"role":"assistant","content":[
        {"toolUse":{"toolUseId":"tooluse_9","name":"json_tool_call","input":{"name":"Ada Lovelace"}}}]}},
        "stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15},"metrics":{"latencyMs":300}}"#;
    let (out, _) = response(answer, &ctx(false)).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out["choices"][0]["message"]["content"],
        r#"{"name":"Ada Lovelace"}"#
    );
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(out["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn reasoning_effort_turns_thinking_on_for_anthropic_models_only() {
    let json = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"medium"}"#;
    let b = body_for("us.anthropic.claude-3-7-sonnet-20250219-v1:0", json);
    assert_eq!(
        b["additionalModelRequestFields"]["thinking"],
        json!({"type":"enabled","budget_tokens":2048})
    );
    assert!(b["inferenceConfig"]["maxTokens"].as_u64().unwrap() > 2048);
    let given = body(
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"max_tokens":9000,
          "thinking":{"type":"enabled","budget_tokens":8000}}"#,
    );
    assert_eq!(
        given["additionalModelRequestFields"]["thinking"]["budget_tokens"],
        8000
    );
    assert_eq!(given["inferenceConfig"]["maxTokens"], 9000);
    let llama = "meta.llama3-1-70b-instruct-v1:0";
    let err = refused(llama, json);
    assert!(err.contains("reasoning_effort"), "{err}");
    let req = parse(json);
    let dropped: Value =
        serde_json::from_slice(&request(&req, &target_for(llama, true)).unwrap()).unwrap();
    assert!(dropped.get("additionalModelRequestFields").is_none());
}

#[test]
fn earlier_thinking_goes_back_as_reasoning_blocks() {
    let b = body(
        r#"{"model":"claude","messages":[
            {"role":"user","content":"Weather?"},
            {"role":"assistant","content":"","reasoning_content":"Need a tool.",
             "thinking_blocks":[{"type":"thinking","thinking":"Need a tool.","signature":"EqQBCkYI"},
                                {"type":"redacted_thinking","data":"EmwKAhgB"}],
             "tool_calls":[{"id":"t1","type":"function","function":{"name":"weather","arguments":"not json"}}]},
            {"role":"tool","tool_call_id":"t1","content":"sunny"}]}"#,
    );
    assert_eq!(
        b["messages"][1]["content"],
        json!([
            {"reasoningContent":{"reasoningText":{"text":"Need a tool.","signature":"EqQBCkYI"}}},
            {"reasoningContent":{"redactedContent":"EmwKAhgB"}},
            {"toolUse":{"toolUseId":"t1","name":"weather","input":{}}}])
    );
}

#[test]
fn unsupported_parameters_are_refused_by_name_or_dropped() {
    let json = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"logprobs":true,"seed":1,"n":2}"#;
    let err = refused(MODEL, json);
    assert!(err.contains("logprobs, seed"), "{err}");
    let b: Value =
        serde_json::from_slice(&request(&parse(json), &target_for(MODEL, true)).unwrap()).unwrap();
    assert!(b.get("logprobs").is_none() && b.get("seed").is_none() && b.get("n").is_none());
    let n = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"n":2}"#,
    );
    assert!(n.contains("n > 1"), "{n}");
    let parallel = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":false,
          "tools":[{"type":"function","function":{"name":"f"}}]}"#,
    );
    assert!(parallel.contains("parallel_tool_calls"), "{parallel}");
    let empty = refused(
        MODEL,
        r#"{"model":"claude","messages":[{"role":"system","content":"only a system prompt"}]}"#,
    );
    assert!(empty.contains("at least one"), "{empty}");
}

/// ConverseResponse as the API reference and the tool-use walkthrough
/// show it, with reasoning and prompt-cache counts.
#[test]
fn a_documented_answer_with_reasoning_tool_use_and_cache_usage() {
    let answer = br#"{
        "output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"The user wants the top song.","signature":"ErcBCkgI"}}},
            {"text":"I'll look that up."},
            {"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"top_song","input":{"sign":"WZPZ"}}}]}},
        "stopReason":"tool_use",
        "usage":{"inputTokens":375,"outputTokens":58,"totalTokens":1533,"cacheReadInputTokens":1000,"cacheWriteInputTokens":100},
        "metrics":{"latencyMs":1423}}"#;
    let (out, usage) = response(answer, &ctx(false)).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["id"], "chatcmpl-req1");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], MODEL);
    let m = &out["choices"][0]["message"];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], "I'll look that up.");
    assert_eq!(m["reasoning_content"], "The user wants the top song.");
    assert_eq!(m["thinking_blocks"][0]["signature"], "ErcBCkgI");
    assert_eq!(
        m["tool_calls"],
        json!([{"id":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","type":"function",
            "function":{"name":"top_song","arguments":"{\"sign\":\"WZPZ\"}"}}])
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    let u = usage.unwrap();
    assert_eq!(u.prompt_tokens, 375 + 1000 + 100);
    assert_eq!((u.completion_tokens, u.total_tokens), (58, 1533));
    assert_eq!((u.cached_tokens, u.cache_creation_tokens), (1000, 100));
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(out["usage"]["total_tokens"], 1533);
}

#[test]
fn stop_reasons_become_openai_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        let answer = format!(
            r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"Hi"}},{{"text":" there"}}]}}}},
              "stopReason":"{stop}","usage":{{"inputTokens":3,"outputTokens":2,"totalTokens":5}}}}"#
        );
        let (out, usage) = response(answer.as_bytes(), &ctx(false)).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
        assert_eq!(out["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((3, 2))
        );
    }
}

#[test]
fn a_body_that_is_not_a_converse_answer_is_an_error_to_retry() {
    assert!(response(br#"{"message":"hello"}"#, &ctx(false)).is_err());
    assert!(response(br#"{"output":{}}"#, &ctx(false)).is_err());
    assert!(response(b"<html>", &ctx(false)).is_err());
}

#[test]
fn errors_are_classed_by_x_amzn_errortype() {
    let e = error(
        400,
        None,
        Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"Input is too long for requested model."}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (400, Some("context_length_exceeded"))
    );
    assert_eq!(e.message, "Input is too long for requested model.");
    assert_eq!(e.error_type.as_deref(), Some("invalid_request_error"));
    let e = error(
        400,
        None,
        Some("ValidationException"),
        br#"{"message":"The model returned the following errors: prompt is too long: 208410 tokens > 200000 maximum"}"#,
    );
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    let e = error(
        400,
        None,
        Some("ValidationException"),
        br#"{"message":"Malformed input request, please reformat your input and try again."}"#,
    );
    assert_eq!((e.status, e.code), (400, None));

    let e = error(
        429,
        Some(Duration::from_secs(3)),
        Some("ThrottlingException"),
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    assert_eq!(
        (e.status, e.retry_after),
        (429, Some(Duration::from_secs(3)))
    );
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(crate::providers::is_retryable_status(e.status));

    for (status, class, want, code) in [
        (403, "AccessDeniedException", 403, None),
        (
            403,
            "UnrecognizedClientException",
            401,
            Some("invalid_api_key"),
        ),
        (
            403,
            "InvalidSignatureException",
            401,
            Some("invalid_api_key"),
        ),
        (
            404,
            "ResourceNotFoundException",
            404,
            Some("model_not_found"),
        ),
        (
            400,
            "ServiceQuotaExceededException",
            429,
            Some("rate_limit_exceeded"),
        ),
        (408, "ModelTimeoutException", 408, None),
        (429, "ModelNotReadyException", 503, None),
        (503, "ServiceUnavailableException", 503, None),
        (500, "InternalServerException", 500, None),
        (424, "ModelErrorException", 500, None),
    ] {
        let e = error(status, None, Some(class), br#"{"message":"m"}"#);
        assert_eq!((e.status, e.code.as_deref()), (want, code), "{class}");
        assert_eq!(e.message, "m");
    }
    // `Message` capitalised and the class in the body's `__type`.
    let e = error(
        403,
        None,
        None,
        br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","Message":"The security token included in the request is invalid."}"#,
    );
    assert_eq!(
        (e.status, e.error_type.as_deref()),
        (401, Some("authentication_error"))
    );
    assert!(e.message.contains("security token"));
    // Not Bedrock's shape (a proxy's page): kept as text.
    let e = error(502, None, None, b"Bad gateway");
    assert_eq!(e.status, 502);
    assert!(e.message.contains("Bad gateway"));
}
