//! Every provider through the real gateway, over HTTP, against the mock
//! speaking that provider's own wire format: the client speaks OpenAI's
//! API (or Anthropic's at `/v1/messages`) and never notices the difference.

mod common;

use common::*;
use serde_json::{json, Value};
use tollgate::RunningGateway;

const REPLY: &str = "This is a mock response from tollgate.";

fn deployment(group: &str, provider: &str, base: &str, extra: &str) -> String {
    format!(
        r#"
[[models."{group}".deployments]]
provider = "{provider}"
model = "claude-3-5-haiku-20241022"
api_base = "{base}"
api_key = "sk-provider-secret"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
{extra}
"#
    )
}

async fn stream_text(gw: &RunningGateway, body: &Value) -> (Vec<Value>, String) {
    let r = post(gw, "/v1/chat/completions", Some(MASTER), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, text)
}

#[actix_rt::test]
async fn anthropic_answers_an_openai_chat_request() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&deployment("claude", "anthropic", &mock.base_url(), "")).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "claude", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt >= 1);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // Cost from the usage Anthropic reported.
    let cost: f64 = r
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - (prompt as f64 * 1e-6 + 5.0 * 2e-6)).abs() < 1e-12);

    let sent = mock.last_request().unwrap();
    assert_eq!(sent["path"], "/v1/messages");
    assert_eq!(sent["headers"]["x-api-key"], "sk-provider-secret");
    assert_eq!(sent["headers"]["anthropic-version"], "2023-06-01");
    assert!(sent["headers"].get("authorization").is_none());
    assert_eq!(sent["body"]["system"][0]["text"], "Be brief.");
    assert_eq!(sent["body"]["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent["body"]["model"], "claude-3-5-haiku-20241022");
    assert!(sent["body"]["max_tokens"].as_u64().is_some());
    gw.stop().await;
}

#[actix_rt::test]
async fn anthropic_streams_as_openai_chunks_with_usage() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&deployment("claude", "anthropic", &mock.base_url(), "")).await;
    let (chunks, text) = stream_text(
        &gw,
        &json!({"model": "claude", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(text, REPLY);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(mock.last_request().unwrap()["body"]["stream"], true);
    gw.stop().await;
}

#[actix_rt::test]
async fn anthropic_tool_calls_stream_as_openai_tool_call_deltas() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&deployment("claude", "anthropic", &mock.base_url(), "")).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    let (chunks, _) = stream_text(
        &gw,
        &json!({"model": "claude", "stream": true, "tools": tools, "tool_choice": "required",
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_mock1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );
    let last_finish = chunks
        .iter()
        .rev()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(last_finish, Some("tool_calls"));
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["body"]["tool_choice"], json!({"type": "any"}));
    assert_eq!(sent["body"]["tools"][0]["name"], "get_weather");

    // The tool's answer goes back as a tool_result in a user turn.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "claude", "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_mock1",
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_mock1", "content": "18C and sunny"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], REPLY);
    let sent = mock.last_request().unwrap();
    let turns = sent["body"]["messages"].as_array().unwrap();
    assert_eq!(turns[1]["content"][0]["type"], "tool_use");
    assert_eq!(turns[2]["role"], "user");
    assert_eq!(turns[2]["content"][0]["type"], "tool_result");
    assert_eq!(turns[2]["content"][0]["tool_use_id"], "toolu_mock1");
    gw.stop().await;
}

#[actix_rt::test]
async fn anthropic_errors_reach_the_client_classified_in_openai_shape() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        deployment(
            "too-long",
            "anthropic",
            &mock.base_url(),
            "extra_headers = { x-mock-status = \"400\", x-mock-error = \"context\" }\nid = \"a\""
        ),
        deployment(
            "overloaded",
            "anthropic",
            &mock.base_url(),
            "extra_headers = { x-mock-status = \"529\" }\nid = \"b\""
        ),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("too-long"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("prompt is too long"));
    // A client error is not retried.
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("1"));

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("overloaded"),
    )
    .await;
    // Anthropic's 529 becomes a standard 503, after the retries.
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert!(r.text().contains("injected error (status 529)"));
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("3"));
    assert!(!r.text().contains("sk-provider-secret"));
    gw.stop().await;
}

