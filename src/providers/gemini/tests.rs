//! Fixtures written from Google's Gemini API reference (generateContent
//! and streamGenerateContent request and response bodies, function
//! calling, structured output, thinking, batchEmbedContents, error shapes).

use super::*;
use crate::providers::test_support::chunks;
use crate::providers::Endpoint;
use crate::topology::Topology;

fn target_for(model: &str, drop_params: bool) -> std::sync::Arc<DeploymentTarget> {
    let mut config = crate::config::Config::from_toml(&format!(
        r#"
drop_params = {drop_params}
[[models.g.deployments]]
provider = "gemini"
model = "{model}"
api_key = "AIza-test"
"#
    ))
    .unwrap();
    config.validate().unwrap();
    Topology::build(&config, None).deployments[0].clone()
}

fn try_body(endpoint: Endpoint, json: &str, drop_params: bool) -> Result<Value, GatewayError> {
    let req = InferenceRequest::parse(endpoint, json.as_bytes()).unwrap();
    let model = match endpoint {
        Endpoint::Embeddings => "gemini-embedding-001",
        _ => "gemini-2.5-flash",
    };
    request(&req, &target_for(model, drop_params)).map(|b| serde_json::from_slice(&b).unwrap())
}

fn body(json: &str) -> Value {
    try_body(Endpoint::ChatCompletions, json, false).unwrap()
}

fn ctx(wants_usage: bool) -> AnswerCtx {
    AnswerCtx {
        id: "chatcmpl-req1".into(),
        created: 1_700_000_000,
        model: "gemini-2.5-flash".into(),
        wants_usage,
    }
}

fn answer(body: &[u8]) -> (Value, Option<Usage>) {
    let (out, usage) = response(Endpoint::ChatCompletions, body, &ctx(false)).unwrap();
    (serde_json::from_slice(&out).unwrap(), usage)
}

#[test]
fn a_plain_chat_becomes_contents_and_generation_config() {
    let b = body(
        r#"{"model":"g","messages":[
            {"role":"system","content":"You are a cat. Your name is Neko."},
            {"role":"developer","content":[{"type":"text","text":"Answer in English."}]},
            {"role":"user","content":"Hello there"}],
          "temperature":0.7,"top_p":0.9,"top_k":40,"max_tokens":800,"stop":["\n\n","END"],
          "n":2,"seed":42,"presence_penalty":0.5,"frequency_penalty":-0.25,"user":"u-1",
          "stream":false,"metadata":{"trace":"t"}}"#,
    );
    assert_eq!(
        b,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
            "systemInstruction": {"parts": [
                {"text": "You are a cat. Your name is Neko."},
                {"text": "Answer in English."}]},
            "generationConfig": {
                "temperature": 0.7, "topP": 0.9, "topK": 40, "maxOutputTokens": 800,
                "stopSequences": ["\n\n", "END"], "candidateCount": 2, "seed": 42,
                "presencePenalty": 0.5, "frequencyPenalty": -0.25,
            },
        })
    );
}

#[test]
fn turns_alternate_with_same_role_neighbours_merged() {
    let b = body(
        r#"{"model":"g","max_completion_tokens":5,"max_tokens":9,"messages":[
            {"role":"user","content":"Hello"},
            {"role":"user","content":"Are you there?"},
            {"role":"assistant","content":"Great to meet you."},
            {"role":"assistant","content":""},
            {"role":"user","content":"I have two dogs in my house."}]}"#,
    );
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hello"}, {"text": "Are you there?"}]},
            {"role": "model", "parts": [{"text": "Great to meet you."}]},
            {"role": "user", "parts": [{"text": "I have two dogs in my house."}]},
        ])
    );
    assert_eq!(b["generationConfig"], json!({"maxOutputTokens": 5}));
    assert!(b.get("systemInstruction").is_none());
}

