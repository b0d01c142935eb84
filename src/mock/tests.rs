//! End-to-end tests against a started mock over raw HTTP/1.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// The body as received (binary bodies: Bedrock event streams).
    bytes: Vec<u8>,
    /// The body ended properly (chunked terminator seen / length matched).
    complete: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// SSE `data:` payloads in order.
    fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// Undo chunked transfer encoding; `true` if the terminating chunk was seen.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = std::str::from_utf8(&raw[..eol]).unwrap_or("");
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return (out, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(raw);
            return (out, false);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = send(addr, method, path, headers, body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Read until EOF or a connection error (faults break the connection).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let (body, complete) = if chunked {
        dechunk(rest)
    } else {
        let want = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        (rest.to_vec(), want.is_none_or(|w| w == rest.len()))
    };
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body,
        complete,
    }
}

async fn mock() -> MockServer {
    start(MockOptions::default()).await.unwrap()
}

fn chat_body(extra: Value) -> String {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "0123456789abcdef"},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}]}
        ]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

#[actix_rt::test]
async fn non_stream_chat_shape_and_usage() {
    let m = mock().await;
    assert!(m.url().starts_with("http://127.0.0.1:") && m.url().ends_with("/v1"));
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-test");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "This is a mock response from tollgate."
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    // 16 + 4 characters -> 5 prompt tokens; 5 chunks -> 5 completion tokens.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );

    // max_tokens cuts the reply; also served without the /v1 prefix.
    let r = http(
        m.addr,
        "POST",
        "/chat/completions",
        &[],
        &chat_body(json!({"max_tokens": 2})),
    );
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "This is");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    let s = m.stats();
    assert_eq!((s.requests, s.chat, s.streams_started), (2, 2, 0));
    m.stop().await;
}

#[actix_rt::test]
async fn stream_chunks_in_order_with_usage_only_when_asked() {
    let m = mock().await;
    let hdr = [("x-mock-chunks", "3")];
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &hdr,
        &chat_body(json!({"stream": true})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.complete);
    let ev = r.events();
    assert_eq!(ev.len(), 6, "role + 3 content + finish + [DONE]: {ev:?}");
    assert_eq!(ev[5], "[DONE]");
    let chunks: Vec<Value> = ev[..5]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test");
        assert_eq!(c["created"], chunks[0]["created"]);
        assert!(
            c.get("usage").is_none(),
            "no usage key without include_usage"
        );
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "This is a mock response from tollgate.");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let ev = http(m.addr, "POST", "/v1/chat/completions", &hdr, &body).events();
    assert_eq!(ev.len(), 7, "{ev:?}");
    assert_eq!(ev[6], "[DONE]");
    for e in &ev[..5] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert_eq!(c["usage"], Value::Null);
        assert!(c.get("usage").is_some());
    }
    let last: Value = serde_json::from_str(&ev[5]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );

    let s = m.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (2, 2, 0)
    );
    m.stop().await;
}

#[actix_rt::test]
async fn legacy_completions_plain_and_streaming() {
    let m = mock().await;
    let body = json!({"model": "m", "prompt": ["abcdefgh", "abcd"], "max_tokens": 4}).to_string();
    let v = http(m.addr, "POST", "/v1/completions", &[], &body).json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "This is a mock response");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let body = json!({"model": "m", "prompt": [1, 2, 3], "stream": true,
                      "stream_options": {"include_usage": true}})
    .to_string();
    let ev = http(m.addr, "POST", "/completions", &[], &body).events();
    // 5 text chunks + finish + usage + [DONE]; no role chunk.
    assert_eq!(ev.len(), 8, "{ev:?}");
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "This");
    let usage: Value = serde_json::from_str(&ev[6]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(ev[7], "[DONE]");
    assert_eq!(m.stats().completions, 2);
    m.stop().await;
}

#[actix_rt::test]
async fn status_fault_with_retry_after_and_recovery() {
    let m = mock().await;
    let hdr = [("x-mock-status", "429"), ("x-mock-retry-after", "7")];
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &hdr,
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let e = r.json();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert!(e["error"]["message"].is_string());
    assert!(e["error"].get("param").is_some() && e["error"].get("code").is_some());

    // Body `mock` field; a streaming request still gets a JSON error.
    let body = chat_body(json!({"stream": true, "mock": {"status": 503}}));
    let r = http(m.addr, "POST", "/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert_eq!(r.header("retry-after"), None);

    // Fail-then-recover through the run-time defaults.
    m.set_behaviour(Behaviour {
        status: Some(500),
        ..Behaviour::default()
    });
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 500);
    m.set_behaviour(Behaviour::default());
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(m.stats().streams_started, 0);
    m.stop().await;
}

#[actix_rt::test]
async fn client_disconnect_counts_a_cancelled_stream() {
    let m = mock().await;
    let hdr = [("x-mock-chunks", "50"), ("x-mock-chunk-interval-ms", "50")];
    let mut s = send(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &hdr,
        &chat_body(json!({"stream": true})),
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"role\":\"assistant\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the first chunk");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(m.stats().streams_started, 1);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(1);
    while m.stats().streams_cancelled == 0 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let st = m.stats();
    assert_eq!(
        (st.streams_cancelled, st.streams_completed),
        (1, 0),
        "{st:?}"
    );
    m.stop().await;
}

