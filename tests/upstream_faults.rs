//! Upstream garbage, slow clients and deadlines: what reaches the client is
//! always well-formed, and anything that failed before a byte was sent is
//! retried elsewhere.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate::mock::{Behaviour, Fault, MockServer};

fn faulty(fault: Fault) -> Behaviour {
    Behaviour {
        fault: Some(fault),
        ..Default::default()
    }
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// Every `data:` event parses as JSON or is `[DONE]`.
fn assert_all_events_json(events: &[String]) {
    for e in events {
        assert!(
            e == "[DONE]" || serde_json::from_str::<Value>(e).is_ok(),
            "a non-JSON event reached the client: {e:?}"
        );
    }
}

/// A group of one broken and one healthy deployment, a router that cools
/// a deployment down on its first failure and always retries elsewhere.
async fn broken_and_healthy(fault: Fault) -> (tollgate::RunningGateway, MockServer, MockServer) {
    let broken = spawn_mock_with(faulty(fault)).await;
    let healthy = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 1\nretry_backoff_ms = 1\nallowed_fails = 1\n{}{}",
        deployment("m", "broken", &broken, ""),
        deployment("m", "healthy", &healthy, "")
    ))
    .await;
    (gw, broken, healthy)
}

#[actix_rt::test]
async fn a_200_that_is_not_a_completion_is_retried_and_cools_the_deployment_down() {
    let (gw, broken, _healthy) = broken_and_healthy(Fault::BadShape).await;
    for _ in 0..10 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-tollgate-deployment").as_deref(),
            Some("healthy")
        );
        assert!(r.json()["choices"].is_array());
    }
    assert!(
        broken.stats().chat <= 1,
        "cooled down after its first bad answer"
    );
    let health = get(&gw, "/health/router", Some(MASTER)).await.json();
    assert_eq!(health["unhealthy_endpoints"][0]["id"], "broken", "{health}");
    gw.stop().await;

    // Alone, it is an upstream error the client can read, not a success.
    let broken = spawn_mock_with(faulty(Fault::BadShape)).await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 0\n{}",
        deployment("m", "broken", &broken, "")
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("choices"));
    gw.stop().await;
}

#[actix_rt::test]
async fn a_stream_that_fails_before_its_first_event_is_retried_on_another_deployment() {
    for fault in [Fault::Drop, Fault::Html, Fault::BadShape, Fault::Garbage] {
        let (gw, broken, healthy) = broken_and_healthy(fault).await;
        for _ in 0..6 {
            let r = post(&gw, "/v1/chat/completions", Some(MASTER), &stream_body("m")).await;
            assert_eq!(r.status, 200, "{fault:?}: {}", r.text());
            assert_eq!(
                r.header("x-tollgate-deployment").as_deref(),
                Some("healthy"),
                "{fault:?}"
            );
            let events = sse_events(&r.body);
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{fault:?}: {events:?}"
            );
            assert_all_events_json(&events);
        }
        assert!(
            broken.stats().chat <= 1,
            "{fault:?}: cooled down after one failure"
        );
        assert!(healthy.stats().streams_completed >= 5, "{fault:?}");
        gw.stop().await;
    }
}

#[actix_rt::test]
async fn a_non_json_event_mid_stream_becomes_an_error_event_and_ends_the_stream() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(8),
        fault: Some(Fault::GarbageMid),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &stream_body("m")).await;
    assert_eq!(r.status, 200, "bytes were already sent: {}", r.text());
    let events = sse_events(&r.body);
    assert_all_events_json(&events);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{last}"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn open_streams_get_an_error_event_before_the_shutdown_grace_ends() {
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(1000),
        chunk_interval_ms: 100,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway_tweaked(&model("m", &mock), |c| c.server.shutdown_grace_secs = 1).await;
    let mut resp = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {MASTER}")))
        .send_json(&stream_body("m"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let t0 = Instant::now();
    let stopping = actix_rt::spawn(gw.stop());
    let mut rest = Vec::new();
    while let Some(chunk) = resp.next().await {
        match chunk {
            Ok(b) => rest.extend_from_slice(&b),
            Err(_) => break,
        }
    }
    stopping.await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let events = sse_events(&rest);
    let last: Value = serde_json::from_str(events.last().expect("an event before the cut"))
        .unwrap_or_else(|_| panic!("{events:?}"));
    assert_eq!(last["error"]["type"], "service_unavailable", "{last}");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
}

#[actix_rt::test]
async fn a_client_that_stalls_mid_body_gets_408_and_its_connection_is_closed() {
    let mock = spawn_mock().await;
    let gw =
        spawn_gateway_tweaked(&model("m", &mock), |c| c.server.body_read_timeout_secs = 1).await;
    let addr = gw.addr;
    let t0 = Instant::now();
    let answer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let answer = actix_rt::task::spawn_blocking(move || answer.join().unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    gw.stop().await;
}

#[actix_rt::test]
async fn bad_query_strings_and_deep_json_get_json_400s() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let r = get(&gw, "/key/list?page=abc", Some(MASTER)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid digit"),
        "{}",
        r.text()
    );

    let mut body = chat_body("m");
    let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    body["tools"] = serde_json::from_str::<Value>("[]").unwrap();
    let text = serde_json::to_string(&body).unwrap().replacen(
        "\"tools\":[]",
        &format!("\"tools\":{deep}"),
        1,
    );
    let r = post_raw(&gw, "/v1/chat/completions", Some(MASTER), text.into_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("deeper"), "{}", r.text());
    assert_eq!(mock.stats().chat, 0, "nothing reached the upstream");
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn one_deadline_bounds_every_attempt_of_a_request() {
    let a = spawn_mock_with(faulty(Fault::Hang)).await;
    let b = spawn_mock_with(faulty(Fault::Hang)).await;
    // Per attempt 600 s, 2 retries: without an overall deadline this is 30 min.
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 2\nretry_backoff_ms = 1\ntimeout_secs = 600\nrequest_timeout_secs = 1\n{}{}",
        deployment("m", "a", &a, ""),
        deployment("m", "b", &b, "")
    ))
    .await;
    let t0 = Instant::now();
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "timeout");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // The request's own `timeout` shortens it, and is not sent upstream.
    let mut body = stream_body("m");
    body["timeout"] = json!(0.3);
    let t0 = Instant::now();
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(900), "{took:?}");
    // A deadline the client chose says nothing about the deployments.
    let health = get(&gw, "/health/router", Some(MASTER)).await.json();
    assert_eq!(health["healthy_count"], 2, "{health}");
    gw.stop().await;
}
