//! Shared test helpers: a real gateway on port 0 next to real mock
//! upstreams on port 0, and an HTTP client to talk to them.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate::config::Config;
use tollgate::mock::{Behaviour, MockOptions, MockServer};
use tollgate::RunningGateway;

/// One test function, run once on SQLite and once on PostgreSQL.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[actix_rt::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[actix_rt::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

pub const MASTER: &str = "sk-test-master-key";

pub async fn spawn_mock() -> MockServer {
    spawn_mock_with(Behaviour::default()).await
}

pub async fn spawn_mock_with(behaviour: Behaviour) -> MockServer {
    tollgate::mock::start(MockOptions {
        host: "127.0.0.1".into(),
        port: 0,
        workers: 1,
        behaviour,
    })
    .await
    .expect("mock upstream starts")
}

/// Starts a gateway from a TOML fragment holding `[models…]`, `[router]`,
/// `[[keys]]` and the like. Server, master key and logging are filled in.
pub async fn spawn_gateway(fragment: &str) -> RunningGateway {
    spawn_gateway_workers(fragment, 1).await
}

/// Like `spawn_gateway`, with `workers` HTTP worker threads.
pub async fn spawn_gateway_workers(fragment: &str, workers: usize) -> RunningGateway {
    spawn_gateway_tweaked(fragment, |c| c.server.workers = workers).await
}

/// The test config from `fragment`, before `tweak` changes what a file
/// cannot say (e.g. `fault_injection`).
pub fn test_config(fragment: &str) -> Config {
    let text = format!("master_key = \"{MASTER}\"\n{fragment}\n",);
    let mut config = Config::from_toml(&text).expect("test config is valid");
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    config.server.workers = 1;
    config.server.shutdown_grace_secs = 5;
    config.logging.request_log = "off".into();
    // Each gateway its own spend spool (the directory is locked).
    config.spend.spool_dir = Some(
        std::env::temp_dir()
            .join(format!("tollgate-spool-{}", uuid::Uuid::new_v4().simple()))
            .display()
            .to_string(),
    );
    config
}

/// Like `spawn_gateway`, with the config adjusted in code first.
pub async fn spawn_gateway_tweaked(
    fragment: &str,
    tweak: impl FnOnce(&mut Config),
) -> RunningGateway {
    let mut config = test_config(fragment);
    tweak(&mut config);
    tollgate::start(config).await.expect("gateway starts")
}

/// One model group `name` with one deployment at `mock`.
pub fn model(name: &str, mock: &MockServer) -> String {
    format!(
        r#"
[[models."{name}".deployments]]
provider = "openai_compatible"
model = "mock-gpt"
api_base = "{}"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
"#,
        mock.url()
    )
}

/// One `[[models.GROUP.deployments]]` block: an OpenAI-compatible
/// deployment `id` on `mock`, plus `extra` TOML lines.
pub fn deployment(group: &str, id: &str, mock: &MockServer, extra: &str) -> String {
    format!(
        r#"
[[models.{group}.deployments]]
id = "{id}"
provider = "openai_compatible"
model = "mock-gpt"
api_base = "{}"
{extra}
"#,
        mock.url()
    )
}

pub fn client() -> awc::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

pub struct Resp {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs raw bytes to `path` on the gateway with `key`.
pub async fn post_raw(gw: &RunningGateway, path: &str, key: Option<&str>, body: Vec<u8>) -> Resp {
    let mut req = client()
        .post(format!("http://{}{path}", gw.addr))
        .insert_header(("content-type", "application/json"));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    let mut resp = req.send_body(body).await.expect("request sent");
    let body = resp
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("body read");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: body.to_vec(),
    }
}

pub async fn post(gw: &RunningGateway, path: &str, key: Option<&str>, body: &Value) -> Resp {
    post_raw(gw, path, key, serde_json::to_vec(body).expect("json")).await
}