#[test]
fn a_prompt_given_only_as_system_is_sent_as_the_user_turn() {
    let b = body(r#"{"model":"g","messages":[{"role":"system","content":"Tell a joke."}]}"#);
    assert_eq!(
        b["contents"],
        json!([{"role": "user", "parts": [{"text": "Tell a joke."}]}])
    );
    assert!(b.get("systemInstruction").is_none());
}

#[test]
fn images_go_inline_or_as_file_uris_with_a_guessed_type() {
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":[
            {"type":"text","text":"Caption these."},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}},
            {"type":"image_url","image_url":"https://example.com/photos/cat.WEBP?size=large#top"},
            {"type":"image_url","image_url":{"url":"https://example.com/render"}}]}]}"#,
    );
    assert_eq!(
        b["contents"][0]["parts"],
        json!([
            {"text": "Caption these."},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/photos/cat.WEBP?size=large#top"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
        ])
    );
    let err = try_body(
        Endpoint::ChatCompletions,
        r#"{"model":"g","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}}]}]}"#,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("messages[0]"), "{err}");
}

const WEATHER_TOOL: &str = r#"{"type":"function","function":{"name":"get_current_weather",
    "description":"Get the current weather in a given location",
    "parameters":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
      "properties":{
        "location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},
        "unit":{"type":["string","null"],"enum":["celsius","fahrenheit",null]},
        "days":{"type":"integer","exclusiveMinimum":0,"examples":[3]},
        "tags":{"type":"array","items":{"type":"string","const":"x"}},
        "where":{"anyOf":[{"type":"object","properties":{"lat":{"type":"number"}},"additionalProperties":false},{"type":"null"}],"description":"Coordinates"}},
      "required":["location"],"additionalProperties":false}}}"#;

#[test]
fn tools_are_declared_with_parameters_gemini_accepts() {
    let b = body(&format!(
        r#"{{"model":"g","messages":[{{"role":"user","content":"Weather in Boston?"}}],
          "tools":[{WEATHER_TOOL},
            {{"type":"function","function":{{"name":"get_time"}}}},
            {{"type":"function","function":{{"name":"ping","parameters":{{"type":"object","properties":{{}}}}}}}}],
          "tool_choice":{{"type":"function","function":{{"name":"get_current_weather"}}}}}}"#
    ));
    let decls = &b["tools"][0]["functionDeclarations"];
    assert_eq!(
        decls[0],
        json!({
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "nullable": true},
                    "days": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string", "enum": ["x"]}},
                    "where": {"type": "object", "properties": {"lat": {"type": "number"}},
                              "description": "Coordinates", "nullable": true},
                },
                "required": ["location"],
            },
        })
    );
    assert_eq!(decls[1], json!({"name": "get_time"}));
    assert_eq!(
        decls[2],
        json!({"name": "ping"}),
        "an empty object is refused by Gemini"
    );
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_current_weather"]}})
    );
}

#[test]
fn tool_choice_modes_map_to_function_calling_modes() {
    for (choice, mode) in [("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")] {
        let b = body(&format!(
            r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}],"tools":[{WEATHER_TOOL}],"tool_choice":"{choice}"}}"#
        ));
        assert_eq!(
            b["toolConfig"]["functionCallingConfig"],
            json!({"mode": mode})
        );
    }
    let b = body(&format!(
        r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}],"tools":[{WEATHER_TOOL}],"parallel_tool_calls":true}}"#
    ));
    assert!(b.get("toolConfig").is_none());
}