#[actix_rt::test]
async fn embeddings_dimensions_and_base64() {
    let m = mock().await;
    let body = json!({"model": "emb", "input": ["abcdefgh", "x"], "dimensions": 16}).to_string();
    let v = http(m.addr, "POST", "/v1/embeddings", &[], &body).json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 16);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    // Same input -> same vector; default length 8; base64 of 8 f32s.
    let body = json!({"model": "emb", "input": "x"}).to_string();
    let a = http(m.addr, "POST", "/embeddings", &[], &body).json();
    let b = http(m.addr, "POST", "/v1/embeddings", &[], &body).json();
    assert_eq!(a["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(a["data"][0]["embedding"], b["data"][0]["embedding"]);
    let body = json!({"model": "emb", "input": "x", "encoding_format": "base64"}).to_string();
    let v = http(m.addr, "POST", "/v1/embeddings", &[], &body).json();
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 44); // 32 bytes
    let body = json!({"model": "emb", "input": [[1, 2, 3], [4]]}).to_string();
    let v = http(m.addr, "POST", "/v1/embeddings", &[], &body).json();
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(m.stats().embeddings, 5);
    m.stop().await;
}

#[actix_rt::test]
async fn headers_override_the_body_mock_field() {
    let m = mock().await;
    m.set_behaviour(Behaviour {
        chunks: Some(6),
        ..Behaviour::default()
    });
    let tokens = |hdr: &[(&str, &str)], extra: Value| {
        let v = http(
            m.addr,
            "POST",
            "/v1/chat/completions",
            hdr,
            &chat_body(extra),
        )
        .json();
        v["usage"]["completion_tokens"].as_u64().unwrap()
    };
    assert_eq!(tokens(&[], json!({})), 6);
    assert_eq!(tokens(&[], json!({"mock": {"chunks": 4}})), 4);
    assert_eq!(
        tokens(&[("x-mock-chunks", "2")], json!({"mock": {"chunks": 4}})),
        2
    );
    // Field by field: the body's status applies, the header's chunks too.
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-chunks", "2")],
        &chat_body(json!({"mock": {"status": 502, "chunks": 4}})),
    );
    assert_eq!(r.status, 502);
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-status", "200")],
        &chat_body(json!({"mock": {"status": 502}})),
    );
    assert_eq!(r.status, 200);
    m.stop().await;
}

#[actix_rt::test]
async fn drop_and_cut_break_the_connection() {
    let m = mock().await;
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-fault", "drop")],
        &chat_body(json!({})),
    );
    assert!(
        !r.complete,
        "a dropped body must not be complete: {:?}",
        r.body
    );
    assert!(serde_json::from_str::<Value>(&r.body).is_err());

    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-fault", "cut"), ("x-mock-chunks", "6")],
        &chat_body(json!({"stream": true})),
    );
    assert!(!r.complete);
    let ev = r.events();
    assert_eq!(ev.len(), 4, "role + half of 6 content chunks: {ev:?}");
    assert!(!ev.iter().any(|e| e == "[DONE]"));
    let s = m.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (1, 0, 0)
    );
    m.stop().await;
}

