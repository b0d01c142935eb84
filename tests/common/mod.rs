//! Shared test helpers: a real gateway on port 0 next to real mock
//! upstreams on port 0, and an HTTP client to talk to them.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate::config::Config;
use tollgate::mock::{Behaviour, MockOptions, MockServer};
use tollgate::RunningGateway;

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
    let text = format!("master_key = \"{MASTER}\"\n{fragment}\n",);
    let mut config = Config::from_toml(&text).expect("test config is valid");
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    config.server.workers = 1;
    config.server.shutdown_grace_secs = 5;
    config.logging.request_log = "off".into();
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
