//! A panic inside any actor ends in a restart: requests keep working, the
//! restart is counted, and nothing that was owed an answer hangs.

mod common;

use common::*;
use serde_json::json;

const ACTORS: [&str; 8] = [
    "auth",
    "router",
    "provider",
    "rate_limit",
    "health",
    "spend",
    "logger",
    "auth_hub",
];

async fn chat_crashing(gw: &tollgate::RunningGateway, key: &str, actor: &str) -> Resp {
    let mut req = client()
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .insert_header(("authorization", format!("Bearer {key}")))
        .insert_header(("x-tollgate-crash", actor));
    req = req.insert_header(("content-type", "application/json"));
    let mut resp = req
        .send_body(serde_json::to_vec(&chat_body("m")).unwrap())
        .await
        .expect("the connection survives the crash");
    let body = resp.body().await.expect("body").to_vec();
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

#[actix_rt::test]
async fn every_actor_that_panics_is_restarted_and_requests_keep_working() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let log = std::env::temp_dir().join(format!("tollgate-sup-{}.log", uuid::Uuid::new_v4()));
    let fragment = format!(
        "database_url = \"{}\"\n[limits]\nglobal_rpm = 100000\n{}",
        db.url,
        model("m", &mock)
    );
    let log_path = log.display().to_string();
    let gw = spawn_gateway_tweaked(&fragment, |c| {
        c.fault_injection = true;
        c.logging.request_log = log_path;
    })
    .await;
    let key = post_json(&gw, "/key/generate", MASTER, json!({"models": ["m"]}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();

    for actor in ACTORS {
        // The request that carries the crash may or may not be the one that
        // pays for it; either way it gets an answer.
        let r = chat_crashing(&gw, &key, actor).await;
        assert!(
            r.status == 200 || r.status == 503,
            "{actor}: {} {}",
            r.status,
            r.text()
        );
        for i in 0..3 {
            let r = post(&gw, "/v1/chat/completions", Some(&key), &chat_body("m")).await;
            assert_eq!(r.status, 200, "{actor} #{i}: {}", r.text());
        }
        let restarts = metric(
            &gw,
            &format!("tollgate_actor_restarts_total{{actor=\"{actor}\"}}"),
        )
        .await;
        assert_eq!(restarts, 1.0, "{actor} restarted once and it was counted");
    }
    // Spend and the request log kept working through their actors' restarts.
    // (settlements reach SpendActor in batches, every spend.flush_interval_ms)
    let mut tokens = 0.0;
    for _ in 0..50 {
        tokens = metric(
            &gw,
            "tollgate_tokens_total{model=\"m\",kind=\"completion\"}",
        )
        .await;
        if tokens >= 27.0 * 5.0 {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        tokens >= 27.0 * 5.0,
        "spend of the requests after the crashes: {tokens}"
    );
    gw.stop().await;
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(lines >= 27, "request log lines: {lines}");
    let _ = std::fs::remove_file(&log);
    db.cleanup().await;
}

#[actix_rt::test]
async fn requests_waiting_on_a_key_lookup_are_answered_when_the_key_cache_restarts() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let admin = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let key = post_json(&admin, "/key/generate", MASTER, json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    admin.stop().await;
    let proxy = FaultProxy::start("127.0.0.1:5432");
    let fragment = format!(
        "database_url = \"{}\"\n[storage]\ndb_timeout_ms = 20000\n{}",
        db.url.replace("127.0.0.1:5432", &proxy.addr()),
        model("m", &mock)
    );
    let gw = std::rc::Rc::new(spawn_gateway_tweaked(&fragment, |c| c.fault_injection = true).await);
    // The lookup of an uncached key hangs on a database that never answers...
    proxy.set(ProxyMode::Blackhole);
    let waiting = {
        let (gw, key) = (gw.clone(), key.clone());
        actix_rt::spawn(async move {
            let t0 = std::time::Instant::now();
            let r = post(&gw, "/v1/chat/completions", Some(&key), &chat_body("m")).await;
            (r.status, t0.elapsed())
        })
    };
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...until the key cache is made to crash: its waiter is answered.
    chat_crashing(&gw, MASTER, "auth").await;
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 503);
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    proxy.set(ProxyMode::Pass);
    let gw = std::rc::Rc::try_unwrap(gw).ok().unwrap();
    gw.stop().await;
    db.cleanup().await;
}
