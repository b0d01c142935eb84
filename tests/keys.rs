//! Virtual keys, users and teams over HTTP, on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

on_both_backends!(
    key_lifecycle,
    every_auth_failure,
    fifty_parallel_generates,
    hostile_values_round_trip,
    who_may_read_what,
    users_and_teams,
);

async fn generate(gw: &tollgate::RunningGateway, body: Value) -> Value {
    let r = post_json(gw, "/key/generate", MASTER, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn chat(gw: &tollgate::RunningGateway, key: &str, model: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body(model)).await
}

async fn key_lifecycle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("{}{}", model("m", &mock), model("other", &mock)),
        &db,
        None,
    )
    .await;

    let k = generate(&gw, json!({"key_alias": "svc-a", "models": ["m"], "max_budget": 10.0, "metadata": {"team": "x"}})).await;
    let key = k["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-") && key.len() == 25, "{key}");
    assert_eq!(k["token"].as_str().unwrap().len(), 64);
    assert_eq!(k["key_name"], format!("sk-...{}", &key[key.len() - 4..]));
    assert_eq!(chat(&gw, &key, "m").await.status, 200);
    assert_eq!(chat(&gw, &key, "other").await.status, 403);

    // /v1/models lists only what the key may use.
    let models = get(&gw, "/v1/models", Some(&key)).await.json();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);

    let info = get(&gw, &format!("/key/info?key={key}"), Some(MASTER)).await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["info"]["key_alias"], "svc-a");
    assert_eq!(info.json()["info"]["max_budget"], 10.0);
    assert!(
        !info.text().contains(&key[3..]) || info.json()["key"] == key,
        "only the echoed key appears"
    );

    // Update takes effect at once, even though the key is cached.
    let r = post_json(
        &gw,
        "/key/update",
        MASTER,
        json!({"key": key, "models": ["m", "other"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&gw, &key, "other").await.status, 200);

    let r = post_json(&gw, "/key/block", MASTER, json!({"key": key})).await;
    assert_eq!(r.json()["blocked"], true);
    let r = chat(&gw, &key, "m").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("blocked"));
    post_json(&gw, "/key/unblock", MASTER, json!({"key": key})).await;
    assert_eq!(chat(&gw, &key, "m").await.status, 200);

    let r = post_json(&gw, "/key/regenerate", MASTER, json!({"key": key})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_key = r.json()["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(
        chat(&gw, &key, "m").await.status,
        401,
        "the old secret is dead"
    );
    assert_eq!(chat(&gw, &new_key, "m").await.status, 200);
    assert_eq!(
        get(&gw, &format!("/key/info?key={new_key}"), Some(MASTER))
            .await
            .json()["info"]["key_alias"],
        "svc-a",
        "same row, new secret"
    );

    let r = post_json(&gw, "/key/delete", MASTER, json!({"keys": [new_key]})).await;
    assert_eq!(r.json(), json!({"deleted_keys": [new_key]}));
    assert_eq!(chat(&gw, &new_key, "m").await.status, 401);
    assert_eq!(
        get(&gw, &format!("/key/info?key={new_key}"), Some(MASTER))
            .await
            .status,
        404
    );
    assert_eq!(
        post_json(&gw, "/key/delete", MASTER, json!({"keys": [new_key]}))
            .await
            .status,
        404
    );

    // The database never holds the key itself.
    gw.stop().await;
    db.cleanup().await;
}

async fn every_auth_failure(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("{}{}", model("m", &mock), model("openai/gpt", &mock)),
        &db,
        None,
    )
    .await;

    assert_eq!(chat(&gw, "sk-never-issued-key", "m").await.status, 401);

    let expiring = generate(&gw, json!({"duration": "1s"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(&gw, &expiring, "m").await.status, 200);
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let r = chat(&gw, &expiring, "m").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "expired_key");

    let broke = generate(&gw, json!({"max_budget": 1.0, "spend": 2.5})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = chat(&gw, &broke, "m").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "budget_exceeded");

    let wild = generate(
        &gw,
        json!({"models": ["openai/*"], "aliases": {"my-gpt": "openai/gpt"}}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(&gw, &wild, "openai/gpt").await.status, 200);
    assert_eq!(
        chat(&gw, &wild, "my-gpt").await.status,
        200,
        "alias maps to the group"
    );
    assert_eq!(chat(&gw, &wild, "m").await.status, 403);

    // Team: blocked, over budget, and narrowing the key's models.
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t1", "models": ["m"], "max_budget": 5.0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tk = generate(&gw, json!({"team_id": "t1"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(&gw, &tk, "m").await.status, 200);
    let r = chat(&gw, &tk, "openai/gpt").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "team_model_access_denied");
    post_json(&gw, "/team/block", MASTER, json!({"team_id": "t1"})).await;
    let r = chat(&gw, &tk, "m").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("t1"));
    post_json(&gw, "/team/unblock", MASTER, json!({"team_id": "t1"})).await;
    assert_eq!(chat(&gw, &tk, "m").await.status, 200);
    post_json(
        &gw,
        "/team/update",
        MASTER,
        json!({"team_id": "t1", "spend": 6.0}),
    )
    .await;
    assert_eq!(
        chat(&gw, &tk, "m").await.json()["error"]["type"],
        "budget_exceeded"
    );

    // User budget.
    let r = post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "u-poor", "max_budget": 0.5, "spend": 1.0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let uk = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(
        chat(&gw, &uk, "m").await.json()["error"]["type"],
        "budget_exceeded"
    );

    // Config keys and the master key keep working next to the database.
    assert_eq!(chat(&gw, MASTER, "m").await.status, 200);
    gw.stop().await;
    db.cleanup().await;
}

