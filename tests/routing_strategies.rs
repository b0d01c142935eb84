//! Routing strategies, priority tiers, tag routing, pre-call context
//! checks and per-class retry / cooldown policies, against mocks skewed
//! to make each choice visible.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;
use tollgate::mock::{Behaviour, MockServer};
use tollgate::RunningGateway;

async fn slow_mock(ms: u64) -> MockServer {
    spawn_mock_with(Behaviour {
        latency_ms: ms,
        ..Default::default()
    })
    .await
}

/// Sends `n` requests one after another; counts who answered.
async fn served_by(
    gw: &RunningGateway,
    body: &serde_json::Value,
    n: usize,
) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let r = post(gw, "/v1/chat/completions", Some(MASTER), body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        *by.entry(r.header("x-tollgate-deployment").unwrap())
            .or_default() += 1;
    }
    by
}

#[actix_rt::test]
async fn latency_routing_sends_traffic_to_the_fast_deployment_once_measured() {
    let slow = slow_mock(150).await;
    let fast = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nrouting_strategy = \"latency-based-routing\"\n{}{}",
        deployment("m", "slow", &slow, ""),
        deployment("m", "fast", &fast, "")
    ))
    .await;
    // Each is tried once (unmeasured goes first), then the fast one wins.
    let by = served_by(&gw, &chat_body("m"), 20).await;
    assert_eq!(by.get("slow").copied().unwrap_or(0), 1, "{by:?}");
    assert_eq!(by["fast"], 19, "{by:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn least_busy_routes_around_a_deployment_holding_requests() {
    let slow = slow_mock(1500).await;
    let idle = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nrouting_strategy = \"least-busy\"\n{}{}",
        deployment("m", "slow", &slow, ""),
        deployment("m", "idle", &idle, "")
    ))
    .await;
    // Park requests on "slow" (least-busy alternates on ties, so some of
    // these land there), then send more while they are in flight.
    let mut parked = Vec::new();
    for _ in 0..4 {
        let gw = &gw;
        parked.push(async move {
            post(gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await
        });
    }
    let parked = futures_util::future::join_all(parked);
    let probe = async {
        actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
        served_by(&gw, &chat_body("m"), 10).await
    };
    let (parked, by) = tokio::join!(parked, probe);
    let parked_on_slow = parked
        .iter()
        .filter(|r| r.header("x-tollgate-deployment").as_deref() == Some("slow"))
        .count();
    assert!(parked_on_slow >= 1, "least-busy spreads the first burst");
    assert_eq!(by.get("idle").copied(), Some(10), "{by:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn power_of_two_choices_keeps_traffic_off_a_slow_deployment() {
    let slow = slow_mock(200).await;
    let a = spawn_mock().await;
    let b = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nrouting_strategy = \"power-of-two-choices\"\n{}{}{}",
        deployment("m", "slow", &slow, ""),
        deployment("m", "a", &a, ""),
        deployment("m", "b", &b, "")
    ))
    .await;
    let by = served_by(&gw, &chat_body("m"), 40).await;
    // Unmeasured, the slow one may be picked until measured once or twice;
    // after that it loses every comparison it is drawn into.
    assert!(by.get("slow").copied().unwrap_or(0) <= 2, "{by:?}");
    assert!(by.get("a").copied().unwrap_or(0) >= 8, "{by:?}");
    assert!(by.get("b").copied().unwrap_or(0) >= 8, "{by:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn cost_routing_takes_the_cheapest_deployment_and_a_group_can_choose_its_own_strategy() {
    let dear = spawn_mock().await;
    let cheap = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[models.m]\nrouting_strategy = \"cost-based-routing\"\n{}{}",
        deployment(
            "m",
            "dear",
            &dear,
            "input_cost_per_token = 0.00001\noutput_cost_per_token = 0.00003"
        ),
        deployment(
            "m",
            "cheap",
            &cheap,
            "input_cost_per_token = 0.0000001\noutput_cost_per_token = 0.0000004"
        )
    ))
    .await;
    let by = served_by(&gw, &chat_body("m"), 10).await;
    assert_eq!(by.get("cheap").copied(), Some(10), "{by:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn usage_routing_spreads_by_headroom_under_each_deployments_limit() {
    let a = spawn_mock().await;
    let b = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nrouting_strategy = \"usage-based-routing-v2\"\n{}{}",
        deployment("m", "small", &a, "rpm = 4"),
        deployment("m", "large", &b, "rpm = 40")
    ))
    .await;
    // "small" fills a tenth as fast as its share: after 1 request it is at
    // 25 %, so "large" takes the next ten before "small" is lowest again.
    let by = served_by(&gw, &chat_body("m"), 12).await;
    assert!(by.get("small").copied().unwrap_or(0) <= 2, "{by:?}");
    assert!(by.get("large").copied().unwrap_or(0) >= 10, "{by:?}");
    gw.stop().await;
}

