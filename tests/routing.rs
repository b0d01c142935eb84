//! Retries, cooldown and recovery, timeouts and upstream 429s.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tollgate::mock::{Behaviour, Fault};

#[actix_rt::test]
async fn a_failing_deployment_is_retried_on_the_healthy_one() {
    let broken = spawn_mock_with(Behaviour {
        status: Some(500),
        ..Default::default()
    })
    .await;
    let healthy = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nallowed_fails = 1000\nretry_backoff_ms = 1\n{}{}",
        deployment("m", "broken", &broken, ""),
        deployment("m", "healthy", &healthy, "")
    ))
    .await;
    let mut retried = 0;
    for _ in 0..20 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-tollgate-deployment").as_deref(),
            Some("healthy")
        );
        if r.header("x-tollgate-attempts").as_deref() == Some("2") {
            retried += 1;
        }
    }
    assert_eq!(
        broken.stats().chat,
        retried,
        "every broken attempt was retried once"
    );
    assert_eq!(healthy.stats().chat, 20);
    assert!(
        retried > 0,
        "weighted random choice never picked the broken deployment in 20 tries"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn a_deployment_that_keeps_failing_cools_down_and_then_recovers() {
    let flaky = spawn_mock_with(Behaviour {
        status: Some(503),
        ..Default::default()
    })
    .await;
    let steady = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nallowed_fails = 2\ncooldown_secs = 1\nretry_backoff_ms = 1\n{}{}",
        deployment("m", "flaky", &flaky, ""),
        deployment("m", "steady", &steady, "")
    ))
    .await;
    // Drive traffic until the flaky deployment has failed twice.
    for _ in 0..50 {
        post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        if flaky.stats().chat >= 2 {
            break;
        }
    }
    assert_eq!(flaky.stats().chat, 2);
    let health = get(&gw, "/health/router", Some(MASTER)).await.json();
    assert_eq!(health["unhealthy_count"], 1, "{health}");
    assert_eq!(health["unhealthy_endpoints"][0]["id"], "flaky");
    assert_eq!(
        metric(
            &gw,
            r#"tollgate_deployment_healthy{model="m",deployment="flaky"}"#
        )
        .await,
        0.0
    );

    // While cooling down it gets no traffic at all.
    for _ in 0..10 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("1"));
    }
    assert_eq!(flaky.stats().chat, 2);

    // It heals; after the cooldown it takes traffic again.
    flaky.set_behaviour(Behaviour::default());
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..40 {
        post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        if flaky.stats().chat > 2 {
            break;
        }
    }
    assert!(
        flaky.stats().chat > 2,
        "recovered deployment never chosen again"
    );
    assert_eq!(
        get(&gw, "/health/router", Some(MASTER)).await.json()["healthy_count"],
        2
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn failures_seen_by_different_workers_add_up_to_one_cooldown_for_all() {
    let flaky = spawn_mock_with(Behaviour {
        status: Some(503),
        ..Default::default()
    })
    .await;
    let steady = spawn_mock().await;
    let gw = spawn_gateway_workers(
        &format!(
            "[router]\nallowed_fails = 4\ncooldown_secs = 30\nretry_backoff_ms = 1\n{}{}",
            deployment("m", "flaky", &flaky, "weight = 50"),
            deployment("m", "steady", &steady, "weight = 1")
        ),
        2,
    )
    .await;
    let body = chat_body("m");
    // Parallel requests spread over both workers; each sees some failures.
    while flaky.stats().chat < 4 {
        futures_util::future::join_all(
            (0..4).map(|_| post(&gw, "/v1/chat/completions", Some(MASTER), &body)),
        )
        .await;
    }
    // HealthActor's announcement reaches every worker within moments.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let before = flaky.stats().chat;
    assert_eq!(
        get(&gw, "/health/router", Some(MASTER)).await.json()["unhealthy_count"],
        1
    );
    for _ in 0..5 {
        futures_util::future::join_all(
            (0..4).map(|_| post(&gw, "/v1/chat/completions", Some(MASTER), &body)),
        )
        .await;
    }
    assert_eq!(
        flaky.stats().chat,
        before,
        "no worker sent it traffic while cooling"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn when_every_deployment_cools_down_the_client_gets_503_with_retry_after() {
    let broken = spawn_mock_with(Behaviour {
        status: Some(500),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nallowed_fails = 1\ncooldown_secs = 30\nnum_retries = 0\n{}",
        deployment("m", "only", &broken, "")
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 500, "the upstream's own status first");
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(broken.stats().chat, 1);
    gw.stop().await;
}

#[actix_rt::test]
async fn with_cooldowns_disabled_a_groups_only_deployment_keeps_taking_traffic() {
    let broken = spawn_mock_with(Behaviour {
        status: Some(500),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nallowed_fails = 1\ncooldown_secs = 30\nnum_retries = 0\ndisable_cooldowns = true\n{}",
        deployment("m", "only", &broken, "")
    ))
    .await;
    for _ in 0..3 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.status, 500, "the upstream's own error, never 503");
    }
    assert_eq!(broken.stats().chat, 3, "every request reached the upstream");
    // Once it heals, the very next request succeeds: nothing to wait out.
    broken.set_behaviour(Behaviour::default());
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let health = get(&gw, "/health/router", Some(MASTER)).await.json();
    assert_eq!(health["unhealthy_count"], 0, "{health}");
    gw.stop().await;
}

#[actix_rt::test]
async fn a_hanging_upstream_times_out_with_504() {
    let hanging = spawn_mock_with(Behaviour {
        fault: Some(Fault::Hang),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 1\nretry_backoff_ms = 1\n{}",
        deployment("m", "slow", &hanging, "timeout_secs = 1")
    ))
    .await;
    let t0 = Instant::now();
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "timeout");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("2"));
    gw.stop().await;
}

