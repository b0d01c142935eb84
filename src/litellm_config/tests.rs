//! LiteLLM configs in the shapes LiteLLM's documentation shows
//! (`tests/fixtures/litellm/*.yaml`), and what each becomes.

use std::collections::HashMap;

use super::*;
use crate::routing::Strategy;

const CONFIGS: &str = include_str!("../../tests/fixtures/litellm/configs.yaml");
const RELIABILITY: &str = include_str!("../../tests/fixtures/litellm/reliability.yaml");
const LOAD_BALANCING: &str = include_str!("../../tests/fixtures/litellm/load_balancing.yaml");
const LOGGING: &str = include_str!("../../tests/fixtures/litellm/logging.yaml");

fn with_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Imported, ImportError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    translate_with_env(yaml, &move |name| vars.get(name).cloned())
}

fn import(yaml: &str, vars: &[(&str, &str)]) -> (Imported, toml::Table) {
    let imported = with_env(yaml, vars).unwrap_or_else(|e| panic!("{e}"));
    let table: toml::Table = imported.toml.parse().expect("the output is TOML");
    (imported, table)
}

/// `table["a"]["b"][0]["c"]` written as `at(&t, "a.b.0.c")`.
fn at<'t>(t: &'t toml::Table, path: &str) -> &'t toml::Value {
    let mut parts = path.split('|');
    let first = parts.next().unwrap_or_default();
    let mut v = t
        .get(first)
        .unwrap_or_else(|| panic!("no `{first}` in {t:#?}"));
    for p in parts {
        v = match p.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => v
                .get(p)
                .unwrap_or_else(|| panic!("no `{p}` on the way to `{path}`")),
        };
    }
    v
}

