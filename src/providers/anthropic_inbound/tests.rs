//! Fixtures written from Anthropic's Messages API reference (requests with
//! tools, images and thinking; the streaming event sequence; error shapes)
//! and OpenAI's chat completion and chunk examples for the gateway's side.

use super::*;
use crate::providers::params::ChatParams;
use crate::providers::{anthropic, AnswerCtx, Endpoint, StreamStep};
use crate::request::InferenceRequest;
use crate::topology::{DeploymentTarget, Topology};

fn translate_ok(body: &str) -> (Value, InboundInfo) {
    let (bytes, info) = to_openai_request(body.as_bytes()).unwrap();
    // Whatever we produce, the gateway's own parser must take.
    let req = InferenceRequest::parse(Endpoint::ChatCompletions, &bytes).unwrap();
    assert_eq!(req.stream, info.stream);
    (serde_json::from_slice(&bytes).unwrap(), info)
}

fn refused(body: &str) -> String {
    match to_openai_request(body.as_bytes()) {
        Err(e @ GatewayError::InvalidRequest { .. }) => e.to_string(),
        other => panic!("expected an invalid request error, got {other:?}"),
    }
}

fn anthropic_target() -> std::sync::Arc<DeploymentTarget> {
    let mut config = crate::config::Config::from_toml(
        r#"
[[models.claude.deployments]]
provider = "anthropic"
model = "claude-sonnet-4-5-20250929"
api_key = "sk-ant-test"
"#,
    )
    .unwrap();
    config.validate().unwrap();
    Topology::build(&config, None).deployments[0].clone()
}

/// Our OpenAI request as the outbound Anthropic adapter would send it on:
/// what an Anthropic client says must survive the trip there and back.
fn back_to_anthropic(openai_body: &Value) -> Value {
    let bytes = serde_json::to_vec(openai_body).unwrap();
    let req = InferenceRequest::parse(Endpoint::ChatCompletions, &bytes).unwrap();
    serde_json::from_slice(&anthropic::request(&req, &anthropic_target()).unwrap()).unwrap()
}

fn info(stream: bool) -> InboundInfo {
    InboundInfo {
        model: "claude-sonnet-4-5".into(),
        stream,
    }
}

#[test]
fn a_basic_request_maps_every_parameter() {
    let (b, i) = translate_ok(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
            "system":"You are terse.",
            "messages":[{"role":"user","content":"Hello, Claude"}],
            "temperature":0.7,"top_p":0.9,"top_k":40,
            "stop_sequences":["\n\nHuman:","END"],
            "metadata":{"user_id":"13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
            "stream":true,
            "thinking":{"type":"enabled","budget_tokens":2048}}"#,
    );
    assert_eq!(
        i,
        InboundInfo {
            model: "claude-sonnet-4-5".into(),
            stream: true
        }
    );
    assert_eq!(
        b,
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello, Claude"},
            ],
            "max_tokens": 1024,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "stop": ["\n\nHuman:", "END"],
            "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
            "stream": true,
            "stream_options": {"include_usage": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
        })
    );
}

#[test]
fn a_plain_request_gets_no_stream_options_and_disabled_thinking_is_left_out() {
    let (b, i) = translate_ok(
        r#"{"model":"claude-haiku-4-5","max_tokens":5,"stream":false,
            "thinking":{"type":"disabled"},"stop_sequences":[],"system":"",
            "messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"bye"}]}"#,
    );
    assert!(!i.stream);
    assert_eq!(
        b,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "bye"},
            ],
        })
    );
}

#[test]
fn system_blocks_keep_their_cache_control() {
    let (b, _) = translate_ok(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
            "system":[
              {"type":"text","text":"You are an AI assistant tasked with analyzing literary works."},
              {"type":"text","text":"<the entire contents of Pride and Prejudice>","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[
              {"type":"text","text":"Analyze the major themes.","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}"#,
    );
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "You are an AI assistant tasked with analyzing literary works."},
            {"type": "text", "text": "<the entire contents of Pride and Prejudice>", "cache_control": {"type": "ephemeral"}},
        ]})
    );
    assert_eq!(
        b["messages"][1]["content"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    // The outbound adapter puts the markers back where they were.
    let a = back_to_anthropic(&b);
    assert_eq!(
        a["system"][1]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(a["messages"][0]["content"][0]["cache_control"]["ttl"], "1h");
}

const TOOL_CONVERSATION: &str = r#"{
  "model": "claude-sonnet-4-5", "max_tokens": 1024,
  "tools": [
    {"name": "get_weather", "description": "Get the current weather in a given location",
     "input_schema": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}},
    {"name": "get_time", "description": "Get the current time in a given time zone",
     "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
     "cache_control": {"type": "ephemeral"}}],
  "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
  "messages": [
    {"role": "user", "content": "What's the weather like in San Francisco, and what time is it there?"},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "The user wants weather and time.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
      {"type": "thinking", "thinking": "Reasoning another provider gave, never signed."},
      {"type": "text", "text": "I'll check both."},
      {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
      {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {"timezone": "America/Los_Angeles"}}]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
      {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
       "content": [{"type": "text", "text": "time service unavailable"}, {"type": "text", "text": "retry later"}]},
      {"type": "text", "text": "Answer in one sentence."}]}]
}"#;

