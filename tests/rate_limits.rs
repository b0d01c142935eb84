//! Rate limits: requests, tokens and parallel requests per minute at every
//! level, decided together, answered with LiteLLM/OpenAI's 429 headers.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tollgate::mock::Behaviour;

async fn generate(gw: &tollgate::RunningGateway, body: Value) -> String {
    let r = post_json(gw, "/key/generate", MASTER, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

async fn chat(gw: &tollgate::RunningGateway, key: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body("m")).await
}

fn assert_429(r: &Resp, kind: &str, scope: &str) {
    assert_eq!(r.status, 429, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["type"], "rate_limit_error", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains(kind) && msg.contains(scope), "{msg}");
    let retry: f64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1.0..=60.0).contains(&retry), "{retry}");
}

#[actix_rt::test]
async fn requests_per_minute_at_the_key_user_and_team_levels() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t", "rpm_limit": 4}),
    )
    .await;
    post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "u", "rpm_limit": 3, "auto_create_key": false}),
    )
    .await;

    let key = generate(&gw, json!({"rpm_limit": 2})).await;
    let r = chat(&gw, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests").as_deref(), Some("2"));
    assert_eq!(
        r.header("x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    assert!(r
        .header("x-ratelimit-reset-requests")
        .unwrap()
        .ends_with('s'));
    assert_eq!(chat(&gw, &key).await.status, 200);
    assert_429(&chat(&gw, &key).await, "requests", "key");

    // Two keys of one user share the user's 3.
    let (a, b) = (
        generate(&gw, json!({"user_id": "u"})).await,
        generate(&gw, json!({"user_id": "u"})).await,
    );
    assert_eq!(chat(&gw, &a).await.status, 200);
    assert_eq!(chat(&gw, &b).await.status, 200);
    assert_eq!(chat(&gw, &a).await.status, 200);
    assert_429(&chat(&gw, &b).await, "requests", "user u");

    // Team keys share the team's 4.
    let t1 = generate(&gw, json!({"team_id": "t"})).await;
    let t2 = generate(&gw, json!({"team_id": "t"})).await;
    for k in [&t1, &t2, &t1, &t2] {
        assert_eq!(chat(&gw, k).await.status, 200);
    }
    assert_429(&chat(&gw, &t1).await, "requests", "team t");
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_refusal_at_one_level_consumes_nothing_at_the_others() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("[limits]\nglobal_rpm = 7\n{}", model("m", &mock)),
        &db,
        None,
    )
    .await;
    post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t", "rpm_limit": 5}),
    )
    .await;
    let tight = generate(&gw, json!({"team_id": "t", "rpm_limit": 1})).await;
    let loose = generate(&gw, json!({"team_id": "t"})).await;
    assert_eq!(chat(&gw, &tight).await.status, 200);
    // Refused by the key: neither the team's nor the gateway's count moves.
    for _ in 0..3 {
        assert_429(&chat(&gw, &tight).await, "requests", "key");
    }
    for _ in 0..4 {
        assert_eq!(
            chat(&gw, &loose).await.status,
            200,
            "the team still has room"
        );
    }
    // Refused by the team now: the gateway's count does not move either.
    for _ in 0..3 {
        assert_429(&chat(&gw, &loose).await, "requests", "team t");
    }
    assert_eq!(chat(&gw, MASTER).await.status, 200);
    assert_eq!(chat(&gw, MASTER).await.status, 200, "the gateway's 7th");
    assert_429(&chat(&gw, MASTER).await, "requests", "the gateway");
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn tokens_per_minute_are_reserved_then_corrected_by_real_usage() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    // Each answer: ~3 prompt + 5 completion tokens; reserved: prompt + 10.
    let key = generate(&gw, json!({"tpm_limit": 40})).await;
    let mut body = chat_body("m");
    body["max_tokens"] = json!(10);
    let mut ok = 0;
    for _ in 0..10 {
        let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
        if r.status == 200 {
            ok += 1;
            assert_eq!(r.header("x-ratelimit-limit-tokens").as_deref(), Some("40"));
        } else {
            assert_429(&r, "tokens", "key");
        }
        // Give the correction time to land before the next admission.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Estimated ~13 a request would admit 3; corrected to ~7, 5.
    assert!(
        (4..=6).contains(&ok),
        "{ok} requests fit 40 tokens a minute"
    );
    // A request bigger than the limit waits for a free window, not forever.
    let key = generate(&gw, json!({"tpm_limit": 5})).await;
    body["max_tokens"] = json!(1000);
    let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn parallel_requests_are_capped_and_every_ending_gives_the_slot_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    let slow = spawn_mock_with(Behaviour {
        latency_ms: 300,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway_db(&model("m", &slow), &db, None).await;
    let key = generate(&gw, json!({"max_parallel_requests": 2})).await;
    let answers = futures_util::future::join_all((0..5).map(|_| chat(&gw, &key))).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        2,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_429(r, "parallel requests", "key");
    }
    // Slots come back after success, after an upstream error, after a
    // client that gave up.
    assert_eq!(chat(&gw, &key).await.status, 200);
    let mut bad = chat_body("m");
    bad["mock"] = json!({"status": 400});
    assert_eq!(
        post(&gw, "/v1/chat/completions", Some(&key), &bad)
            .await
            .status,
        400
    );
    let gone = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {key}")))
        .timeout(Duration::from_millis(50))
        .send_json(&chat_body("m"))
        .await;
    assert!(gone.is_err(), "the client gave up");
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let both = futures_util::future::join_all((0..2).map(|_| chat(&gw, &key))).await;
    assert!(
        both.iter().all(|r| r.status == 200),
        "both slots are free again"
    );
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn per_model_limits_apply_to_their_model_only() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("{}{}", model("m", &mock), model("n", &mock)),
        &db,
        None,
    )
    .await;
    let key = generate(&gw, json!({"model_rpm_limit": {"m": 1}})).await;
    assert_eq!(chat(&gw, &key).await.status, 200);
    assert_429(&chat(&gw, &key).await, "requests", "on model m");
    let r = post(&gw, "/v1/chat/completions", Some(&key), &chat_body("n")).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_deployment_at_its_own_limit_is_skipped_and_none_left_is_a_429() {
    let mock = spawn_mock().await;
    let deployment = |group: &str, id: &str, limit: &str| {
        format!(
            r#"
[[models."{group}".deployments]]
id = "{id}"
provider = "openai_compatible"
model = "mock-gpt"
api_base = "{}"
{limit}
"#,
            mock.url()
        )
    };
    let config = [
        deployment("m", "small", "rpm = 3\nweight = 100.0"),
        deployment("m", "big", "weight = 0.001"),
        deployment("solo", "only", "rpm = 2"),
    ]
    .concat();
    let gw = spawn_gateway(&config).await;
    // The heavily weighted deployment takes requests until its rpm is
    // used up, then the other one serves: no request fails.
    let mut served = std::collections::HashMap::<String, usize>::new();
    for _ in 0..10 {
        let r = post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        *served
            .entry(r.header("x-tollgate-deployment").unwrap())
            .or_default() += 1;
    }
    assert_eq!(served.get("small"), Some(&3), "{served:?}");
    assert_eq!(served.get("big"), Some(&7), "{served:?}");
    // A group whose only deployment is full: 429 naming the deployment.
    for _ in 0..2 {
        let r = post(
            &gw,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body("solo"),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("solo"),
    )
    .await;
    assert_429(&r, "requests", "deployment only");
    gw.stop().await;
}