#[actix_rt::test]
async fn an_anthropic_stream_failing_midway_ends_with_an_error_event() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&deployment(
        "claude",
        "anthropic",
        &mock.base_url(),
        "extra_headers = { x-mock-fault = \"overloaded_mid\", x-mock-chunks = \"6\" }",
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "claude", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = sse_events(&r.body);
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Overloaded")),
        "{last}"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn unsupported_parameters_are_refused_by_name_unless_dropped() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        deployment("strict", "anthropic", &mock.base_url(), "id = \"s\""),
        deployment(
            "lenient",
            "anthropic",
            &mock.base_url(),
            "id = \"l\"\ndrop_params = true"
        ),
    ))
    .await;
    let body = |m: &str| {
        json!({"model": m, "logprobs": true, "frequency_penalty": 0.5,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body("strict")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("logprobs") && msg.contains("frequency_penalty"),
        "{msg}"
    );
    assert!(msg.contains("drop_params"), "{msg}");
    let before = mock.stats().requests;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body("lenient")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.stats().requests, before + 1);
    let sent = mock.last_request().unwrap();
    assert!(sent["body"].get("logprobs").is_none());
    gw.stop().await;
}

#[actix_rt::test]
async fn a_litellm_model_string_picks_the_provider() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"
[[models.claude.deployments]]
model = "anthropic/claude-3-5-haiku-20241022"
api_base = "{}"
api_key = "sk-provider-secret"
"#,
        mock.base_url()
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("claude"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["path"], "/v1/messages");
    assert_eq!(sent["body"]["model"], "claude-3-5-haiku-20241022");
    gw.stop().await;
}

#[actix_rt::test]
async fn azure_gets_its_deployment_url_api_version_and_api_key() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"
[[models.gpt.deployments]]
provider = "azure"
model = "my-gpt4o-deployment"
api_base = "{base}"
api_key = "azure-resource-key"
api_version = "2024-06-01"

[[models.gpt-entra.deployments]]
provider = "azure"
model = "other"
api_base = "{base}"
azure_ad_token = "entra-token"
"#,
        base = mock.base_url()
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("gpt")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], REPLY);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["path"],
        "/openai/deployments/my-gpt4o-deployment/chat/completions"
    );
    assert_eq!(sent["query"], "api-version=2024-06-01");
    assert_eq!(sent["headers"]["api-key"], "azure-resource-key");
    assert!(sent["headers"].get("authorization").is_none());

    let (_, text) = stream_text(
        &gw,
        &json!({"model": "gpt-entra", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(text, REPLY);
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["headers"]["authorization"], "Bearer entra-token");
    assert_eq!(sent["query"], "api-version=2024-10-21");
    gw.stop().await;
}

#[actix_rt::test]
async fn an_openai_compatible_preset_sends_a_bearer_key_to_its_base() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"
[[models.llama.deployments]]
provider = "groq"
model = "llama-3.1-8b-instant"
api_base = "{}"
api_key = "gsk-secret"
"#,
        mock.url()
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("llama"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["path"], "/v1/chat/completions");
    assert_eq!(sent["headers"]["authorization"], "Bearer gsk-secret");
    assert_eq!(sent["body"]["model"], "llama-3.1-8b-instant");
    gw.stop().await;
}

fn gemini(group: &str, base: &str, extra: &str) -> String {
    format!(
        r#"
[[models."{group}".deployments]]
provider = "gemini"
model = "gemini-2.0-flash"
api_base = "{base}"
api_key = "goog-secret"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
{extra}
"#
    )
}

