//! Spend: every request's cost reaches the database — keys, users, teams,
//! end users and the spend log — exactly once, even across crashes and
//! outages.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate::mock::Behaviour;

on_both_backends!(spend_reaches_every_owner_and_the_log);

async fn generate(gw: &tollgate::RunningGateway, body: Value) -> Value {
    let r = post_json(gw, "/key/generate", MASTER, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Polls `f` (an async check) for up to `secs`.
macro_rules! wait_until {
    ($secs:expr, $f:expr) => {{
        let t0 = Instant::now();
        loop {
            if $f {
                break true;
            }
            if t0.elapsed() > Duration::from_secs($secs) {
                break false;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

async fn key_spend(gw: &tollgate::RunningGateway, key: &str) -> f64 {
    get(gw, &format!("/key/info?key={key}"), Some(MASTER))
        .await
        .json()["info"]["spend"]
        .as_f64()
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn spend_reaches_every_owner_and_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    post_json(&gw, "/team/new", MASTER, json!({"team_id": "t1"})).await;
    post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "u1", "auto_create_key": false}),
    )
    .await;
    let key = generate(&gw, json!({"user_id": "u1", "team_id": "t1"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();

    let mut expected = 0.0;
    for i in 0..5 {
        let mut body = chat_body("m");
        body["user"] = json!("customer-1");
        body["metadata"] = json!({"run": i});
        let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cost: f64 = r
            .header("x-litellm-response-cost")
            .unwrap()
            .parse()
            .unwrap();
        assert!(cost > 0.0);
        expected += cost;
    }
    for _ in 0..3 {
        let mut body = chat_body("m");
        body["stream"] = json!(true);
        let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
        assert_eq!(r.status, 200);
        // The mock's usage: prompt max(1, chars/4), completion = pieces.
        expected += 2.0 * 0.000001 + 5.0 * 0.000002;
    }
    assert!(
        wait_until!(5, close(key_spend(&gw, &key).await, expected)),
        "key spend {} != {expected}",
        key_spend(&gw, &key).await
    );
    let user = get(&gw, "/user/info?user_id=u1", Some(MASTER)).await.json();
    assert!(
        close(user["user_info"]["spend"].as_f64().unwrap(), expected),
        "{user}"
    );
    let team = get(&gw, "/team/info?team_id=t1", Some(MASTER)).await.json();
    assert!(
        close(team["team_info"]["spend"].as_f64().unwrap(), expected),
        "{team}"
    );
    gw.stop().await;
    db.cleanup().await;
}