#[test]
fn a_tool_use_conversation_becomes_tool_calls_and_tool_messages() {
    let (b, _) = translate_ok(TOOL_CONVERSATION);
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(
        m[0],
        json!({"role": "user", "content": "What's the weather like in San Francisco, and what time is it there?"})
    );
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(
        m[1]["content"],
        json!([{"type": "text", "text": "I'll check both."}])
    );
    assert_eq!(
        m[1]["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "The user wants weather and time.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}]),
        "signed thinking is handed back, unsigned dropped"
    );
    let calls = m[1]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"})
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: time service unavailable\nretry later"})
    );
    assert_eq!(
        m[4],
        json!({"role": "user", "content": [{"type": "text", "text": "Answer in one sentence."}]})
    );
    assert_eq!(
        b["tools"][0],
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]},
        }})
    );
    assert_eq!(b["tools"][1]["function"]["name"], "get_time");
    assert_eq!(b["tool_choice"], "required");
    assert_eq!(b["parallel_tool_calls"], false);

    // The gateway's typed reading agrees.
    let req = InferenceRequest::parse(Endpoint::ChatCompletions, &serde_json::to_vec(&b).unwrap())
        .unwrap();
    let all = ["max_tokens", "tools", "tool_choice", "parallel_tool_calls"];
    let p = ChatParams::read(&req, "test", &all, false).unwrap();
    assert_eq!(p.messages.len(), 5);
    assert_eq!(p.messages[1].tool_calls.as_ref().unwrap().len(), 2);
}

#[test]
fn a_tool_use_conversation_survives_the_trip_to_an_anthropic_upstream() {
    let (b, _) = translate_ok(TOOL_CONVERSATION);
    let a = back_to_anthropic(&b);
    let m = a["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    let kinds: Vec<&str> = m[1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "tool_use"]);
    assert_eq!(
        m[1]["content"][0]["signature"],
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    );
    assert_eq!(
        m[1]["content"][2]["input"],
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(m[2]["role"], "user");
    assert_eq!(
        m[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"})
    );
    assert_eq!(m[2]["content"][1]["tool_use_id"], "toolu_01B");
    assert_eq!(m[2]["content"][2]["text"], "Answer in one sentence.");
    assert_eq!(
        a["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        a["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
}

#[test]
fn tool_results_come_before_the_rest_of_their_turn() {
    let (b, _) = translate_ok(
        r#"{"model":"m","max_tokens":10,"messages":[
            {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]},
            {"role":"user","content":[
              {"type":"text","text":"Here you go:"},
              {"type":"tool_result","tool_use_id":"toolu_1"}]}]}"#,
    );
    let m = &b["messages"];
    assert_eq!(m[0]["content"], Value::Null, "a call-only turn has no text");
    assert_eq!(m[0]["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(
        m[1],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": ""})
    );
    assert_eq!(m[2]["content"][0]["text"], "Here you go:");
}

#[test]
fn tool_choice_variants() {
    let with = |choice: &str| {
        let body = format!(
            r#"{{"model":"m","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}],
                "tools":[{{"name":"get_weather","input_schema":{{"type":"object"}}}}],"tool_choice":{choice}}}"#
        );
        translate_ok(&body).0
    };
    assert_eq!(with(r#"{"type":"auto"}"#)["tool_choice"], "auto");
    assert_eq!(with(r#"{"type":"none"}"#)["tool_choice"], "none");
    let named = with(r#"{"type":"tool","name":"get_weather"}"#);
    assert_eq!(
        named["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert!(named.get("parallel_tool_calls").is_none());
    assert_eq!(named["tools"][0]["function"].get("description"), None);
    // Without tools, OpenAI would refuse the choice; it means nothing anyway.
    let (b, _) = translate_ok(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],
            "tool_choice":{"type":"auto","disable_parallel_tool_use":true}}"#,
    );
    assert!(b.get("tool_choice").is_none() && b.get("parallel_tool_calls").is_none());
}

#[test]
fn images_and_documents_become_openai_parts() {
    let (b, _) = translate_ok(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQSkZJRg=="}},
            {"type":"image","source":{"type":"url","url":"https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0xLjQK"},"title":"report.pdf"},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"The grass is green."}},
            {"type":"text","text":"Describe these."}]}]}"#,
    );
    assert_eq!(
        b["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"}},
            {"type": "text", "text": "The grass is green."},
            {"type": "text", "text": "Describe these."},
        ])
    );
}