#[actix_rt::test]
async fn a_dropped_connection_is_retried_elsewhere() {
    let dropping = spawn_mock_with(Behaviour {
        fault: Some(Fault::Drop),
        ..Default::default()
    })
    .await;
    let healthy = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nretry_backoff_ms = 1\nallowed_fails = 1000\n{}{}",
        deployment("m", "dropping", &dropping, "weight = 1000"),
        deployment("m", "healthy", &healthy, "weight = 0.001")
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tollgate-deployment").as_deref(),
        Some("healthy")
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn an_upstream_retry_after_is_waited_out_before_retrying() {
    let limited = spawn_mock_with(Behaviour {
        status: Some(429),
        retry_after: Some("1".into()),
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 1\nretry_backoff_ms = 1\nallowed_fails = 1000\n{}",
        deployment("m", "only", &limited, "")
    ))
    .await;
    let t0 = Instant::now();
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.status, 429, "the upstream's status is kept");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(limited.stats().chat, 2);

    // Past the gateway's patience, it answers at once instead of waiting.
    limited.set_behaviour(Behaviour {
        status: Some(429),
        retry_after: Some("60".into()),
        ..Default::default()
    });
    let t0 = Instant::now();
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert!(t0.elapsed() < Duration::from_millis(900));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("60"));
    gw.stop().await;
}

#[actix_rt::test]
async fn weights_split_traffic() {
    let heavy = spawn_mock().await;
    let light = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}",
        deployment("m", "heavy", &heavy, "weight = 9"),
        deployment("m", "light", &light, "weight = 1")
    ))
    .await;
    for _ in 0..200 {
        post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
    }
    let h = heavy.stats().chat;
    assert!((150..=195).contains(&h), "heavy got {h} of 200");
    let _ = json!(null);
    gw.stop().await;
}

#[actix_rt::test]
async fn an_absurd_upstream_retry_after_is_clamped_and_the_worker_keeps_routing() {
    let limited = spawn_mock().await;
    let healthy = spawn_mock().await;
    // One worker, cooling down on the first failure: the same RouterActor
    // and HealthActor see the hostile hint and must survive it.
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 1\nretry_backoff_ms = 1\nallowed_fails = 1\n{}{}{}",
        deployment("limited-a", "limited-a", &limited, ""),
        deployment("limited-b", "limited-b", &limited, ""),
        deployment("other", "other", &healthy, "")
    ))
    .await;
    for (group, mock) in [
        ("limited-a", json!({"status": 429, "retry_after": "1e20"})),
        (
            "limited-b",
            json!({"status": 503, "retry_after_ms": "1e23"}),
        ),
    ] {
        let mut body = chat_body(group);
        body["mock"] = mock.clone();
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
        assert!(
            r.status == 429 || r.status == 503,
            "{mock}: {} {}",
            r.status,
            r.text()
        );
        let hint: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(
            hint <= 3600,
            "{mock}: the hint is clamped to an hour, got {hint}"
        );
        // The same worker still routes other groups.
        let ok = post(
            &gw,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body("other"),
        )
        .await;
        assert_eq!(ok.status, 200, "{mock}: {}", ok.text());
    }
    let health = get(&gw, "/health/router", Some(MASTER)).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["unhealthy_count"], 2, "{}", health.text());
    assert_eq!(
        limited.stats().chat,
        2,
        "each hint came from a real attempt"
    );
    gw.stop().await;
}