#[actix_rt::test]
async fn bad_requests_get_openai_errors() {
    let m = mock().await;
    for (path, body) in [
        ("/v1/chat/completions", "{not json"),
        ("/v1/chat/completions", r#"{"messages":[]}"#),
        ("/v1/chat/completions", r#"{"model":"m","messages":"hi"}"#),
        ("/v1/chat/completions", r#"{"model":"m"}"#),
        ("/v1/completions", r#"{"model":"m","prompt":{}}"#),
        ("/v1/embeddings", r#"{"model":"m","input":[]}"#),
        (
            "/v1/embeddings",
            r#"{"model":"m","input":"x","dimensions":0}"#,
        ),
    ] {
        let r = http(m.addr, "POST", path, &[], body);
        assert_eq!(r.status, 400, "{path} {body}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-latency-ms", "soon")],
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 400);
    let r = http(m.addr, "GET", "/v1/nope", &[], "");
    assert_eq!(r.status, 404);
    m.stop().await;
}

#[actix_rt::test]
async fn models_and_control_routes() {
    let m = mock().await;
    let v = http(m.addr, "GET", "/v1/models", &[], "").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock-gpt");
    assert_eq!(v["data"][0]["owned_by"], "tollgate-mock");

    let r = http(
        m.addr,
        "POST",
        "/mock/behaviour",
        &[],
        r#"{"latency_ms":30,"chunks":2}"#,
    );
    assert_eq!(r.status, 200);
    let t = Instant::now();
    let v = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat_body(json!({})),
    )
    .json();
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(v["usage"]["completion_tokens"], 2);

    let stats: StatsSnapshot =
        serde_json::from_str(&http(m.addr, "GET", "/mock/stats", &[], "").body).unwrap();
    assert_eq!((stats.requests, stats.chat), (2, 1));
    assert_eq!(stats, m.stats());

    assert_eq!(http(m.addr, "POST", "/mock/reset", &[], "").status, 200);
    assert_eq!(m.stats(), StatsSnapshot::default());
    let v = http(m.addr, "GET", "/mock/behaviour", &[], "").json();
    assert_eq!(
        serde_json::from_value::<Behaviour>(v).unwrap(),
        Behaviour::default()
    );
    m.stop().await;
}

#[actix_rt::test]
async fn hang_never_answers() {
    let m = mock().await;
    let body = chat_body(json!({"mock": {"fault": "hang"}}));
    let mut s = send(m.addr, "POST", "/v1/chat/completions", &[], &body);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let err = s
        .read(&mut buf)
        .expect_err("a hung request must not answer");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    drop(s);
    m.stop().await;
}

// ------------------------------------------------------------ native routes

const ANTHROPIC_AUTH: [(&str, &str); 2] = [
    ("x-api-key", "sk-ant-test"),
    ("anthropic-version", "2023-06-01"),
];

fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

fn anthropic_body(extra: Value) -> String {
    let mut body = json!({
        "model": "claude-test",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "0123456789abcdef"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

/// `event:` / `data:` pairs of an Anthropic-style SSE body.
fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
                }
            }
            (name, data)
        })
        .collect()
}

#[actix_rt::test]
async fn anthropic_plain_thinking_and_limits() {
    let m = mock().await;
    let r = http(
        m.addr,
        "POST",
        "/v1/messages",
        &ANTHROPIC_AUTH,
        &anthropic_body(json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "This is a mock response from tollgate."}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // system 16 + message 4 characters -> 5 input tokens.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "output_tokens": 5,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    // max_tokens cuts; thinking comes first; system as a plain string.
    let body = anthropic_body(json!({"max_tokens": 2, "system": "0123456789abcdef",
        "thinking": {"type": "enabled", "budget_tokens": 1024}}));
    let v = http(m.addr, "POST", "/messages", &ANTHROPIC_AUTH, &body).json();
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": "Mock reasoning.", "signature": "sig"})
    );
    assert_eq!(v["content"][1], json!({"type": "text", "text": "This is"}));
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert_eq!(v["usage"]["input_tokens"], 5);
    let s = m.stats();
    assert_eq!((s.requests, s.anthropic, s.chat), (2, 2, 0));
    m.stop().await;
}

#[actix_rt::test]
async fn anthropic_tool_use_rules() {
    let m = mock().await;
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}},
                       {"name": "get_time", "input_schema": {"type": "object"}}]);
    let call = |extra: Value| {
        let mut body: Value = serde_json::from_str(&anthropic_body(json!({}))).unwrap();
        body["tools"] = tools.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        http(
            m.addr,
            "POST",
            "/v1/messages",
            &ANTHROPIC_AUTH,
            &body.to_string(),
        )
        .json()
    };
    let v = call(json!({"tool_choice": {"type": "any"}}));
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "toolu_mock1", "name": "get_weather",
                "input": {"location": "Paris"}}])
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["usage"]["output_tokens"], 5);
    let v = call(json!({"tool_choice": {"type": "tool", "name": "get_time"}}));
    assert_eq!(v["content"][0]["name"], "get_time");
    // Auto: only when asked in the text.
    let v = call(json!({}));
    assert_eq!(v["content"][0]["type"], "text");
    let v = call(json!({"messages": [{"role": "user", "content": "Please USE A TOOL now"}]}));
    assert_eq!(v["content"][0]["type"], "tool_use");
    // After a tool result, text even when forced.
    let v = call(json!({"tool_choice": {"type": "any"}, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock1", "content": "sunny"}]}
    ]}));
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    m.stop().await;
}

#[actix_rt::test]
async fn anthropic_errors_and_auth() {
    let m = mock().await;
    let body = anthropic_body(json!({}));
    let r = http(
        m.addr,
        "POST",
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &body,
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "authentication_error",
               "message": "x-api-key header is required"}})
    );
    let r = http(m.addr, "POST", "/v1/messages", &[("x-api-key", "k")], &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = http(
        m.addr,
        "POST",
        "/v1/messages",
        &ANTHROPIC_AUTH,
        &json!({"model": "c", "messages": []}).to_string(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "max_tokens: Field required"}})
    );
    for (status, kind) in [
        ("403", "permission_error"),
        ("404", "not_found_error"),
        ("413", "request_too_large"),
        ("429", "rate_limit_error"),
        ("500", "api_error"),
        ("529", "overloaded_error"),
    ] {
        let hdr = with(
            &ANTHROPIC_AUTH,
            &[("x-mock-status", status), ("x-mock-retry-after", "3")],
        );
        let r = http(m.addr, "POST", "/v1/messages", &hdr, &body);
        assert_eq!(r.status.to_string(), status);
        assert_eq!(r.json()["type"], "error");
        assert_eq!(r.json()["error"]["type"], kind, "{status}");
        assert_eq!(r.header("retry-after"), Some("3"));
    }
    let hdr = with(
        &ANTHROPIC_AUTH,
        &[("x-mock-status", "400"), ("x-mock-error", "context")],
    );
    let r = http(m.addr, "POST", "/v1/messages", &hdr, &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        json!({"type": "invalid_request_error",
               "message": "prompt is too long: 250000 tokens > 200000 maximum"})
    );
    // A bad knob is a 400 in Anthropic's shape.
    let hdr = with(&ANTHROPIC_AUTH, &[("x-mock-chunks", "many")]);
    let r = http(m.addr, "POST", "/v1/messages", &hdr, &body);
    assert_eq!((r.status, r.json()["type"].clone()), (400, json!("error")));
    m.stop().await;
}