#[test]
fn schemas_with_refs_go_as_json_schema() {
    let b = body(
        r##"{"model":"g","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"tree",
            "parameters":{"type":"object","properties":{"root":{"$ref":"#/$defs/Node"}},
              "$defs":{"Node":{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#/$defs/Node"}}}}}}}}]}"##,
    );
    let d = &b["tools"][0]["functionDeclarations"][0];
    assert!(d.get("parameters").is_none());
    assert_eq!(d["parametersJsonSchema"]["$defs"]["Node"]["type"], "object");
    assert_eq!(
        d["parametersJsonSchema"]["properties"]["root"]["$ref"],
        "#/$defs/Node"
    );
}

#[test]
fn tool_calls_and_results_become_function_call_and_response_parts() {
    let b = body(
        r#"{"model":"g","messages":[
            {"role":"user","content":"Weather in Paris and the time?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_0__thought__CiIBVKhc7oDW","type":"function","function":{"name":"get_current_weather","arguments":"{\"location\":\"Paris\"}"}},
                {"id":"call_1","type":"function","function":{"name":"get_time","arguments":""}}]},
            {"role":"tool","tool_call_id":"call_0__thought__CiIBVKhc7oDW","content":"{\"temperature\":18,\"unit\":\"celsius\"}"},
            {"role":"tool","tool_call_id":"call_1","content":"noon"},
            {"role":"user","content":"Thanks. Again?"},
            {"role":"assistant","tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_date","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"May 2"}]}"#,
    );
    let c = b["contents"].as_array().unwrap();
    assert_eq!(c.len(), 5);
    assert_eq!(
        c[1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_current_weather", "args": {"location": "Paris"}},
             "thoughtSignature": "CiIBVKhc7oDW"},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]})
    );
    assert_eq!(
        c[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_current_weather",
                                  "response": {"content": {"temperature": 18, "unit": "celsius"}}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
            {"text": "Thanks. Again?"},
        ]}),
        "results share the user turn that follows them"
    );
    assert_eq!(
        c[4]["parts"][0]["functionResponse"],
        json!({"name": "get_date", "response": {"content": "May 2"}}),
        "a reused id names the latest call"
    );
}

#[test]
fn a_tool_result_without_a_matching_call_is_refused() {
    let err = try_body(
        Endpoint::ChatCompletions,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","content":"x"}]}"#,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("messages[1]") && err.contains("tool_call_id"),
        "{err}"
    );
}

#[test]
fn function_calls_come_back_as_tool_calls_that_round_trip() {
    // Shape from the function calling guide; the first call of a thinking
    // model carries its thought signature.
    let (out, usage) = answer(
        br#"{"candidates":[{"content":{"parts":[
              {"functionCall":{"name":"get_current_weather","args":{"location":"Boston, MA"}},"thoughtSignature":"CiIBVKhc7oDW"},
              {"functionCall":{"name":"get_time","args":{}}}],"role":"model"},
            "finishReason":"STOP","index":0}],
          "usageMetadata":{"promptTokenCount":76,"candidatesTokenCount":18,"totalTokenCount":150,"thoughtsTokenCount":56},
          "modelVersion":"gemini-2.5-flash","responseId":"Yb5jaKzIJ8W3nvgPqtqL2Ag"}"#,
    );
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["id"], "call_0__thought__CiIBVKhc7oDW");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_current_weather");
    assert_eq!(
        calls[0]["function"]["arguments"],
        r#"{"location":"Boston, MA"}"#
    );
    assert_eq!(calls[1]["id"], "call_1");
    assert_eq!(calls[1]["function"]["arguments"], "{}");
    let u = usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
        (76, 74, 56)
    );

    // The client sends the calls back as it got them.
    let history = json!({"model": "g", "messages": [
        {"role": "user", "content": "Weather?"},
        choice["message"].clone(),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"},
    ]});
    let b = body(&history.to_string());
    let parts = &b["contents"][1]["parts"];
    assert_eq!(parts[0]["thoughtSignature"], "CiIBVKhc7oDW");
    assert_eq!(
        parts[0]["functionCall"]["args"],
        json!({"location": "Boston, MA"})
    );
    assert!(parts[1].get("thoughtSignature").is_none());
    assert_eq!(
        b["contents"][2]["parts"][1]["functionResponse"]["name"],
        "get_time"
    );
}

