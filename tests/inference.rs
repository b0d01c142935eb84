//! The request path end to end: a real gateway in front of a real mock.

mod common;

use common::*;
use serde_json::json;

#[actix_rt::test]
async fn chat_completion_passes_through_with_usage_cost_and_headers() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("gpt-test", &mock)).await;

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("gpt-test"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );

    let p = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let c = v["usage"]["completion_tokens"].as_u64().unwrap();
    let expected_cost = p as f64 * 0.000001 + c as f64 * 0.000002;
    let cost: f64 = r
        .header("x-tollgate-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (cost - expected_cost).abs() < 1e-12,
        "{cost} vs {expected_cost}"
    );

    assert_eq!(
        r.header("x-tollgate-deployment").as_deref(),
        Some("gpt-test-0")
    );
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("1"));
    assert!(r.header("x-request-id").is_some());
    let overhead: f64 = r.header("x-tollgate-overhead-ms").unwrap().parse().unwrap();
    assert!(overhead >= 0.0);
    assert_eq!(mock.stats().chat, 1);
    gw.stop().await;
}

#[actix_rt::test]
async fn unknown_fields_reach_the_upstream_and_the_request_id_is_kept() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("gpt-test", &mock)).await;
    // The mock understands its `mock` field only if the gateway forwards
    // unknown fields: a 418 proves the field arrived.
    let mut body = chat_body("gpt-test");
    body["mock"] = json!({"status": 418});
    let resp = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {MASTER}")))
        .insert_header(("x-request-id", "trace-abc-123"))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 418);
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "trace-abc-123");
    gw.stop().await;
}

#[actix_rt::test]
async fn completions_embeddings_and_paths_without_v1() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;

    let r = post(
        &gw,
        "/v1/completions",
        Some(MASTER),
        &json!({"model": "m", "prompt": "Once upon"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "text_completion");

    let r = post(
        &gw,
        "/embeddings",
        Some(MASTER),
        &json!({"model": "m", "input": ["a", "b"], "dimensions": 4}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);

    let r = post(&gw, "/chat/completions", Some(MASTER), &chat_body("m")).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[actix_rt::test]
async fn models_lists_only_what_the_key_may_use() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "{}{}{}
[[keys]]
key = \"sk-narrow-key-1\"
alias = \"narrow\"
models = [\"team/*\"]
",
        model("alpha", &mock),
        model("team/beta", &mock),
        model("team/gamma", &mock)
    ))
    .await;

    let all = get(&gw, "/v1/models", Some(MASTER)).await;
    assert_eq!(all.status, 200);
    let ids: Vec<String> = all.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["alpha", "team/beta", "team/gamma"]);

    let narrow = get(&gw, "/models", Some("sk-narrow-key-1")).await;
    let ids: Vec<String> = narrow.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["team/beta", "team/gamma"]);

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-narrow-key-1"),
        &chat_body("alpha"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "key_model_access_denied");
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-narrow-key-1"),
        &chat_body("team/beta"),
    )
    .await;
    assert_eq!(r.status, 200);

    let one = get(&gw, "/v1/models/team/beta", Some(MASTER)).await;
    assert_eq!(one.json()["id"], "team/beta");
    gw.stop().await;
}

#[actix_rt::test]
async fn metrics_count_requests_tokens_and_actor_mailboxes() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    for _ in 0..3 {
        assert_eq!(
            post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        post(
            &gw,
            "/v1/chat/completions",
            Some("sk-wrong-key-000"),
            &chat_body("m")
        )
        .await
        .status,
        401
    );
    // Tokens are counted as settlements reach SpendActor, off the request
    // path (a worker hands them over every spend.flush_interval_ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while metric(&gw, r#"tollgate_tokens_total{model="m",kind="completion"}"#).await == 0.0
        && std::time::Instant::now() < deadline
    {
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = get(&gw, "/metrics", None).await.text();
    assert!(
        text.contains(r#"tollgate_requests_total{model="m",endpoint="chat",status="200"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"status="401"} 1"#), "{text}");
    assert!(
        text.contains(r#"tollgate_tokens_total{model="m",kind="completion"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_actor_mailbox_depth{actor="router"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_actor_message_duration_seconds_count{actor="auth"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_deployment_healthy{model="m",deployment="m-0"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("tollgate_overhead_duration_seconds_bucket"),
        "{text}"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn health_endpoints_answer() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = get(&gw, "/health/liveliness", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!("I'm alive!"));
    let r = get(&gw, "/health/readiness", None).await;
    assert_eq!(r.json()["status"], "healthy");
    let r = get(&gw, "/health", Some(MASTER)).await;
    assert_eq!(r.json()["healthy_count"], 1);
    assert_eq!(get(&gw, "/health", None).await.status, 401);
    gw.stop().await;
}

#[actix_rt::test]
async fn request_log_lines_name_the_alias_never_the_key() {
    let mock = spawn_mock().await;
    let dir = std::env::temp_dir().join(format!("tollgate-log-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("requests.jsonl");
    let text = format!(
        "master_key = \"{MASTER}\"\n[logging]\nrequest_log = \"{}\"\n[[keys]]\nkey = \"sk-app-secret-999\"\nalias = \"billing-app\"\n{}",
        log_path.display(),
        model("m", &mock)
    );
    let mut config = tollgate::config::Config::from_toml(&text).unwrap();
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    config.server.workers = 1;
    let gw = tollgate::start(config).await.unwrap();
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-app-secret-999"),
        &chat_body("m"),
    )
    .await;
    assert_eq!(r.status, 200);
    let rid = r.header("x-request-id").unwrap();
    gw.stop().await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("sk-app-secret-999"), "{log}");
    let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(line["key"], "billing-app");
    assert_eq!(line["request_id"], rid.as_str());
    assert_eq!(line["status"], 200);
    assert_eq!(line["deployment"], "m-0");
    assert!(line["completion_tokens"].as_u64().unwrap() > 0);
    assert!(line["cost_usd"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(dir);
}