#[actix_rt::test]
async fn anthropic_stream_text_thinking_and_tool() {
    let m = mock().await;
    let hdr = with(&ANTHROPIC_AUTH, &[("x-mock-chunks", "3")]);
    let r = http(
        m.addr,
        "POST",
        "/v1/messages",
        &hdr,
        &anthropic_body(json!({"stream": true})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.complete);
    let ev = named_events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &ev[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = ev[3..6]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            assert_eq!(d["index"], 0);
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "This is a mock response from tollgate.");
    assert_eq!(
        ev[7].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 3}})
    );

    // Thinking then a forced tool call.
    let body = anthropic_body(json!({"stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}}));
    let ev = named_events(&http(m.addr, "POST", "/v1/messages", &ANTHROPIC_AUTH, &body).body);
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "thinking", "thinking": ""})
    );
    assert_eq!(ev[2].0, "ping");
    let deltas = |index: u64| -> Vec<Value> {
        ev.iter()
            .filter(|(n, d)| n == "content_block_delta" && d["index"] == index)
            .map(|(_, d)| d["delta"].clone())
            .collect()
    };
    assert_eq!(
        deltas(0),
        [
            json!({"type": "thinking_delta", "thinking": "Mock"}),
            json!({"type": "thinking_delta", "thinking": " reasoning."}),
            json!({"type": "signature_delta", "signature": "sig"})
        ]
    );
    let tool_start = ev
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["index"] == 1)
        .unwrap();
    assert_eq!(
        tool_start.1["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {}})
    );
    let json_pieces = deltas(1);
    assert!(json_pieces.len() >= 2);
    let partial: String = json_pieces
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "input_json_delta");
            d["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"location": "Paris"})
    );
    let (_, delta) = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"]["output_tokens"],
        2 + json_pieces.len() as u64
    );
    assert_eq!(ev.last().unwrap().0, "message_stop");
    let s = m.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (2, 2, 0)
    );
    m.stop().await;
}

#[actix_rt::test]
async fn anthropic_stream_faults() {
    let m = mock().await;
    let body = anthropic_body(json!({"stream": true}));
    let hdr = with(
        &ANTHROPIC_AUTH,
        &[("x-mock-chunks", "6"), ("x-mock-fault", "overloaded_mid")],
    );
    let r = http(m.addr, "POST", "/v1/messages", &hdr, &body);
    assert!(r.complete, "an error event ends the body cleanly");
    let ev = named_events(&r.body);
    let deltas = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .count();
    assert_eq!(deltas, 3);
    assert_eq!(
        ev.last().unwrap(),
        &(
            "error".to_string(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        )
    );
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));

    let hdr = with(
        &ANTHROPIC_AUTH,
        &[("x-mock-chunks", "6"), ("x-mock-fault", "cut")],
    );
    let r = http(m.addr, "POST", "/v1/messages", &hdr, &body);
    assert!(!r.complete);
    let ev = named_events(&r.body);
    assert_eq!(
        ev.iter()
            .filter(|(n, _)| n == "content_block_delta")
            .count(),
        3
    );
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));

    let s = m.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (2, 0, 0)
    );

    // Client goes away mid-stream: cancelled.
    let hdr = with(
        &ANTHROPIC_AUTH,
        &[("x-mock-chunks", "50"), ("x-mock-chunk-interval-ms", "50")],
    );
    let mut sock = send(m.addr, "POST", "/v1/messages", &hdr, &body);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("message_start") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(2);
    while m.stats().streams_cancelled == 0 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.stats().streams_cancelled, 1);
    m.stop().await;
}

// ------------------------------------------------------------------- gemini

const GEMINI_AUTH: [(&str, &str); 1] = [("x-goog-api-key", "AIza-test")];

fn gemini_body(extra: Value) -> String {
    let mut body = json!({
        "systemInstruction": {"parts": [{"text": "0123456789abcdef"}]},
        "contents": [{"role": "user", "parts": [{"text": "abcd"}]}]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

#[actix_rt::test]
async fn gemini_generate_plain_tools_and_safety() {
    let m = mock().await;
    let path = "/v1beta/models/gemini-2.0-flash:generateContent";
    let r = http(m.addr, "POST", path, &GEMINI_AUTH, &gemini_body(json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["candidates"],
        json!([{"content": {"parts": [{"text": "This is a mock response from tollgate."}], "role": "model"},
                "finishReason": "STOP", "index": 0}])
    );
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 5, "totalTokenCount": 10})
    );
    assert_eq!(v["modelVersion"], "gemini-2.0-flash");
    assert!(v["responseId"].as_str().unwrap().starts_with("mock"));

    // maxOutputTokens; the ':' may come percent-encoded; key as a query param.
    let body = gemini_body(json!({"generationConfig": {"maxOutputTokens": 2}}));
    let v = http(
        m.addr,
        "POST",
        "/v1beta/models/gemini-x%3AgenerateContent?key=k",
        &[],
        &body,
    )
    .json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "This is");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["modelVersion"], "gemini-x");

    let tools = json!([{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]);
    let body = gemini_body(json!({"tools": tools,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}));
    let v = http(m.addr, "POST", path, &GEMINI_AUTH, &body).json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}])
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let body = gemini_body(
        json!({"tools": tools, "tool_config": {"function_calling_config":
        {"mode": "ANY", "allowed_function_names": ["get_time"]}}}),
    );
    let v = http(m.addr, "POST", path, &GEMINI_AUTH, &body).json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    let body = gemini_body(json!({"tools": tools}));
    let v = http(m.addr, "POST", path, &GEMINI_AUTH, &body).json();
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());

    let hdr = with(&GEMINI_AUTH, &[("x-mock-fault", "safety")]);
    let v = http(m.addr, "POST", path, &hdr, &gemini_body(json!({}))).json();
    assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
    assert!(v["candidates"][0].get("content").is_none());
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "totalTokenCount": 5})
    );
    let hdr = with(&GEMINI_AUTH, &[("x-mock-fault", "blocked")]);
    let v = http(m.addr, "POST", path, &hdr, &gemini_body(json!({}))).json();
    assert!(v.get("candidates").is_none());
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 5);

    let v = http(
        m.addr,
        "POST",
        "/v1beta/models/gemini-x:countTokens",
        &GEMINI_AUTH,
        &gemini_body(json!({})),
    )
    .json();
    assert_eq!(v, json!({"totalTokens": 5}));
    assert_eq!(m.stats().gemini, 8);
    m.stop().await;
}

