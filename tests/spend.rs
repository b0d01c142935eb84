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
on_both_backends!(a_keys_spend_per_model_is_stored_and_holds_its_model_budget_after_a_restart);
on_both_backends!(replicas_writing_the_same_keys_at_once_neither_deadlock_nor_lose_spend);
on_both_backends!(a_spend_row_reads_back_exactly_as_written);

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

/// A store of its own on the test's database, as another replica's.
async fn store_on(db: &TestDb) -> tollgate::store::Store {
    tollgate::store::Store::connect(
        &db.url,
        2,
        Duration::from_secs(5),
        tollgate::breaker::Breaker::new("test", Default::default()),
    )
    .await
    .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn spend_reaches_every_owner_and_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let org = post_json(
        &gw,
        "/organization/new",
        MASTER,
        json!({"organization_id": "o1"}),
    )
    .await;
    assert_eq!(org.status, 200, "{}", org.text());
    post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t1", "organization_id": "o1"}),
    )
    .await;
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
    // The organization's spend is its teams'; the end user's, its requests'
    // (the five that named it, created on the first).
    let org = get(&gw, "/organization/info?organization_id=o1", Some(MASTER))
        .await
        .json();
    assert!(close(org["spend"].as_f64().unwrap(), expected), "{org}");
    let customer = get(&gw, "/customer/info?end_user_id=customer-1", Some(MASTER))
        .await
        .json();
    let streamed = 3.0 * (2.0 * 0.000001 + 5.0 * 0.000002);
    assert!(
        close(customer["spend"].as_f64().unwrap(), expected - streamed),
        "{customer}"
    );

    // A batch written again (the spool replayed after a crash between the
    // commit and its truncation) adds nothing twice: with one new row in
    // it, only that row's cost and log row land.
    let store = store_on(&db).await;
    let mut batch = store
        .spend_logs(&tollgate::store::SpendFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(batch.len(), 8);
    let mut new_row = batch[0].clone();
    new_row.request_id = uuid::Uuid::now_v7().to_string();
    new_row.spend = 0.25;
    batch.insert(3, new_row);
    let commit = store.record_spend(batch.clone()).await.unwrap();
    assert_eq!((commit.written, commit.duplicates), (1, 8));
    let again = store.record_spend(batch).await.unwrap();
    assert_eq!((again.written, again.duplicates), (0, 9));
    let expected = expected + 0.25;
    assert!(
        close(key_spend(&gw, &key).await, expected),
        "key spend {} != {expected} after a replay",
        key_spend(&gw, &key).await
    );
    for (path, field) in [
        ("/user/info?user_id=u1", "/user_info/spend"),
        ("/team/info?team_id=t1", "/team_info/spend"),
        ("/organization/info?organization_id=o1", "/spend"),
    ] {
        let info = get(&gw, path, Some(MASTER)).await.json();
        let spend = info.pointer(field).and_then(Value::as_f64).unwrap();
        assert!(close(spend, expected), "{path} after a replay: {info}");
    }
    let logs = get(&gw, "/spend/logs", Some(MASTER)).await.json();
    assert_eq!(logs.as_array().map(Vec::len), Some(9), "{logs}");
    // Each row's metadata reads as LiteLLM's: who called, the request id
    // the caller saw, and the request's own metadata.
    let mut runs = Vec::new();
    for row in logs.as_array().unwrap() {
        let m = &row["metadata"];
        assert_eq!(m["user_api_key_user_id"], "u1", "{row}");
        assert_eq!(m["user_api_key_team_id"], "t1", "{row}");
        assert!(m["user_api_key_alias"].is_null(), "{row}");
        assert_eq!(m["attempts"], 1, "{row}");
        assert!(!m["x_request_id"].as_str().unwrap().is_empty(), "{row}");
        runs.extend(m["requester_metadata"]["run"].as_i64());
    }
    runs.sort();
    assert_eq!(runs, [0, 1, 2, 3, 4]);
    gw.stop().await;
    db.cleanup().await;
}