#[test]
fn json_schema_is_asked_for_as_a_json_schema_response() {
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":"List a few cookie recipes."}],
          "response_format":{"type":"json_schema","json_schema":{"name":"recipes","strict":true,
            "schema":{"type":"array","items":{"type":"object","properties":{"recipeName":{"type":"string"}},
                      "required":["recipeName"],"additionalProperties":false}}}}}"#,
    );
    assert_eq!(
        b["generationConfig"],
        json!({
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "array", "items": {"type": "object",
                "properties": {"recipeName": {"type": "string"}},
                "required": ["recipeName"], "additionalProperties": false}},
        })
    );
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
    );
    assert_eq!(
        b["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}"#,
    );
    assert!(b.get("generationConfig").is_none());
}

#[test]
fn reasoning_effort_and_thinking_set_a_thinking_budget() {
    for (effort, budget) in [("low", 1024), ("medium", 2048), ("high", 4096)] {
        let b = body(&format!(
            r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}],"reasoning_effort":"{effort}"}}"#
        ));
        assert_eq!(
            b["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": budget, "includeThoughts": true})
        );
    }
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"none"}"#,
    );
    assert_eq!(
        b["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0})
    );
    let b = body(
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"low",
            "thinking":{"type":"enabled","budget_tokens":8000}}"#,
    );
    assert_eq!(
        b["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8000, "includeThoughts": true})
    );
    let err = try_body(
        Endpoint::ChatCompletions,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"max"}"#,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("reasoning_effort"), "{err}");
}

#[test]
fn unsupported_parameters_are_refused_by_name_or_dropped() {
    let json = r#"{"model":"g","messages":[{"role":"user","content":"hi"}],
        "logprobs":true,"logit_bias":{"50256":-100},"parallel_tool_calls":false,"temperature":0.1}"#;
    let err = try_body(Endpoint::ChatCompletions, json, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("logprobs") && err.contains("logit_bias"),
        "{err}"
    );
    assert!(err.contains("drop_params"), "{err}");
    let b = try_body(Endpoint::ChatCompletions, json, true).unwrap();
    assert_eq!(
        b,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"temperature": 0.1},
        })
    );
    let err = try_body(
        Endpoint::ChatCompletions,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":false}"#,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("parallel_tool_calls"), "{err}");
}

#[test]
fn a_documented_answer_with_thoughts_and_cached_tokens() {
    let (out, usage) = answer(
        br#"{"candidates":[{"content":{"parts":[
              {"text":"**Weighing the options**\nThe user wants a short answer.","thought":true},
              {"text":"AI learns patterns "},{"text":"from data."}],"role":"model"},
            "finishReason":"STOP","index":0,
            "safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"NEGLIGIBLE"}]}],
          "usageMetadata":{"promptTokenCount":2100,"candidatesTokenCount":7,"totalTokenCount":2407,
            "cachedContentTokenCount":2048,"thoughtsTokenCount":300,
            "promptTokensDetails":[{"modality":"TEXT","tokenCount":2100}]},
          "modelVersion":"gemini-2.5-flash-preview-05-20","responseId":"mAitaLmkHPPlz7IPvtfUqQ4"}"#,
    );
    assert_eq!(out["id"], "mAitaLmkHPPlz7IPvtfUqQ4");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["created"], 1_700_000_000);
    assert_eq!(out["model"], "gemini-2.5-flash-preview-05-20");
    let choice = &out["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "AI learns patterns from data."
    );
    assert_eq!(
        choice["message"]["reasoning_content"],
        "**Weighing the options**\nThe user wants a short answer."
    );
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 2100,
            completion_tokens: 307,
            total_tokens: 2407,
            cached_tokens: 2048,
            cache_creation_tokens: 0,
            reasoning_tokens: 300,
        })
    );
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 2100, "completion_tokens": 307, "total_tokens": 2407,
               "prompt_tokens_details": {"cached_tokens": 2048},
               "completion_tokens_details": {"reasoning_tokens": 300}})
    );
}