#[actix_rt::test]
async fn gemini_errors_and_auth() {
    let m = mock().await;
    let path = "/v1beta/models/gemini-x:generateContent";
    let r = http(m.addr, "POST", path, &[], &gemini_body(json!({})));
    assert_eq!(r.status, 403);
    let e = r.json();
    assert_eq!(e["error"]["code"], 403);
    assert_eq!(e["error"]["status"], "PERMISSION_DENIED");
    assert!(e["error"]["message"].is_string());
    for (status, name) in [
        ("400", "INVALID_ARGUMENT"),
        ("404", "NOT_FOUND"),
        ("429", "RESOURCE_EXHAUSTED"),
        ("500", "INTERNAL"),
        ("503", "UNAVAILABLE"),
    ] {
        let hdr = with(&GEMINI_AUTH, &[("x-mock-status", status)]);
        let r = http(m.addr, "POST", path, &hdr, &gemini_body(json!({})));
        assert_eq!(r.status.to_string(), status);
        assert_eq!(r.json()["error"]["status"], name);
        assert_eq!(r.json()["error"]["code"].to_string(), status);
    }
    let r = http(m.addr, "POST", path, &GEMINI_AUTH, r#"{"contents":[]}"#);
    assert_eq!(
        (r.status, r.json()["error"]["status"].clone()),
        (400, json!("INVALID_ARGUMENT"))
    );
    let r = http(
        m.addr,
        "POST",
        "/v1beta/models/gemini-x:explode",
        &GEMINI_AUTH,
        "{}",
    );
    assert_eq!(
        (r.status, r.json()["error"]["status"].clone()),
        (404, json!("NOT_FOUND"))
    );
    m.stop().await;
}

#[actix_rt::test]
async fn gemini_streams_sse_and_array() {
    let m = mock().await;
    let hdr = with(&GEMINI_AUTH, &[("x-mock-chunks", "3")]);
    let path = "/v1beta/models/gemini-x:streamGenerateContent?alt=sse";
    let r = http(m.addr, "POST", path, &hdr, &gemini_body(json!({})));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.complete);
    assert!(r.body.ends_with("\r\n\r\n") && !r.body.contains("[DONE]"));
    let chunks: Vec<Value> = r
        .body
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        text.push_str(
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap(),
        );
        assert_eq!(c["usageMetadata"]["candidatesTokenCount"], i + 1);
        assert_eq!(c["usageMetadata"]["promptTokenCount"], 5);
        assert_eq!(c["responseId"], chunks[0]["responseId"]);
        assert_eq!(c["modelVersion"], "gemini-x");
        assert_eq!(c["candidates"][0].get("finishReason").is_some(), i == 2);
    }
    assert_eq!(text, "This is a mock response from tollgate.");
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");

    // Without alt=sse: one JSON array.
    let path = "/v1beta/models/gemini-x:streamGenerateContent";
    let r = http(m.addr, "POST", path, &hdr, &gemini_body(json!({})));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 3);
    assert_eq!(arr[2]["candidates"][0]["finishReason"], "STOP");

    // Safety mid-stream: half the text, then the SAFETY candidate.
    let hdr = with(
        &GEMINI_AUTH,
        &[("x-mock-chunks", "4"), ("x-mock-fault", "safety")],
    );
    let path = "/v1beta/models/gemini-x:streamGenerateContent?alt=sse";
    let r = http(m.addr, "POST", path, &hdr, &gemini_body(json!({})));
    let chunks: Vec<Value> = r
        .body
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "SAFETY");
    assert!(chunks[2]["candidates"][0].get("content").is_none());

    // cut: the body breaks after half.
    let hdr = with(
        &GEMINI_AUTH,
        &[("x-mock-chunks", "6"), ("x-mock-fault", "cut")],
    );
    let r = http(m.addr, "POST", path, &hdr, &gemini_body(json!({})));
    assert!(!r.complete);
    assert_eq!(r.body.matches("data: ").count(), 3);
    let s = m.stats();
    assert_eq!(
        (s.streams_started, s.streams_completed, s.streams_cancelled),
        (4, 3, 0)
    );
    m.stop().await;
}

#[actix_rt::test]
async fn gemini_embeddings_match_openai_vectors() {
    let m = mock().await;
    let body = json!({"model": "models/emb", "content": {"parts": [{"text": "x"}]}}).to_string();
    let v = http(
        m.addr,
        "POST",
        "/v1beta/models/emb:embedContent",
        &GEMINI_AUTH,
        &body,
    )
    .json();
    let values = v["embedding"]["values"].clone();
    assert_eq!(values.as_array().unwrap().len(), 8);
    let openai = http(
        m.addr,
        "POST",
        "/v1/embeddings",
        &[],
        r#"{"model":"e","input":"x"}"#,
    )
    .json();
    assert_eq!(values, openai["data"][0]["embedding"]);

    let body = json!({"requests": [
        {"model": "models/emb", "content": {"parts": [{"text": "x"}]}, "outputDimensionality": 4},
        {"model": "models/emb", "content": {"parts": [{"text": "y"}]}}
    ]})
    .to_string();
    let v = http(
        m.addr,
        "POST",
        "/v1beta/models/emb:batchEmbedContents",
        &GEMINI_AUTH,
        &body,
    )
    .json();
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["values"].as_array().unwrap().len(), 4);
    assert_eq!(e[1]["values"].as_array().unwrap().len(), 8);
    assert_ne!(e[1]["values"], values);
    let r = http(
        m.addr,
        "POST",
        "/v1beta/models/emb:embedContent",
        &GEMINI_AUTH,
        "{}",
    );
    assert_eq!(r.status, 400);
    m.stop().await;
}