#[actix_rt::test]
async fn priority_tiers_take_traffic_in_order_and_the_next_tier_serves_when_the_first_fails() {
    let primary = spawn_mock().await;
    let backup = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nallowed_fails = 1\ncooldown_secs = 60\nretry_backoff_ms = 1\n{}{}",
        deployment("m", "primary", &primary, "order = 1"),
        deployment("m", "backup", &backup, "order = 2")
    ))
    .await;
    let by = served_by(&gw, &chat_body("m"), 10).await;
    assert_eq!(by.get("primary").copied(), Some(10), "{by:?}");
    primary.set_behaviour(Behaviour {
        status: Some(500),
        ..Default::default()
    });
    // The failed attempt is retried on the next tier, and the primary cools down.
    let by = served_by(&gw, &chat_body("m"), 5).await;
    assert_eq!(by.get("backup").copied(), Some(5), "{by:?}");
    assert_eq!(
        primary.stats().chat,
        11,
        "the cooled-down primary got one try"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn tags_in_the_body_metadata_or_header_pick_the_tagged_deployments() {
    let free = spawn_mock().await;
    let paid = spawn_mock().await;
    let general = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}{}",
        deployment("m", "free", &free, "tags = [\"free\"]"),
        deployment("m", "paid", &paid, "tags = [\"paid\"]"),
        deployment("m", "general", &general, "tags = [\"default\"]")
    ))
    .await;
    let mut body = chat_body("m");
    body["tags"] = json!(["paid"]);
    assert_eq!(served_by(&gw, &body, 5).await.get("paid").copied(), Some(5));
    let mut body = chat_body("m");
    body["metadata"] = json!({"tags": ["free"], "session_id": "s1"});
    assert_eq!(served_by(&gw, &body, 5).await.get("free").copied(), Some(5));
    // Untagged requests go to the default deployment.
    assert_eq!(
        served_by(&gw, &chat_body("m"), 5)
            .await
            .get("general")
            .copied(),
        Some(5)
    );
    let mut r = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {MASTER}")))
        .insert_header(("x-litellm-tags", "free, other"))
        .send_json(&chat_body("m"))
        .await
        .unwrap();
    let text = r.body().await.unwrap();
    assert_eq!(r.status(), 200, "{text:?}");
    assert_eq!(r.headers().get("x-tollgate-deployment").unwrap(), "free");
    // The routing tags never reach the upstream.
    let mut body = chat_body("m");
    body["tags"] = json!(["paid"]);
    post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    let sent = paid.last_request().unwrap();
    assert!(sent.get("tags").is_none(), "{sent}");
    gw.stop().await;
}

#[actix_rt::test]
async fn a_tag_no_deployment_carries_is_refused_when_there_is_no_default() {
    let free = spawn_mock().await;
    let gw = spawn_gateway(&deployment("m", "free", &free, "tags = [\"free\"]")).await;
    let mut body = chat_body("m");
    body["tags"] = json!(["gold"]);
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "tags");
    assert!(r.text().contains("gold"), "{}", r.text());
    let mut body = chat_body("m");
    body["tags"] = json!("free");
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_eq!(r.status, 400, "tags must be a list: {}", r.text());
    assert_eq!(free.stats().chat, 0);
    gw.stop().await;
}

