//! `/health` probes every deployment for real (LiteLLM's behaviour);
//! background health checks take a failing deployment out of rotation
//! until a probe succeeds.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tollgate::mock::Behaviour;

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[actix_rt::test]
async fn health_probes_each_deployment_and_reports_the_broken_ones_with_their_error() {
    let good = spawn_mock().await;
    let broken = spawn_mock_with(Behaviour {
        status: Some(401),
        ..Default::default()
    })
    .await;
    let embed = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}{}",
        deployment("chat", "good", &good, ""),
        deployment("chat", "broken", &broken, ""),
        deployment("emb", "embedder", &embed, "mode = \"embedding\"")
    ))
    .await;
    let h = get(&gw, "/health", Some(MASTER)).await;
    assert_eq!(h.status, 200, "{}", h.text());
    let h = h.json();
    assert_eq!(ids(&h["healthy_endpoints"]), ["embedder", "good"], "{h}");
    assert_eq!(ids(&h["unhealthy_endpoints"]), ["broken"], "{h}");
    assert_eq!(
        (h["healthy_count"].as_u64(), h["unhealthy_count"].as_u64()),
        (Some(2), Some(1))
    );
    let bad = &h["unhealthy_endpoints"][0];
    assert!(bad["error"].as_str().unwrap().len() > 3, "{bad}");
    assert_eq!(bad["model"], "openai_compatible/mock-gpt");
    assert!(!h.to_string().contains("authorization"));
    // Each probe was one real, tiny request of the deployment's kind.
    assert_eq!((good.stats().chat, broken.stats().chat), (1, 1));
    assert_eq!((embed.stats().embeddings, embed.stats().chat), (1, 0));
    let sent = good.last_request().unwrap();
    assert_eq!(sent["body"]["max_tokens"], 1, "{sent}");

    // One group only.
    let h = get(&gw, "/health?model=emb", Some(MASTER)).await.json();
    assert_eq!(ids(&h["healthy_endpoints"]), ["embedder"]);
    assert_eq!(h["unhealthy_count"], 0);
    assert_eq!(
        get(&gw, "/health?model=nope", Some(MASTER)).await.status,
        404
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn a_hanging_deployment_is_reported_within_the_probe_timeout() {
    let hang = spawn_mock_with(Behaviour {
        latency_ms: 30_000,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nhealth_check_timeout_secs = 1\n{}",
        deployment("m", "hangs", &hang, "")
    ))
    .await;
    let t0 = std::time::Instant::now();
    let h = get(&gw, "/health", Some(MASTER)).await.json();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(ids(&h["unhealthy_endpoints"]), ["hangs"], "{h}");
    gw.stop().await;
}

#[actix_rt::test]
async fn background_checks_take_a_failing_deployment_out_of_rotation_until_it_recovers() {
    let flaky = spawn_mock_with(Behaviour {
        status: Some(500),
        ..Default::default()
    })
    .await;
    let steady = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nbackground_health_checks = true\nhealth_check_interval_secs = 1\nallowed_fails = 1000\n{}{}",
        deployment("m", "flaky", &flaky, ""),
        deployment("m", "steady", &steady, "")
    ))
    .await;
    // The first round (shortly after start) finds it failing.
    assert!(
        eventually(Duration::from_secs(3), || flaky.stats().chat >= 1).await,
        "never probed"
    );
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let before = flaky.stats().chat;
    for _ in 0..10 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-tollgate-deployment").as_deref(), Some("steady"));
    }
    // Only probes reached it, no traffic.
    assert!(flaky.stats().chat <= before + 1);
    // /health answers from the latest round, without probing again.
    let h = get(&gw, "/health", Some(MASTER)).await.json();
    assert_eq!(ids(&h["unhealthy_endpoints"]), ["flaky"], "{h}");
    let details = get(&gw, "/health/readiness/details", Some(MASTER))
        .await
        .json();
    assert_eq!(details["failing_probes"][0], "flaky", "{details}");

    // It heals: the next round puts it back.
    flaky.set_behaviour(Behaviour::default());
    let mut back = false;
    for _ in 0..40 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        if r.header("x-tollgate-deployment").as_deref() == Some("flaky") {
            back = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the recovered deployment never served again");
    gw.stop().await;
}
