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
        body: String::from_utf8(body).unwrap(),
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