fn long_prompt(words: usize) -> serde_json::Value {
    json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hello ".repeat(words)}],
    })
}

#[actix_rt::test]
async fn a_prompt_too_long_for_a_deployment_skips_it_and_one_too_long_for_all_fails_or_falls_back()
{
    let small = spawn_mock().await;
    let large = spawn_mock().await;
    let long_ctx = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\ncontext_window_fallbacks = {{ m = [\"long\"] }}\n{}{}{}",
        deployment("m", "small", &small, "max_input_tokens = 100"),
        deployment("m", "large", &large, "max_input_tokens = 2000"),
        deployment("long", "long-ctx", &long_ctx, "max_input_tokens = 100000")
    ))
    .await;
    // ~500 tokens: only "large" fits.
    let by = served_by(&gw, &long_prompt(500), 6).await;
    assert_eq!(by.get("large").copied(), Some(6), "{by:?}");
    assert_eq!(small.stats().chat, 0);
    // ~5000 tokens: nothing in "m" fits; the context-window fallback serves.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &long_prompt(5000),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tollgate-deployment").as_deref(),
        Some("long-ctx")
    );
    assert_eq!(r.header("x-tollgate-fallbacks").as_deref(), Some("1"));
    assert_eq!(large.stats().chat, 6, "the too-long prompt was never sent");
    gw.stop().await;

    // Without a fallback the caller hears it as OpenAI would say it.
    let gw = spawn_gateway(&deployment("m", "small", &small, "max_input_tokens = 100")).await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &long_prompt(500)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(small.stats().chat, 0);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_retry_policy_sets_retries_per_error_class() {
    let limited = spawn_mock_with(Behaviour {
        status: Some(429),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 3\nretry_backoff_ms = 1\nallowed_fails = 100\n\
         [router.retry_policy]\nRateLimitErrorRetries = 0\n{}",
        deployment("m", "limited", &limited, "")
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("1"));
    gw.stop().await;

    // An auth failure is not retried by default; the policy can retry it
    // on another deployment (one deployment's key may be the broken one).
    let bad_key = spawn_mock_with(Behaviour {
        status: Some(401),
        ..Default::default()
    })
    .await;
    let good = spawn_mock().await;
    let config = |policy: &str| {
        format!(
            "[router]\nretry_backoff_ms = 1\nallowed_fails = 100\n{policy}\n{}{}",
            deployment("m", "bad-key", &bad_key, "order = 1"),
            deployment("m", "good", &good, "order = 2")
        )
    };
    let gw = spawn_gateway(&config("")).await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.stop().await;
    let gw = spawn_gateway(&config("[router.retry_policy]\nauthentication = 1")).await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tollgate-deployment").as_deref(), Some("good"));
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("2"));
    gw.stop().await;
}

#[actix_rt::test]
async fn the_allowed_fails_policy_can_cool_a_deployment_down_on_auth_errors() {
    let bad_key = spawn_mock_with(Behaviour {
        status: Some(401),
        ..Default::default()
    })
    .await;
    let good = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\ncooldown_secs = 60\n[router.allowed_fails_policy]\nAuthenticationErrorAllowedFails = 1\n{}{}",
        deployment("m", "bad-key", &bad_key, "order = 1"),
        deployment("m", "good", &good, "order = 2")
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 401);
    // HealthActor announces the cooldown; then the next tier serves.
    let mut served = false;
    for _ in 0..50 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        if r.status == 200 {
            assert_eq!(r.header("x-tollgate-deployment").as_deref(), Some("good"));
            served = true;
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "the deployment with the bad key never cooled down");
    let failed_before = bad_key.stats().chat;
    served_by(&gw, &chat_body("m"), 5).await;
    assert_eq!(
        bad_key.stats().chat,
        failed_before,
        "cooled down: no more tries"
    );
    gw.stop().await;
}
