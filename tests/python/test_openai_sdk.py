"""The official OpenAI Python SDK against a real tollgate: the client our
users actually run. Starts `tollgate serve` with the built-in mock upstream."""

import json
import urllib.request

import openai
import pytest

from conftest import MASTER


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
