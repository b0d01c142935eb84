//! Virtual keys under faults and hostile input: revocations that cannot be
//! undone, outages that cost cached keys nothing, floods of bad keys that
//! starve nobody, management writes that are all or nothing, ids that are
//! checked the same way on every backend.

#[macro_use]
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use tollgate::access::KeyInfo;
use tollgate::breaker::Breaker;
use tollgate::shared::{Cached, Invalidation, Redis};

on_both_backends!(
    a_failed_regenerate_changes_nothing,
    a_key_for_an_unknown_user_creates_the_user,
    bad_ids_and_names_are_400_naming_the_field,
);

fn unique_prefix() -> String {
    format!("tollgate-test-{}", uuid::Uuid::new_v4().simple())
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable for tests (see .ci/run)")
}

/// A key for the test's set-up. Tests here run in parallel, each creating
/// its database and migrating it: on a busy machine a set-up request can
/// wait past the pool's timeout (503); that is retried, anything else is not.
async fn generate(gw: &tollgate::RunningGateway, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = post_json(gw, "/key/generate", MASTER, body.clone()).await;
        if r.status == 503 && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        return r.json();
    }
}

fn key_of(v: &Value) -> String {
    v["key"].as_str().unwrap().to_string()
}

async fn chat(gw: &tollgate::RunningGateway, key: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body("m")).await
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[actix_rt::test]
async fn a_lookup_that_raced_a_revocation_cannot_write_the_old_row_back() {
    let r = Redis::connect(
        &redis_url(),
        &unique_prefix(),
        Duration::from_millis(500),
        Breaker::new("redis", Gauge::default()),
    )
    .unwrap();
    let hash = "ab".repeat(32);
    let row = KeyInfo {
        id: hash.clone(),
        ..Default::default()
    };
    // A replica misses, reads the database (the key still valid there)...
    let Cached::Miss { generation } = r.lookup_key(&hash).await.unwrap() else {
        panic!("nothing is cached yet");
    };
    // ...while the key is blocked through another replica...
    r.invalidate(
        &Invalidation::Key(hash.clone()),
        std::slice::from_ref(&hash),
    )
    .await
    .unwrap();
    // ...so its write-back of the old row must not land.
    let written = r
        .remember_key(&hash, Some(&row), generation, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!written, "a stale write-back was accepted");
    assert!(matches!(
        r.lookup_key(&hash).await.unwrap(),
        Cached::Miss { .. }
    ));
    // Without a race in between, the row is shared.
    let Cached::Miss { generation } = r.lookup_key(&hash).await.unwrap() else {
        panic!()
    };
    assert!(r
        .remember_key(&hash, Some(&row), generation, Duration::from_secs(60))
        .await
        .unwrap());
    assert!(matches!(
        r.lookup_key(&hash).await.unwrap(),
        Cached::Found(_)
    ));
}