#[actix_rt::test]
async fn gemini_answers_plain_streamed_and_with_tools() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&gemini("gem", &mock.base_url(), "")).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "gem", "max_tokens": 50, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(sent["headers"]["x-goog-api-key"], "goog-secret");
    assert_eq!(
        sent["body"]["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
    assert_eq!(sent["body"]["generationConfig"]["maxOutputTokens"], 50);

    // Gemini's stream has no end marker: the gateway closes it properly.
    let (chunks, text) = stream_text(
        &gw,
        &json!({"model": "gem", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(text, REPLY);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
    assert_eq!(sent["query"], "alt=sse");

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "gem", "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["body"]["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn gemini_safety_blocks_are_content_filter_answers_not_errors() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        gemini(
            "safety",
            &mock.base_url(),
            "id = \"s\"\nextra_headers = { x-mock-fault = \"safety\" }"
        ),
        gemini(
            "blocked",
            &mock.base_url(),
            "id = \"b\"\nextra_headers = { x-mock-fault = \"blocked\" }"
        ),
    ))
    .await;
    for group in ["safety", "blocked"] {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body(group)).await;
        assert_eq!(r.status, 200, "{group}: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["choices"][0]["finish_reason"], "content_filter",
            "{group}"
        );
        assert!(v["choices"][0]["message"]["content"].is_null(), "{group}");
    }
    gw.stop().await;
}

#[actix_rt::test]
async fn gemini_embeddings_and_errors() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        gemini("emb", &mock.base_url(), "id = \"e\""),
        gemini(
            "limited",
            &mock.base_url(),
            "id = \"l\"\nextra_headers = { x-mock-status = \"429\" }"
        ),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/embeddings",
        Some(MASTER),
        &json!({"model": "emb", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert!(v["data"][0]["embedding"].as_array().unwrap().len() > 2);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.0-flash:batchEmbedContents"
    );
    assert_eq!(sent["body"]["requests"].as_array().unwrap().len(), 2);

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("limited"),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    gw.stop().await;
}

fn bedrock(group: &str, base: &str, extra: &str) -> String {
    format!(
        r#"
[[models."{group}".deployments]]
provider = "bedrock"
model = "anthropic.claude-3-haiku-20240307-v1:0"
api_base = "{base}"
aws_region = "us-east-1"
aws_access_key_id = "AKIDEXAMPLE"
aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
{extra}
"#
    )
}

#[actix_rt::test]
async fn bedrock_converse_is_signed_and_translated_both_ways() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&bedrock("br", &mock.base_url(), "")).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "br", "max_tokens": 40, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["path"],
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    let auth = sent["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains("/us-east-1/bedrock/aws4_request"),
        "{auth}"
    );
    assert!(
        !sent.to_string().contains("wJalrXUtnFEMI"),
        "the secret never travels"
    );
    assert_eq!(sent["body"]["system"][0]["text"], "Be brief.");
    assert_eq!(sent["body"]["inferenceConfig"]["maxTokens"], 40);

    // The binary event stream becomes OpenAI chunks, tool calls included.
    let (chunks, text) = stream_text(
        &gw,
        &json!({"model": "br", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(text, REPLY);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
    let (chunks, _) = stream_text(
        &gw,
        &json!({"model": "br", "stream": true, "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );
    let finish = chunks
        .iter()
        .rev()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    gw.stop().await;
}

#[actix_rt::test]
async fn bedrock_errors_and_mid_stream_exceptions() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        bedrock(
            "throttled",
            &mock.base_url(),
            "id = \"t\"\nextra_headers = { x-mock-status = \"429\" }"
        ),
        bedrock(
            "mid",
            &mock.base_url(),
            "id = \"m\"\nextra_headers = { x-mock-fault = \"throttle_mid\", x-mock-chunks = \"6\" }"
        ),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("throttled"),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "mid", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = sse_events(&r.body);
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{last}");
    gw.stop().await;
}

#[actix_rt::test]
async fn the_anthropic_api_inbound_reaches_any_provider_and_streams_back_in_its_events() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        deployment("claude", "anthropic", &mock.base_url(), "id = \"a\""),
        gemini("gem", &mock.base_url(), "id = \"g\""),
    ))
    .await;
    let send = |body: Value| {
        let url = format!("{}/messages", gw.url());
        async move {
            let mut resp = client()
                .post(url)
                .insert_header(("x-api-key", MASTER))
                .insert_header(("anthropic-version", "2023-06-01"))
                .send_json(&body)
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.body().limit(1 << 20).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    for model in ["claude", "gem"] {
        let (status, body) = send(json!({"model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}]}))
        .await;
        assert_eq!(status, 200, "{model}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], model);
        assert_eq!(v["content"][0]["text"], REPLY);
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["output_tokens"], 5);
    }
    // A streamed tool call, Anthropic to Anthropic through the gateway.
    let (status, body) = send(json!({"model": "claude", "max_tokens": 64, "stream": true,
        "tool_choice": {"type": "any"},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object",
            "properties": {"location": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
    .await;
    assert_eq!(status, 200, "{body}");
    let mut names = Vec::new();
    let mut json_pieces = String::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["type"], name);
        if data["delta"]["type"] == "input_json_delta" {
            json_pieces.push_str(data["delta"]["partial_json"].as_str().unwrap());
        }
        if name == "message_delta" {
            assert_eq!(data["delta"]["stop_reason"], "tool_use");
        }
        names.push(name.to_string());
    }
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(names.iter().any(|n| n == "content_block_start"));
    assert_eq!(
        serde_json::from_str::<Value>(&json_pieces).unwrap(),
        json!({"location": "Paris"})
    );
    // Errors in Anthropic's shape.
    let (status, body) = send(json!({"model": "nope", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}))
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    gw.stop().await;
}