// ------------------------------------------------------------------ bedrock

const BEDROCK_AUTH: [(&str, &str); 2] = [
    (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc123",
    ),
    ("x-amz-date", "20250101T000000Z"),
];

fn bedrock_body(extra: Value) -> String {
    let mut body = json!({
        "system": [{"text": "0123456789abcdef"}],
        "messages": [{"role": "user", "content": [{"text": "abcd"}]}]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

struct Frame {
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl Frame {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no header {name}"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A test-only AWS event-stream decoder that checks both CRCs.
fn decode_frames(mut b: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 16, "short frame: {b:?}");
        let total = be32(&b[0..4]) as usize;
        let headers_len = be32(&b[4..8]) as usize;
        assert_eq!(bedrock::crc32(&b[..8]), be32(&b[8..12]), "prelude CRC");
        let msg = &b[..total];
        assert_eq!(
            bedrock::crc32(&msg[..total - 4]),
            be32(&msg[total - 4..]),
            "message CRC"
        );
        let mut h = &msg[12..12 + headers_len];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8(h[1..1 + n].to_vec()).unwrap();
            assert_eq!(h[1 + n], 7, "string header");
            let vlen = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = String::from_utf8(h[4 + n..4 + n + vlen].to_vec()).unwrap();
            headers.push((name, value));
            h = &h[4 + n + vlen..];
        }
        out.push(Frame {
            headers,
            payload: msg[12 + headers_len..total - 4].to_vec(),
        });
        b = &b[total..];
    }
    out
}

#[test]
fn event_stream_encoder_matches_aws_vectors_and_round_trips() {
    assert_eq!(bedrock::crc32(b"123456789"), 0xCBF4_3926);
    // aws-c-event-stream test vectors: the empty message and one with a
    // 13-byte payload.
    assert_eq!(
        bedrock::encode_frame(&[], b""),
        [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]
    );
    let f = bedrock::encode_frame(&[], b"{'foo':'bar'}");
    assert_eq!(
        &f[..12],
        [0, 0, 0, 0x1d, 0, 0, 0, 0, 0xfd, 0x52, 0x8c, 0x5a]
    );
    assert_eq!(&f[f.len() - 4..], [0xc3, 0x65, 0x39, 0x36]);

    let headers = [
        (":event-type", "contentBlockDelta"),
        (":message-type", "event"),
    ];
    let payload = br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#;
    let mut two = bedrock::encode_frame(&headers, payload);
    two.extend(bedrock::encode_frame(&[], b""));
    let frames = decode_frames(&two);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        frames[0].headers,
        headers.map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(frames[0].payload, payload);
    assert!(frames[1].headers.is_empty() && frames[1].payload.is_empty());
}

#[actix_rt::test]
async fn bedrock_converse_plain_tools_and_errors() {
    let m = mock().await;
    let path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    let r = http(
        m.addr,
        "POST",
        path,
        &BEDROCK_AUTH,
        &bedrock_body(json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-amzn-requestid").is_some());
    assert_eq!(
        r.json(),
        json!({"output": {"message": {"role": "assistant",
                 "content": [{"text": "This is a mock response from tollgate."}]}},
               "stopReason": "end_turn",
               "usage": {"inputTokens": 5, "outputTokens": 5, "totalTokens": 10},
               "metrics": {"latencyMs": 1}})
    );
    let body = bedrock_body(json!({"inferenceConfig": {"maxTokens": 3}}));
    let v = http(m.addr, "POST", path, &BEDROCK_AUTH, &body).json();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["usage"]["outputTokens"], 3);

    let tools = json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {}}}},
                                 {"toolSpec": {"name": "get_time", "inputSchema": {"json": {}}}}]});
    let mut tc = tools.clone();
    tc["toolChoice"] = json!({"any": {}});
    let v = http(
        m.addr,
        "POST",
        path,
        &BEDROCK_AUTH,
        &bedrock_body(json!({"toolConfig": tc})),
    )
    .json();
    assert_eq!(
        v["output"]["message"]["content"],
        json!([{"toolUse": {"toolUseId": "tooluse_mock1", "name": "get_weather",
                "input": {"location": "Paris"}}}])
    );
    assert_eq!(v["stopReason"], "tool_use");
    let mut tc = tools.clone();
    tc["toolChoice"] = json!({"tool": {"name": "get_time"}});
    let v = http(
        m.addr,
        "POST",
        path,
        &BEDROCK_AUTH,
        &bedrock_body(json!({"toolConfig": tc})),
    )
    .json();
    assert_eq!(
        v["output"]["message"]["content"][0]["toolUse"]["name"],
        "get_time"
    );
    let v = http(
        m.addr,
        "POST",
        path,
        &BEDROCK_AUTH,
        &bedrock_body(json!({"toolConfig": tools})),
    )
    .json();
    assert_eq!(v["stopReason"], "end_turn");

    // Auth.
    for hdr in [&BEDROCK_AUTH[..1], &BEDROCK_AUTH[1..], &BEDROCK_AUTH[..0]] {
        let r = http(m.addr, "POST", path, hdr, &bedrock_body(json!({})));
        assert_eq!(r.status, 403);
        assert_eq!(
            r.header("x-amzn-errortype"),
            Some("MissingAuthenticationTokenException")
        );
        assert_eq!(r.json(), json!({"message": "Missing Authentication Token"}));
    }
    for (status, kind) in [
        ("400", "ValidationException"),
        ("403", "AccessDeniedException"),
        ("404", "ResourceNotFoundException"),
        ("408", "ModelTimeoutException"),
        ("429", "ThrottlingException"),
        ("500", "InternalServerException"),
        ("503", "ServiceUnavailableException"),
    ] {
        let hdr = with(&BEDROCK_AUTH, &[("x-mock-status", status)]);
        let r = http(m.addr, "POST", path, &hdr, &bedrock_body(json!({})));
        assert_eq!(r.status.to_string(), status);
        assert_eq!(r.header("x-amzn-errortype"), Some(kind));
        assert!(r.json()["message"].is_string());
    }
    let r = http(m.addr, "POST", path, &BEDROCK_AUTH, "{}");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-errortype"), Some("ValidationException"));

    // The signature is recorded, not checked.
    let last = m.last_request().unwrap();
    assert_eq!(last["path"], path);
    assert_eq!(
        last["sigv4"],
        json!({"credential": "AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request",
               "signed_headers": "host;x-amz-date", "signature": "abc123"})
    );
    m.stop().await;
}

