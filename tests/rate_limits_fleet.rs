//! Rate limits across replicas: three gateways on one PostgreSQL and one
//! Redis, a round-robin client in front as the balancer. A limit means the
//! same with one replica or three, and losing Redis falls back to each
//! replica's share without hanging.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tollgate::mock::Behaviour;
use tollgate::RunningGateway;

async fn generate(gw: &RunningGateway, body: Value) -> String {
    let r = post_json(gw, "/key/generate", MASTER, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

async fn chat_with(gw: &RunningGateway, key: &str, body: &Value) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), body).await
}

/// Per-minute windows are wall-clock minutes: a test that counts a
/// minute's admissions starts early enough in one to finish inside it.
async fn not_near_a_minute_end() {
    let into = tollgate::store::now_ms().rem_euclid(60_000);
    if into > 45_000 {
        actix_rt::time::sleep(Duration::from_millis((60_000 - into + 200) as u64)).await;
    }
}

struct Fleet {
    db: TestDb,
    gws: Vec<RunningGateway>,
}

impl Fleet {
    async fn start(n: usize, models: &str, redis: &str, prefix: &str) -> Fleet {
        let db = TestDb::new(Backend::Postgres).await;
        let mut gws = Vec::new();
        for _ in 0..n {
            let fragment = format!(
                "database_url = \"{}\"\nredis_url = \"{redis}\"\n[storage]\nredis_prefix = \"{prefix}\"\nredis_timeout_ms = 250\n{models}",
                db.url
            );
            gws.push(spawn_gateway(&fragment).await);
        }
        Fleet { db, gws }
    }

    /// Request `i` goes to replica `i mod n`, as a round-robin balancer.
    fn pick(&self, i: usize) -> &RunningGateway {
        &self.gws[i % self.gws.len()]
    }

    async fn stop(self) {
        for gw in self.gws {
            gw.stop().await;
        }
        self.db.cleanup().await;
    }
}

fn prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

#[actix_rt::test]
async fn three_replicas_admit_a_keys_requests_per_minute_once_in_all() {
    let mock = spawn_mock().await;
    let fleet = Fleet::start(3, &model("m", &mock), &redis_url(), &prefix()).await;
    let key = generate(fleet.pick(0), json!({"rpm_limit": 60})).await;
    not_near_a_minute_end().await;
    let body = chat_body("m");
    let mut answers = Vec::new();
    // 120 requests, 12 at a time, spread over the three replicas.
    for wave in 0..10 {
        let sent = (0..12).map(|i| chat_with(fleet.pick(wave * 12 + i), &key, &body));
        answers.extend(futures_util::future::join_all(sent).await);
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 60, "one limit for the fleet, not 60 per replica");
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.text().contains("requests"), "{}", r.text());
    }
    // Every replica admitted some: the limit is shared, not owned by one.
    for replica in 0..3 {
        let admitted = answers
            .iter()
            .enumerate()
            .filter(|(i, r)| i % 3 == replica && r.status == 200)
            .count();
        assert!(admitted > 0, "replica {replica} admitted none");
    }
    fleet.stop().await;
}