async fn fifty_parallel_generates(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let results = futures_util::future::join_all((0..50).map(|i| {
        post_json(
            &gw,
            "/key/generate",
            MASTER,
            json!({"key_alias": format!("k{i}")}),
        )
    }))
    .await;
    let mut keys = std::collections::HashSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.text());
        keys.insert(r.json()["key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys.len(), 50);
    let list = get(&gw, "/key/list?size=100", Some(MASTER)).await.json();
    assert_eq!(list["total_count"], 50);
    assert_eq!(list["keys"].as_array().unwrap().len(), 50);
    let page = get(&gw, "/key/list?size=20&page=3", Some(MASTER))
        .await
        .json();
    assert_eq!(page["keys"].as_array().unwrap().len(), 10);
    assert_eq!(page["total_pages"], 3);
    for k in keys.iter().take(5) {
        assert_eq!(chat(&gw, k, "m").await.status, 200);
    }
    // Duplicate alias is refused.
    let r = post_json(&gw, "/key/generate", MASTER, json!({"key_alias": "k7"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "key_alias");
    gw.stop().await;
    db.cleanup().await;
}

async fn hostile_values_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let sqlish = "x'); DROP TABLE keys; -- \"quoted\" \\ back ünïcødé 🚀";
    let big = "A".repeat(200_000);
    let k = generate(
        &gw,
        json!({"key_alias": sqlish, "user_id": sqlish, "models": [sqlish, "m"], "metadata": {"big": big, "nested": {"q": sqlish}}}),
    )
    .await;
    let key = k["key"].as_str().unwrap();
    let info = get(&gw, &format!("/key/info?key={key}"), Some(MASTER))
        .await
        .json();
    assert_eq!(info["info"]["key_alias"], sqlish);
    assert_eq!(info["info"]["user_id"], sqlish);
    assert_eq!(info["info"]["models"][0], sqlish);
    assert_eq!(
        info["info"]["metadata"]["big"].as_str().unwrap().len(),
        200_000
    );
    assert_eq!(info["info"]["metadata"]["nested"]["q"], sqlish);
    assert_eq!(chat(&gw, key, "m").await.status, 200);
    // Wrong types are 422 with the field named, and nothing is stored.
    let r = post_json(&gw, "/key/generate", MASTER, json!({"max_budget": "lots"})).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_budget"));
    let r = post_json(&gw, "/key/generate", MASTER, json!({"duration": "30"})).await;
    assert_eq!(r.status, 400);
    let r = post_json(&gw, "/key/generate", MASTER, json!({"max_budget": -1})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        get(&gw, "/key/list", Some(MASTER)).await.json()["total_count"],
        1
    );
    gw.stop().await;
    db.cleanup().await;
}

async fn who_may_read_what(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    post_json(&gw, "/team/new", MASTER, json!({"team_id": "blue"})).await;
    post_json(&gw, "/team/new", MASTER, json!({"team_id": "red"})).await;
    let a = generate(&gw, json!({"team_id": "blue"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let b = generate(&gw, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();

    let own = get(&gw, "/key/info", Some(&a)).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(
        get(&gw, &format!("/key/info?key={a}"), Some(&a))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw, &format!("/key/info?key={b}"), Some(&a))
            .await
            .status,
        403
    );
    assert_eq!(
        get(&gw, "/team/info?team_id=blue", Some(&a)).await.status,
        200
    );
    assert_eq!(
        get(&gw, "/team/info?team_id=red", Some(&a)).await.status,
        403
    );
    // A team key with no user is no internal user: LiteLLM's 401 for
    // admin routes, and a key list of just itself.
    assert_eq!(
        post_json(&gw, "/key/generate", &a, json!({})).await.status,
        401
    );
    let own_list = get(&gw, "/key/list", Some(&a)).await;
    assert_eq!(own_list.status, 200, "{}", own_list.text());
    assert_eq!(own_list.json()["total_count"], 1);
    assert_eq!(post_json(&gw, "/team/new", &a, json!({})).await.status, 401);
    assert_eq!(get(&gw, "/key/list", None).await.status, 401);
    gw.stop().await;
    db.cleanup().await;
}

async fn users_and_teams(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;

    let r = post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "ann", "user_email": "ann@example.com", "models": ["m"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["key"].as_str().unwrap().starts_with("sk-"));
    let r = post_json(&gw, "/user/new", MASTER, json!({"user_id": "ann"})).await;
    assert_eq!(r.status, 409);
    let r = post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "bob", "auto_create_key": false}),
    )
    .await;
    assert_eq!(r.json()["key"], "");

    let info = get(&gw, "/user/info?user_id=ann", Some(MASTER))
        .await
        .json();
    assert_eq!(info["user_info"]["user_email"], "ann@example.com");
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    let r = post_json(
        &gw,
        "/user/update",
        MASTER,
        json!({"user_id": "ann", "max_budget": 3.0}),
    )
    .await;
    assert_eq!(r.json()["data"]["max_budget"], 3.0);
    let users = get(&gw, "/user/list", Some(MASTER)).await.json();
    assert_eq!(users["total"], 2);

    let r = post_json(&gw, "/team/new", MASTER, json!({"team_id": "core", "team_alias": "Core", "members_with_roles": [{"user_id": "ann", "role": "admin"}]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        post_json(&gw, "/team/new", MASTER, json!({"team_id": "core"}))
            .await
            .status,
        400
    );
    let r = post_json(
        &gw,
        "/team/member_add",
        MASTER,
        json!({"team_id": "core", "member": {"user_id": "bob", "role": "user"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ann, bob, and the master key's `default_user_id` (LiteLLM adds the creator).
    assert_eq!(r.json()["members_with_roles"].as_array().unwrap().len(), 3);
    assert_eq!(
        post_json(
            &gw,
            "/team/member_add",
            MASTER,
            json!({"team_id": "core", "member": {"user_id": "bob"}})
        )
        .await
        .status,
        400
    );
    let r = post_json(
        &gw,
        "/team/member_delete",
        MASTER,
        json!({"team_id": "core", "user_id": "bob"}),
    )
    .await;
    assert_eq!(r.json()["members_with_roles"].as_array().unwrap().len(), 2);
    let teams = get(&gw, "/team/list", Some(MASTER)).await.json();
    assert_eq!(teams.as_array().unwrap().len(), 1);
    let tk = generate(&gw, json!({"team_id": "core"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&gw, "/team/info?team_id=core", Some(MASTER))
            .await
            .json()["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deleting the team deletes its keys; deleting a user deletes theirs.
    let r = post_json(&gw, "/team/delete", MASTER, json!({"team_ids": ["core"]})).await;
    assert_eq!(r.json(), json!({"deleted_teams": ["core"]}));
    assert_eq!(chat(&gw, &tk, "m").await.status, 401);
    let ann_key = info["keys"][0]["token"].as_str().unwrap().to_string();
    let r = post_json(&gw, "/user/delete", MASTER, json!({"user_ids": ["ann"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&gw, &format!("/key/info?key={ann_key}"), Some(MASTER))
            .await
            .status,
        404
    );
    assert_eq!(
        get(&gw, "/user/info?user_id=ann", Some(MASTER))
            .await
            .status,
        404
    );
    assert_eq!(
        post_json(&gw, "/team/delete", MASTER, json!({"team_ids": ["nope"]}))
            .await
            .status,
        404
    );
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_key_blocked_on_one_replica_is_refused_by_the_other_within_a_second() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = format!("tg-test-{}", uuid::Uuid::new_v4().simple());
    // A long cache TTL: only the invalidation can make replica B notice.
    let fragment = format!("[auth]\ncache_ttl_secs = 3600\n{}", model("m", &mock));
    let a = spawn_gateway_db(&fragment, &db, Some(&prefix)).await;
    let b = spawn_gateway_db(&fragment, &db, Some(&prefix)).await;
    let key = generate(&a, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chat(&b, &key, "m").await.status, 200, "B has it cached now");
    // Let B's subscription settle before the change.
    actix_rt::time::sleep(Duration::from_millis(200)).await;

    post_json(&a, "/key/block", MASTER, json!({"key": key})).await;
    let t0 = Instant::now();
    let mut status = 200;
    while t0.elapsed() < Duration::from_secs(1) {
        status = chat(&b, &key, "m").await.status;
        if status == 401 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 401,
        "replica B still accepted the blocked key after 1 s"
    );
    println!("revocation reached replica B in {:?}", t0.elapsed());
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn when_the_database_goes_away_cached_keys_keep_working_and_new_ones_get_503() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = Cuttable::start("127.0.0.1:5432");
    let via_proxy = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port()));
    let mock = spawn_mock().await;
    // Create the keys with a direct gateway, then serve through the cuttable one.
    let admin = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let cached = generate(&admin, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let uncached = generate(&admin, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    admin.stop().await;
    let gw = spawn_gateway(&format!(
        "database_url = \"{via_proxy}\"\n[auth]\ncache_ttl_secs = 1\n{}",
        model("m", &mock)
    ))
    .await;
    assert_eq!(chat(&gw, &cached, "m").await.status, 200);

    proxy.cut();
    actix_rt::time::sleep(Duration::from_millis(1200)).await; // past the TTL: stale now
    assert_eq!(
        chat(&gw, &cached, "m").await.status,
        200,
        "a known key is served stale"
    );
    let r = chat(&gw, &uncached, "m").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(chat(&gw, "sk-unknown-key-xyz", "m").await.status, 503);
    let ready = get(&gw, "/health/readiness", None).await.json();
    assert_eq!(ready["status"], "degraded", "{ready}");

    proxy.restore();
    let t0 = Instant::now();
    let mut status = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        status = chat(&gw, &uncached, "m").await.status;
        if status == 200 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "recovers when the database is back");
    gw.stop().await;
    db.cleanup().await;
}