#[actix_rt::test]
async fn bedrock_converse_stream_frames() {
    let m = mock().await;
    let path = "/model/amazon.nova-lite-v1%3A0/converse-stream";
    let hdr = with(&BEDROCK_AUTH, &[("x-mock-chunks", "3")]);
    let r = http(m.addr, "POST", path, &hdr, &bedrock_body(json!({})));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(r.complete);
    let frames = decode_frames(&r.bytes);
    let kinds: Vec<&str> = frames.iter().map(|f| f.header(":event-type")).collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    for f in &frames {
        assert_eq!(f.header(":message-type"), "event");
        assert_eq!(f.header(":content-type"), "application/json");
    }
    assert_eq!(frames[0].json(), json!({"role": "assistant"}));
    let text: String = frames[1..4]
        .iter()
        .map(|f| {
            let v = f.json();
            assert_eq!(v["contentBlockIndex"], 0);
            v["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "This is a mock response from tollgate.");
    assert_eq!(frames[4].json(), json!({"contentBlockIndex": 0}));
    assert_eq!(frames[5].json(), json!({"stopReason": "end_turn"}));
    assert_eq!(
        frames[6].json(),
        json!({"usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8},
               "metrics": {"latencyMs": 1}})
    );

    // Tool use: contentBlockStart, then partial JSON input strings.
    let body = bedrock_body(json!({"toolConfig": {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {}}}}],
        "toolChoice": {"any": {}}}}));
    let frames = decode_frames(&http(m.addr, "POST", path, &BEDROCK_AUTH, &body).bytes);
    assert_eq!(frames[1].header(":event-type"), "contentBlockStart");
    assert_eq!(
        frames[1].json(),
        json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock1", "name": "get_weather"}}})
    );
    let input: String = frames
        .iter()
        .filter(|f| f.header(":event-type") == "contentBlockDelta")
        .map(|f| {
            f.json()["delta"]["toolUse"]["input"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"location": "Paris"})
    );
    let stop = frames
        .iter()
        .find(|f| f.header(":event-type") == "messageStop")
        .unwrap();
    assert_eq!(stop.json(), json!({"stopReason": "tool_use"}));

    // Mid-stream throttling exception.
    let hdr = with(
        &BEDROCK_AUTH,
        &[("x-mock-chunks", "4"), ("x-mock-fault", "throttle_mid")],
    );
    let r = http(m.addr, "POST", path, &hdr, &bedrock_body(json!({})));
    assert!(r.complete);
    let frames = decode_frames(&r.bytes);
    assert_eq!(frames.len(), 4, "messageStart + 2 deltas + exception");
    let last = frames.last().unwrap();
    assert_eq!(last.header(":message-type"), "exception");
    assert_eq!(last.header(":exception-type"), "throttlingException");
    assert_eq!(last.header(":content-type"), "application/json");
    assert_eq!(last.json(), json!({"message": "Too many requests"}));

    // Garbage: the first 16 bytes are no valid frame.
    let hdr = with(&BEDROCK_AUTH, &[("x-mock-fault", "garbage")]);
    let r = http(m.addr, "POST", path, &hdr, &bedrock_body(json!({})));
    assert_ne!(bedrock::crc32(&r.bytes[..8]), be32(&r.bytes[8..12]));
    let s = m.stats();
    assert_eq!(
        (s.bedrock, s.streams_started, s.streams_completed),
        (4, 4, 3)
    );
    m.stop().await;
}

// -------------------------------------------------------------------- azure