#[actix_rt::test]
async fn no_replica_runs_a_third_request_when_the_fleet_allows_two() {
    let slow = spawn_mock_with(Behaviour {
        latency_ms: 400,
        ..Default::default()
    })
    .await;
    let fleet = Fleet::start(3, &model("m", &slow), &redis_url(), &prefix()).await;
    let key = generate(fleet.pick(0), json!({"max_parallel_requests": 2})).await;
    let body = chat_body("m");
    for _round in 0..2 {
        let started = Instant::now();
        let sent = (0..9).map(|i| chat_with(fleet.pick(i), &key, &body));
        let answers = futures_util::future::join_all(sent).await;
        let ok = answers.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            ok,
            2,
            "{:?}",
            answers.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        for r in answers.iter().filter(|r| r.status != 200) {
            assert_eq!(r.status, 429);
            assert!(r.text().contains("parallel requests"), "{}", r.text());
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // Once they end the slots are free again, on any replica.
    for i in 0..3 {
        assert_eq!(chat_with(fleet.pick(i), &key, &body).await.status, 200);
    }
    fleet.stop().await;
}

#[actix_rt::test]
async fn tokens_per_minute_count_real_usage_across_replicas() {
    let mock = spawn_mock().await;
    let fleet = Fleet::start(3, &model("m", &mock), &redis_url(), &prefix()).await;
    let key = generate(fleet.pick(0), json!({"tpm_limit": 2000})).await;
    not_near_a_minute_end().await;
    // Each request reserves ~500 tokens (max_tokens) but really uses a few
    // dozen: corrected after each answer, far more than 4 fit.
    let mut body = chat_body("m");
    body["messages"][0]["content"] = json!("tell me more about it ".repeat(20));
    body["max_tokens"] = json!(480);
    let mut ok = 0;
    let mut used = 0u64;
    for i in 0..60 {
        let r = chat_with(fleet.pick(i), &key, &body).await;
        if r.status != 200 {
            assert_eq!(r.status, 429, "{}", r.text());
            assert!(r.text().contains("tokens"), "{}", r.text());
            break;
        }
        ok += 1;
        used += r.json()["usage"]["total_tokens"].as_u64().unwrap();
    }
    // Uncorrected, 2000 / ~600 = 3 would fit.
    assert!(ok >= 8, "only {ok} admitted: estimates were not corrected");
    // The fleet stopped where the real usage plus one estimate (~600)
    // reached the limit, give or take a few requests; never beyond it. A
    // request's estimate is corrected after its answer, off the client's
    // clock, so on a loaded machine the previous request may still count
    // as its estimate (~600 instead of ~per) when the next one arrives.
    let per = used / ok as u64;
    assert!(per > 80, "{per} tokens a request");
    assert!(
        used <= 2000 && used + 600 + 600u64.saturating_sub(per) + 4 * per >= 2000,
        "{ok} admitted, {used} tokens used"
    );
    fleet.stop().await;
}

#[actix_rt::test]
async fn without_redis_each_replica_keeps_its_share_and_sharing_resumes() {
    let mock = spawn_mock().await;
    let proxy = FaultProxy::start(redis_url().trim_start_matches("redis://"));
    let redis = format!("redis://{}", proxy.addr());
    let fleet = Fleet::start(2, &model("m", &mock), &redis, &prefix()).await;
    let key = generate(fleet.pick(0), json!({"rpm_limit": 20})).await;
    let body = chat_body("m");
    // Both replicas know the key and the fleet's size.
    for i in 0..2 {
        assert_eq!(chat_with(fleet.pick(i), &key, &body).await.status, 200);
    }
    actix_rt::time::sleep(Duration::from_millis(1500)).await;

    proxy.set(ProxyMode::Blackhole);
    // Requests keep flowing while Redis is silent: no hang, a bounded delay.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        statuses.push(chat_with(fleet.pick(0), &key, &body).await.status);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "a request took {slowest:?} with Redis gone"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        metric(&fleet.gws[0], "tollgate_rate_limit_fallback").await,
        1.0,
        "the fallback shows in /metrics"
    );
    // Replica 0 alone admits at most its share (20 ÷ 2 live replicas).
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((9..=11).contains(&ok), "{ok} admitted: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));

    proxy.set(ProxyMode::Pass);
    for gw in &fleet.gws {
        let mut back = false;
        for _ in 0..75 {
            if metric(gw, "tollgate_rate_limit_fallback").await == 0.0 {
                back = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(back, "shared counting resumed by itself");
    }
    let gw0 = &fleet.gws[0];
    // Shared again: the other replica's admissions count against the same
    // (fleet-wide) limit; the 20 in Redis are nearly used up already.
    // A lone slow Redis call no longer opens a breaker, but a machine
    // loaded by parallel tests can stall Redis calls for longer than
    // that, mixing shared and local counting for a burst; a fresh key is
    // tried again then, at most three times.
    let mut bursts = Vec::new();
    for _ in 0..3 {
        let key2 = generate(gw0, json!({"rpm_limit": 4})).await;
        not_near_a_minute_end().await;
        let mut ok = 0;
        for i in 0..8 {
            if chat_with(fleet.pick(i), &key2, &body).await.status == 200 {
                ok += 1;
            }
        }
        bursts.push(ok);
        if ok == 4 {
            break;
        }
    }
    assert_eq!(
        bursts.last(),
        Some(&4),
        "one limit for both replicas again: admitted per burst {bursts:?}"
    );
    fleet.stop().await;
}

#[actix_rt::test]
async fn a_cold_burst_far_below_the_limits_is_admitted_whole() {
    // 64 requests at once on a key nobody has used: they wait for one
    // lease per limit instead of each leasing a block (which would have
    // leased the whole limit away and refused some).
    let slow = spawn_mock_with(Behaviour {
        latency_ms: 100,
        ..Default::default()
    })
    .await;
    let fleet = Fleet::start(2, &model("m", &slow), &redis_url(), &prefix()).await;
    let key = generate(
        fleet.pick(0),
        json!({"max_parallel_requests": 200, "rpm_limit": 1000, "tpm_limit": 10000000}),
    )
    .await;
    not_near_a_minute_end().await;
    let body = chat_body("m");
    let sent = (0..64).map(|i| chat_with(fleet.pick(i), &key, &body));
    let answers = futures_util::future::join_all(sent).await;
    let refused: Vec<String> = answers
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| r.text())
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    fleet.stop().await;
}
