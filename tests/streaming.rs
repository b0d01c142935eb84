//! Streaming: chunk order, `[DONE]`, usage, disconnects and broken upstreams.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tollgate::mock::Behaviour;

fn stream_body(model: &str, include_usage: bool) -> serde_json::Value {
    let mut b = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Tell me a story"}]});
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

#[actix_rt::test]
async fn chunks_arrive_in_order_and_end_with_done() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(6),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &stream_body("m", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let whole = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m"))
        .await
        .json();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "the usage chunk the gateway asked for must not reach a client that did not ask"
    );
    assert_eq!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"] == "stop")
            .count(),
        1
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn include_usage_returns_the_usage_chunk_and_spend_is_counted_either_way() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(4),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&model("m", &mock)).await;

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &stream_body("m", true),
    )
    .await;
    let events = sse_events(&r.body);
    let usage_chunk: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4);

    // Without include_usage the client sees no usage, yet tokens are counted.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &stream_body("m", false),
    )
    .await;
    assert_eq!(r.status, 200);
    let mut counted = 0.0;
    for _ in 0..100 {
        counted = metric(&gw, r#"tollgate_tokens_total{model="m",kind="completion"}"#).await;
        if counted == 8.0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counted, 8.0,
        "completion tokens of both streams are counted"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_request() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(200),
        chunk_interval_ms: 50,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let mut resp = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {MASTER}")))
        .send_json(&stream_body("m", false))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(resp);

    assert!(
        eventually(Duration::from_secs(3), || mock.stats().streams_cancelled
            == 1)
        .await,
        "upstream never saw the cancel: {:?}",
        mock.stats()
    );
    assert_eq!(mock.stats().streams_completed, 0);
    // The router's in-flight count went back to zero.
    let mut in_flight = json!(null);
    for _ in 0..100 {
        in_flight = get(&gw, "/health/router", Some(MASTER)).await.json()["healthy_endpoints"][0]
            ["in_flight"]
            .clone();
        if in_flight == 0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight, 0);
    gw.stop().await;
}

#[actix_rt::test]
async fn an_upstream_stream_cut_midway_ends_with_an_error_event_not_done() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(10),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let mut body = stream_body("m", false);
    body["mock"] = json!({"fault": "cut"});
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_eq!(r.status, 200, "the head was already sent");
    let events = sse_events(&r.body);
    assert!(events.len() >= 2, "{events:?}");
    assert!(!events.contains(&"[DONE]".to_string()), "{events:?}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    gw.stop().await;
}

#[actix_rt::test]
async fn legacy_completions_stream_too() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = post(
        &gw,
        "/v1/completions",
        Some(MASTER),
        &json!({"model": "m", "prompt": "Once", "stream": true}),
    )
    .await;
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    gw.stop().await;
}
