//! Spend is never lost: not to `kill -9` under load, not to a database
//! outage under load.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange on a fresh connection: (status, headers+body).
fn exchange(port: u16, method: &str, path: &str, key: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out))
}

fn json_body(raw: &str) -> Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn header(raw: &str, name: &str) -> Option<String> {
    raw.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn start(config: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((200, _)) = exchange(port, "GET", "/health/liveliness", "", "") {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("gateway did not come up on port {port}");
}

#[test]
fn kill_9_under_load_loses_no_spend_and_duplicates_none() {
    let dir = std::env::temp_dir().join(format!("tollgate-kill9-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"master_key = "sk-kill9-master"
database_url = "sqlite://{db}"
[server]
host = "127.0.0.1"
port = {port}
workers = 2
[spend]
spool_dir = "{spool}"
[logging]
level = "warn"
request_log = "off"
[mock_upstream]
latency_ms = 3
[[models.m.deployments]]
provider = "mock"
model = "mock-gpt"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
"#,
            db = dir.join("t.db").display(),
            spool = dir.join("spool").display(),
        ),
    )
    .unwrap();
    let mut child = start(&config, port);
    let (_, raw) = exchange(port, "POST", "/key/generate", "sk-kill9-master", "{}").unwrap();
    let key = json_body(&raw)["key"].as_str().unwrap().to_string();

    let ok_ids = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (ok_ids, stop, sent, key) =
                (ok_ids.clone(), stop.clone(), sent.clone(), key.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match exchange(port, "POST", "/v1/chat/completions", &key, body) {
                        Some((200, raw)) => ok_ids
                            .lock()
                            .unwrap()
                            .push(header(&raw, "x-litellm-call-id").unwrap()),
                        Some(_) => {}
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let ok: HashSet<String> = ok_ids.lock().unwrap().iter().cloned().collect();
    assert!(
        ok.len() > 50,
        "only {} requests succeeded before the kill",
        ok.len()
    );

    // Restart on the same database and spool: the spool is replayed.
    let mut child = start(&config, port);
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let (_, raw) = exchange(
            port,
            "GET",
            "/spend/logs?limit=100000",
            "sk-kill9-master",
            "",
        )
        .unwrap();
        rows = json_body(&raw).as_array().cloned().unwrap_or_default();
        let ids: HashSet<&str> = rows
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        if ok.iter().all(|id| ids.contains(id.as_str())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    let missing: Vec<&String> = ok
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} 200s have no spend row",
        missing.len(),
        ok.len()
    );
    assert_eq!(unique.len(), ids.len(), "duplicate spend rows");
    assert!(ids.len() <= sent.load(Ordering::SeqCst));
    // The key's total is the sum of its rows.
    let (_, raw) = exchange(
        port,
        "GET",
        &format!("/key/info?key={key}"),
        "sk-kill9-master",
        "",
    )
    .unwrap();
    let spend = json_body(&raw)["info"]["spend"].as_f64().unwrap();
    let sum: f64 = rows.iter().map(|r| r["spend"].as_f64().unwrap()).sum();
    assert!(
        (spend - sum).abs() < 1e-9,
        "key spend {spend} vs rows {sum}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_rt::test]
async fn a_database_outage_under_load_fails_no_request_and_loses_no_spend() {
    database_fault_under_load(ProxyMode::Refuse).await;
}

/// The spend writer keeps its connection between batches: one that dies
/// without a word (no FIN, no RST) is given up and replaced, and what was
/// queued meanwhile lands.
#[actix_rt::test]
async fn a_spend_connection_that_dies_silently_is_replaced_and_loses_no_spend() {
    database_fault_under_load(ProxyMode::Silent).await;
}

async fn database_fault_under_load(fault: ProxyMode) {
    let db = TestDb::new(Backend::Postgres).await;
    let mock = spawn_mock().await;
    let pg = FaultProxy::start("127.0.0.1:5432");
    let gw = std::rc::Rc::new(
        spawn_gateway(&format!(
            "database_url = \"{}\"\n[auth]\ncache_ttl_secs = 1\n{}",
            db.url.replace("127.0.0.1:5432", &pg.addr()),
            model("m", &mock)
        ))
        .await,
    );
    let key = post_json(&gw, "/key/generate", MASTER, json!({}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let until = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (gw, key, ok) = (gw.clone(), key.clone(), ok.clone());
        tasks.push(actix_rt::spawn(async move {
            while Instant::now() < until {
                let r = post(&gw, "/v1/chat/completions", Some(&key), &chat_body("m")).await;
                assert_eq!(r.status, 200, "{}", r.text());
                ok.set(ok.get() + 1);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    pg.set(fault);
    actix_rt::time::sleep(Duration::from_secs(8)).await;
    pg.set(ProxyMode::Pass);
    for t in tasks {
        t.await.unwrap();
    }
    let served = ok.get();
    assert!(served > 100, "{served}");
    // Everything queued meanwhile lands.
    let t0 = Instant::now();
    let mut rows = 0;
    while t0.elapsed() < Duration::from_secs(30) {
        let r = get(&gw, "/spend/logs?limit=100000", Some(MASTER)).await;
        if r.status == 200 {
            rows = r.json().as_array().unwrap().len();
            if rows == served {
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rows, served, "spend rows vs 200s");
    let info = get(&gw, &format!("/key/info?key={key}"), Some(MASTER))
        .await
        .json();
    let expected = served as f64 * (2.0 * 0.000001 + 5.0 * 0.000002);
    assert!(
        (info["info"]["spend"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{info}"
    );
    let gw = std::rc::Rc::try_unwrap(gw).ok().unwrap();
    gw.stop().await;
    db.cleanup().await;
}