#[test]
fn every_candidate_is_a_choice_with_its_finish_reason() {
    let (out, _) = answer(
        br#"{"candidates":[
            {"content":{"parts":[{"text":"Once upon a"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0},
            {"finishReason":"SAFETY","index":1,"safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]},
            {"content":{"parts":[{"text":"The End."}],"role":"model"},"finishReason":"OTHER","index":2}]}"#,
    );
    let c = &out["choices"];
    assert_eq!(c[0]["message"]["content"], "Once upon a");
    assert_eq!(c[0]["finish_reason"], "length");
    assert_eq!(c[1]["index"], 1);
    assert_eq!(c[1]["message"]["content"], Value::Null);
    assert_eq!(c[1]["finish_reason"], "content_filter");
    assert_eq!(c[2]["finish_reason"], "stop");
    assert_eq!(
        out["id"], "chatcmpl-req1",
        "no responseId: the gateway's id"
    );
    assert_eq!(out["model"], "gemini-2.5-flash");
    assert!(out.get("usage").is_none());
}

#[test]
fn a_blocked_prompt_is_an_empty_content_filtered_answer() {
    let (out, usage) = answer(
        br#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[
              {"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","probability":"NEGLIGIBLE"},
              {"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH"}]},
            "usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},
            "modelVersion":"gemini-2.5-flash"}"#,
    );
    assert_eq!(
        out["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": null},
                "finish_reason": "content_filter"}])
    );
    assert_eq!(
        usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((12, 0))
    );
}

#[test]
fn a_body_that_is_not_a_gemini_answer_is_an_error_to_retry() {
    let chat = Endpoint::ChatCompletions;
    assert!(response(
        chat,
        br#"{"usageMetadata":{"promptTokenCount":3}}"#,
        &ctx(false)
    )
    .is_err());
    assert!(response(chat, br#"{"candidates":[]}"#, &ctx(false)).is_err());
    assert!(response(chat, b"<html>", &ctx(false)).is_err());
    assert!(response(
        chat,
        br#"{"candidates":[{"content":{"parts":[{"te"#,
        &ctx(false)
    )
    .is_err());
}

#[test]
fn embeddings_requests_are_batches_of_text() {
    let b = try_body(
        Endpoint::Embeddings,
        r#"{"model":"g","input":["What is the meaning of life?","How much wood?"],"dimensions":768,"encoding_format":"base64","user":"u"}"#,
        false,
    )
    .unwrap();
    assert_eq!(
        b,
        json!({"requests": [
            {"model": "models/gemini-embedding-001",
             "content": {"parts": [{"text": "What is the meaning of life?"}]},
             "outputDimensionality": 768},
            {"model": "models/gemini-embedding-001",
             "content": {"parts": [{"text": "How much wood?"}]},
             "outputDimensionality": 768},
        ]})
    );
    let b = try_body(
        Endpoint::Embeddings,
        r#"{"model":"g","input":"hello"}"#,
        false,
    )
    .unwrap();
    assert_eq!(
        b["requests"],
        json!([{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}])
    );
    for tokens in [r#"[1,2,3]"#, r#"[[1,2],[3]]"#] {
        let err = try_body(
            Endpoint::Embeddings,
            &format!(r#"{{"model":"g","input":{tokens}}}"#),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("text"), "{err}");
    }
    let json = r#"{"model":"g","input":"hi","task":"retrieval"}"#;
    let err = try_body(Endpoint::Embeddings, json, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("task"), "{err}");
    let b = try_body(Endpoint::Embeddings, json, true).unwrap();
    assert!(b["requests"][0].get("task").is_none());
}

#[test]
fn embeddings_answers_become_an_openai_list() {
    let body = br#"{"embeddings":[{"values":[0.013168523,-0.008711934,-0.046782676]},{"values":[-0.02,1e-5]}]}"#;
    let ctx = AnswerCtx {
        model: "gemini-embedding-001".into(),
        ..ctx(false)
    };
    let (out, usage) = response(Endpoint::Embeddings, body, &ctx).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.contains("[0.013168523,-0.008711934,-0.046782676]"),
        "copied as sent: {text}"
    );
    let out: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        out,
        json!({
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.013168523, -0.008711934, -0.046782676]},
                {"object": "embedding", "index": 1, "embedding": [-0.02, 1e-5]},
            ],
            "model": "gemini-embedding-001",
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        })
    );
    assert_eq!(usage, None);
    let (out, usage) = response(
        Endpoint::Embeddings,
        br#"{"embeddings":[{"values":[1.0]}],"usageMetadata":{"promptTokenCount":9}}"#,
        &ctx,
    )
    .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["usage"], json!({"prompt_tokens": 9, "total_tokens": 9}));
    assert_eq!(usage.map(|u| u.prompt_tokens), Some(9));
    assert!(response(
        Endpoint::Embeddings,
        br#"{"embedding":{"values":[1]}}"#,
        &ctx
    )
    .is_err());
    assert!(response(
        Endpoint::Embeddings,
        br#"{"embeddings":[{"values":7}]}"#,
        &ctx
    )
    .is_err());
}

