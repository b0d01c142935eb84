//! Log destinations end to end: a real gateway and mock upstream, and a
//! receiver this test runs that records what reaches it (OTLP protobuf
//! decoded, webhook JSON parsed), to check content, batching, redaction,
//! per-team routing, a destination that is down, alerts and `/metrics`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP server recording every request. Paths ending in
/// `/chat/completions` answer as an OpenAI upstream; paths under `/fail/`
/// answer 500; others answer `status` (settable: a destination "down").
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    /// Paths under `/slow/` answer after this many ms.
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (g, s, d) = (got.clone(), status.clone(), delay_ms.clone());
        let server = HttpServer::new(move || {
            let (g, s, d) = (g.clone(), s.clone(), d.clone());
            App::new()
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let (g, s, d) = (g.clone(), s.clone(), d.clone());
                    async move {
                        let path = req.path().to_string();
                        if path.starts_with("/slow/") {
                            let ms = d.load(Ordering::SeqCst);
                            actix_rt::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        g.lock().unwrap().push(Received {
                            path: path.clone(),
                            headers,
                            body: body.to_vec(),
                        });
                        if path.starts_with("/fail/") {
                            return HttpResponse::InternalServerError()
                                .json(json!({"error": {"message": "boom"}}));
                        }
                        if path.ends_with("/chat/completions") {
                            return HttpResponse::Ok().json(json!({
                                "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                                "model": "up-model",
                                "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "upstream says hi"}}],
                                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
                            }));
                        }
                        let code = s.load(Ordering::SeqCst);
                        HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(code).unwrap(),
                        )
                        .finish()
                    }
                }))
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_rt::spawn(server.run());
        Receiver {
            addr,
            got,
            status,
            delay_ms,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The spans of every OTLP POST to `path` that got a 2xx.
    fn spans(&self, path: &str) -> Vec<Span> {
        self.at(path)
            .iter()
            .flat_map(|r| {
                ExportTraceServiceRequest::decode(r.body.as_slice())
                    .expect("OTLP protobuf")
                    .resource_spans
            })
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    /// Webhook records POSTed to `path`.
    fn records(&self, path: &str) -> Vec<Value> {
        self.at(path)
            .iter()
            .flat_map(|r| {
                serde_json::from_slice::<Vec<Value>>(&r.body).expect("a JSON array of records")
            })
            .collect()
    }
}

fn attr(span: &Span, key: &str) -> Option<Av> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(Av::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn roots(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32)
        .collect()
}

async fn chat_with(
    gw: &tollgate::RunningGateway,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = client()
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", format!("Bearer {key}")));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_json(&body).await.expect("request sent");
    let body = resp.body().limit(1 << 24).await.expect("body");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: body.to_vec(),
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[actix_rt::test]
async fn langfuse_and_otel_receive_spans_batched_with_their_attributes() {
    let rx = Receiver::start().await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"{}
[[logging.destinations]]
kind = "langfuse"
host = "{url}"
public_key = "pk-lf-test"
secret_key = "sk-lf-test"
batch_size = 2
flush_interval_ms = 60000

[[logging.destinations]]
kind = "otel"
endpoint = "{url}/v1/traces"
headers = {{ "x-collector-token" = "tok" }}
flush_interval_ms = 100
"#,
        model("gpt", &mock),
        url = rx.url()
    ))
    .await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let mut body = chat_body("gpt");
    body["metadata"] = json!({
        "generation_name": "greeting",
        "trace_user_id": "user-42",
        "session_id": "session-7",
        "tags": ["prod", "tollgate-test"],
        "team_note": "kept as metadata"
    });
    let r = chat_with(&gw, MASTER, body, &[("traceparent", &traceparent)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut body = chat_body("gpt");
    body["stream"] = json!(true);
    let r = chat_with(&gw, MASTER, body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Langfuse: one POST holding both requests (batch_size = 2; the timer
    // is a minute away), to its OTel endpoint, with Basic auth.
    let lf = "/api/public/otel/v1/traces";
    assert!(eventually(Duration::from_secs(10), || !rx.at(lf).is_empty()).await);
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let posts = rx.at(lf);
    assert_eq!(posts.len(), 1, "one batch");
    assert_eq!(
        posts[0].headers.get("authorization").map(String::as_str),
        // base64("pk-lf-test:sk-lf-test")
        Some("Basic cGstbGYtdGVzdDpzay1sZi10ZXN0")
    );
    assert_eq!(
        posts[0].headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    let spans = rx.spans(lf);
    let gens = roots(&spans);
    assert_eq!(gens.len(), 2);
    let g = gens
        .iter()
        .find(|s| s.name == "greeting")
        .expect("the generation named by metadata.generation_name");
    assert_eq!(hex::encode(&g.trace_id), CLIENT_TRACE);
    assert_eq!(hex::encode(&g.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        str_attr(g, "langfuse.observation.type").as_deref(),
        Some("generation")
    );
    assert_eq!(str_attr(g, "user.id").as_deref(), Some("user-42"));
    assert_eq!(str_attr(g, "session.id").as_deref(), Some("session-7"));
    assert_eq!(
        str_attr(g, "langfuse.observation.metadata.team_note").as_deref(),
        Some("kept as metadata")
    );
    match attr(g, "langfuse.trace.tags") {
        Some(Av::ArrayValue(a)) => {
            let tags: Vec<_> = a
                .values
                .into_iter()
                .filter_map(|v| match v.value {
                    Some(Av::StringValue(s)) => Some(s),
                    _ => None,
                })
                .collect();
            assert_eq!(tags, ["prod", "tollgate-test"]);
        }
        other => panic!("tags: {other:?}"),
    }
    assert!(str_attr(g, "langfuse.observation.input")
        .unwrap()
        .contains("Say hello"));
    let out: Value =
        serde_json::from_str(&str_attr(g, "langfuse.observation.output").unwrap()).unwrap();
    assert_eq!(out["role"], "assistant");
    assert!(!out["content"].as_str().unwrap().is_empty());
    assert_eq!(str_attr(g, "gen_ai.request.model").as_deref(), Some("gpt"));
    assert_eq!(
        str_attr(g, "gen_ai.response.model").as_deref(),
        Some("mock-gpt")
    );
    assert!(matches!(attr(g, "gen_ai.usage.output_tokens"), Some(Av::IntValue(n)) if n > 0));
    let streamed = gens.iter().find(|s| s.name != "greeting").unwrap();
    assert_eq!(streamed.name, "litellm-acompletion");
    assert!(str_attr(streamed, "langfuse.observation.completion_start_time").is_some());
    let out: Value =
        serde_json::from_str(&str_attr(streamed, "langfuse.observation.output").unwrap()).unwrap();
    assert!(
        !out["content"].as_str().unwrap().is_empty(),
        "the stream's text is rebuilt from its chunks"
    );

    // OTel: sent by the timer; the client's trace continued; one client
    // span per upstream attempt under the request's span.
    assert!(
        eventually(Duration::from_secs(10), || roots(&rx.spans("/v1/traces"))
            .len()
            == 2)
        .await
    );
    let otel = rx.spans("/v1/traces");
    assert_eq!(
        rx.at("/v1/traces")[0]
            .headers
            .get("x-collector-token")
            .map(String::as_str),
        Some("tok")
    );
    let root = roots(&otel)
        .into_iter()
        .find(|s| hex::encode(&s.trace_id) == CLIENT_TRACE)
        .expect("the client's trace continued");
    assert_eq!(hex::encode(&root.parent_span_id), CLIENT_SPAN);
    assert_eq!(root.name, "chat gpt");
    assert_eq!(
        str_attr(root, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert!(root
        .attributes
        .iter()
        .all(|kv| !kv.key.starts_with("langfuse.")));
    let attempts: Vec<_> = otel
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].trace_id, root.trace_id);
    assert!(attempts[0].start_time_unix_nano >= root.start_time_unix_nano);
    assert!(attempts[0].end_time_unix_nano <= root.end_time_unix_nano);
    gw.stop().await;
}

#[actix_rt::test]
async fn traceparent_reaches_the_upstream_as_the_attempt_span() {
    let rx = Receiver::start().await;
    let gw = spawn_gateway(&format!(
        r#"
[[models.up.deployments]]
provider = "openai_compatible"
model = "up-model"
api_base = "{url}/upstream/v1"

[[logging.destinations]]
kind = "otel"
endpoint = "{url}/v1/traces"
flush_interval_ms = 50
"#,
        url = rx.url()
    ))
    .await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = chat_with(
        &gw,
        MASTER,
        chat_body("up"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = rx.at("/upstream/v1/chat/completions");
    let sent = up[0]
        .headers
        .get("traceparent")
        .expect("traceparent sent upstream");
    let parts: Vec<_> = sent.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], CLIENT_TRACE);
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the gateway's own span is the parent"
    );
    assert_eq!(parts[3], "01");
    assert!(
        eventually(Duration::from_secs(10), || rx.spans("/v1/traces").len()
            == 2)
        .await
    );
    let spans = rx.spans("/v1/traces");
    let attempt = spans
        .iter()
        .find(|s| hex::encode(&s.span_id) == parts[2])
        .expect("the upstream's parent span is exported");
    assert_eq!(
        str_attr(attempt, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr(attempt, "http.response.status_code"),
        Some(Av::IntValue(200))
    );
    gw.stop().await;
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[actix_rt::test]
async fn webhooks_are_batched_signed_redacted_and_routed_by_team() {
    let rx = Receiver::start().await;
    let mock = spawn_mock().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = spawn_gateway_db(
        &format!(
            r#"{}
[[logging.destinations]]
kind = "webhook"
name = "all"
endpoint = "{url}/hooks/all"
hmac_secret = "whsec-test"
headers = {{ "x-tenant" = "acme" }}
batch_size = 10
flush_interval_ms = 200

[[logging.destinations]]
kind = "webhook"
name = "team-a"
endpoint = "{url}/hooks/team-a"
teams = ["team-a"]
turn_off_message_logging = true
flush_interval_ms = 100
"#,
            model("gpt", &mock),
            url = rx.url()
        ),
        &db,
        None,
    )
    .await;
    for t in ["team-a", "team-b"] {
        let r = post_json(&gw, "/team/new", MASTER, json!({"team_id": t})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut keys = Vec::new();
    for t in ["team-a", "team-b"] {
        let r = post_json(
            &gw,
            "/key/generate",
            MASTER,
            json!({"team_id": t, "key_alias": format!("key-{t}")}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        keys.push(r.json()["key"].as_str().unwrap().to_string());
    }
    for k in &keys {
        let mut body = chat_body("gpt");
        body["metadata"] = json!({"session_id": "s1"});
        let r = chat_with(&gw, k, body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    assert!(
        eventually(Duration::from_secs(10), || rx.records("/hooks/all").len()
            == 2)
        .await
    );
    let posts = rx.at("/hooks/all");
    assert_eq!(posts.len(), 1, "both records in one batch");
    assert_eq!(
        posts[0].headers.get("x-tollgate-signature"),
        Some(&hmac_hex("whsec-test", &posts[0].body))
    );
    assert_eq!(
        posts[0].headers.get("x-tenant").map(String::as_str),
        Some("acme")
    );
    let all = rx.records("/hooks/all");
    let mut teams: Vec<_> = all
        .iter()
        .map(|r| {
            r["metadata"]["user_api_key_team_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    teams.sort();
    assert_eq!(teams, ["team-a", "team-b"]);
    for r in &all {
        assert_eq!(r["status"], "success");
        assert_eq!(r["model_group"], "gpt");
        assert!(r["total_tokens"].as_u64().unwrap() > 0);
        assert!(r["response_cost"].as_f64().unwrap() > 0.0);
        assert_eq!(r["metadata"]["requester_metadata"]["session_id"], "s1");
        assert_eq!(r["messages"][0]["content"], "Say hello");
        assert!(!r["response"]["content"].as_str().unwrap().is_empty());
    }

    // Team A's own destination: its request only, and no content.
    assert!(
        eventually(Duration::from_secs(10), || !rx
            .records("/hooks/team-a")
            .is_empty())
        .await
    );
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let a = rx.records("/hooks/team-a");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["metadata"]["user_api_key_alias"], "key-team-a");
    let raw = String::from_utf8_lossy(&rx.at("/hooks/team-a")[0].body).into_owned();
    assert!(!raw.contains("Say hello"), "prompt shipped: {raw}");
    assert!(raw.contains("redacted-by-tollgate"));
    assert!(!rx.at("/hooks/team-a")[0]
        .headers
        .contains_key("x-tollgate-signature"));
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_down_destination_neither_slows_requests_nor_loses_records_silently() {
    let rx = Receiver::start().await;
    rx.status.store(503, Ordering::SeqCst);
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"{}
[[logging.destinations]]
kind = "webhook"
name = "flaky"
endpoint = "{url}/hooks/flaky"
batch_size = 2
flush_interval_ms = 50
retry_backoff_ms = 50
max_backoff_ms = 200
max_retries = 100

[[logging.destinations]]
kind = "webhook"
name = "dead"
endpoint = "{url}/fail/hook"
batch_size = 1
queue_size = 2
flush_interval_ms = 50
retry_backoff_ms = 20
max_backoff_ms = 20
max_retries = 1
"#,
        model("gpt", &mock),
        url = rx.url()
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let t0 = Instant::now();
        let r = chat_with(&gw, MASTER, chat_body("gpt"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a request waited on a log destination: {:?}",
            t0.elapsed()
        );
        ids.push(r.header("x-request-id").unwrap());
    }
    // Down: tried (and failed) without anything delivered.
    assert!(eventually(Duration::from_secs(10), || rx.at("/hooks/flaky").len() >= 3).await);
    assert!(
        metric(
            &gw,
            "tollgate_log_destination_failures_total{destination=\"flaky\"}"
        )
        .await
            >= 3.0
    );
    assert_eq!(
        metric(
            &gw,
            "tollgate_log_destination_sent_total{destination=\"flaky\"}"
        )
        .await,
        0.0
    );
    // Back up: everything held is delivered, each record once.
    rx.status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = metric(
            &gw,
            "tollgate_log_destination_sent_total{destination=\"flaky\"}",
        )
        .await;
        if sent >= 6.0 || Instant::now() > deadline {
            assert_eq!(sent, 6.0);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got: Vec<String> = Vec::new();
    for post in rx.at("/hooks/flaky") {
        // Only the accepted POSTs (the last copy of each batch) count.
        let recs: Vec<Value> = serde_json::from_slice(&post.body).unwrap();
        for r in recs {
            got.push(r["request_id"].as_str().unwrap().to_string());
        }
    }
    got.sort();
    got.dedup();
    ids.sort();
    assert_eq!(got, ids);
    assert_eq!(
        metric(
            &gw,
            "tollgate_log_destination_queued{destination=\"flaky\"}"
        )
        .await,
        0.0
    );
    // The destination that never recovers: every record counted dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = metric(
            &gw,
            "tollgate_log_destination_dropped_total{destination=\"dead\"}",
        )
        .await;
        if dropped >= 6.0 || Instant::now() > deadline {
            assert_eq!(dropped, 6.0);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&gw, "tollgate_log_destination_queued{destination=\"dead\"}").await,
        0.0
    );
    gw.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

fn sample_value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

#[actix_rt::test]
async fn litellm_metric_names_and_a_cooldown_alert() {
    let rx = Receiver::start().await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"{}
[[models.bad.deployments]]
provider = "openai_compatible"
model = "bad-model"
api_base = "{url}/fail/v1"

[router]
allowed_fails = 1
cooldown_secs = 600
num_retries = 0

[logging]
litellm_metrics = true

[logging.alerts]
webhook_url = "{url}/slack"
flush_interval_ms = 50
"#,
        model("gpt", &mock),
        url = rx.url()
    ))
    .await;
    let r = chat_with(&gw, MASTER, chat_body("gpt"), &[]).await;
    assert_eq!(r.status, 200);
    let r = chat_with(&gw, MASTER, chat_body("bad"), &[]).await;
    assert!(r.status >= 500, "{}", r.status);

    assert!(eventually(Duration::from_secs(10), || !rx.at("/slack").is_empty()).await);
    let alert: Value = serde_json::from_slice(&rx.at("/slack")[0].body).unwrap();
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("cooled down") && text.contains("`bad`"),
        "{text}"
    );

    let text = get(&gw, "/metrics", None).await.text();
    assert_eq!(text.matches("# EOF").count(), 1, "one exposition");
    let s = scrape(&text);
    let find = |name: &str, labels: &[(&str, &str)]| {
        s.samples
            .iter()
            .filter(|x| x.metric == name)
            .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| sample_value(&x.value))
            .sum::<f64>()
    };
    assert_eq!(
        find(
            "litellm_requests_metric_total",
            &[
                ("model", "mock-gpt"),
                ("team", "None"),
                ("end_user", "None")
            ]
        ),
        1.0
    );
    assert_eq!(
        find(
            "litellm_proxy_total_requests_metric_total",
            &[("requested_model", "gpt"), ("status_code", "200")]
        ),
        1.0
    );
    assert_eq!(
        find(
            "litellm_proxy_failed_requests_metric_total",
            &[("requested_model", "bad")]
        ),
        1.0
    );
    assert!(
        find(
            "litellm_input_tokens_metric_total",
            &[("requested_model", "gpt")]
        ) > 0.0
    );
    assert!(find("litellm_spend_metric_total", &[("model", "mock-gpt")]) > 0.0);
    assert_eq!(
        find(
            "litellm_deployment_state",
            &[("litellm_model_name", "bad-model")]
        ),
        2.0
    );
    let healthy = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "litellm_deployment_state"
                && x.labels.get("litellm_model_name") == Some("mock-gpt")
        })
        .expect("every deployment has a state");
    assert_eq!(sample_value(&healthy.value), 0.0);
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "litellm_request_total_latency_metric"));
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "litellm_overhead_latency_metric"));
    // Ours are still there.
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric.starts_with("tollgate_requests")));
    gw.stop().await;
}

#[actix_rt::test]
async fn keys_and_teams_log_to_their_own_langfuse_projects() {
    let rx = Receiver::start().await;
    let mock = spawn_mock().await;
    let db = TestDb::new(Backend::Sqlite).await;
    // LiteLLM's way of naming a secret in metadata.
    std::env::set_var("TOLLGATE_TEST_KEY_LOGGING_SK", "sk-from-env");
    let gw = spawn_gateway_db(
        &format!("{}\n[logging]\nkey_logging = true\n", model("gpt", &mock)),
        &db,
        None,
    )
    .await;
    let url = rx.url();
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "team-k", "metadata": {"callback_settings": {
            "success_callback": ["langfuse"],
            "callback_vars": {"langfuse_public_key": "pk-team", "langfuse_secret_key": "sk-team",
                              "langfuse_host": format!("{url}/team-project")}}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let generate = |body: Value| {
        let gw = &gw;
        async move {
            let r = post_json(gw, "/key/generate", MASTER, body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["key"].as_str().unwrap().to_string()
        }
    };
    let in_team = generate(json!({"team_id": "team-k", "metadata": {"logging": [{
        "callback_name": "langfuse", "callback_type": "success",
        "callback_vars": {"langfuse_public_key": "pk-key",
                          "langfuse_secret_key": "os.environ/TOLLGATE_TEST_KEY_LOGGING_SK",
                          "langfuse_host": format!("{url}/key-project")}}]}}))
    .await;
    let plain = generate(json!({})).await;
    for k in [&plain, &in_team, &plain] {
        let r = chat_with(&gw, k, chat_body("gpt"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let key_path = "/key-project/api/public/otel/v1/traces";
    let team_path = "/team-project/api/public/otel/v1/traces";
    assert!(
        eventually(Duration::from_secs(10), || {
            !rx.at(key_path).is_empty() && !rx.at(team_path).is_empty()
        })
        .await
    );
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        rx.at(key_path)[0].headers.get("authorization"),
        Some(&format!("Basic {}", b64("pk-key:sk-from-env")))
    );
    assert_eq!(
        rx.at(team_path)[0].headers.get("authorization"),
        Some(&format!("Basic {}", b64("pk-team:sk-team")))
    );
    // Only the team key's one request, in each project; the plain key's
    // requests went nowhere.
    for path in [key_path, team_path] {
        let spans = rx.spans(path);
        let gens = roots(&spans);
        assert_eq!(gens.len(), 1, "{path}");
        assert_eq!(
            str_attr(
                gens[0],
                "langfuse.observation.metadata.user_api_key_team_id"
            )
            .as_deref(),
            Some("team-k")
        );
    }
    let other: Vec<_> = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path != key_path && r.path != team_path)
        .map(|r| r.path.clone())
        .collect();
    assert!(other.is_empty(), "{other:?}");
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_slow_destination_leaves_request_latency_unchanged() {
    let rx = Receiver::start().await;
    rx.delay_ms.store(3_000, Ordering::SeqCst);
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        r#"{}
[[logging.destinations]]
kind = "webhook"
name = "slow"
endpoint = "{url}/slow/hook"
batch_size = 1
flush_interval_ms = 20
timeout_ms = 2000
retry_backoff_ms = 20
max_backoff_ms = 50
max_retries = 100
"#,
        model("gpt", &mock),
        url = rx.url()
    ))
    .await;
    // Warm up (connections), then time requests while every POST to the
    // destination hangs past its timeout.
    assert_eq!(
        chat_with(&gw, MASTER, chat_body("gpt"), &[]).await.status,
        200
    );
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t0 = Instant::now();
        let r = chat_with(&gw, MASTER, chat_body("gpt"), &[]).await;
        assert_eq!(r.status, 200);
        worst = worst.max(t0.elapsed());
    }
    // Waiting on the destination would take its 2 s timeout.
    assert!(
        worst < Duration::from_secs(1),
        "a request took {worst:?} while the destination hung"
    );
    assert!(eventually(Duration::from_secs(10), || rx.at("/slow/hook").len() >= 2).await);
    assert_eq!(
        metric(
            &gw,
            "tollgate_log_destination_sent_total{destination=\"slow\"}"
        )
        .await,
        0.0
    );
    // Fast again: all 11 records arrive.
    rx.delay_ms.store(0, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = metric(
            &gw,
            "tollgate_log_destination_sent_total{destination=\"slow\"}",
        )
        .await;
        if sent >= 11.0 || Instant::now() > deadline {
            assert_eq!(sent, 11.0);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

/// LiteLLM's `/team/{id}/callback` API: a team admin points the team's
/// logs at its own Langfuse project (successes only here), reads the
/// setting back with the secret masked, removes it, and turns the team's
/// logging off — which keeps its requests out of the global destination
/// too.
#[actix_rt::test]
async fn teams_set_read_remove_and_disable_their_logging_through_the_callback_api() {
    let rx = Receiver::start().await;
    let mock = spawn_mock().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let url = rx.url();
    let gw = spawn_gateway_db(
        &format!(
            "{}\n[[models.broken.deployments]]\nprovider = \"openai_compatible\"\nmodel = \"up\"\napi_base = \"{url}/fail/v1\"\n\n[logging]\nkey_logging = true\n[[logging.destinations]]\nkind = \"otel\"\nendpoint = \"{url}/global/v1/traces\"\nflush_interval_ms = 100\n",
            model("gpt", &mock)
        ),
        &db,
        None,
    )
    .await;
    let r = post_json(&gw, "/team/new", MASTER, json!({"team_id": "team-c"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(&gw, "/key/generate", MASTER, json!({"team_id": "team-c"})).await;
    let key = r.json()["key"].as_str().unwrap().to_string();
    // A plain internal user may not touch the team's logging.
    let r = post_json(
        &gw,
        "/user/new",
        MASTER,
        json!({"user_id": "dev-1", "user_role": "internal_user"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let dev_key = r.json()["key"].as_str().unwrap().to_string();

    let callback = |host: &str| {
        json!({"callback_name": "langfuse", "callback_type": "success",
               "callback_vars": {"langfuse_public_key": "pk-team-c",
                                 "langfuse_secret_key": "sk-team-c-secret",
                                 "langfuse_host": host}})
    };
    let project = format!("{url}/team-c");
    let r = post_json(&gw, "/team/team-c/callback", &dev_key, callback(&project)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_json(&gw, "/team/team-c/callback", MASTER, callback(&project)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("sk-team-c-secret"), "{}", r.text());
    // The same callback for the same event twice, an unknown callback,
    // a missing secret and an unknown team are refused.
    let r = post_json(&gw, "/team/team-c/callback", MASTER, callback(&project)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let mut other = callback(&project);
    other["callback_name"] = json!("datadog");
    assert_eq!(
        post_json(&gw, "/team/team-c/callback", MASTER, other)
            .await
            .status,
        400
    );
    let mut no_secret = callback(&project);
    no_secret["callback_type"] = json!("failure");
    no_secret["callback_vars"]
        .as_object_mut()
        .unwrap()
        .remove("langfuse_secret_key");
    assert_eq!(
        post_json(&gw, "/team/team-c/callback", MASTER, no_secret)
            .await
            .status,
        400
    );
    assert_eq!(
        post_json(&gw, "/team/nope/callback", MASTER, callback(&project))
            .await
            .status,
        404
    );

    let r = get(&gw, "/team/team-c/callback", Some(MASTER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = &r.json()["data"];
    assert_eq!(data["success_callbacks"], json!(["langfuse"]));
    assert_eq!(data["failure_callbacks"], json!([]));
    assert_eq!(data["callback_vars"]["langfuse_public_key"], "pk-team-c");
    assert_eq!(
        data["callback_vars"]["langfuse_secret_key"],
        "***REDACTED***"
    );
    let info = get(&gw, "/team/info?team_id=team-c", Some(MASTER))
        .await
        .text();
    assert!(!info.contains("sk-team-c-secret"), "{info}");

    // A success reaches the team's project and the global destination; a
    // failure only the global one (the team asked for successes).
    assert_eq!(
        chat_with(&gw, &key, chat_body("gpt"), &[]).await.status,
        200
    );
    assert_ne!(
        chat_with(&gw, &key, chat_body("broken"), &[]).await.status,
        200
    );
    let team_path = "/team-c/api/public/otel/v1/traces";
    let global = "/global/v1/traces";
    assert!(
        eventually(Duration::from_secs(10), || {
            roots(&rx.spans(team_path)).len() == 1 && roots(&rx.spans(global)).len() == 2
        })
        .await,
        "team {} global {}",
        rx.spans(team_path).len(),
        rx.spans(global).len()
    );
    let team_spans = rx.spans(team_path);
    assert_eq!(
        attr(roots(&team_spans)[0], "http.response.status_code"),
        Some(Av::IntValue(200))
    );

    // Disabled: nothing from the team goes anywhere.
    let r = post_json(&gw, "/team/team-c/disable_logging", MASTER, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["success_callbacks"], json!([]));
    let data = get(&gw, "/team/team-c/callback", Some(MASTER)).await.json();
    assert_eq!(data["data"]["logging_disabled"], true);
    for _ in 0..3 {
        assert_eq!(
            chat_with(&gw, &key, chat_body("gpt"), &[]).await.status,
            200
        );
    }
    // The master key's own request still reaches the global destination:
    // once it has, the team's would have too.
    assert_eq!(
        chat_with(&gw, MASTER, chat_body("gpt"), &[]).await.status,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || roots(&rx.spans(global)).len()
            == 3)
        .await
    );
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(roots(&rx.spans(global)).len(), 3);
    assert_eq!(roots(&rx.spans(team_path)).len(), 1);

    // Adding a callback turns it back on; removing it leaves it off the list.
    let r = post_json(&gw, "/team/team-c/callback", MASTER, callback(&project)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&gw, "/team/team-c/callback", Some(MASTER)).await.json()["data"]["logging_disabled"],
        false
    );
    let delete = |name: &'static str| {
        let gw = &gw;
        async move {
            let resp = client()
                .delete(format!("http://{}/team/team-c/callback/{name}", gw.addr))
                .insert_header(("authorization", format!("Bearer {MASTER}")))
                .send()
                .await
                .expect("sent");
            resp.status().as_u16()
        }
    };
    assert_eq!(delete("langfuse").await, 200);
    assert_eq!(delete("langfuse").await, 404);
    let data = get(&gw, "/team/team-c/callback", Some(MASTER)).await.json();
    assert_eq!(data["data"]["success_callbacks"], json!([]));
    gw.stop().await;
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_deployment_that_fails_below_its_allowed_fails_is_a_partial_outage_until_it_stops() {
    let rx = Receiver::start().await;
    let gw = spawn_gateway(&format!(
        r#"
[[models.flaky.deployments]]
provider = "openai_compatible"
model = "flaky-model"
api_base = "{url}/fail/v1"

[router]
allowed_fails = 3
cooldown_secs = 2
num_retries = 0

[logging]
litellm_metrics = true
"#,
        url = rx.url()
    ))
    .await;
    let state = || async {
        let text = get(&gw, "/metrics", None).await.text();
        scrape(&text)
            .samples
            .iter()
            .find(|x| {
                x.metric == "litellm_deployment_state"
                    && x.labels.get("litellm_model_name") == Some("flaky-model")
            })
            .map(|x| sample_value(&x.value))
    };
    assert_eq!(state().await, Some(0.0), "healthy before any request");
    let r = chat_with(&gw, MASTER, chat_body("flaky"), &[]).await;
    assert!(r.status >= 500, "{}", r.status);
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        seen = state().await;
        if seen == Some(1.0) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        Some(1.0),
        "one failure of three allowed: partial outage"
    );
    // No more failures for a cooldown's length: healthy again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && state().await != Some(0.0) {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state().await, Some(0.0));
    // The failure before the quiet spell no longer counts: two more of
    // three allowed leave it in rotation (a partial outage, not cooled).
    for _ in 0..2 {
        let r = chat_with(&gw, MASTER, chat_body("flaky"), &[]).await;
        assert!(r.status >= 500, "{}", r.status);
    }
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state().await, Some(1.0));
    gw.stop().await;
}
