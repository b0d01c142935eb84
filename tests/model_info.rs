//! LiteLLM's `/model/info` and `/model_group/info`: what tools and
//! dashboards read about the configured models, never a credential.

mod common;

use common::*;

const CONFIG: &str = r#"
[[keys]]
key = "sk-only-claude"
models = ["claude"]

[[models.claude.deployments]]
id = "claude-a"
model = "anthropic/claude-3-haiku-20240307"
api_key = "sk-ant-very-secret"
rpm = 100

[[models.claude.deployments]]
id = "claude-b"
provider = "bedrock"
model = "anthropic.claude-3-5-haiku-20241022-v1:0"
aws_region = "us-east-1"
aws_access_key_id = "AKIDEXAMPLE"
aws_secret_access_key = "aws-very-secret"
rpm = 50

[[models.gpt.deployments]]
id = "gpt-a"
provider = "openai"
model = "gpt-4o"
api_key = "sk-openai-very-secret"
"#;

#[actix_rt::test]
async fn model_info_lists_deployments_without_secrets() {
    let gw = spawn_gateway(CONFIG).await;
    for path in ["/model/info", "/v1/model/info"] {
        let r = get(&gw, path, Some(MASTER)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("very-secret"), "{}", r.text());
        let v = r.json();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        let a = data
            .iter()
            .find(|d| d["model_info"]["id"] == "claude-a")
            .unwrap();
        assert_eq!(a["model_name"], "claude");
        assert_eq!(
            a["litellm_params"]["model"],
            "anthropic/claude-3-haiku-20240307"
        );
        assert_eq!(a["litellm_params"]["api_base"], "https://api.anthropic.com");
        assert_eq!(a["litellm_params"]["rpm"], 100);
        assert_eq!(a["model_info"]["litellm_provider"], "anthropic");
        assert!(a["model_info"]["max_input_tokens"].as_u64().unwrap() >= 100_000);
        assert!(a["model_info"]["input_cost_per_token"].as_f64().unwrap() > 0.0);
    }
    let r = get(&gw, "/model/info?litellm_model_id=gpt-a", Some(MASTER)).await;
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["model_name"], "gpt");

    // A key sees only what it may use; no key, nothing.
    let r = get(&gw, "/model/info", Some("sk-only-claude")).await;
    let names: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["model_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["claude", "claude"]);
    assert_eq!(get(&gw, "/model/info", None).await.status, 401);
    gw.stop().await;
}

#[actix_rt::test]
async fn model_group_info_sums_and_bounds_each_group() {
    let gw = spawn_gateway(CONFIG).await;
    let r = get(&gw, "/model_group/info", Some(MASTER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let claude = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["model_group"] == "claude")
        .unwrap()
        .clone();
    assert_eq!(
        claude["providers"],
        serde_json::json!(["anthropic", "bedrock"])
    );
    assert_eq!(claude["rpm"], 150);
    assert!(claude["tpm"].is_null());
    assert!(claude["output_cost_per_token"].as_f64().unwrap() > 0.0);
    let r = get(&gw, "/model_group/info", Some("sk-only-claude")).await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
    gw.stop().await;
}