#[actix_rt::test]
async fn the_shared_redis_copy_carries_no_master_authority() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = unique_prefix();
    let gw = spawn_gateway_db(&model("m", &mock), &db, Some(&prefix)).await;
    let k = generate(&gw, json!({})).await;
    assert_eq!(chat(&gw, &key_of(&k)).await.status, 200);
    let mut conn = redis_conn().await;
    let entry = format!("{prefix}:key:{}", k["token"].as_str().unwrap());
    let mut stored: Option<String> = None;
    for _ in 0..50 {
        stored = redis::cmd("GET")
            .arg(&entry)
            .query_async(&mut conn)
            .await
            .unwrap();
        if stored.is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stored.expect("the lookup was shared through redis");
    assert!(!stored.contains("is_master"), "{stored}");

    // Someone who can write Redis forges an entry that claims authority.
    let forged_key = "sk-forged-by-someone-with-redis-access";
    let hash = tollgate::actors::auth::hash_hex(forged_key);
    let mut forged: Value = serde_json::from_str(&stored).unwrap();
    forged["id"] = json!(hash);
    forged["is_master"] = json!(true);
    let forged = forged.to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:key:{hash}"))
        .arg(forged)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        chat(&gw, forged_key).await.status,
        200,
        "read as a plain key"
    );
    let r = post_json(&gw, "/key/generate", forged_key, json!({})).await;
    assert_eq!(
        r.status,
        401,
        "a forged entry must not act as the master key: {}",
        r.text()
    );
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_silently_dead_subscription_is_noticed_and_revocations_arrive_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = unique_prefix();
    let proxy = FaultProxy::start("127.0.0.1:6379");
    let fragment = format!("[auth]\ncache_ttl_secs = 3600\n{}", model("m", &mock));
    let a = spawn_gateway_db(&fragment, &db, Some(&prefix)).await;
    let b = spawn_gateway(&format!(
        "database_url = \"{}\"\nredis_url = \"redis://{}\"\n[storage]\nredis_prefix = \"{prefix}\"\n{fragment}",
        db.url,
        proxy.addr()
    ))
    .await;
    let key = key_of(&generate(&a, json!({})).await);
    assert_eq!(chat(&b, &key).await.status, 200, "cached on B for an hour");
    // Give B's subscription time to be established before it dies.
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    proxy.set(ProxyMode::Silent);
    let r = post_json(&a, "/key/block", MASTER, json!({"key": key})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = Instant::now();
    let mut status = 200;
    while t0.elapsed() < Duration::from_secs(8) {
        status = chat(&b, &key).await.status;
        if status == 401 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "B never noticed its subscription had died");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // New connections work: the next revocation reaches B through Redis.
    proxy.set(ProxyMode::Pass);
    let other = key_of(&generate(&a, json!({})).await);
    assert_eq!(chat(&b, &other).await.status, 200);
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    post_json(&a, "/key/block", MASTER, json!({"key": other})).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) && chat(&b, &other).await.status != 401 {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chat(&b, &other).await.status, 401);
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