fn s<'t>(t: &'t toml::Table, path: &str) -> &'t str {
    at(t, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn int(t: &toml::Table, path: &str) -> i64 {
    at(t, path)
        .as_integer()
        .unwrap_or_else(|| panic!("`{path}` is not an integer"))
}

fn strings(t: &toml::Table, path: &str) -> Vec<String> {
    at(t, path)
        .as_array()
        .unwrap_or_else(|| panic!("`{path}` is not an array"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_ignored(imported: &Imported, path: &str) {
    assert!(
        imported.is_ignored(path),
        "`{path}` not reported; reported: {:#?}",
        imported.ignored
    );
}

#[test]
fn the_configs_page_shape_groups_deployments_by_name_in_order() {
    let (imported, t) = import(CONFIGS, &[]);
    let gpt = at(&t, "models|gpt-4o|deployments").as_array().unwrap();
    assert_eq!(gpt.len(), 3, "three deployments share model_name gpt-4o");
    assert_eq!(s(&t, "models|gpt-4o|deployments|0|provider"), "azure");
    assert_eq!(s(&t, "models|gpt-4o|deployments|0|model"), "gpt-4o-eu");
    assert_eq!(
        s(&t, "models|gpt-4o|deployments|0|api_key"),
        "env:AZURE_API_KEY_EU"
    );
    assert_eq!(
        s(&t, "models|gpt-4o|deployments|0|api_version"),
        "2024-10-21"
    );
    assert_eq!(int(&t, "models|gpt-4o|deployments|0|rpm"), 6);
    assert_eq!(s(&t, "models|gpt-4o|deployments|1|model"), "gpt-4o-ca");
    assert_eq!(s(&t, "models|gpt-4o|deployments|2|provider"), "openai");
    // openai/ with a path after it: the rest is the upstream's model name.
    assert_eq!(
        s(&t, "models|vllm-models|deployments|0|model"),
        "facebook/opt-125m"
    );
    assert_eq!(
        s(&t, "models|vllm-models|deployments|0|api_base"),
        "http://0.0.0.0:8000/v1"
    );
    assert_eq!(
        s(&t, "models|claude-3-5-sonnet|deployments|0|provider"),
        "anthropic"
    );
    // A bare OpenAI model name, as LiteLLM infers it.
    let emb = "models|text-embedding-3-small|deployments|0";
    assert_eq!(s(&t, &format!("{emb}|provider")), "openai");
    assert_eq!(s(&t, &format!("{emb}|mode")), "embedding");
    assert_eq!(
        at(&t, &format!("{emb}|input_cost_per_token")).as_float(),
        Some(0.00000002)
    );
    // Ollama's native address becomes its OpenAI-compatible one.
    assert_eq!(
        s(&t, "models|llama3|deployments|0|api_base"),
        "http://localhost:11434/v1"
    );
    assert!(imported.notes.iter().any(|n| n.contains("Ollama")));
    assert_eq!(at(&t, "drop_params").as_bool(), Some(true));
    assert_eq!(s(&t, "master_key"), "env:LITELLM_MASTER_KEY");

    for path in [
        "model_list[2].model_info.version",
        "model_list[4].litellm_params.temperature",
        "model_list[4].litellm_params.max_tokens",
        "litellm_settings.set_verbose",
        "environment_variables.REDIS_HOST",
        "environment_variables.REDIS_PORT",
    ] {
        assert_ignored(&imported, path);
    }
    assert_eq!(imported.ignored.len(), 6, "{:#?}", imported.ignored);
}

#[test]
fn the_reliability_page_shape_maps_retries_fallbacks_and_cooldowns() {
    let (imported, t) = import(RELIABILITY, &[]);
    // router_settings wins over litellm_settings where both speak.
    assert_eq!(int(&t, "router|num_retries"), 2);
    assert_eq!(int(&t, "router|allowed_fails"), 5);
    assert_eq!(int(&t, "router|cooldown_secs"), 30);
    // litellm_settings.request_timeout is the per-call timeout.
    assert_eq!(int(&t, "router|timeout_secs"), 10);
    // A deployment may wait 900 s: the whole request may too.
    assert_eq!(int(&t, "router|request_timeout_secs"), 900);
    assert_eq!(
        int(&t, "models|gpt-4o-mini|deployments|0|timeout_secs"),
        900
    );
    // 0.1 s cannot be said in whole seconds: 1 s, with a note.
    assert_eq!(int(&t, "models|zephyr-beta|deployments|0|timeout_secs"), 1);
    assert!(imported
        .notes
        .iter()
        .any(|n| n.starts_with("model_list[0].litellm_params.timeout")));
    assert_eq!(s(&t, "models|zephyr-beta|deployments|0|provider"), "vllm");
    assert_eq!(
        s(&t, "models|zephyr-beta|deployments|0|model"),
        "HuggingFaceH4/zephyr-7b-beta"
    );
    // A bare name LiteLLM knows as OpenAI's.
    assert_eq!(s(&t, "models|gpt-4o-mini|deployments|0|provider"), "openai");

    assert_eq!(strings(&t, "router|fallbacks|zephyr-beta"), ["gpt-4o-mini"]);
    assert_eq!(
        strings(&t, "router|default_fallbacks"),
        ["claude-guarded"],
        "`*` is every group"
    );
    assert_eq!(
        strings(&t, "router|context_window_fallbacks|zephyr-beta"),
        ["gpt-4o-128k"]
    );
    assert_eq!(
        strings(&t, "router|context_window_fallbacks|gpt-4o-mini"),
        ["gpt-4o-128k"],
        "a group that does not exist is left out"
    );
    assert_eq!(
        strings(&t, "router|content_policy_fallbacks|gpt-4o-mini"),
        ["claude-guarded"]
    );

    for (class, n) in [
        ("authentication", 0),
        ("timeout", 3),
        ("rate_limit", 3),
        ("content_policy", 4),
        ("internal_server", 2),
        ("bad_request", 0),
    ] {
        assert_eq!(
            int(&t, &format!("router|retry_policy|{class}")),
            n,
            "{class}"
        );
    }
    assert_eq!(int(&t, "router|allowed_fails_policy|content_policy"), 1000);
    assert_eq!(int(&t, "router|allowed_fails_policy|rate_limit"), 100);
    assert_eq!(int(&t, "router|allowed_fails_policy|authentication"), 1);
    assert_eq!(
        int(&t, "models|gpt-4o-mini|retry_policy|rate_limit"),
        5,
        "model_group_retry_policy"
    );

    for path in [
        "model_list[0].litellm_params.stream_timeout",
        "litellm_settings.context_window_fallbacks[1].gpt-4o-mini[1]",
        "router_settings.retry_after",
    ] {
        assert_ignored(&imported, path);
    }
    assert_eq!(imported.ignored.len(), 3, "{:#?}", imported.ignored);
}

#[test]
fn the_load_balancing_page_shape_maps_limits_order_tags_redis_and_bedrock() {
    let env = [("AZURE_API_BASE", "https://eastus.openai.azure.com")];
    let (imported, t) = import(LOAD_BALANCING, &env);
    let azure = "models|gpt-4o|deployments|0";
    assert_eq!(s(&t, &format!("{azure}|id")), "azure-eastus");
    // api_base is read literally by tollgate, so the variable is read now.
    assert_eq!(
        s(&t, &format!("{azure}|api_base")),
        "https://eastus.openai.azure.com"
    );
    assert!(imported.notes.iter().any(|n| n.contains("AZURE_API_BASE")));
    assert_eq!(int(&t, &format!("{azure}|rpm")), 900);
    assert_eq!(int(&t, &format!("{azure}|tpm")), 90000);
    assert_eq!(int(&t, &format!("{azure}|order")), 1);
    assert_eq!(int(&t, &format!("{azure}|max_input_tokens")), 128000);
    let openai = "models|gpt-4o|deployments|1";
    assert_eq!(s(&t, &format!("{openai}|id")), "openai-direct");
    assert_eq!(int(&t, &format!("{openai}|order")), 2);
    assert_eq!(at(&t, &format!("{openai}|weight")).as_float(), Some(2.0));
    assert_eq!(strings(&t, &format!("{openai}|tags")), ["paid"]);

    let bedrock = "models|claude-3-haiku|deployments|0";
    assert_eq!(s(&t, &format!("{bedrock}|provider")), "bedrock");
    assert_eq!(
        s(&t, &format!("{bedrock}|model")),
        "anthropic.claude-3-haiku-20240307-v1:0"
    );
    assert_eq!(s(&t, &format!("{bedrock}|aws_region")), "us-west-2");
    assert_eq!(
        s(&t, &format!("{bedrock}|aws_access_key_id")),
        "env:AWS_ACCESS_KEY_ID"
    );
    assert_eq!(
        s(&t, &format!("{bedrock}|aws_secret_access_key")),
        "env:AWS_SECRET_ACCESS_KEY"
    );
    assert_eq!(
        strings(&t, &format!("{bedrock}|access_groups")),
        ["beta-models"]
    );
    // tpm beside litellm_params counts too.
    assert_eq!(int(&t, "models|groq-llama|deployments|0|tpm"), 6000);
    assert_eq!(int(&t, "models|groq-llama|deployments|0|rpm"), 30);

    assert_eq!(s(&t, "router|routing_strategy"), "usage-based-routing");
    assert_eq!(
        at(&t, "router|enable_pre_call_checks").as_bool(),
        Some(true)
    );
    assert_eq!(at(&t, "router|enable_tag_filtering").as_bool(), Some(true));
    assert_eq!(int(&t, "router|timeout_secs"), 30);
    // host, port and password become one URL, the password encoded.
    assert_eq!(
        s(&t, "redis_url"),
        "redis://:p%40ss%20word@redis.internal:6380"
    );
    assert_eq!(s(&t, "database_url"), "env:DATABASE_URL");
    assert_eq!(int(&t, "storage|db_pool_size"), 20);
    assert_eq!(
        at(&t, "router|background_health_checks").as_bool(),
        Some(true)
    );
    assert_eq!(int(&t, "router|health_check_interval_secs"), 300);

    for path in [
        "model_list[2].litellm_params.aws_role_name",
        "router_settings.routing_strategy_args.ttl",
        "router_settings.model_group_alias.gpt-4",
    ] {
        assert_ignored(&imported, path);
    }
    assert_eq!(imported.ignored.len(), 3, "{:#?}", imported.ignored);
}

#[test]
fn an_unset_variable_for_a_literal_field_is_an_error_naming_it() {
    let e = with_env(LOAD_BALANCING, &[]).unwrap_err().to_string();
    assert!(e.contains("model_list[0].litellm_params.api_base"), "{e}");
    assert!(e.contains("AZURE_API_BASE"), "{e}");
}

#[test]
fn the_logging_page_shape_maps_callbacks_and_names_what_tollgate_lacks() {
    let (imported, t) = import(LOGGING, &[]);
    let dest = at(&t, "logging|destinations").as_array().unwrap();
    assert_eq!(dest.len(), 2, "langfuse once (success and failure), otel");
    assert_eq!(s(&t, "logging|destinations|0|kind"), "langfuse");
    assert_eq!(
        s(&t, "logging|destinations|0|public_key"),
        "env:LANGFUSE_PUBLIC_KEY"
    );
    assert_eq!(
        s(&t, "logging|destinations|0|secret_key"),
        "env:LANGFUSE_SECRET_KEY"
    );
    assert_eq!(s(&t, "logging|destinations|1|kind"), "otel");
    assert_eq!(
        s(&t, "logging|destinations|1|endpoint"),
        "http://localhost:4318/v1/traces"
    );
    assert_eq!(at(&t, "logging|litellm_metrics").as_bool(), Some(true));
    assert_eq!(
        at(&t, "logging|turn_off_message_logging").as_bool(),
        Some(true)
    );
    assert_eq!(s(&t, "logging|alerts|webhook_url"), "env:SLACK_WEBHOOK_URL");
    // The Vertex AI deployment is left out; its group does not exist.
    assert!(t["models"].get("gemini-vertex").is_none());
    assert_eq!(s(&t, "models|gemini-pro|deployments|0|provider"), "gemini");

    for path in [
        "model_list[1]",
        "model_list[2].litellm_params.safety_settings",
        "model_list[3].model_info.base_model",
        "model_list[3].model_info.supports_vision",
        "litellm_settings.failure_callback[1]",
        "litellm_settings.redact_user_api_key_info",
        "litellm_settings.cache",
        "litellm_settings.cache_params.type",
        "litellm_settings.cache_params.host",
        "litellm_settings.cache_params.port",
        "litellm_settings.cache_params.ttl",
        "litellm_settings.cache_params.supported_call_types",
        "general_settings.alerting[1]",
        "general_settings.alerting_threshold",
        "general_settings.store_model_in_db",
        "general_settings.proxy_batch_write_at",
    ] {
        assert_ignored(&imported, path);
    }
    assert_eq!(imported.ignored.len(), 16, "{:#?}", imported.ignored);
    // The annotated TOML names them too, as comments.
    let annotated = imported.annotated_toml();
    assert!(annotated.contains("#   litellm_settings.cache_params.type: "));
    let reparsed: toml::Table = annotated.parse().unwrap();
    assert_eq!(reparsed, t);
}

#[test]
fn disable_cooldowns_carries_over_and_reaches_the_router() {
    let yaml = "model_list:\n  - model_name: local\n    litellm_params: {model: hosted_vllm/llama, api_base: http://vllm:8000/v1}\nrouter_settings:\n  disable_cooldowns: true\n";
    let (imported, t) = import(yaml, &[]);
    assert_eq!(at(&t, "router|disable_cooldowns").as_bool(), Some(true));
    assert!(imported.ignored.is_empty(), "{:#?}", imported.ignored);
    let config: Config = toml::from_str(&imported.toml).unwrap();
    assert!(config.router.disable_cooldowns);
}

#[test]
fn every_fixture_imports_into_tollgates_schema() {
    let env = [("AZURE_API_BASE", "https://eastus.openai.azure.com")];
    for (name, yaml) in [
        ("configs", CONFIGS),
        ("reliability", RELIABILITY),
        ("load_balancing", LOAD_BALANCING),
        ("logging", LOGGING),
    ] {
        let imported = with_env(yaml, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        toml::from_str::<Config>(&imported.toml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!imported.toml.contains("os.environ/"), "{name}");
    }
}

#[test]
fn a_config_with_literal_secrets_validates_through_the_normal_path() {
    let yaml = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: sk-upstream-literal
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:10/v1
      api_key: sk-upstream-literal
    model_info:
      id: second
router_settings:
  routing_strategy: latency-based-routing
  num_retries: 4
general_settings:
  master_key: sk-master-1234
"#;
    let imported = with_env(yaml, &[]).unwrap();
    let c = imported.config().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.router.num_retries, 4);
    assert_eq!(c.router.routing_strategy, Strategy::LatencyBased);
    assert_eq!(c.models["gpt-4o"].deployments.len(), 2);
    let d = &c.models["gpt-4o"].deployments;
    assert_eq!(d[0].provider(), Provider::Openai);
    assert_eq!(d[0].id.as_deref(), Some("gpt-4o-0"));
    assert_eq!(d[1].id.as_deref(), Some("second"));
    assert_eq!(d[1].api_base.as_deref(), Some("http://127.0.0.1:10/v1"));
    assert_eq!(
        c.resolved_master_key.as_ref().map(|s| s.expose()),
        Some("sk-master-1234")
    );
    assert!(imported.ignored.is_empty(), "{:#?}", imported.ignored);
}

#[test]
fn values_tollgate_refuses_are_refused_with_tollgates_path() {
    // LiteLLM's docs use `sk-1234`; tollgate wants 8 characters or more.
    let yaml = "general_settings:\n  master_key: sk-1234\n";
    let e = with_env(yaml, &[])
        .unwrap()
        .config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("master_key"), "{e}");
}

#[test]
fn malformed_or_unexpected_yaml_is_an_error_with_a_place_never_a_panic() {
    let e = with_env("model_list:\n  - model_name: [unclosed\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("YAML") && e.contains("line"), "{e}");
    for (yaml, path) in [
        ("model_list: {a: 1}\n", "model_list"),
        (
            "model_list:\n  - litellm_params: {model: openai/x}\n",
            "model_list[0].model_name",
        ),
        (
            "model_list:\n  - model_name: m\n",
            "model_list[0].litellm_params",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params: {api_key: k}\n",
            "model_list[0].litellm_params.model",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, rpm: lots}\n",
            "model_list[0].litellm_params.rpm",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, tags: {a: b}}\n",
            "model_list[0].litellm_params.tags",
        ),
        ("router_settings: [1, 2]\n", "router_settings"),
        (
            "router_settings: {num_retries: -1}\n",
            "router_settings.num_retries",
        ),
        (
            "litellm_settings: {fallbacks: 3}\n",
            "litellm_settings.fallbacks",
        ),
        ("- just\n- a list\n", "(top level)"),
    ] {
        let e = with_env(yaml, &[])
            .err()
            .unwrap_or_else(|| panic!("accepted: {yaml}"))
            .to_string();
        assert!(e.contains(&format!("`{path}`")), "{yaml} → {e}");
    }
    // Odd but valid inputs translate without a panic.
    for yaml in [
        "",
        "~",
        "model_list:\n",
        "model_list: []\n",
        "router_settings: {}\nlitellm_settings: ~\n",
        "base: &b {model: openai/gpt-4o}\nmodel_list:\n  - model_name: m\n    litellm_params:\n      <<: *b\n      api_key: k\n",
        "model_list:\n  - model_name: 42\n    litellm_params: {model: claude-3-5-haiku-latest}\n",
    ] {
        with_env(yaml, &[]).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    }
}

#[test]
fn yaml_merge_keys_are_applied() {
    let yaml = "base: &b {model: openai/gpt-4o, rpm: 7}\nmodel_list:\n  - model_name: m\n    litellm_params:\n      <<: *b\n      api_key: k\n";
    let (imported, t) = import(yaml, &[]);
    assert_eq!(int(&t, "models|m|deployments|0|rpm"), 7);
    assert_ignored(&imported, "base.model");
}

#[test]
fn providers_tollgate_lacks_and_wildcards_leave_the_deployment_out_and_say_why() {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params: {model: cohere/command-r}
  - model_name: b
    litellm_params: {model: "openai/*"}
  - model_name: c
    litellm_params: {model: my-custom-model}
  - model_name: d
    litellm_params: {model: my-custom-model, custom_llm_provider: openai, api_base: "http://h:1/v1"}
litellm_settings:
  fallbacks: [{d: [a]}]
"#;
    let (imported, t) = import(yaml, &[]);
    let models = t["models"].as_table().unwrap();
    assert_eq!(models.keys().collect::<Vec<_>>(), ["d"]);
    assert_eq!(s(&t, "models|d|deployments|0|provider"), "openai");
    for (path, says) in [
        ("model_list[0]", "cohere"),
        ("model_list[1]", "wildcard"),
        ("model_list[2]", "provider/model"),
        ("litellm_settings.fallbacks[0].d[0]", "`a`"),
    ] {
        let i = imported
            .ignored
            .iter()
            .find(|i| i.path == path)
            .unwrap_or_else(|| panic!("{path}: {:#?}", imported.ignored));
        assert!(i.reason.contains(says), "{i}");
    }
}

#[test]
fn secrets_stay_references_and_redis_from_variables_is_not_guessed() {
    let yaml = r#"
model_list:
  - model_name: m
    litellm_params: {model: anthropic/claude-3-5-haiku-latest, api_key: os.environ/MY_KEY}
router_settings:
  redis_host: os.environ/REDIS_HOST
  redis_port: os.environ/REDIS_PORT
  redis_password: os.environ/REDIS_PASSWORD
"#;
    let env = [("REDIS_PASSWORD", "hunter2"), ("MY_KEY", "sk-secret")];
    let (imported, t) = import(yaml, &env);
    assert_eq!(s(&t, "models|m|deployments|0|api_key"), "env:MY_KEY");
    assert!(t.get("redis_url").is_none());
    assert!(!imported.annotated_toml().contains("hunter2"));
    assert!(!imported.annotated_toml().contains("sk-secret"));
    for path in [
        "router_settings.redis_host",
        "router_settings.redis_port",
        "router_settings.redis_password",
    ] {
        assert_ignored(&imported, path);
    }
    // A redis_url given as a variable stays one.
    let (_, t) = import(
        "router_settings: {redis_url: os.environ/REDIS_URL, redis_host: h}\n",
        &[],
    );
    assert_eq!(s(&t, "redis_url"), "env:REDIS_URL");
}

#[test]
fn yaml_one_one_booleans_and_numbers_as_strings_are_read_like_litellm_reads_them() {
    let yaml = r#"
model_list:
  - model_name: m
    litellm_params: {model: openai/gpt-4o, rpm: "60", timeout: "2.5", drop_params: yes}
litellm_settings: {drop_params: "True"}
router_settings: {enable_pre_call_checks: off}
"#;
    let (_, t) = import(yaml, &[]);
    assert_eq!(int(&t, "models|m|deployments|0|rpm"), 60);
    assert_eq!(int(&t, "models|m|deployments|0|timeout_secs"), 3);
    assert_eq!(
        at(&t, "models|m|deployments|0|drop_params").as_bool(),
        Some(true)
    );
    assert_eq!(at(&t, "drop_params").as_bool(), Some(true));
    assert_eq!(
        at(&t, "router|enable_pre_call_checks").as_bool(),
        Some(false)
    );
}

#[test]
fn tags_without_tag_filtering_do_not_steer_requests_as_in_litellm() {
    let yaml = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, tags: [free]}\n";
    let (imported, t) = import(yaml, &[]);
    assert_eq!(at(&t, "router|enable_tag_filtering").as_bool(), Some(false));
    assert!(imported
        .notes
        .iter()
        .any(|n| n.contains("enable_tag_filtering")));
}

#[test]
fn a_file_is_recognised_as_litellm_by_its_model_list() {
    assert!(looks_like_litellm(CONFIGS));
    assert!(!looks_like_litellm("[server]\nport = 4000\n"));
    assert!(!looks_like_litellm("router_settings: {}\n"));
}

#[test]
fn available_teams_become_the_teams_users_may_join() {
    let yaml = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o}\nlitellm_settings:\n  default_internal_user_params:\n    available_teams: [open-1, open-2]\n    user_role: internal_user_viewer\n";
    let (imported, t) = import(yaml, &[]);
    assert_eq!(strings(&t, "auth|available_teams"), ["open-1", "open-2"]);
    assert_ignored(
        &imported,
        "litellm_settings.default_internal_user_params.user_role",
    );
}