/// Every column of a spend log row survives the trip through the
/// database, NULLs, flags, non-ASCII text and the extremes of its numbers
/// included (PostgreSQL takes rows by binary COPY, SQLite by INSERT).
async fn a_spend_row_reads_back_exactly_as_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    tollgate::store::Store::migrate(&db.url).await.unwrap();
    let store = store_on(&db).await;
    let full = tollgate::store::SpendLogRow {
        request_id: uuid::Uuid::now_v7().to_string(),
        call_type: "acompletion".into(),
        api_key: "a".repeat(64),
        key_alias: Some("clé ✓ \"quoted\"\ttab".into()),
        spend: 1.234_567_890_123e-7,
        prompt_tokens: i64::MAX,
        completion_tokens: 0,
        total_tokens: -1,
        start_time: 1_764_460_000_123,
        end_time: 1_764_460_000_456,
        completion_start_time: Some(1_764_460_000_200),
        model: "gpt-4o-mini".into(),
        model_group: "group/with slash".into(),
        model_id: "dep-1".into(),
        api_base: "http://127.0.0.1:1/v1".into(),
        user_id: Some("u1".into()),
        team_id: Some("t1".into()),
        end_user: Some("end-user-\u{1F600}".into()),
        metadata: r#"{"x_request_id":"r","requester_metadata":{"k":[1,null]}}"#.into(),
        cache_hit: true,
        status: "failure".into(),
        usage_estimated: true,
    };
    let bare = tollgate::store::SpendLogRow {
        request_id: uuid::Uuid::now_v7().to_string(),
        key_alias: None,
        spend: 0.0,
        completion_start_time: None,
        user_id: None,
        team_id: None,
        end_user: None,
        metadata: String::new(),
        cache_hit: false,
        status: "success".into(),
        usage_estimated: false,
        ..full.clone()
    };
    let commit = store
        .record_spend(vec![full.clone(), bare.clone()])
        .await
        .unwrap();
    assert_eq!((commit.written, commit.duplicates), (2, 0));
    for row in [full, bare] {
        let filter = tollgate::store::SpendFilter {
            request_id: Some(row.request_id.clone()),
            ..Default::default()
        };
        let read = store.spend_logs(&filter, 10).await.unwrap();
        assert_eq!(read, vec![row]);
    }
    db.cleanup().await;
}

