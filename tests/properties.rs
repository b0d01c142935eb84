//! Property tests: whatever bytes a client, an upstream or a config file
//! throws at the parsers, they answer or refuse — they never panic. Inputs
//! are both arbitrary and mutations of valid ones (which reach deeper).

use std::time::Duration;

use proptest::prelude::*;
use tollgate::config::Config;
use tollgate::providers::openai::{self, StreamStep};
use tollgate::providers::sse::SseDecoder;
use tollgate::providers::Endpoint;
use tollgate::request::InferenceRequest;

const ENDPOINTS: [Endpoint; 3] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
];

const VALID_BODIES: [&str; 4] = [
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9 \"q\""}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":10,"user":"u","timeout":2.5,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
    r#"{"model":"m","prompt":["once","upon"],"max_tokens":5,"n":2}"#,
    r#"{"model":"e","input":[[1,2,3],[4]],"encoding_format":"base64"}"#,
    r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#,
];

const VALID_STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\r\n\r\n",
    "event: x\nid: 3\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

const VALID_CONFIG: &str = r#"
master_key = "sk-master-123456"
database_url = "sqlite://x.db"
[server]
port = 4000
max_body_bytes = 1048576
[router]
num_retries = 2
timeout_secs = 30
[[keys]]
key = "sk-static-1234567"
models = ["m", "openai/*"]
[[models.m.deployments]]
provider = "openai_compatible"
model = "x"
api_base = "http://127.0.0.1:9/v1"
weight = 2
extra_headers = { "x-a" = "b" }
"#;

/// A valid input with a few bytes replaced, inserted or removed.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8).prop_map(
        move |edits| {
            let mut bytes = base.as_bytes().to_vec();
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        },
    )
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(VALID_BODIES[0]),
        mutated(VALID_BODIES[1]),
        mutated(VALID_BODIES[2]),
        mutated(VALID_BODIES[3]),
    ]
}

fn check_request(endpoint: Endpoint, body: &[u8]) {
    if let Ok(req) = InferenceRequest::parse(endpoint, body) {
        // What the gateway would send upstream is JSON with our model in it.
        let out = openai::upstream_body(&req, "upstream-model");
        let v: serde_json::Value =
            serde_json::from_slice(&out).expect("the upstream body is valid JSON");
        assert_eq!(v["model"], "upstream-model");
        assert!(v.get("timeout").is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_request_parser_never_panics(body in any_body(), e in 0usize..3) {
        check_request(ENDPOINTS[e], &body);
    }

    #[test]
    fn the_sse_decoder_never_panics_and_never_loses_a_split(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            mutated(VALID_STREAM),
        ],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        // Fed in one piece or cut anywhere, the same events come out.
        let whole = {
            let mut d = SseDecoder::new();
            d.push(&bytes);
            let mut events = Vec::new();
            while let Ok(Some(ev)) = d.next_event() {
                events.push(ev);
            }
            events.extend(d.finish());
            events
        };
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort();
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        let mut from = 0;
        for at in points.into_iter().chain([bytes.len()]) {
            d.push(&bytes[from..at]);
            from = at;
            while let Ok(Some(ev)) = d.next_event() {
                events.push(ev);
            }
        }
        events.extend(d.finish());
        prop_assert_eq!(events.clone(), whole);
        // Whatever a client is sent is JSON or [DONE].
        for ev in &events {
            match openai::stream_step(ev, true) {
                StreamStep::Forward(b) | StreamStep::Done(b) => {
                    let data = &b[b"data: ".len()..b.len() - 2];
                    prop_assert!(data == b"[DONE]" || serde_json::from_slice::<serde_json::Value>(data).is_ok());
                }
                StreamStep::Usage { forward, .. } => {
                    if let Some(b) = forward {
                        let data = &b[b"data: ".len()..b.len() - 2];
                        prop_assert!(serde_json::from_slice::<serde_json::Value>(data).is_ok());
                    }
                }
                StreamStep::Invalid | StreamStep::Failed(_) => {}
            }
        }
    }

    #[test]
    fn upstream_answers_and_errors_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            mutated(r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":18446744073709551615,"total_tokens":1}}"#),
            mutated(r#"{"error":{"message":"rate limited","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#),
        ],
        status in 100u16..600,
        e in 0usize..3,
        retry_after in prop::option::of(".{0,24}"),
        retry_after_ms in prop::option::of(prop_oneof![".{0,24}", any::<f64>().prop_map(|f| f.to_string())]),
    ) {
        if let Ok(Some(u)) = openai::usage_from_body(ENDPOINTS[e], &body) {
            prop_assert!(u.prompt_tokens <= tollgate::providers::MAX_TOKENS);
            prop_assert!(u.completion_tokens <= tollgate::providers::MAX_TOKENS);
        }
        let hint = openai::retry_after(retry_after.as_deref(), retry_after_ms.as_deref());
        if let Some(d) = hint {
            prop_assert!(d <= openai::MAX_RETRY_AFTER);
            // Usable as a sleep and a cooldown without overflow.
            let _ = std::time::Instant::now() + d + Duration::from_secs(86_400);
        }
        let err = openai::parse_error(status, hint, &body);
        prop_assert!(!err.message.is_empty() || body.is_empty());
    }

    #[test]
    fn config_loading_never_panics(
        text in prop_oneof![
            ".{0,256}",
            mutated(VALID_CONFIG).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        if let Ok(c) = Config::from_toml(&text) {
            // Whatever validation accepts can be used as durations.
            let _ = std::time::Instant::now() + Duration::from_secs(c.router.timeout_secs)
                + Duration::from_secs(c.router.cooldown_secs)
                + Duration::from_secs(c.router.request_timeout_secs);
        }
    }
}

#[test]
fn the_valid_examples_are_valid() {
    for (body, e) in VALID_BODIES.iter().zip([0, 1, 2, 0]) {
        assert!(
            InferenceRequest::parse(ENDPOINTS[e], body.as_bytes()).is_ok(),
            "{body}"
        );
    }
    assert!(Config::from_toml(VALID_CONFIG).is_ok());
}
