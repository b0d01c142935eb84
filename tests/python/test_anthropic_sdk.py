"""The official Anthropic Python SDK against tollgate's `/v1/messages`: the
request runs through the gateway's pipeline (here to the OpenAI-shaped mock)
and the answer comes back in Anthropic's format."""

import json
import urllib.error
import urllib.request

import anthropic
import pytest

from conftest import MASTER


def client(url, key=MASTER):
    # The SDK appends /v1/messages itself.
    return anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key=key, max_retries=0)


def test_message(gateway):
    m = client(gateway).messages.create(
        model="mock-gpt",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text"
    assert m.content[0].text == "This is a mock response from tollgate."
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 5
    assert m.usage.input_tokens > 0


def test_max_tokens_cut_is_reported(gateway):
    m = client(gateway).messages.create(
        model="mock-gpt", max_tokens=2, messages=[{"role": "user", "content": "Hello"}]
    )
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 2


def test_streaming(gateway):
    with client(gateway).messages.stream(
        model="mock-gpt", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "This is a mock response from tollgate."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_count_tokens(gateway):
    n = client(gateway).messages.count_tokens(
        model="mock-gpt", messages=[{"role": "user", "content": "Hello, world"}]
    )
    assert 1 <= n.input_tokens < 20


def test_bad_key_is_an_authentication_error(gateway):
    with pytest.raises(anthropic.AuthenticationError):
        client(gateway, key="sk-wrong").messages.create(
            model="mock-gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def test_unknown_model_is_not_found(gateway):
    with pytest.raises(anthropic.NotFoundError) as e:
        client(gateway).messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"


def test_missing_max_tokens_is_a_bad_request_in_anthropic_shape(gateway):
    # The SDK will not send a request without max_tokens; a hand-written one.
    req = urllib.request.Request(
        gateway + "/messages",
        data=json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"x-api-key": MASTER, "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    body = json.loads(e.value.read())
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