/// Two replicas' spend writers adding to the same keys, users, teams, end
/// users and key×model rows at the same moment, their batches naming them
/// in opposite orders: every batch commits (no deadlock, no error) and
/// every cent lands once.
async fn replicas_writing_the_same_keys_at_once_neither_deadlock_nor_lose_spend(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    post_json(&gw, "/team/new", MASTER, json!({"team_id": "t1"})).await;
    post_json(&gw, "/team/new", MASTER, json!({"team_id": "t2"})).await;
    let mut keys = Vec::new();
    for i in 0..12 {
        let team = if i % 2 == 0 { "t1" } else { "t2" };
        let key = generate(&gw, json!({"team_id": team})).await["key"]
            .as_str()
            .unwrap()
            .to_string();
        let mut body = chat_body("m");
        body["user"] = json!(format!("c{}", i % 3));
        let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        keys.push(key);
    }
    let (a, b) = (store_on(&db).await, store_on(&db).await);
    let mut seen: Vec<tollgate::store::SpendLogRow>;
    assert!(
        wait_until!(5, {
            seen = a
                .spend_logs(&tollgate::store::SpendFilter::default(), 100)
                .await
                .unwrap();
            seen.len() == keys.len()
        }),
        "{} rows",
        seen.len()
    );
    seen.sort_by(|x, y| x.api_key.cmp(&y.api_key));
    let before: Vec<f64> =
        futures_util::future::join_all(keys.iter().map(|k| key_spend(&gw, k))).await;
    // 2 writers × 15 batches × 60 rows: each batch goes through every key,
    // A's in ascending key order, B's in descending.
    let batches = |descending: bool| -> Vec<Vec<tollgate::store::SpendLogRow>> {
        (0..15)
            .map(|_| {
                let mut rows: Vec<_> = (0..60)
                    .map(|i| {
                        let mut r = seen[i % seen.len()].clone();
                        r.request_id = uuid::Uuid::now_v7().to_string();
                        r.spend = 0.001;
                        r
                    })
                    .collect();
                rows.sort_by(|x, y| x.api_key.cmp(&y.api_key));
                if descending {
                    rows.reverse();
                }
                rows
            })
            .collect()
    };
    let write = |store: tollgate::store::Store, batches: Vec<Vec<_>>| async move {
        let mut written = 0;
        for batch in batches {
            written += store
                .record_spend(batch)
                .await
                .expect("a batch failed")
                .written;
        }
        written
    };
    let (wa, wb) = futures_util::join!(write(a.clone(), batches(false)), write(b, batches(true)));
    assert_eq!((wa, wb), (900, 900));
    // Each key: 2 × 15 × 5 rows of 0.001 on top of what it had.
    for (key, before) in keys.iter().zip(&before) {
        let now = key_spend(&gw, key).await;
        assert!(
            close(now, before + 0.15),
            "key spend {now}, expected {}",
            before + 0.15
        );
    }
    for (path, field, expected) in [
        ("/team/info?team_id=t1", "/team_info/spend", 6.0 * 0.15),
        ("/team/info?team_id=t2", "/team_info/spend", 6.0 * 0.15),
        ("/customer/info?end_user_id=c0", "/spend", 4.0 * 0.15),
    ] {
        let info = get(&gw, path, Some(MASTER)).await.json();
        let spend = info.pointer(field).and_then(Value::as_f64).unwrap();
        let first: f64 = seen
            .iter()
            .filter(|r| match path {
                p if p.contains("t1") => r.team_id.as_deref() == Some("t1"),
                p if p.contains("t2") => r.team_id.as_deref() == Some("t2"),
                _ => r.end_user.as_deref() == Some("c0"),
            })
            .map(|r| r.spend)
            .sum();
        assert!(close(spend, first + expected), "{path}: {info}");
    }
    let per_model: f64 = a
        .key_model_spend(&seen[0].api_key)
        .await
        .unwrap()
        .iter()
        .map(|(_, x)| x)
        .sum();
    assert!(close(per_model, seen[0].spend + 0.15), "{per_model}");
    gw.stop().await;
    db.cleanup().await;
}

/// A key's spend per model group reaches the database: a new gateway on
/// the same database still refuses the model once its budget is spent.
async fn a_keys_spend_per_model_is_stored_and_holds_its_model_budget_after_a_restart(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    // Refused once spent reaches it: after the second answer.
    let key = generate(
        &gw,
        json!({"model_max_budget": {"m": {"budget_limit": 1.8e-5, "time_period": "30d"}}}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = chat_body("m");
    body["max_tokens"] = json!(5);
    for _ in 0..2 {
        let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        wait_until!(5, close(key_spend(&gw, &key).await, 2.0 * ONE)),
        "key spend {}",
        key_spend(&gw, &key).await
    );
    gw.stop().await;

    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "budget_exceeded", "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

/// `n` chat requests at once; the statuses.
async fn burst(gws: &[&tollgate::RunningGateway], key: &str, n: usize) -> Vec<Resp> {
    let mut body = chat_body("m");
    body["max_tokens"] = json!(5);
    let futures = (0..n).map(|i| {
        let body = body.clone();
        let gw = gws[i % gws.len()];
        async move { post(gw, "/v1/chat/completions", Some(key), &body).await }
    });
    futures_util::future::join_all(futures).await
}

/// Cost of one mock answer through `model()`: 2 prompt + 5 completion tokens.
const ONE: f64 = 2.0 * 0.000001 + 5.0 * 0.000002;

#[actix_rt::test]
async fn parallel_requests_cannot_overshoot_a_budget() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_tweaked(
        &format!("database_url = \"{}\"\n{}", db.url, model("m", &mock)),
        |c| c.server.workers = 2,
    )
    .await;
    let budget = 10.0 * ONE;
    let key = generate(&gw, json!({"max_budget": budget})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let answers = burst(&[&gw], &key, 100).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert!((1..=11).contains(&ok), "{ok} of 100 succeeded");
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "budget_exceeded", "{}", r.text());
    }
    // Spend the rest of the budget one by one: refused once it is reached.
    let mut more = 0;
    while chat(&gw, &key).await.status == 200 {
        more += 1;
        assert!(more <= 10, "the budget never tripped");
    }
    assert!(ok + more <= 11, "{ok} + {more} requests fit a budget of 10");
    assert!(
        wait_until!(5, key_spend(&gw, &key).await > budget - ONE / 2.0),
        "spend {} never reached the budget",
        key_spend(&gw, &key).await
    );
    assert!(key_spend(&gw, &key).await <= budget + ONE + 1e-12);
    gw.stop().await;
    db.cleanup().await;
}

async fn chat(gw: &tollgate::RunningGateway, key: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body("m")).await
}

