"""Every provider through tollgate with the official OpenAI SDK, unchanged:
the built-in mock answers in Anthropic's, Gemini's, Bedrock's and Azure's own
wire formats, and the gateway translates both ways. Plain, streamed, tool
calls and errors for each."""

import json

import openai
import pytest

from conftest import MASTER, free_port, running_gateway

REPLY = "This is a mock response from tollgate."
PROVIDERS = ["anthropic", "gemini", "bedrock", "azure"]
# The mock answers tool calls in the providers' native formats only.
NATIVE = ["anthropic", "gemini", "bedrock"]


def deployment(group, provider, base, extra=""):
    settings = {
        "anthropic": 'model = "claude-3-5-haiku-20241022"\napi_key = "sk-ant"',
        "gemini": 'model = "gemini-2.0-flash"\napi_key = "goog"',
        "bedrock": 'model = "anthropic.claude-3-haiku-20240307-v1:0"\naws_region = "us-east-1"\n'
        'aws_access_key_id = "AKIDEXAMPLE"\naws_secret_access_key = "secret"',
        "azure": 'model = "gpt-4o-deployment"\napi_key = "azure-key"',
    }[provider]
    return f"""
[[models."{group}".deployments]]
provider = "{provider}"
api_base = "{base}"
{settings}
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
{extra}
"""


@pytest.fixture(scope="module")
def gateway():
    mock_port = free_port()
    base = f"http://127.0.0.1:{mock_port}"
    # A mock deployment makes the gateway start its built-in mock on mock_port.
    models = '[[models.mock-gpt.deployments]]\nprovider = "mock"\nmodel = "mock-gpt"\n'
    for p in PROVIDERS:
        models += deployment(p, p, base)
        models += deployment(f"{p}-limited", p, base, 'extra_headers = { x-mock-status = "429" }')
        models += deployment(
            f"{p}-too-long",
            p,
            base,
            'extra_headers = { x-mock-status = "400", x-mock-error = "context" }',
        )
    with running_gateway(models, mock_port) as url:
        yield url


def client(url):
    return openai.OpenAI(base_url=url, api_key=MASTER, max_retries=0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain(gateway, provider):
    r = client(gateway).chat.completions.create(
        model=provider,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=50,
    )
    assert r.choices[0].message.content == REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream(gateway, provider):
    stream = client(gateway).chat.completions.create(
        model=provider,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize("provider", NATIVE)
def test_tool_call_and_result(gateway, provider):
    c = client(gateway)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = c.chat.completions.create(model=provider, messages=messages, tools=WEATHER, tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    # The result goes back and the model answers in text.
    messages += [
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    r = c.chat.completions.create(model=provider, messages=messages, tools=WEATHER)
    assert r.choices[0].message.content == REPLY


@pytest.mark.parametrize("provider", NATIVE)
def test_streamed_tool_call(gateway, provider):
    stream = client(gateway).chat.completions.create(
        model=provider,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=WEATHER,
        tool_choice="required",
        stream=True,
    )
    chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(args) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_error(gateway, provider):
    with pytest.raises(openai.RateLimitError):
        client(gateway).chat.completions.create(
            model=f"{provider}-limited", messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_context_window_error(gateway, provider):
    with pytest.raises(openai.BadRequestError) as e:
        client(gateway).chat.completions.create(
            model=f"{provider}-too-long", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.code == "context_length_exceeded", e.value.body
