//! ConverseStream answers as event-stream frames built with
//! aws-smithy-eventstream's own encoder, event payloads shaped as the
//! ConverseStream reference shows them, fed in pieces cut anywhere.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as Frame};

use super::super::tests::{ctx, MODEL};
use super::*;
use crate::providers::test_support::chunks;

fn frame(headers: &[(&str, &str)], payload: &str) -> Vec<u8> {
    let mut msg = Frame::new(payload.as_bytes().to_vec());
    for (name, value) in headers {
        msg = msg.add_header(Header::new(
            name.to_string(),
            HeaderValue::String(value.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    write_message_to(&msg, &mut out).unwrap();
    out
}

fn event(kind: &str, payload: &str) -> Vec<u8> {
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// The walkthrough's tool call as ConverseStream sends it (with the `p`
/// padding field Bedrock adds to events).
fn tool_stream() -> Vec<u8> {
    [
        event("messageStart", r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ","role":"assistant"}"#),
        event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Let me check"},"p":"abcd"}"#),
        event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":" the charts."}}"#),
        event("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        event(
            "contentBlockStart",
            r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"top_song"}}}"#,
        ),
        event("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"sign\": \"WZ"}}}"#),
        event("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"PZ\"}"}}}"#),
        event("contentBlockStop", r#"{"contentBlockIndex":1}"#),
        event("messageStop", r#"{"stopReason":"tool_use"}"#),
        event(
            "metadata",
            r#"{"usage":{"inputTokens":375,"outputTokens":58,"totalTokens":1433,"cacheReadInputTokens":1000,"cacheWriteInputTokens":0},"metrics":{"latencyMs":1423}}"#,
        ),
    ]
    .concat()
}

/// Feeds a stream cut into pieces of `step` bytes.
/// Feeds a stream cut into pieces of `step` bytes.
fn run_stream(
    wire: &[u8],
    step: usize,
    wants_usage: bool,
) -> (Vec<StreamStep>, Result<(), String>) {
    crate::providers::test_support::feed(
        crate::providers::Wire::Bedrock,
        ctx(wants_usage),
        wire,
        step,
    )
}

#[test]
fn a_tool_use_stream_becomes_openai_chunks_wherever_it_is_cut() {
    let wire = tool_stream();
    let (reference, end) = run_stream(&wire, wire.len(), true);
    assert!(end.is_ok());
    for step in (1..=17).chain([64, 100, 333]) {
        let (steps, end) = run_stream(&wire, step, true);
        assert!(end.is_ok(), "cut every {step} bytes");
        assert_eq!(steps, reference, "cut every {step} bytes");
    }
    let c = chunks(&reference);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(c[0]["id"], "chatcmpl-req1");
    assert_eq!(c[0]["object"], "chat.completion.chunk");
    assert_eq!(c[0]["model"], MODEL);
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Let me check");
    assert_eq!(c[2]["choices"][0]["delta"]["content"], " the charts.");
    let call = &c[3]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (
            call["index"].as_u64(),
            call["id"].as_str(),
            call["function"]["name"].as_str()
        ),
        (
            Some(0),
            Some("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"),
            Some("top_song")
        )
    );
    assert_eq!(call["function"]["arguments"], "");
    let args: String = c[4..6]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(args, r#"{"sign": "WZPZ"}"#);
    assert_eq!(c[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c[7]["choices"], json!([]));
    assert_eq!(c[7]["usage"]["prompt_tokens"], 1375);
    assert_eq!(c[7]["usage"]["completion_tokens"], 58);
    assert_eq!(c.len(), 8);
    let usage = reference.iter().find_map(|s| match s {
        StreamStep::Usage { usage, .. } => Some(*usage),
        _ => None,
    });
    assert_eq!(
        usage.map(|u| (u.prompt_tokens, u.cached_tokens)),
        Some((1375, 1000))
    );
    assert_eq!(
        reference.last(),
        Some(&StreamStep::Done(Bytes::from_static(openai::DONE_EVENT)))
    );
}

#[test]
fn the_usage_chunk_is_sent_only_when_asked_for_but_always_counted() {
    let (steps, end) = run_stream(&tool_stream(), 4096, false);
    assert!(end.is_ok());
    assert!(chunks(&steps).iter().all(|c| c.get("usage").is_none()));
    assert!(steps
        .iter()
        .any(|s| matches!(s, StreamStep::Usage { forward: None, .. })));
}

#[test]
fn reasoning_and_forced_json_stream_as_reasoning_content_and_content() {
    let wire = [
        event("messageStart", r#"{"role":"assistant"}"#),
        event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"Think."}}}"#),
        event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"EqQB"}}}"#),
        event(
            "contentBlockStart",
            r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t9","name":"json_tool_call"}}}"#,
        ),
        event("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"a\":1}"}}}"#),
        event("messageStop", r#"{"stopReason":"tool_use"}"#),
        event("metadata", r#"{"usage":{"inputTokens":5,"outputTokens":3,"totalTokens":8}}"#),
    ]
    .concat();
    let (steps, end) = run_stream(&wire, 7, false);
    assert!(end.is_ok());
    let c = chunks(&steps);
    assert_eq!(c[1]["choices"][0]["delta"]["reasoning_content"], "Think.");
    assert_eq!(c[2]["choices"][0]["delta"]["content"], r#"{"a":1}"#);
    assert_eq!(c[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(c.len(), 4);
}

#[test]
fn an_exception_frame_fails_the_stream() {
    let wire = [
        event("messageStart", r#"{"role":"assistant"}"#),
        frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        ),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"never read"}}"#,
        ),
    ]
    .concat();
    let (steps, _) = run_stream(&wire, 9, false);
    assert_eq!(chunks(&steps).len(), 1);
    match steps.last() {
        Some(StreamStep::Failed(m)) => {
            assert!(
                m.contains("throttlingException") && m.contains("Too many requests"),
                "{m}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn an_early_close_is_an_error_even_after_message_stop() {
    let wire = tool_stream();
    let (_, end) = run_stream(&wire[..wire.len() / 2], 100, false);
    assert!(end.unwrap_err().contains("before messageStop"));
    let stopped = [
        event("messageStart", r#"{"role":"assistant"}"#),
        event("messageStop", r#"{"stopReason":"end_turn"}"#),
    ]
    .concat();
    let (steps, end) = run_stream(&stopped, 10, false);
    assert!(end.unwrap_err().contains("usage"));
    assert!(!steps.iter().any(|s| matches!(s, StreamStep::Done(_))));
}

#[test]
fn broken_frames_are_errors_not_chunks() {
    let mut wire = event("messageStart", r#"{"role":"assistant"}"#);
    let last = wire.len() - 1;
    wire[last] ^= 0xff; // the message CRC
    let mut s = StreamState::new(ctx(false));
    let mut out = Vec::new();
    assert!(s.push(&wire, &mut out).is_err());
    assert!(out.is_empty());

    // A prelude claiming 4 GiB is refused at once, not waited for.
    let mut s = StreamState::new(ctx(false));
    assert!(s.push(&[0xff, 0xff, 0xff, 0xff, 0, 0], &mut out).is_err());

    // An event whose payload is not JSON is never forwarded.
    let (steps, _) = run_stream(&event("contentBlockDelta", "<html>"), 5, false);
    assert_eq!(steps, vec![StreamStep::Invalid]);
}