#[actix_rt::test]
async fn spend_logs_list_each_request_and_filter_like_litellm() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t1", "team_alias": "Search"}),
    )
    .await;
    let a = generate(
        &gw,
        json!({"team_id": "t1", "user_id": "ann", "key_alias": "a"}),
    )
    .await;
    let b = generate(&gw, json!({})).await;
    let (ka, kb) = (a["key"].as_str().unwrap(), b["key"].as_str().unwrap());
    let mut call_ids = Vec::new();
    for _ in 0..3 {
        let mut body = chat_body("m");
        body["user"] = json!("end-user-9");
        let r = post(&gw, "/v1/chat/completions", Some(ka), &body).await;
        call_ids.push(r.header("x-litellm-call-id").unwrap());
    }
    chat(&gw, kb).await;
    let logs = |q: String| {
        let gw = &gw;
        async move {
            get(gw, &format!("/spend/logs{q}"), Some(MASTER))
                .await
                .json()
        }
    };
    assert!(wait_until!(
        5,
        logs(String::new()).await.as_array().unwrap().len() == 4
    ));
    let mine = logs(format!("?api_key={ka}")).await;
    assert_eq!(mine.as_array().unwrap().len(), 3, "{mine}");
    let row = &mine[0];
    assert_eq!(row["api_key"], a["token"]);
    assert_eq!(row["model_group"], "m");
    assert_eq!(row["model"], "mock-gpt");
    assert_eq!(row["user"], "ann");
    assert_eq!(row["team_id"], "t1");
    assert_eq!(row["end_user"], "end-user-9");
    assert_eq!(row["call_type"], "acompletion");
    assert_eq!(row["status"], "success");
    assert_eq!(row["total_tokens"], 7);
    assert!(
        (row["spend"].as_f64().unwrap() - ONE).abs() < 1e-12,
        "{row}"
    );
    assert!(
        row["startTime"].as_str().unwrap().ends_with("+00:00"),
        "{row}"
    );
    assert!(
        !serde_json::to_string(&mine).unwrap().contains(ka),
        "the raw key never appears"
    );
    let one = logs(format!("?request_id={}", call_ids[1])).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["request_id"], call_ids[1]);
    assert_eq!(
        logs("?user_id=ann".into()).await.as_array().unwrap().len(),
        3
    );
    // With dates: a daily summary, the end day excluded as LiteLLM does.
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    let days = logs(format!("?start_date={today}&end_date={tomorrow}")).await;
    assert_eq!(days[0]["startTime"], today.to_string(), "{days}");
    assert!(
        (days[0]["spend"].as_f64().unwrap() - 4.0 * ONE).abs() < 1e-12,
        "{days}"
    );
    assert!((days[0][a["token"].as_str().unwrap()].as_f64().unwrap() - 3.0 * ONE).abs() < 1e-12);
    let none = logs(format!("?start_date={tomorrow}&end_date={tomorrow}")).await;
    assert_eq!(none, json!([]));
    // A key sees only its own requests.
    let own = get(&gw, "/spend/logs", Some(kb)).await.json();
    assert_eq!(own.as_array().unwrap().len(), 1, "{own}");
    // Reports.
    let report = get(
        &gw,
        &format!("/global/spend/report?start_date={today}&end_date={tomorrow}"),
        Some(MASTER),
    )
    .await
    .json();
    let teams = report[0]["teams"].as_array().unwrap();
    assert!(teams.iter().any(|t| t["team_name"] == "Search"), "{report}");
    let keys = get(&gw, "/global/spend/keys?limit=1", Some(MASTER))
        .await
        .json();
    assert_eq!(keys[0]["api_key"], a["token"], "{keys}");
    let models = get(&gw, "/global/spend/models", Some(MASTER)).await.json();
    assert_eq!(models[0]["model"], "mock-gpt", "{models}");
    assert_eq!(
        get(&gw, "/spend/logs?start_date=yesterday", Some(MASTER))
            .await
            .status,
        400
    );
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_stream_cut_short_is_settled_with_estimated_tokens() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock_with(Behaviour {
        chunks: Some(200),
        chunk_interval_ms: 20,
        ..Default::default()
    })
    .await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let key = generate(&gw, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let mut resp = client()
        .post(format!("{}/chat/completions", gw.url()))
        .insert_header(("authorization", format!("Bearer {key}")))
        .send_json(&body)
        .await
        .unwrap();
    for _ in 0..4 {
        resp.next().await.unwrap().unwrap();
    }
    drop(resp);
    let logs = || async { get(&gw, "/spend/logs", Some(MASTER)).await.json() };
    assert!(wait_until!(5, logs().await.as_array().unwrap().len() == 1));
    let row = &logs().await[0];
    assert_eq!(row["usage_estimated"], true, "{row}");
    assert!(row["completion_tokens"].as_i64().unwrap() >= 1, "{row}");
    assert!(row["spend"].as_f64().unwrap() > 0.0, "{row}");
    assert_eq!(row["status"], "failure");
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn end_users_are_tracked_budgeted_blocked_and_limited_to_their_models() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("{}{}", model("m", &mock), model("other", &mock)),
        &db,
        None,
    )
    .await;
    let key = generate(&gw, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let as_customer = |user: &'static str, model: &'static str| {
        let mut body = chat_body(model);
        body["user"] = json!(user);
        body
    };
    // Seen for the first time: created with its spend.
    post(
        &gw,
        "/v1/chat/completions",
        Some(&key),
        &as_customer("walk-in", "m"),
    )
    .await;
    let info = || async { get(&gw, "/customer/info?end_user_id=walk-in", Some(MASTER)).await };
    assert!(wait_until!(5, info().await.status == 200));
    assert!((info().await.json()["spend"].as_f64().unwrap() - ONE).abs() < 1e-12);

    // A budget of two requests.
    let r = post_json(
        &gw,
        "/customer/new",
        MASTER,
        json!({"user_id": "acme", "max_budget": 2.0 * ONE, "allowed_models": ["m"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        post_json(&gw, "/customer/new", MASTER, json!({"user_id": "acme"}))
            .await
            .status,
        400
    );
    let mut ok = 0;
    for _ in 0..4 {
        let r = post(
            &gw,
            "/v1/chat/completions",
            Some(&key),
            &as_customer("acme", "m"),
        )
        .await;
        if r.status == 200 {
            ok += 1;
        } else {
            assert_eq!(r.json()["error"]["type"], "budget_exceeded", "{}", r.text());
            assert!(r.text().contains("End User=acme"), "{}", r.text());
        }
    }
    assert_eq!(ok, 2);
    // Only its models.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(&key),
        &as_customer("acme", "other"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Blocked, then unblocked.
    post_json(
        &gw,
        "/customer/block",
        MASTER,
        json!({"user_ids": ["walk-in"]}),
    )
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(&key),
        &as_customer("walk-in", "m"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r
        .text()
        .contains("User blocked from making LLM API Calls. User=walk-in"));
    post_json(
        &gw,
        "/customer/unblock",
        MASTER,
        json!({"user_ids": ["walk-in"]}),
    )
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(&key),
        &as_customer("walk-in", "m"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = get(&gw, "/customer/list", Some(MASTER)).await.json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let r = post_json(
        &gw,
        "/customer/delete",
        MASTER,
        json!({"user_ids": ["acme", "nobody"]}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = post_json(
        &gw,
        "/customer/delete",
        MASTER,
        json!({"user_ids": ["acme"]}),
    )
    .await;
    assert_eq!(r.json()["deleted_customers"], 1);
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_budget_period_ends_on_schedule_once_across_replicas() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
    let fragment = format!(
        // Periods of 2 s: spend lands well inside one.
        "[spend]\nbudget_reset_interval_secs = 1\nflush_interval_ms = 200\n{}",
        model("m", &mock)
    );
    let a = spawn_gateway_db(&fragment, &db, Some(&prefix)).await;
    let b = spawn_gateway_db(&fragment, &db, Some(&prefix)).await;
    let k = generate(&a, json!({"max_budget": ONE, "budget_duration": "2s"})).await;
    let key = k["key"].as_str().unwrap().to_string();
    assert!(k["budget_reset_at"].is_string(), "{k}");
    // One request spends the period's budget.
    assert_eq!(chat(&a, &key).await.status, 200);
    assert!(wait_until!(3, key_spend(&a, &key).await > 0.0));
    let t0 = Instant::now();
    assert!(
        wait_until!(6, chat(&b, &key).await.status == 200),
        "the budget never reset"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // Over a few more periods each one was reset by exactly one replica.
    actix_rt::time::sleep(Duration::from_millis(4_200)).await;
    let resets = metric(&a, "tollgate_budget_resets_total{entity=\"key\"}").await
        + metric(&b, "tollgate_budget_resets_total{entity=\"key\"}").await;
    let periods = t0.elapsed().as_secs_f64() / 2.0;
    assert!(
        resets >= 2.0 && resets <= periods.ceil() + 1.0,
        "{resets} resets in about {periods:.1} periods"
    );
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn two_replicas_share_one_budget_through_redis() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
    let a = spawn_gateway_db(&model("m", &mock), &db, Some(&prefix)).await;
    let b = spawn_gateway_db(&model("m", &mock), &db, Some(&prefix)).await;
    let budget = 10.0 * ONE;
    let key = generate(&a, json!({"max_budget": budget})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let answers = burst(&[&a, &b], &key, 100).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert!(
        (1..=11).contains(&ok),
        "{ok} of 100 succeeded across two replicas"
    );
    let mut more = 0;
    while chat(if more % 2 == 0 { &a } else { &b }, &key).await.status == 200 {
        more += 1;
        assert!(more <= 10, "the budget never tripped");
    }
    assert!(
        ok + more <= 11,
        "{ok} + {more} requests fit a budget of 10 on two replicas"
    );
    // Every request that got a 200 is settled, once: the stored spend is
    // theirs to the cent. (It may be below the budget: while the burst's
    // reservations are being corrected, the shared view can refuse a
    // request early; a budget errs on the side of not overshooting.)
    // Generous: under a loaded test machine a batch may wait its turn.
    let served = (ok + more) as f64 * ONE;
    let settled = wait_until!(15, (key_spend(&a, &key).await - served).abs() < 1e-9);
    assert!(
        settled,
        "{ok} + {more} requests served, stored spend {} for {served}",
        key_spend(&a, &key).await
    );
    assert!(served <= budget + ONE + 1e-12);
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}
