//! Every way a request can be wrong gets a clear OpenAI-shaped 4xx (or the
//! upstream's own status), never a 500, never a hang.

mod common;

use common::*;
use serde_json::json;

fn assert_openai_error(r: &Resp, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

#[actix_rt::test]
async fn keys_missing_wrong_or_in_other_headers() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = post(&gw, "/v1/chat/completions", None, &chat_body("m")).await;
    let v = assert_openai_error(&r, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-not-a-real-key"),
        &chat_body("m"),
    )
    .await;
    let v = assert_openai_error(&r, 401);
    assert!(
        !v.to_string().contains("sk-not-a-real-key"),
        "the key must not be echoed"
    );

    // Azure-style and Anthropic-style headers work too.
    for header in ["api-key", "x-api-key"] {
        let resp = client()
            .post(format!("{}/chat/completions", gw.url()))
            .insert_header((header, MASTER))
            .send_json(&chat_body("m"))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{header}");
    }
    gw.stop().await;
}

#[actix_rt::test]
async fn malformed_bodies_are_400_with_the_parameter_named() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let cases: Vec<(&[u8], Option<&str>)> = vec![
        (b"{not json", None),
        (b"", None),
        (b"[]", None),
        (
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (
            br#"{"model":42,"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (br#"{"model":"m","messages":"hello"}"#, Some("messages")),
        (br#"{"model":"m","messages":[]}"#, Some("messages")),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            Some("stream"),
        ),
    ];
    for (body, param) in cases {
        let r = post_raw(&gw, "/v1/chat/completions", Some(MASTER), body.to_vec()).await;
        let v = assert_openai_error(&r, 400);
        assert_eq!(
            v["error"]["param"].as_str(),
            param,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing invalid reached the upstream"
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn bodies_over_the_limit_are_413() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[server]\nmax_body_bytes = 4096\n{}",
        model("m", &mock)
    ))
    .await;
    let big = "x".repeat(10_000);
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "m", "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    let v = assert_openai_error(&r, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    // The gateway is still fine afterwards.
    assert_eq!(
        post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m"))
            .await
            .status,
        200
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn unknown_model_is_404_and_unknown_route_is_404_json() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("gpt-nope"),
    )
    .await;
    let v = assert_openai_error(&r, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let r = get(&gw, "/v1/nothing-here", Some(MASTER)).await;
    assert_openai_error(&r, 404);
    gw.stop().await;
}

#[actix_rt::test]
async fn upstream_client_errors_keep_status_and_message_and_are_not_retried() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&model("m", &mock)).await;
    let mut body = chat_body("m");
    body["mock"] = json!({"status": 400});
    let r = post(&gw, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_openai_error(&r, 400);
    assert_eq!(mock.stats().chat, 1, "a 400 is not worth a retry");
    gw.stop().await;
}

#[actix_rt::test]
async fn key_rate_limit_gives_429_with_retry_after_and_ratelimit_headers() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!(
        "[[keys]]\nkey = \"sk-limited-key-1\"\nrpm_limit = 2\n{}",
        model("m", &mock)
    ))
    .await;
    let ok = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-limited-key-1"),
        &chat_body("m"),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("x-ratelimit-limit-requests").as_deref(),
        Some("2")
    );
    assert_eq!(
        ok.header("x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    assert_eq!(
        post(
            &gw,
            "/v1/chat/completions",
            Some("sk-limited-key-1"),
            &chat_body("m")
        )
        .await
        .status,
        200
    );

    let r = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-limited-key-1"),
        &chat_body("m"),
    )
    .await;
    let v = assert_openai_error(&r, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // Until enough of the last minute has slid by: at most a minute.
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        r.header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(
        mock.stats().chat,
        2,
        "the refused request never reached the upstream"
    );

    // Other keys are not affected.
    assert_eq!(
        post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m"))
            .await
            .status,
        200
    );
    gw.stop().await;
}

#[actix_rt::test]
async fn global_rate_limit_applies_to_everyone() {
    let mock = spawn_mock().await;
    let gw = spawn_gateway(&format!("[limits]\nglobal_rpm = 3\n{}", model("m", &mock))).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            post(&gw, "/v1/chat/completions", Some(MASTER), &chat_body("m"))
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    gw.stop().await;
}

#[test]
fn invalid_config_stops_the_binary_with_the_path_named() {
    let dir = std::env::temp_dir().join(format!("tollgate-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[models.gpt-4o.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\n[[models.gpt-4o.deployments]]\nprovider = \"openai_compatible\"\nmodel = \"x\"\napi_base = \"ftp://nope\"\n",
    )
    .unwrap();
    for cmd in ["check-config", "serve"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("models.gpt-4o.deployments[1].api_base"),
            "{err}"
        );
    }
    std::fs::write(&path, "[server]\nprot = 80\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"));
    let _ = std::fs::remove_dir_all(dir);
}