#[test]
fn errors_keep_the_message_and_get_openai_classes() {
    let e = error(
        400,
        None,
        br#"{"error":{"code":400,"message":"The input token count (1204799) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (400, Some("context_length_exceeded"))
    );
    assert!(e.message.starts_with("The input token count"));

    let e = error(
        400,
        None,
        br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com",
                        "metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (401, Some("invalid_api_key"))
    );
    assert_eq!(e.error_type.as_deref(), Some("authentication_error"));

    let e = error(
        400,
        None,
        br#"{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_EXPIRED"}]}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (401, Some("invalid_api_key"))
    );
    let e = error(
        400,
        None,
        br#"{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified","status":"INVALID_ARGUMENT"}}"#,
    );
    assert_eq!((e.status, e.code.as_deref()), (400, None));
    assert_eq!(e.error_type.as_deref(), Some("invalid_request_error"));

    let e = error(
        403,
        None,
        br#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.","status":"PERMISSION_DENIED"}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (403, Some("invalid_api_key"))
    );

    let e = error(
        404,
        None,
        br#"{"error":{"code":404,"message":"models/gemini-9.0-flash is not found for API version v1beta, or is not supported for generateContent.","status":"NOT_FOUND"}}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (404, Some("model_not_found"))
    );

    let e = error(
        503,
        None,
        br#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
    );
    assert_eq!(e.status, 503);
    assert!(crate::providers::is_retryable_status(e.status));

    let e = error(
        500,
        None,
        br#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
    );
    assert_eq!(
        (e.status, e.error_type.as_deref()),
        (500, Some("api_error"))
    );

    // Not Google's shape: an OpenAI-style body or a proxy's page.
    let e = error(
        429,
        None,
        br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(
        (e.message.as_str(), e.error_type.as_deref()),
        ("slow down", Some("requests"))
    );
    assert!(error(502, None, b"Bad gateway")
        .message
        .contains("Bad gateway"));
}

const QUOTA_429: &[u8] = br#"{"error":{"code":429,
  "message":"You exceeded your current quota, please check your plan and billing details.",
  "status":"RESOURCE_EXHAUSTED",
  "details":[
    {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"10"}]},
    {"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"43s"}]}}"#;

#[test]
fn a_quota_error_says_when_to_retry() {
    let e = error(429, None, QUOTA_429);
    assert_eq!(e.status, 429);
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(e.error_type.as_deref(), Some("rate_limit_error"));
    assert_eq!(e.retry_after, Some(Duration::from_secs(43)));
    // The header wins when there is one.
    let e = error(429, Some(Duration::from_secs(2)), QUOTA_429);
    assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    let delay = |d: &str| {
        let body = format!(
            r#"{{"error":{{"code":429,"message":"x","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{d}"}}]}}}}"#
        );
        error(429, None, body.as_bytes()).retry_after
    };
    assert_eq!(delay("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(delay("1e20s"), Some(openai::MAX_RETRY_AFTER));
    assert_eq!(delay("-3s"), None);
    assert_eq!(delay("soon"), None);
}

/// Feeds a stream cut into pieces of `step` bytes.
fn run_stream(wire: &str, step: usize, wants_usage: bool) -> (Vec<StreamStep>, Result<(), String>) {
    crate::providers::test_support::feed(
        crate::providers::Wire::Gemini,
        ctx(wants_usage),
        wire.as_bytes(),
        step,
    )
}

/// `streamGenerateContent?alt=sse` as documented: every event a whole
/// GenerateContentResponse, `\r\n\r\n` between them, nothing after the last.
const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Planning** the reply.\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"Xb5jaJ2xB8W3nvgP\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Héllo\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1,\"totalTokenCount\": 30,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"Xb5jaJ2xB8W3nvgP\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" world! Let me check.\"},{\"functionCall\": {\"name\": \"get_current_weather\",\"args\": {\"location\": \"Paris\"}},\"thoughtSignature\": \"Cp0BAVSoXO\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 14,\"totalTokenCount\": 43,\"cachedContentTokenCount\": 4,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"Xb5jaJ2xB8W3nvgP\"}\r\n\r\n";

#[test]
fn a_stream_becomes_openai_chunks_wherever_it_is_cut() {
    let (reference, end) = run_stream(STREAM, STREAM.len(), true);
    assert_eq!(end, Ok(()));
    for step in [1, 2, 7, 64] {
        let (steps, end) = run_stream(STREAM, step, true);
        assert_eq!(end, Ok(()));
        assert_eq!(steps, reference, "cut every {step} bytes");
    }
    for cut in 0..=STREAM.len() {
        let mut s = StreamState::new(ctx(true));
        let mut steps = Vec::new();
        s.push(&STREAM.as_bytes()[..cut], &mut steps).unwrap();
        s.push(&STREAM.as_bytes()[cut..], &mut steps).unwrap();
        assert_eq!(s.finish(&mut steps), Ok(()));
        assert_eq!(steps, reference, "cut at byte {cut}");
    }

    let c = chunks(&reference);
    assert_eq!(c.len(), 7);
    for chunk in &c {
        assert_eq!(chunk["id"], "Xb5jaJ2xB8W3nvgP");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], 1_700_000_000);
        assert_eq!(chunk["model"], "gemini-2.5-flash");
    }
    let delta = |i: usize| c[i]["choices"][0]["delta"].clone();
    assert_eq!(delta(0), json!({"role": "assistant", "content": ""}));
    assert_eq!(
        delta(1),
        json!({"reasoning_content": "**Planning** the reply."})
    );
    assert_eq!(delta(2), json!({"content": "Héllo"}));
    assert_eq!(delta(3), json!({"content": " world! Let me check."}));
    assert_eq!(
        delta(4),
        json!({"tool_calls": [{"index": 0, "id": "call_0__thought__Cp0BAVSoXO", "type": "function",
            "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\"}"}}]})
    );
    assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(delta(5), json!({}));
    assert!(c[..5]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(c[6]["choices"], json!([]));
    assert_eq!(
        c[6]["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 34, "total_tokens": 43,
               "prompt_tokens_details": {"cached_tokens": 4},
               "completion_tokens_details": {"reasoning_tokens": 20}})
    );
    let n = reference.len();
    assert!(matches!(&reference[n - 2], StreamStep::Usage { usage, .. }
        if (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (9, 34, 4)));
    assert_eq!(
        reference[n - 1],
        StreamStep::Done(Bytes::from_static(openai::DONE_EVENT))
    );
}

#[test]
fn the_usage_chunk_is_sent_only_when_asked_for_but_always_counted() {
    let (steps, end) = run_stream(STREAM, 4096, false);
    assert!(end.is_ok());
    assert!(chunks(&steps).iter().all(|c| c.get("usage").is_none()));
    assert!(steps.iter().any(|s| matches!(
        s,
        StreamStep::Usage { forward: None, usage } if usage.total_tokens == 43
    )));
}

#[test]
fn a_stream_closed_before_a_finish_reason_was_cut_short() {
    let end_of_second = STREAM.find("\r\n\r\ndata").unwrap();
    let second = STREAM[end_of_second + 4..].find("\r\n\r\n").unwrap() + end_of_second + 8;
    let (steps, end) = run_stream(&STREAM[..second], 10, true);
    assert!(end.is_err());
    assert!(!steps.iter().any(|s| matches!(s, StreamStep::Done(_))));
    assert_eq!(chunks(&steps).len(), 3, "what came is still passed on");
    let (_, end) = run_stream("", 1, false);
    assert!(end.is_err());
}

#[test]
fn a_last_event_without_its_blank_line_still_counts() {
    let wire = STREAM.trim_end();
    let (steps, end) = run_stream(wire, 33, false);
    assert_eq!(end, Ok(()));
    assert!(matches!(steps.last(), Some(StreamStep::Done(_))));
}

#[test]
fn an_error_event_fails_the_stream_and_garbage_is_never_forwarded() {
    let wire = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n\
data: {\"error\": {\"code\": 503,\"message\": \"The model is overloaded. Please try again later.\",\"status\": \"UNAVAILABLE\"}}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"more\"}]},\"finishReason\": \"STOP\"}]}\r\n\r\n";
    let (steps, end) = run_stream(wire, 11, false);
    assert!(end.is_err());
    match steps.last() {
        Some(StreamStep::Failed(m)) => {
            assert!(m.contains("overloaded") && m.contains("UNAVAILABLE"), "{m}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(chunks(&steps).len(), 2, "nothing after the error");

    let wire = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}\n\n\
data: <html>upstream proxy error</html>\n\n";
    let (steps, _) = run_stream(wire, 5, false);
    assert_eq!(steps.last(), Some(&StreamStep::Invalid));
}

#[test]
fn a_blocked_prompt_streams_as_a_content_filtered_end() {
    let wire = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n";
    let (steps, end) = run_stream(wire, 3, true);
    assert_eq!(end, Ok(()));
    let c = chunks(&steps);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(c[1]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(c[2]["usage"]["prompt_tokens"], 7);
}

#[test]
fn a_safety_stop_mid_stream_and_several_candidates_keep_their_choices() {
    let wire = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"A\"}],\"role\": \"model\"},\"index\": 0},{\"content\": {\"parts\": [{\"text\": \"B\"}],\"role\": \"model\"},\"index\": 1}]}\r\n\r\n\
data: {\"candidates\": [{\"finishReason\": \"SAFETY\",\"index\": 1},{\"content\": {\"parts\": [{\"text\": \"a\"}],\"role\": \"model\"},\"finishReason\": \"MAX_TOKENS\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 3,\"candidatesTokenCount\": 4,\"totalTokenCount\": 7}}\r\n\r\n";
    let (steps, end) = run_stream(wire, 13, false);
    assert_eq!(end, Ok(()));
    let c: Vec<(u64, Value, Value)> = chunks(&steps)
        .iter()
        .map(|c| {
            let ch = &c["choices"][0];
            (
                ch["index"].as_u64().unwrap(),
                ch["delta"].clone(),
                ch["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        c,
        vec![
            (0, json!({"role": "assistant", "content": ""}), Value::Null),
            (0, json!({"content": "A"}), Value::Null),
            (1, json!({"role": "assistant", "content": ""}), Value::Null),
            (1, json!({"content": "B"}), Value::Null),
            (1, json!({}), json!("content_filter")),
            (0, json!({"content": "a"}), Value::Null),
            (0, json!({}), json!("length")),
        ]
    );
}
