//! Models managed at run time: `/model/new|update|delete` stored in the
//! database (provider keys encrypted), served at once here and within a
//! second on another replica, without a restart and without dropping
//! requests in flight.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tollgate::breaker::Breaker;
use tollgate::mock::{Behaviour, MockServer};
use tollgate::store::Store;
use tollgate::RunningGateway;

fn new_model(name: &str, mock: &MockServer, extra: Value) -> Value {
    let mut params = json!({
        "model": "openai/mock-gpt",
        "api_base": mock.url(),
        "api_key": "sk-upstream-secret-123",
    });
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    json!({"model_name": name, "litellm_params": params})
}

async fn chat(gw: &RunningGateway, key: &str, model: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body(model)).await
}

async fn listed(gw: &RunningGateway) -> Vec<String> {
    get(gw, "/v1/models", Some(MASTER)).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

async fn lifecycle_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = spawn_mock().await;
    let second = spawn_mock().await;
    let gw = spawn_gateway_db("", &db, None).await;

    assert_eq!(chat(&gw, MASTER, "runtime").await.status, 404);
    let r = post_json(
        &gw,
        "/model/new",
        MASTER,
        new_model("runtime", &first, json!({"rpm": 100})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["model_id"].as_str().unwrap().to_string();
    assert!(!r.text().contains("sk-upstream-secret-123"), "{}", r.text());
    // Serving here as soon as the call returned.
    let r = chat(&gw, MASTER, "runtime").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-tollgate-deployment").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(first.stats().chat, 1);
    let sent = first.last_request().unwrap();
    assert_eq!(
        sent["headers"]["authorization"],
        "Bearer sk-upstream-secret-123"
    );
    assert!(listed(&gw).await.contains(&"runtime".to_string()));
    let info = get(
        &gw,
        &format!("/model/info?litellm_model_id={id}"),
        Some(MASTER),
    )
    .await;
    assert_eq!(
        info.json()["data"][0]["model_info"]["db_model"],
        true,
        "{}",
        info.text()
    );
    assert!(!info.text().contains("sk-upstream"), "{}", info.text());

    // Stored encrypted.
    let store = Store::connect(
        &db.url,
        1,
        Duration::from_secs(5),
        Breaker::new("db", Default::default()),
    )
    .await
    .unwrap();
    let rows = store.list_proxy_models().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].litellm_params.contains("sk-upstream-secret-123"));
    assert!(
        rows[0].litellm_params.contains("enc:v1:"),
        "{}",
        rows[0].litellm_params
    );

    // Update: the traffic moves to the new api_base.
    let r = post_json(
        &gw,
        "/model/update",
        MASTER,
        json!({"model_info": {"id": id}, "litellm_params": {"api_base": second.url()}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&gw, MASTER, "runtime").await.status, 200);
    assert_eq!((first.stats().chat, second.stats().chat), (1, 1));
    // The key was kept through the update.
    let sent = second.last_request().unwrap();
    assert_eq!(
        sent["headers"]["authorization"],
        "Bearer sk-upstream-secret-123"
    );

    // A restart serves it from the database.
    gw.stop().await;
    let gw = spawn_gateway_db("", &db, None).await;
    assert_eq!(chat(&gw, MASTER, "runtime").await.status, 200);
    assert_eq!(second.stats().chat, 2);

    // Delete: gone at once, from /metrics too.
    let gauges = |text: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("tollgate_deployment_") && l.contains(&format!("deployment=\"{id}\""))
            })
            .filter(|l| l.contains("_healthy{") || l.contains("_in_flight{"))
            .count()
    };
    assert_eq!(gauges(&get(&gw, "/metrics", None).await.text()), 2);
    let r = post_json(&gw, "/model/delete", MASTER, json!({"id": id})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&gw, MASTER, "runtime").await.status, 404);
    assert!(!listed(&gw).await.contains(&"runtime".to_string()));
    let text = get(&gw, "/metrics", None).await.text();
    assert_eq!(
        gauges(&text),
        0,
        "a deleted deployment's gauges stay:\n{text}"
    );
    let r = post_json(&gw, "/model/delete", MASTER, json!({"id": id})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_model_added_at_run_time_serves_is_updated_survives_a_restart_and_is_deleted_sqlite() {
    lifecycle_on(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn a_model_added_at_run_time_serves_is_updated_survives_a_restart_and_is_deleted_postgres() {
    lifecycle_on(Backend::Postgres).await;
}

#[actix_rt::test]
async fn bad_model_definitions_are_refused_and_nothing_is_stored() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("configured", &mock), &db, None).await;
    for (body, field) in [
        (
            json!({"model_name": "x", "litellm_params": {"model": "openai/gpt", "api_base": "not a url"}}),
            "api_base",
        ),
        (
            json!({"model_name": "x", "litellm_params": {"model": "openai/gpt", "rpm": -1}}),
            "rpm",
        ),
        (
            json!({"model_name": "x", "litellm_params": {"model": ""}}),
            "model",
        ),
        (json!({"model_name": "x"}), "litellm_params"),
    ] {
        let r = post_json(&gw, "/model/new", MASTER, body).await;
        assert!(matches!(r.status, 400 | 422), "{}", r.text());
        assert!(r.text().contains(field), "{field}: {}", r.text());
    }
    assert!(!listed(&gw).await.contains(&"x".to_string()));
    // The config's models are the config file's.
    let r = post_json(&gw, "/model/delete", MASTER, json!({"id": "configured-0"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(chat(&gw, MASTER, "configured").await.status, 200);
    // Only the master key manages models.
    let key = post_json(&gw, "/key/generate", MASTER, json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_json(&gw, "/model/new", &key, new_model("y", &mock, json!({}))).await;
    assert_eq!(r.status, 401, "admin only, LiteLLM's status: {}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_model_added_on_one_replica_serves_on_another_within_a_second() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("tg-models-{}", uuid::Uuid::new_v4().simple());
    let mock = spawn_mock().await;
    let a = spawn_gateway_db("", &db, Some(&prefix)).await;
    let b = spawn_gateway_db("", &db, Some(&prefix)).await;
    assert_eq!(chat(&b, MASTER, "shared").await.status, 404);

    let r = post_json(
        &a,
        "/model/new",
        MASTER,
        new_model("shared", &mock, json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["model_id"].as_str().unwrap().to_string();
    let added = Instant::now();
    let mut served = None;
    while added.elapsed() < Duration::from_secs(3) {
        if chat(&b, MASTER, "shared").await.status == 200 {
            served = Some(added.elapsed());
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let served = served.expect("the other replica never served the new model");
    assert!(served < Duration::from_secs(1), "took {served:?}");

    let r = post_json(&a, "/model/delete", MASTER, json!({"id": id})).await;
    assert_eq!(r.status, 200);
    let deleted = Instant::now();
    while chat(&b, MASTER, "shared").await.status != 404 {
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "still served after delete"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_request_in_flight_finishes_when_its_model_is_deleted() {
    let db = TestDb::new(Backend::Sqlite).await;
    let slow = spawn_mock_with(Behaviour {
        latency_ms: 700,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway_db("", &db, None).await;
    let r = post_json(
        &gw,
        "/model/new",
        MASTER,
        new_model("slow", &slow, json!({})),
    )
    .await;
    let id = r.json()["model_id"].as_str().unwrap().to_string();
    let in_flight = chat(&gw, MASTER, "slow");
    let delete = async {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        post_json(&gw, "/model/delete", MASTER, json!({"id": id})).await
    };
    let (done, deleted) = tokio::join!(in_flight, delete);
    assert_eq!(deleted.status, 200);
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(chat(&gw, MASTER, "slow").await.status, 404);
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn access_groups_grant_keys_the_models_in_them() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("plain", &mock), &db, None).await;
    let mut body = new_model("beta-model", &mock, json!({}));
    body["model_info"] = json!({"access_groups": ["beta-testers"]});
    assert_eq!(post_json(&gw, "/model/new", MASTER, body).await.status, 200);
    let key_for = |models: Value| {
        let gw = &gw;
        async move {
            post_json(gw, "/key/generate", MASTER, json!({"models": models}))
                .await
                .json()["key"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let beta = key_for(json!(["beta-testers"])).await;
    let plain = key_for(json!(["plain"])).await;
    assert_eq!(chat(&gw, &beta, "beta-model").await.status, 200);
    assert_eq!(chat(&gw, &beta, "plain").await.status, 403);
    assert_eq!(chat(&gw, &plain, "beta-model").await.status, 403);
    assert_eq!(chat(&gw, &plain, "plain").await.status, 200);
    let seen: Vec<String> = get(&gw, "/v1/models", Some(&beta)).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["beta-model"]);
    gw.stop().await;
    db.cleanup().await;
}
