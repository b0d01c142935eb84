"""The official OpenAI Python SDK against a real tollgate: the client our
users actually run. Starts `tollgate serve` with the built-in mock upstream."""

import os
import socket
import subprocess
import tempfile
import time
import json
import urllib.request

import openai
import pytest

MASTER = "sk-sdk-test-master"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway():
    binary = os.environ.get("TOLLGATE_BIN", os.path.join(ROOT, "target", "debug", "tollgate"))
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="tollgate-sdk-")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(
            f"""
master_key = "{MASTER}"
database_url = "sqlite://{os.path.join(tmp, 'keys.db')}"
[server]
host = "127.0.0.1"
port = {port}
workers = 1
[router]
num_retries = 0
[spend]
spool_dir = "{os.path.join(tmp, 'spool')}"
[logging]
level = "warn"
request_log = "off"
[mock_upstream]
chunks = 5
[[keys]]
key = "sk-sdk-limited"
rpm_limit = 1
[[models.mock-gpt.deployments]]
provider = "mock"
model = "mock-gpt"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
[[models.mock-embedding.deployments]]
provider = "mock"
model = "mock-embedding"
"""
        )
    proc = subprocess.Popen([binary, "serve", "--config", config])
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("tollgate did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def client(url, key=MASTER):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def test_chat_completion(gateway):
    r = client(gateway).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello"}]
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_raw_response_headers(gateway):
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello"}]
    )
    assert raw.headers["x-tollgate-deployment"] == "mock-gpt-0"
    assert float(raw.headers["x-tollgate-response-cost"]) > 0
    assert raw.parse().choices[0].message.content


def test_streaming(gateway):
    stream = client(gateway).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.choices for c in chunks), "no usage chunk unless asked"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_with_usage(gateway):
    stream = client(gateway).chat.completions.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5


def test_legacy_completions(gateway):
    r = client(gateway).completions.create(model="mock-gpt", prompt="Once upon a time")
    assert r.choices[0].text


def test_embeddings(gateway):
    r = client(gateway).embeddings.create(model="mock-embedding", input=["a", "b", "c"])
    assert len(r.data) == 3
    assert len(r.data[0].embedding) > 0


def test_models_list(gateway):
    ids = sorted(m.id for m in client(gateway).models.list())
    assert ids == ["mock-embedding", "mock-gpt"]


def test_bad_key_is_authentication_error(gateway):
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-wrong").chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "x"}]
        )


def test_unknown_model_is_not_found(gateway):
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )


def test_bad_request(gateway):
    with pytest.raises(openai.BadRequestError) as e:
        client(gateway).chat.completions.create(model="mock-gpt", messages="not a list")
    assert e.value.body["param"] == "messages"


def test_rate_limit_error(gateway):
    c = client(gateway, key="sk-sdk-limited")
    c.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_upstream_5xx_is_internal_server_error(gateway):
    with pytest.raises(openai.InternalServerError) as e:
        client(gateway).chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mock": {"status": 503}},
        )
    assert e.value.status_code == 503


def test_upstream_429_is_rate_limit_error(gateway):
    with pytest.raises(openai.RateLimitError):
        client(gateway).chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mock": {"status": 429}},
        )


def _admin(gateway, path, body):
    base = gateway[: -len("/v1")]
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_virtual_key_works_and_a_blocked_one_is_an_authentication_error(gateway):
    key = _admin(gateway, "/key/generate", {"models": ["mock-gpt"]})["key"]
    c = client(gateway, key=key)
    r = c.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content
    assert [m.id for m in c.models.list()] == ["mock-gpt"]
    with pytest.raises(openai.PermissionDeniedError):
        c.embeddings.create(model="mock-embedding", input="x")
    _admin(gateway, "/key/block", {"key": key})
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])


def test_over_budget_key_is_a_bad_request(gateway):
    key = _admin(gateway, "/key/generate", {"max_budget": 1.0, "spend": 1.5})["key"]
    with pytest.raises(openai.BadRequestError) as e:
        client(gateway, key=key).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["type"] == "budget_exceeded"
