//! Moving over from LiteLLM: the real `tollgate` binary serves a LiteLLM
//! config.yaml as it is, and `import-litellm` turns one into a config.toml
//! that `check-config` accepts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/litellm")
        .join(name)
}

/// One HTTP/1.1 request, the whole answer back (status line first).
fn http(port: u16, method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn wait_until(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", path, None, "").starts_with("HTTP/1.1 200")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answered 200 on {port}{path}");
}

/// Ends a child this test started, by its own id.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn terminate(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Environment for the fixtures' `os.environ/…` references, and nothing
/// else from this process (a LANGFUSE_HOST here must not leak in).
const FIXTURE_ENV: [(&str, &str); 16] = [
    ("OPENAI_API_KEY", "sk-test-openai"),
    ("ANTHROPIC_API_KEY", "sk-test-anthropic"),
    ("AZURE_API_KEY", "test-azure"),
    ("AZURE_API_KEY_EU", "test-azure-eu"),
    ("AZURE_API_KEY_CA", "test-azure-ca"),
    ("AZURE_API_BASE", "https://eastus.openai.azure.com"),
    ("LITELLM_MASTER_KEY", "sk-test-master-key"),
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "test-aws-secret"),
    ("GROQ_API_KEY", "test-groq"),
    ("GEMINI_API_KEY", "test-gemini"),
    (
        "DATABASE_URL",
        "postgres://tollgate:secret@127.0.0.1:5432/tollgate",
    ),
    ("LANGFUSE_PUBLIC_KEY", "pk-lf-test"),
    ("LANGFUSE_SECRET_KEY", "sk-lf-test"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.example.com/services/T0/B0/X",
    ),
    ("TOLLGATE_LOG", "warn"),
];

fn tollgate(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(FIXTURE_ENV)
        .output()
        .unwrap()
}

#[test]
fn serve_runs_a_litellm_yaml_with_its_master_key_and_warns_of_each_ignored_path_once() {
    let dir = temp_dir("litellm-serve");
    let upstream_port = free_port();
    let _mock = Reaped(
        Command::new(BIN)
            .args(["mock-upstream", "--port", &upstream_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(upstream_port, "/v1/models");

    let config = dir.join("litellm_config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/mock-gpt
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: os.environ/LITELLM_IMPORT_UPSTREAM_KEY
      vertex_project: not-for-openai
      rpm: 600
litellm_settings:
  drop_params: true
  num_retries: 1
  cache: true
  cache_params:
    type: redis
    ttl: 600
general_settings:
  master_key: os.environ/LITELLM_IMPORT_MASTER_KEY
"#
        ),
    )
    .unwrap();
    let port = free_port();
    let stderr_path = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--host", "127.0.0.1", "--workers", "1", "--port"])
        .arg(port.to_string())
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env_clear()
        .env("LITELLM_IMPORT_UPSTREAM_KEY", "sk-upstream")
        .env("LITELLM_IMPORT_MASTER_KEY", "sk-litellm-import-master")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    wait_until(port, "/health/liveliness");

    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some("sk-litellm-import-master"),
        body,
    );
    let refused = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some("sk-wrong-key"),
        body,
    );
    let code = terminate(&mut child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{stderr}");
    assert!(answer.contains("\"choices\""), "{answer}");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert_eq!(code, Some(0), "{stderr}");

    for path in [
        "litellm_settings.cache_params.type",
        "litellm_settings.cache_params.ttl",
        "litellm_settings.cache",
        "model_list[0].litellm_params.vertex_project",
    ] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&format!("ignored LiteLLM setting {path}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "`{path}` once:\n{stderr}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    assert!(!stderr.contains("sk-upstream"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_litellm_prints_toml_that_check_config_accepts_for_every_fixture() {
    let dir = temp_dir("litellm-import");
    for (fixture_name, ignored) in [
        ("configs.yaml", "litellm_settings.set_verbose"),
        ("reliability.yaml", "router_settings.retry_after"),
        (
            "load_balancing.yaml",
            "router_settings.routing_strategy_args.ttl",
        ),
        ("logging.yaml", "litellm_settings.cache_params.type"),
    ] {
        let yaml = fixture(fixture_name);
        let out = tollgate(&["import-litellm", yaml.to_str().unwrap()], &dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{fixture_name}: {stderr}");
        assert!(
            stderr.contains(&format!("ignored LiteLLM setting {ignored}: ")),
            "{fixture_name}: {stderr}"
        );
        assert!(!stderr.contains("will refuse"), "{fixture_name}: {stderr}");
        assert!(stdout.contains("[[models."), "{fixture_name}: {stdout}");
        // Secrets stay references; the file holds none of their values.
        assert!(!stdout.contains("sk-test-openai"), "{stdout}");

        let toml_path = dir.join(fixture_name.replace(".yaml", ".toml"));
        std::fs::write(&toml_path, stdout.as_bytes()).unwrap();
        let check = tollgate(
            &["check-config", "--config", toml_path.to_str().unwrap()],
            &dir,
        );
        assert!(
            check.status.success(),
            "{fixture_name}: {}\n{stdout}",
            String::from_utf8_lossy(&check.stderr)
        );
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(said.contains(": ok ("), "{said}");

        // check-config takes the YAML as it is, with the same count.
        let direct = tollgate(&["check-config", "--config", yaml.to_str().unwrap()], &dir);
        let direct_err = String::from_utf8_lossy(&direct.stderr);
        assert!(direct.status.success(), "{fixture_name}: {direct_err}");
        assert!(direct_err.contains(ignored), "{direct_err}");
        let direct_said = String::from_utf8_lossy(&direct.stdout);
        assert_eq!(
            said.split_once(": ok").map(|(_, s)| s),
            direct_said.split_once(": ok").map(|(_, s)| s),
            "{fixture_name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_litellm_config_is_recognised_by_content_whatever_its_name() {
    let dir = temp_dir("litellm-sniff");
    let path = dir.join("proxy.conf");
    std::fs::copy(fixture("reliability.yaml"), &path).unwrap();
    let out = tollgate(&["check-config", "--config", path.to_str().unwrap()], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(4 model groups, 5 deployments)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_yaml_is_refused_with_its_place_and_a_non_zero_status() {
    let dir = temp_dir("litellm-bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o\n",
    )
    .unwrap();
    for args in [
        vec!["import-litellm", bad.to_str().unwrap()],
        vec!["check-config", "--config", bad.to_str().unwrap()],
        vec!["serve", "--config", bad.to_str().unwrap()],
    ] {
        let out = tollgate(&args, &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("YAML") && stderr.contains("line"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Well-formed YAML, wrong shape: the path is named.
    let wrong = dir.join("wrong.yaml");
    std::fs::write(
        &wrong,
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, rpm: lots}\n",
    )
    .unwrap();
    let out = tollgate(&["import-litellm", wrong.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model_list[0].litellm_params.rpm"));
    let _ = std::fs::remove_dir_all(&dir);
}
