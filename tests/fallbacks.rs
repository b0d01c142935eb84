//! LiteLLM's fallbacks: once a model group's own attempts have failed, the
//! request goes to the groups configured (or asked for) for that kind of
//! failure, each with its own retries, under the request's one deadline.

mod common;

use common::*;
use serde_json::json;
use tollgate::mock::MockServer;

fn group(name: &str, mock: &MockServer, extra: &str) -> String {
    format!(
        r#"
[[models."{name}".deployments]]
provider = "openai_compatible"
model = "{name}-upstream"
api_base = "{}"
{extra}
"#,
        mock.url()
    )
}

fn failing(name: &str, mock: &MockServer, status: u16) -> String {
    group(
        name,
        mock,
        &format!("extra_headers = {{ x-mock-status = \"{status}\" }}"),
    )
}

#[actix_rt::test]
async fn a_failing_group_falls_back_after_its_own_retries() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 1\nretry_backoff_ms = 1\nfallbacks = {{ primary = [\"backup\"] }}\n{}{}",
        failing("primary", &mock, 503),
        group("backup", &mock, ""),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-litellm-model-group").as_deref(), Some("backup"));
    assert_eq!(r.header("x-tollgate-fallbacks").as_deref(), Some("1"));
    assert_eq!(
        r.header("x-litellm-attempted-fallbacks").as_deref(),
        Some("1")
    );
    // Two attempts on the primary (1 retry), one on the backup.
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("3"));
    assert_eq!(
        mock.last_request().unwrap()["body"]["model"],
        "backup-upstream"
    );

    // Streams fall back too: nothing had been sent yet.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "primary", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sse_events(&r.body).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(r.header("x-litellm-model-group").as_deref(), Some("backup"));
    gw.stop().await;
}

#[actix_rt::test]
async fn each_kind_of_failure_uses_its_own_list() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nfallbacks = {{ short = [\"other\"] }}\ncontext_window_fallbacks = {{ short = [\"long\"] }}\n{}{}{}",
        group(
            "short",
            &mock,
            "extra_headers = { x-mock-status = \"400\", x-mock-error = \"context\" }"
        ),
        group("long", &mock, ""),
        group("other", &mock, ""),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("short"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-litellm-model-group").as_deref(), Some("long"));
    // A context-window error is not retried on the same group.
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("2"));
    gw.stop().await;
}

#[actix_rt::test]
async fn a_bad_request_does_not_fall_back() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\ndefault_fallbacks = [\"backup\"]\n{}{}",
        failing("primary", &mock, 400),
        group("backup", &mock, ""),
    ))
    .await;
    let before = mock.stats().requests;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("x-tollgate-fallbacks").as_deref(), Some("0"));
    assert_eq!(mock.stats().requests, before + 1);
    gw.stop().await;
}

#[actix_rt::test]
async fn default_fallbacks_and_the_requests_own_list() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 0\ndefault_fallbacks = [\"backup\"]\n{}{}{}",
        failing("primary", &mock, 429),
        group("backup", &mock, ""),
        group("mine", &mock, ""),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-litellm-model-group").as_deref(), Some("backup"));

    // The request's `fallbacks` replace the configured ones, and are not
    // sent upstream.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "primary", "fallbacks": ["no-such-group", "mine"],
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-litellm-model-group").as_deref(), Some("mine"));
    let sent = mock.last_request().unwrap();
    assert!(sent["body"].get("fallbacks").is_none(), "{sent}");

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "primary", "fallbacks": "mine",
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "fallbacks");
    gw.stop().await;
}

#[actix_rt::test]
async fn a_key_only_falls_back_to_groups_it_may_use() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[[keys]]\nkey = \"sk-only-primary\"\nmodels = [\"primary\"]\n\
         [router]\nnum_retries = 0\nfallbacks = {{ primary = [\"backup\"] }}\n{}{}",
        failing("primary", &mock, 503),
        group("backup", &mock, ""),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-only-primary"),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-tollgate-fallbacks").as_deref(), Some("0"));
    // The master key may use both.
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[test]
fn fallbacks_naming_an_unknown_group_are_a_start_up_error() {
    let text = "[router]\nfallbacks = { m = [\"nope\"] }\n[[models.m.deployments]]\nprovider = \"mock\"\nmodel = \"x\"\n";
    let err = tollgate::config::Config::from_toml(text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("router.fallbacks.m[0]") && err.contains("nope"),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_request_sets_its_own_retries_per_group() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[router]\nnum_retries = 2\nretry_backoff_ms = 1\nallowed_fails = 100\n{}",
        failing("primary", &mock, 503),
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("primary"),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("3"));
    let before = mock.stats().requests;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "primary", "num_retries": 0, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-tollgate-attempts").as_deref(), Some("1"));
    assert_eq!(mock.stats().requests, before + 1);
    // Never sent upstream.
    assert!(mock.last_request().unwrap()["body"]
        .get("num_retries")
        .is_none());
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "primary", "num_retries": 99, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "num_retries");
    gw.stop().await;
}