#[actix_rt::test]
async fn azure_routes_auth_and_deployment_model() {
    let m = mock().await;
    let path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    let body = json!({"messages": [{"role": "user", "content": "abcd"}]}).to_string();
    let r = http(m.addr, "POST", path, &[("api-key", "k")], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["model"], "my-gpt4o");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "This is a mock response from tollgate."
    );

    let r = http(
        m.addr,
        "POST",
        path,
        &[("authorization", "Bearer entra-token")],
        &body,
    );
    assert_eq!(r.status, 200);
    let r = http(m.addr, "POST", path, &[], &body);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "401");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Access denied"));
    let r = http(
        m.addr,
        "POST",
        "/openai/deployments/my-gpt4o/chat/completions",
        &[("api-key", "k")],
        &body,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );

    // Streaming, embeddings and completions through a deployment.
    let stream =
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string();
    let ev = http(m.addr, "POST", path, &[("api-key", "k")], &stream).events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["model"], "my-gpt4o");
    let v = http(
        m.addr,
        "POST",
        "/openai/deployments/emb/embeddings?api-version=2024-10-21",
        &[("api-key", "k")],
        r#"{"input":"x"}"#,
    )
    .json();
    assert_eq!(v["model"], "emb");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let v = http(
        m.addr,
        "POST",
        "/openai/deployments/inst/completions?api-version=2024-10-21",
        &[("api-key", "k")],
        r#"{"prompt":"abcd"}"#,
    )
    .json();
    assert_eq!(v["model"], "inst");

    // v1 API: model from the body, same auth rule.
    let v1 = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let r = http(
        m.addr,
        "POST",
        "/openai/v1/chat/completions",
        &[("api-key", "k")],
        &v1,
    );
    assert_eq!(
        (r.status, r.json()["model"].clone()),
        (200, json!("gpt-4o"))
    );
    assert_eq!(
        http(m.addr, "POST", "/openai/v1/chat/completions", &[], &v1).status,
        401
    );

    // Injected errors keep the OpenAI shape.
    let r = http(
        m.addr,
        "POST",
        path,
        &[("api-key", "k"), ("x-mock-status", "429")],
        &body,
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let s = m.stats();
    assert_eq!(
        (s.azure, s.chat, s.embeddings, s.completions),
        (10, 8, 1, 1)
    );
    m.stop().await;
}

// -------------------------------------------------------- request capture

#[actix_rt::test]
async fn last_request_is_captured_and_reset() {
    let m = mock().await;
    assert_eq!(m.last_request(), None);
    assert_eq!(
        http(m.addr, "GET", "/mock/last_request", &[], "").json(),
        Value::Null
    );
    http(
        m.addr,
        "POST",
        "/v1/chat/completions?trace=1",
        &[("X-Custom", "A"), ("x-custom", "B")],
        &chat_body(json!({})),
    );
    let v = http(m.addr, "GET", "/mock/last_request", &[], "").json();
    assert_eq!(v, m.last_request().unwrap());
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/chat/completions");
    assert_eq!(v["query"], "trace=1");
    assert_eq!(v["headers"]["x-custom"], "A, B");
    assert_eq!(v["headers"]["content-type"], "application/json");
    assert_eq!(v["body"]["model"], "gpt-test");
    assert!(v.get("sigv4").is_none());

    // Refused requests are captured too; non-JSON bodies are null.
    http(m.addr, "POST", "/v1/messages", &[], "not json");
    let v = m.last_request().unwrap();
    assert_eq!(v["path"], "/v1/messages");
    assert_eq!(v["body"], Value::Null);
    // Control routes are not.
    http(m.addr, "GET", "/mock/stats", &[], "");
    assert_eq!(m.last_request().unwrap()["path"], "/v1/messages");

    assert_eq!(http(m.addr, "POST", "/mock/reset", &[], "").status, 200);
    assert_eq!(m.last_request(), None);
    m.stop().await;
}

#[test]
fn url_helpers() {
    assert_eq!(handlers::percent_decode("a%3Ab%2fc%zz%"), "a:b/c%zz%");
    assert_eq!(handlers::percent_decode("plain"), "plain");
    assert_eq!(
        handlers::query_param("a=1&alt=sse&key=", "alt"),
        Some("sse")
    );
    assert_eq!(handlers::query_param("a=1&key=", "key"), Some(""));
    assert_eq!(handlers::query_param("a=1", "alt"), None);
    assert_eq!(handlers::tool_input_pieces(1).len(), 2);
    assert_eq!(
        handlers::tool_input_pieces(100).concat(),
        handlers::TOOL_INPUT
    );
}

#[actix_rt::test]
async fn context_errors_in_every_dialect() {
    let m = mock().await;
    let ctx = [("x-mock-status", "400"), ("x-mock-error", "context")];
    let r = http(
        m.addr,
        "POST",
        "/v1/chat/completions",
        &ctx,
        &chat_body(json!({})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    let r = http(
        m.addr,
        "POST",
        "/v1beta/models/g:generateContent",
        &with(&GEMINI_AUTH, &ctx),
        &gemini_body(json!({})),
    );
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("input token count"));
    let r = http(
        m.addr,
        "POST",
        "/model/m/converse",
        &with(&BEDROCK_AUTH, &ctx),
        &bedrock_body(json!({})),
    );
    assert_eq!(r.header("x-amzn-errortype"), Some("ValidationException"));
    assert_eq!(
        r.json()["message"],
        "Input is too long for requested model."
    );
    // The body `mock` field works too.
    let body = anthropic_body(json!({"mock": {"status": 400, "error": "context"}}));
    let r = http(m.addr, "POST", "/v1/messages", &ANTHROPIC_AUTH, &body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    m.stop().await;
}

#[actix_rt::test]
async fn otlp_trace_exports_are_taken_and_counted_without_decoding() {
    let m = mock().await;
    for path in ["/v1/traces", "/api/public/otel/v1/traces"] {
        let r = http(
            m.addr,
            "POST",
            path,
            &[("content-type", "application/x-protobuf")],
            "0123456789",
        );
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert!(
            r.bytes.is_empty(),
            "an empty export response is full success"
        );
    }
    let s = m.stats();
    assert_eq!((s.otlp_exports, s.otlp_bytes), (2, 20));
    assert_eq!(s.chat, 0);
    m.stop().await;
}