#[test]
fn images_survive_the_trip_to_an_anthropic_upstream() {
    let (b, _) = translate_ok(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
            {"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
            {"type":"text","text":"Same animal?"}]}]}"#,
    );
    let c = &back_to_anthropic(&b)["messages"][0]["content"];
    assert_eq!(
        c[0]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        c[1]["source"],
        json!({"type": "url", "url": "https://example.com/cat.png"})
    );
}

#[test]
fn images_returned_by_a_tool_follow_its_tool_message() {
    let (b, _) = translate_ok(
        r#"{"model":"m","max_tokens":10,"messages":[
            {"role":"assistant","content":[{"type":"tool_use","id":"toolu_s","name":"screenshot","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_s","content":[
              {"type":"text","text":"Screenshot taken"},
              {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}]}]}"#,
    );
    let m = b["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["content"], "Screenshot taken");
    assert_eq!(
        m[2],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]})
    );
}

#[test]
fn structured_output_formats_become_response_format() {
    for field in [
        r#""output_config":{"format":{"type":"json_schema","schema":{"type":"object","properties":{"name":{"type":"string"}}}}}"#,
        r#""output_format":{"type":"json_schema","schema":{"type":"object","properties":{"name":{"type":"string"}}}}"#,
    ] {
        let (b, _) = translate_ok(&format!(
            r#"{{"model":"m","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}],{field}}}"#
        ));
        assert_eq!(
            b["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output",
                "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}})
        );
    }
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    let msg = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not valid JSON"),
        ("[1,2]".into(), "must be a JSON object"),
        (format!(r#"{{"max_tokens":5,{msg}}}"#), "`model` is required"),
        (format!(r#"{{"model":7,"max_tokens":5,{msg}}}"#), "`model` must be a string"),
        (r#"{"model":"m","max_tokens":5}"#.into(), "`messages` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[]}"#.into(), "`messages` must not be empty"),
        (r#"{"model":"m","max_tokens":5,"messages":"hi"}"#.into(), "`messages` must be a list"),
        (format!(r#"{{"model":"m",{msg}}}"#), "`max_tokens` is required"),
        (format!(r#"{{"model":"m","max_tokens":"many",{msg}}}"#), "`max_tokens` must be a positive integer"),
        (format!(r#"{{"model":"m","max_tokens":0,{msg}}}"#), "`max_tokens` must be a positive integer"),
        (format!(r#"{{"model":"m","max_tokens":5,"temperature":"hot",{msg}}}"#), "`temperature` must be a number"),
        (format!(r#"{{"model":"m","max_tokens":5,"top_k":-1,{msg}}}"#), "`top_k` must be a non-negative integer"),
        (format!(r#"{{"model":"m","max_tokens":5,"stream":"yes",{msg}}}"#), "`stream` must be a boolean"),
        (format!(r#"{{"model":"m","max_tokens":5,"stop_sequences":"END",{msg}}}"#), "`stop_sequences` must be a list of strings"),
        (format!(r#"{{"model":"m","max_tokens":5,"system":5,{msg}}}"#), "`system` must be a string"),
        (format!(r#"{{"model":"m","max_tokens":5,"system":[{{"type":"image"}}],{msg}}}"#), "`system[0].type` must be text"),
        (format!(r#"{{"model":"m","max_tokens":5,"metadata":{{"user_id":5}},{msg}}}"#), "`metadata.user_id` must be a string"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#.into(), "`messages[0].role` must be user or assistant"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"content":"x"}]}"#.into(), "`messages[0].role` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}"#.into(), "`messages[0].content` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}"#.into(), "`messages[0].content` must be a string or a list"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]}"#.into(), "`messages[0].content` must not be empty"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"video"}]}]}"#.into(), "`messages[0].content[0].type` \"video\" is not supported"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#.into(), "`messages[0].content[0].type` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}"#.into(), "`messages[0].content[0].text` must be a string"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}]}"#.into(), "`messages[0].content[0]`: tool_use blocks belong in assistant turns"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}]}"#.into(), "`messages[0].content[0].id` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"image","source":{}}]}]}"#.into(), "`messages[0].content[0].type` \"image\" is not supported in assistant turns"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}"#.into(), "`messages[0].content[0].tool_use_id` is required"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"file_01"}}]}]}"#.into(), "`messages[0].content[0].source.type` \"file\" is not supported"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"x"}}]}]}"#.into(), "`messages[0].content[0].source.media_type` is required"),
        (format!(r#"{{"model":"m","max_tokens":5,"tools":[{{"type":"web_search_20250305","name":"web_search","max_uses":5}}],{msg}}}"#), "`tools[0].type` \"web_search_20250305\" is not supported"),
        (format!(r#"{{"model":"m","max_tokens":5,"tools":[{{"name":"f"}}],{msg}}}"#), "`tools[0].input_schema` is required"),
        (format!(r#"{{"model":"m","max_tokens":5,"tools":{{}},{msg}}}"#), "`tools` must be a list"),
        (format!(r#"{{"model":"m","max_tokens":5,"tool_choice":{{"type":"sometimes"}},{msg}}}"#), "`tool_choice.type` must be auto, any, tool or none"),
        (format!(r#"{{"model":"m","max_tokens":5,"tool_choice":{{"type":"tool"}},{msg}}}"#), "`tool_choice.name` is required"),
        (format!(r#"{{"model":"m","max_tokens":5,"thinking":true,{msg}}}"#), "`thinking` must be an object"),
        (format!(r#"{{"model":"m","max_tokens":5,"output_format":{{"type":"regex"}},{msg}}}"#), "`output_format.type` \"regex\" is not supported"),
        (format!(r#"{{"model":"m","max_tokens":5,"mcp_servers":[{{"type":"url","url":"https://x","name":"x"}}],{msg}}}"#), "`mcp_servers` is not supported"),
    ];
    for (body, expected) in cases {
        let err = refused(&body);
        assert!(
            err.contains(expected),
            "{body}\n  gave: {err}\n  expected: {expected}"
        );
    }
}

#[test]
fn the_typed_params_name_the_field_too() {
    let GatewayError::InvalidRequest { param, .. } =
        to_openai_request(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err()
    else {
        panic!("invalid request expected")
    };
    assert_eq!(param, Some("max_tokens"));
}

// ---------------------------------------------------------------------------
// Answers.

fn answer(openai: &str) -> Value {
    serde_json::from_slice(&to_anthropic_response(openai.as_bytes(), &info(false)).unwrap())
        .unwrap()
}

#[test]
fn a_documented_chat_completion_becomes_a_message() {
    let a = answer(
        r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,
            "model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant",
            "content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
              "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
              "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
            "service_tier":"default"}"#,
    );
    assert_eq!(
        a,
        json!({
            "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 19, "output_tokens": 10,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })
    );
}

#[test]
fn tool_calls_become_tool_use_blocks_and_cached_tokens_leave_input_tokens() {
    let a = answer(
        r#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1699896916,"model":"gpt-4o-mini",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
              {"id":"call_abc123","type":"function","function":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}},
              {"id":"call_def456","type":"function","function":{"name":"get_time","arguments":"{\"timezone\": \"America/New_Yo"}}]},
              "logprobs":null,"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":2000,"completion_tokens":40,"total_tokens":2040,
              "prompt_tokens_details":{"cached_tokens":1500},"cache_creation_input_tokens":300}}"#,
    );
    assert_eq!(a["id"], "msg_abc123");
    assert_eq!(
        a["content"],
        json!([
            {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}},
            {"type": "tool_use", "id": "call_def456", "name": "get_time", "input": {}},
        ])
    );
    assert_eq!(a["stop_reason"], "tool_use");
    assert_eq!(
        a["usage"],
        json!({"input_tokens": 200, "output_tokens": 40,
               "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1500})
    );
}

#[test]
fn an_anthropic_answer_comes_back_whole_through_the_gateway() {
    // Anthropic's documented answer, turned into OpenAI's by the outbound
    // adapter, then back: thinking with its signature, text, tool use and
    // cache usage all as they were.
    let original = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "text", "text": "I'll look that up."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503,
                  "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000},
    });
    let ctx = AnswerCtx {
        id: "chatcmpl-req1".into(),
        created: 1_700_000_000,
        model: "claude-sonnet-4-5-20250929".into(),
        wants_usage: false,
    };
    let (openai, _) = anthropic::response(&serde_json::to_vec(&original).unwrap(), &ctx).unwrap();
    let back: Value =
        serde_json::from_slice(&to_anthropic_response(&openai, &info(false)).unwrap()).unwrap();
    assert_eq!(back["id"], original["id"]);
    assert_eq!(back["content"], original["content"]);
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(back["usage"], original["usage"]);
    assert_eq!(
        back["model"], "claude-sonnet-4-5",
        "the model as the client named it"
    );
}

#[test]
fn reasoning_content_becomes_an_unsigned_thinking_block() {
    let a = answer(
        r#"{"id":"chatcmpl-r1","object":"chat.completion","model":"deepseek-reasoner",
            "choices":[{"index":0,"message":{"role":"assistant","reasoning_content":"9.11 < 9.9 because 0.11 < 0.9.",
              "content":"9.9 is larger."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#,
    );
    assert_eq!(
        a["content"],
        json!([
            {"type": "thinking", "thinking": "9.11 < 9.9 because 0.11 < 0.9.", "signature": ""},
            {"type": "text", "text": "9.9 is larger."},
        ])
    );
}

#[test]
fn finish_reasons_map_to_stop_reasons() {
    let with = |finish: &str, message: &str| {
        answer(&format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"message":{message},"finish_reason":{finish}}}]}}"#
        ))
    };
    let text = r#"{"role":"assistant","content":"Once upon a"}"#;
    assert_eq!(with(r#""length""#, text)["stop_reason"], "max_tokens");
    assert_eq!(with(r#""content_filter""#, text)["stop_reason"], "refusal");
    assert_eq!(with(r#""stop""#, text)["stop_reason"], "end_turn");
    assert_eq!(with("null", text)["stop_reason"], "end_turn");
    // A tool-calling answer finished with `stop` (Gemini does) is still tool use.
    let call = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#;
    let a = with(r#""stop""#, call);
    assert_eq!(a["stop_reason"], "tool_use");
    assert_eq!(
        a["content"],
        json!([{"type": "tool_use", "id": "c1", "name": "f", "input": {}}])
    );
    // OpenAI's refusal field.
    let a = with(
        r#""stop""#,
        r#"{"role":"assistant","content":null,"refusal":"I can't help with that."}"#,
    );
    assert_eq!(a["stop_reason"], "refusal");
    assert_eq!(
        a["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    // Nothing at all: still a text block for clients reading content[0].
    let a = with(r#""stop""#, r#"{"role":"assistant","content":""}"#);
    assert_eq!(a["content"], json!([{"type": "text", "text": ""}]));
    assert_eq!(a["usage"]["input_tokens"], 0);
}

#[test]
fn a_body_that_is_not_a_chat_completion_is_an_error() {
    for body in [&b"<html>"[..], br#"{"id":"x"}"#, br#"{"choices":[]}"#, b""] {
        assert!(to_anthropic_response(body, &info(false)).is_err());
    }
}

#[test]
fn error_bodies_by_status() {
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let b: Value = serde_json::from_slice(&error_body(status, "Overloaded \"x\"")).unwrap();
        assert_eq!(
            b,
            json!({"type": "error", "error": {"type": kind, "message": "Overloaded \"x\""}}),
            "status {status}"
        );
    }
}

#[test]
fn count_tokens_text_covers_system_messages_and_tools() {
    let text = count_tokens_text(
        br#"{"model":"claude-sonnet-4-5","system":"Be brief.",
            "tools":[{"name":"get_weather","description":"Weather by city","input_schema":{"type":"object"}}],
            "messages":[
              {"role":"user","content":"Weather in Paris?"},
              {"role":"assistant","content":[{"type":"thinking","thinking":"Use the tool.","signature":"sig"},
                {"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"18C"},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        text,
        "Be brief.\nWeather in Paris?\nget_weather\n{\"city\":\"Paris\"}\nUse the tool.\n18C\nget_weather\nWeather by city\n{\"type\":\"object\"}\n"
    );
    assert!(crate::tokens::count(&text) > 10);
    let err = count_tokens_text(br#"{"model":"m"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`messages`"), "{err}");
}

// ---------------------------------------------------------------------------
// Streams.

fn frame(v: Value) -> String {
    String::from_utf8(openai::sse_frame(v.to_string().as_bytes()).to_vec()).unwrap()
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    frame(json!({
        "id": "chatcmpl-9xQ7", "object": "chat.completion.chunk", "created": 1727000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_5f20662549",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null,
    }))
}

fn usage_chunk(usage: Value) -> String {
    frame(json!({
        "id": "chatcmpl-9xQ7", "object": "chat.completion.chunk", "created": 1727000000,
        "model": "gpt-4o-2024-08-06", "choices": [], "usage": usage,
    }))
}

const DONE: &str = "data: [DONE]\n\n";

/// The gateway's stream for an answer with reasoning, text and two tool
/// calls, ending with the usage chunk as `include_usage` makes it.
fn tool_stream() -> String {
    [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"reasoning_content": "The user wants"}), None),
        chunk(json!({"reasoning_content": " the weather."}), None),
        chunk(json!({"content": "Let me "}), None),
        chunk(json!({"content": "check — ☀️?"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"lo"}}]}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "cation\": \"Paris, France\"}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_Ab3", "type": "function",
                                   "function": {"name": "get_time", "arguments": "{\"timezone\": "}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"Europe/Paris\"}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(json!({"prompt_tokens": 1200, "completion_tokens": 64, "total_tokens": 1264,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0}})),
        DONE.to_string(),
    ]
    .concat()
}

fn run<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut t = StreamTranslator::new(&info(true));
    let mut out = Vec::new();
    for p in pieces {
        out.extend(t.push(p).unwrap());
    }
    out.extend(t.finish());
    assert!(t.finish().is_empty(), "finish owes nothing twice");
    out
}

/// Anthropic SSE parsed into (event name, data), checking the framing.
fn events(sse: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(sse).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
    text.split_terminator("\n\n")
        .map(|ev| {
            let (name, data) = ev.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "event name and data type agree");
            (name.to_string(), data)
        })
        .collect()
}

fn names(evs: &[(String, Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn a_tool_stream_becomes_anthropic_events_in_order() {
    let wire = tool_stream();
    let evs = events(&run([wire.as_bytes()]));
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        evs[0].1,
        json!({"type": "message_start", "message": {
            "id": "msg_9xQ7", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
    );
    assert_eq!(
        evs[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    );
    assert_eq!(
        evs[2].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "The user wants"}})
    );
    assert_eq!(evs[4].1, json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        evs[5].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = evs[6..8]
        .iter()
        .map(|(_, d)| {
            assert_eq!(
                (d["index"].as_u64(), d["delta"]["type"].as_str()),
                (Some(1), Some("text_delta"))
            );
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "Let me check — ☀️?");
    assert_eq!(
        evs[9].1,
        json!({"type": "content_block_start", "index": 2, "content_block":
            {"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {}}})
    );
    let args = |from: usize, index: u64| -> Value {
        let json: String = evs[from..from + 2]
            .iter()
            .map(|(_, d)| {
                assert_eq!(d["index"], index);
                assert_eq!(d["delta"]["type"], "input_json_delta");
                d["delta"]["partial_json"].as_str().unwrap().to_string()
            })
            .collect();
        serde_json::from_str(&json).unwrap()
    };
    assert_eq!(args(10, 2), json!({"location": "Paris, France"}));
    assert_eq!(evs[13].1["content_block"]["name"], "get_time");
    assert_eq!(evs[13].1["index"], 3);
    assert_eq!(args(14, 3), json!({"timezone": "Europe/Paris"}));
    assert_eq!(evs[16].1, json!({"type": "content_block_stop", "index": 3}));
    assert_eq!(
        evs[17].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 176, "output_tokens": 64,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024}})
    );
    assert_eq!(evs[18].1, json!({"type": "message_stop"}));
}

#[test]
fn the_stream_is_translated_the_same_wherever_it_is_cut() {
    let wire = tool_stream();
    let bytes = wire.as_bytes();
    let reference = run([bytes]);
    for cut in 0..=bytes.len() {
        assert_eq!(
            run([&bytes[..cut], &bytes[cut..]]),
            reference,
            "cut at byte {cut}"
        );
    }
    assert_eq!(run(bytes.chunks(1)), reference, "one byte at a time");
    assert_eq!(run(bytes.chunks(7)), reference, "seven bytes at a time");
}

#[test]
fn message_delta_waits_for_the_usage_chunk_or_done() {
    let mut t = StreamTranslator::new(&info(true));
    let first = events(
        &t.push(chunk(json!({"role": "assistant", "content": "Hi"}), None).as_bytes())
            .unwrap(),
    );
    assert_eq!(
        names(&first),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    let at_finish = events(&t.push(chunk(json!({}), Some("length")).as_bytes()).unwrap());
    assert_eq!(
        names(&at_finish),
        ["content_block_stop"],
        "message_delta is held"
    );
    let at_usage = events(
        &t.push(
            usage_chunk(json!({"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}))
                .as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(
        at_usage[0].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
               "usage": {"input_tokens": 9, "output_tokens": 1,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
    );
    assert_eq!(
        names(&events(&t.push(DONE.as_bytes()).unwrap())),
        ["message_stop"]
    );
    assert!(t
        .push(chunk(json!({"content": "late"}), None).as_bytes())
        .unwrap()
        .is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn without_a_usage_chunk_done_closes_with_zero_output_tokens() {
    let wire = [
        chunk(json!({"role": "assistant", "content": "Hello"}), None),
        chunk(json!({}), Some("stop")),
        DONE.to_string(),
    ]
    .concat();
    let evs = events(&run([wire.as_bytes()]));
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        evs[4].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 0}})
    );
}

#[test]
fn usage_known_at_the_start_goes_in_message_start() {
    // Some servers report usage on every chunk.
    let wire = frame(
        json!({"id": "chatcmpl-u", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31, "prompt_tokens_details": {"cached_tokens": 10}}}),
    ) + DONE;
    let evs = events(&run([wire.as_bytes()]));
    assert_eq!(evs[0].1["message"]["usage"]["input_tokens"], 20);
    assert_eq!(evs[0].1["message"]["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(evs[4].1["usage"]["output_tokens"], 1);
    assert_eq!(names(&evs).last(), Some(&"message_stop"));
}

#[test]
fn a_cut_stream_closes_its_block_and_ends_with_an_error() {
    let wire = tool_stream();
    // Cut inside the second tool call's arguments, and inside an event.
    let at = wire.find("\"Europe/Paris\\\"}").unwrap();
    for cut in [wire[..at].rfind("\n\n").unwrap() + 2, at] {
        let evs = events(&run([&wire.as_bytes()[..cut]]));
        let n = names(&evs);
        assert_eq!(
            n[n.len() - 2..],
            ["content_block_stop", "error"],
            "cut at {cut}"
        );
        assert!(!n.contains(&"message_stop") && !n.contains(&"message_delta"));
        assert_eq!(evs[evs.len() - 2].1["index"], 3);
        assert_eq!(evs.last().unwrap().1["error"]["type"], "api_error");
    }
    // Cut after the usage chunk: complete but for [DONE], still a failure.
    let cut = wire.find(DONE).unwrap();
    let n = names(&events(&run([&wire.as_bytes()[..cut]]))).join(",");
    assert!(n.ends_with("message_delta,error"), "{n}");
    // Nothing at all came: only the error.
    assert_eq!(names(&events(&run([&b""[..]]))), ["error"]);
}

#[test]
fn an_error_event_from_the_gateway_becomes_an_anthropic_error() {
    let wire = chunk(json!({"role": "assistant", "content": "Partial"}), None)
        + "data: {\"error\":{\"message\":\"the upstream failed mid-stream (overloaded_error): Overloaded\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n"
        + &chunk(json!({"content": "never seen"}), None);
    let mut t = StreamTranslator::new(&info(true));
    let evs = events(&t.push(wire.as_bytes()).unwrap());
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "error"
        ]
    );
    assert_eq!(
        evs[4].1,
        json!({"type": "error", "error": {"type": "api_error",
            "message": "the upstream failed mid-stream (overloaded_error): Overloaded"}})
    );
    assert!(t.push(DONE.as_bytes()).unwrap().is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn a_non_json_event_fails_the_stream() {
    let wire = chunk(json!({"content": "a"}), None) + "data: {\"choices\": [trunc\n\n";
    let evs = events(&run([wire.as_bytes()]));
    assert_eq!(names(&evs).last(), Some(&"error"));
    assert_eq!(names(&evs).iter().filter(|n| **n == "error").count(), 1);
}

#[test]
fn relayed_thinking_signatures_and_redacted_blocks_are_kept() {
    let wire = [
        chunk(json!({"role": "assistant", "reasoning_content": "Hmm."}), None),
        chunk(json!({"thinking_blocks": [{"type": "thinking", "thinking": "Hmm.", "signature": "EqQBCgIY"}]}), None),
        chunk(json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "EmwKAhgB"}]}), None),
        chunk(json!({"content": "Done."}), Some("stop")),
        DONE.to_string(),
    ]
    .concat();
    let evs = events(&run([wire.as_bytes()]));
    let d: Vec<&Value> = evs.iter().map(|(_, d)| d).collect();
    assert_eq!(
        d[3]["delta"],
        json!({"type": "signature_delta", "signature": "EqQBCgIY"})
    );
    assert_eq!(d[3]["index"], 0);
    assert_eq!(d[4], &json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        d[5],
        &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"}})
    );
    assert_eq!(d[6], &json!({"type": "content_block_stop", "index": 1}));
    assert_eq!(d[7]["content_block"]["type"], "text");
    assert_eq!(d[7]["index"], 2);
}

#[test]
fn interleaved_tool_calls_fail_rather_than_corrupt_arguments() {
    let call = |i: u64, id: Option<&str>, args: &str| {
        let mut c = json!({"index": i, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = id.into();
            c["function"]["name"] = "f".into();
        }
        chunk(json!({"tool_calls": [c]}), None)
    };
    let wire = [
        call(0, Some("call_a"), "{\"x\":"),
        call(1, Some("call_b"), "{}"),
        call(0, None, "1}"),
    ]
    .concat();
    let evs = events(&run([wire.as_bytes()]));
    let (last, data) = evs.last().unwrap();
    assert_eq!(last, "error");
    assert!(data["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interleaved"));
}

#[test]
fn tool_calls_without_index_or_id_still_get_their_own_blocks() {
    // Gemini's OpenAI endpoint sends whole calls without `index`.
    let wire = [
        chunk(json!({"tool_calls": [{"id": "c1", "function": {"name": "a", "arguments": "{}"}}]}), None),
        chunk(json!({"tool_calls": [{"id": "c2", "function": {"name": "b", "arguments": "{\"k\":1}"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 2, "function": {"name": "c", "arguments": "{}"}}]}), Some("tool_calls")),
        DONE.to_string(),
    ]
    .concat();
    let evs = events(&run([wire.as_bytes()]));
    let starts: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        (starts[0]["id"].as_str(), starts[0]["name"].as_str()),
        (Some("c1"), Some("a"))
    );
    assert_eq!(
        (starts[1]["id"].as_str(), starts[1]["name"].as_str()),
        (Some("c2"), Some("b"))
    );
    assert_eq!(
        starts[2]["id"], "toolu_9xQ7_2",
        "a stable id for a call sent without one"
    );
}

#[test]
fn an_anthropic_upstream_stream_comes_back_as_anthropic_events() {
    // Anthropic's documented tool-use stream, turned into OpenAI chunks by
    // the outbound adapter (as the gateway would), then back.
    let upstream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_read_input_tokens\":28}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check the weather for San Francisco, CA:\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";
    let mut state = anthropic::StreamState::new(AnswerCtx {
        id: "chatcmpl-req1".into(),
        created: 1_700_000_000,
        model: "claude-sonnet-4-5-20250929".into(),
        wants_usage: true,
    });
    let mut steps = Vec::new();
    state.push(upstream.as_bytes(), &mut steps).unwrap();
    state.finish(&mut steps).unwrap();
    let gateway: Vec<u8> = steps
        .into_iter()
        .filter_map(|s| match s {
            StreamStep::Forward(b) | StreamStep::Done(b) => Some(b),
            StreamStep::Usage { forward, .. } => forward,
            other => panic!("unexpected step {other:?}"),
        })
        .flat_map(|b| b.to_vec())
        .collect();

    let evs = events(&run([gateway.as_slice()]));
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(evs[0].1["message"]["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(
        evs[2].1["delta"]["text"],
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(
        evs[4].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}})
    );
    let args: String = evs[5..7]
        .iter()
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, r#"{"location": "San Francisco, CA"}"#);
    assert_eq!(
        evs[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 472, "output_tokens": 89,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 28}})
    );
}