/// Latencies of `requests` chat calls spread over `keys`, 8 at a time, plus
/// one readiness call per 10 chats; every answer must be a 200.
async fn load(
    gw: &Rc<tollgate::RunningGateway>,
    keys: &Rc<Vec<String>>,
    requests: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let chats = Rc::new(RefCell::new(Vec::new()));
    let readiness = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (gw, keys, chats, readiness) =
            (gw.clone(), keys.clone(), chats.clone(), readiness.clone());
        tasks.push(actix_rt::spawn(async move {
            for i in 0..requests / 8 {
                let key = &keys[(worker * 7 + i) % keys.len()];
                let t0 = Instant::now();
                let r = chat(&gw, key).await;
                assert_eq!(r.status, 200, "{}", r.text());
                chats.borrow_mut().push(t0.elapsed());
                if i % 10 == 0 {
                    let t0 = Instant::now();
                    let r = get(&gw, "/health/readiness", None).await;
                    assert_eq!(r.status, 200);
                    readiness.borrow_mut().push(t0.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = chats.borrow().clone();
    let r = readiness.borrow().clone();
    (c, r)
}

#[actix_rt::test]
async fn outages_of_postgres_and_redis_in_every_mode_leave_cached_keys_and_readiness_fast() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = unique_prefix();
    let pg = FaultProxy::start("127.0.0.1:5432");
    let redis = FaultProxy::start("127.0.0.1:6379");
    let gw = Rc::new(
        spawn_gateway(&format!(
            "database_url = \"{}\"\nredis_url = \"redis://{}\"\n[storage]\nredis_prefix = \"{prefix}\"\n[auth]\ncache_ttl_secs = 1\n{}",
            db.url.replace("127.0.0.1:5432", &pg.addr()),
            redis.addr(),
            model("m", &mock)
        ))
        .await,
    );
    let mut keys = Vec::new();
    for _ in 0..20 {
        keys.push(key_of(&generate(&gw, json!({})).await));
    }
    let keys = Rc::new(keys);
    let (mut base, _) = load(&gw, &keys, 400).await;
    let base_p99 = p99(&mut base);

    for mode in [ProxyMode::Refuse, ProxyMode::Blackhole, ProxyMode::Silent] {
        pg.set(mode);
        redis.set(mode);
        // Past the 1 s TTL during the outage: every key is refreshed from a
        // database that does not answer.
        let (mut chats, mut ready) = load(&gw, &keys, 800).await;
        let (c99, r99) = (p99(&mut chats), p99(&mut ready));
        assert!(
            c99 <= base_p99 + Duration::from_millis(100),
            "{mode:?}: cached keys p99 {c99:?} vs {base_p99:?} before the outage"
        );
        assert!(
            r99 <= base_p99 + Duration::from_millis(100),
            "{mode:?}: readiness p99 {r99:?}"
        );
        // (Silent: only the old connections died and new ones work, so the
        // gateway moves on to fresh ones; readiness may say either.) A
        // blackholed call is noticed when its timeout ends, which a busy
        // machine (tests run in parallel) can push past the load above.
        if mode != ProxyMode::Silent {
            let deadline = Instant::now() + Duration::from_secs(5);
            let ready = loop {
                let ready = get(&gw, "/health/readiness", None).await.json();
                if ready["status"] == "degraded" || Instant::now() > deadline {
                    break ready;
                }
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(ready["status"], "degraded", "{mode:?}: {ready}");
        }

        pg.set(ProxyMode::Pass);
        redis.set(ProxyMode::Pass);
        let t0 = Instant::now();
        loop {
            let ready = get(&gw, "/health/readiness", None).await.json();
            if ready["status"] == "healthy" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{mode:?}: never recovered: {ready}"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Recovered by itself: a key made now works. (After a blackhole the
        // pool may still hold connections that hang until they are replaced,
        // so the first write can wait out the pool timeout once; readiness
        // already says healthy then.)
        let t0 = Instant::now();
        let fresh = key_of(&generate(&gw, json!({})).await);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{mode:?}: {:?}",
            t0.elapsed()
        );
        // Its first lookup may still meet a pooled connection that the
        // blackhole left hanging, and answer 503 when that times out
        // (seen once in CI, under load); the pool is replaced then, so
        // the key works within a lookup timeout or two.
        let t0 = Instant::now();
        let mut refusals = Vec::new();
        loop {
            let r = chat(&gw, &fresh).await;
            if r.status == 200 {
                break;
            }
            refusals.push(format!("{} {}", r.status, r.text()));
            assert!(
                t0.elapsed() < Duration::from_secs(5) && refusals.len() < 3,
                "{mode:?}: a fresh key never worked: {refusals:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let gw = Rc::try_unwrap(gw).ok().unwrap();
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn tokens_that_cannot_be_keys_are_refused_without_any_lookup() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    for token in [
        "not-a-key".to_string(),
        "Bearer-ish".to_string(),
        format!("sk-{}", "x".repeat(300)),
        "sk-shrt".to_string(),
        "sk-has space".to_string(),
    ] {
        let r = chat(&gw, &token).await;
        assert_eq!(r.status, 401, "{token}: {}", r.text());
    }
    let lookups = get(&gw, "/metrics", None).await.text();
    assert!(
        !lookups.contains("tollgate_key_lookups_total{outcome=\"absent\"} 1"),
        "{lookups}"
    );
    assert_eq!(chat(&gw, "sk-well-formed-but-unknown").await.status, 401);
    assert_eq!(
        metric(&gw, "tollgate_key_lookups_total{outcome=\"absent\"}").await,
        1.0,
        "only the well-formed token was looked up"
    );
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_flood_of_unknown_keys_starves_neither_valid_keys_nor_the_pool() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let admin = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let valid = key_of(&generate(&admin, json!({})).await);
    admin.stop().await;
    let gw = Rc::new(
        spawn_gateway_tweaked(
            &format!("database_url = \"{}\"\n{}", db.url, model("m", &mock)),
            |c| c.server.workers = 2,
        )
        .await,
    );
    let mut flood = Vec::new();
    for i in 0..400 {
        let gw = gw.clone();
        flood.push(actix_rt::spawn(async move {
            chat(
                &gw,
                &format!("sk-random-flood-{i}-{}", uuid::Uuid::new_v4()),
            )
            .await
            .status
        }));
    }
    // Meanwhile a valid key nobody has seen, and a management call.
    let t0 = Instant::now();
    let r = chat(&gw, &valid).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, &format!("/key/info?key={valid}"), Some(MASTER)).await;
    assert_eq!(r.status, 200, "the pool is not starved: {}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    for f in flood {
        let status = f.await.unwrap();
        assert!(status == 401 || status == 503, "{status}");
    }
    let gw = Rc::try_unwrap(gw).ok().unwrap();
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn unknown_keys_are_shared_as_unknown_and_forgotten_when_created() {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let prefix = unique_prefix();
    let a = spawn_gateway_db(&model("m", &mock), &db, Some(&prefix)).await;
    let b = spawn_gateway_db(&model("m", &mock), &db, Some(&prefix)).await;
    let custom = format!("sk-custom-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(chat(&a, &custom).await.status, 401);
    let mut conn = redis_conn().await;
    let entry = format!("{prefix}:key:{}", tollgate::actors::auth::hash_hex(&custom));
    let mut shared: Option<String> = None;
    for _ in 0..50 {
        shared = redis::cmd("GET")
            .arg(&entry)
            .query_async(&mut conn)
            .await
            .unwrap();
        if shared.is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shared.as_deref(), Some("absent"));
    // B answers from the shared negative entry, without its database.
    assert_eq!(chat(&b, &custom).await.status, 401);
    assert_eq!(
        metric(&b, "tollgate_key_lookups_total{outcome=\"absent\"}").await,
        1.0
    );
    // Creating that very key makes it work everywhere at once.
    generate(&a, json!({"key": custom})).await;
    assert_eq!(chat(&b, &custom).await.status, 200);
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

async fn a_failed_regenerate_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let a = key_of(&generate(&gw, json!({"max_budget": 10.0, "key_alias": "a"})).await);
    let b = key_of(&generate(&gw, json!({})).await);
    // The new secret collides with B's: the update must roll back with it.
    let r = post_json(
        &gw,
        "/key/regenerate",
        MASTER,
        json!({"key": a, "new_key": b, "max_budget": 99.0, "spend": 5.0}),
    )
    .await;
    assert!(
        r.status == 400 || r.status == 409,
        "{} {}",
        r.status,
        r.text()
    );
    let info = get(&gw, &format!("/key/info?key={a}"), Some(MASTER))
        .await
        .json();
    assert_eq!(info["info"]["max_budget"], 10.0, "{info}");
    assert_eq!(info["info"]["spend"], 0.0, "{info}");
    assert_eq!(
        chat(&gw, &a).await.status,
        200,
        "the old secret still works"
    );
    gw.stop().await;
    db.cleanup().await;
}

async fn a_key_for_an_unknown_user_creates_the_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    generate(&gw, json!({"user_id": "ghost", "models": ["m"]})).await;
    let r = get(&gw, "/user/info?user_id=ghost", Some(MASTER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text()
    );
    gw.stop().await;
    db.cleanup().await;
}

async fn bad_ids_and_names_are_400_naming_the_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(&model("m", &mock), &db, None).await;
    let long = "a".repeat(1_000_000);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/key/generate",
            json!({"key_alias": "a\u{0}b"}),
            "key_alias",
        ),
        ("/key/generate", json!({"key_alias": long}), "key_alias"),
        ("/key/generate", json!({"user_id": "u\u{0}"}), "user_id"),
        ("/key/generate", json!({"team_id": "t\u{0}"}), "team_id"),
        ("/key/generate", json!({"models": ["m\u{0}"]}), "models"),
        (
            "/key/generate",
            json!({"key": "sk-with\u{0}nul-inside"}),
            "key",
        ),
        ("/user/new", json!({"user_id": "u\u{0}"}), "user_id"),
        (
            "/user/new",
            json!({"user_id": "ok", "user_alias": long}),
            "user_alias",
        ),
        ("/team/new", json!({"team_id": "t\u{0}"}), "team_id"),
        (
            "/team/new",
            json!({"team_alias": "line\nbreak"}),
            "team_alias",
        ),
        (
            "/team/new",
            json!({"members_with_roles": [{"user_id": "x\u{0}", "role": "user"}]}),
            "user_id",
        ),
    ];
    for (path, body, field) in cases {
        let r = post_json(&gw, path, MASTER, body.clone()).await;
        assert_eq!(r.status, 400, "{path} {field}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], field, "{path}: {}", r.text());
    }
    for path in [
        "/team/info?team_id=%00",
        "/user/info?user_id=a%00b",
        "/key/list?user_id=%00",
        "/team/list?user_id=%00",
    ] {
        let r = get(&gw, path, Some(MASTER)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // Nothing was stored by any of them.
    let keys = get(&gw, "/key/list", Some(MASTER)).await.json();
    assert_eq!(keys["total_count"], 0, "{keys}");
    let users = get(&gw, "/user/list", Some(MASTER)).await.json();
    assert_eq!(users["total"], 0, "{users}");
    gw.stop().await;
    db.cleanup().await;
}