pub async fn get(gw: &RunningGateway, path: &str, key: Option<&str>) -> Resp {
    let mut req = client().get(format!("http://{}{path}", gw.addr));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    let mut resp = req.send().await.expect("request sent");
    let body = resp
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("body read");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: body.to_vec(),
    }
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The value of the first `/metrics` line starting with `prefix` (0 if absent).
pub async fn metric(gw: &RunningGateway, prefix: &str) -> f64 {
    get(gw, "/metrics", None)
        .await
        .text()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Where the tests' PostgreSQL lives (trust auth on this machine and in CI).
pub fn pg_base() -> String {
    std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test: a fresh SQLite file or a fresh
/// PostgreSQL database, dropped by `cleanup`.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    name: String,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let name = format!("tollgate_t_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("tollgate-tests");
                std::fs::create_dir_all(&dir).unwrap();
                TestDb {
                    url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
                    backend,
                    name,
                }
            }
            Backend::Postgres => {
                pg_admin(&format!("CREATE DATABASE {name}")).await;
                TestDb {
                    url: format!("{}/{name}", pg_base()),
                    backend,
                    name,
                }
            }
        }
    }

    pub async fn cleanup(self) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            Backend::Postgres => {
                pg_admin(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
            }
        }
    }
}

async fn pg_admin(sql: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut conn = AsyncPgConnection::establish(&format!("{}/postgres", pg_base()))
        .await
        .expect("PostgreSQL is reachable for tests (see .ci/run)");
    conn.batch_execute(sql).await.expect("admin statement");
}

/// A gateway with a database (and optionally Redis, under a unique prefix).
pub async fn spawn_gateway_db(
    fragment: &str,
    db: &TestDb,
    redis_prefix: Option<&str>,
) -> RunningGateway {
    let redis = match redis_prefix {
        Some(p) => format!(
            "redis_url = \"{}\"\n[storage]\nredis_prefix = \"{p}\"\n",
            redis_url()
        ),
        None => String::new(),
    };
    spawn_gateway(&format!("database_url = \"{}\"\n{redis}{fragment}", db.url)).await
}

pub async fn post_json(gw: &RunningGateway, path: &str, key: &str, body: Value) -> Resp {
    post(gw, path, Some(key), &body).await
}

/// How a `FaultProxy` treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Close every connection (FIN) and every new one at once: a dependency
    /// that is down and says so.
    Refuse,
    /// Connections open now go silent (bytes vanish, nothing is closed);
    /// new ones are accepted and go silent too: a dependency behind a
    /// black hole.
    Blackhole,
    /// Connections open now go silent for good (no FIN, no RST), new ones
    /// work: a connection that died quietly (a NAT or firewall forgot it).
    Silent,
}

/// A TCP forwarder between the gateway and a dependency, whose faults the
/// test switches with `set`.
pub struct FaultProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    mode: std::sync::Mutex<ProxyMode>,
    /// Connections numbered below this are silenced for good.
    silenced_below: std::sync::atomic::AtomicU64,
    next_id: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl FaultProxy {
    pub fn start(target: &str) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState {
            mode: std::sync::Mutex::new(ProxyMode::Pass),
            silenced_below: Default::default(),
            next_id: Default::default(),
            open: Default::default(),
        });
        let st = state.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                let mode = *st.mode.lock().unwrap();
                match mode {
                    ProxyMode::Refuse => {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    ProxyMode::Blackhole => {
                        // Accepted, never answered, never closed.
                        st.silenced_below.fetch_max(id + 1, Ordering::SeqCst);
                        st.open.lock().unwrap().push(client);
                        continue;
                    }
                    ProxyMode::Pass | ProxyMode::Silent => {}
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                };
                {
                    let mut open = st.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if id < st.silenced_below.load(Ordering::SeqCst) {
                                        continue; // swallowed: a dead link
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        if id >= st.silenced_below.load(Ordering::SeqCst) {
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        }
                    });
                }
            }
        });
        FaultProxy { port, state }
    }

    pub fn set(&self, mode: ProxyMode) {
        use std::sync::atomic::Ordering;
        *self.state.mode.lock().unwrap() = mode;
        match mode {
            ProxyMode::Pass => {}
            ProxyMode::Refuse => {
                for c in self.state.open.lock().unwrap().drain(..) {
                    let _ = c.shutdown(std::net::Shutdown::Both);
                }
            }
            ProxyMode::Blackhole | ProxyMode::Silent => {
                let next = self.state.next_id.load(Ordering::SeqCst);
                self.state.silenced_below.fetch_max(next, Ordering::SeqCst);
            }
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The database proxy of the older tests: cut (refuse) and restore.
pub struct Cuttable(pub FaultProxy);

impl Cuttable {
    pub fn start(target: &str) -> Cuttable {
        Cuttable(FaultProxy::start(target))
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn cut(&self) {
        self.0.set(ProxyMode::Refuse);
    }

    pub fn restore(&self) {
        self.0.set(ProxyMode::Pass);
    }
}
