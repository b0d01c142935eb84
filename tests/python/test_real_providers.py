"""Smoke tests against the real providers, opt-in: each runs only when
TOLLGATE_SMOKE=1 and the provider's credentials are in the environment
(never in CI, never failing for lack of a key). One plain and one streamed
chat completion per provider through a real gateway, with the OpenAI SDK.

    TOLLGATE_SMOKE=1 ANTHROPIC_API_KEY=… python3 -m pytest -q tests/python/test_real_providers.py

Models can be changed with TOLLGATE_SMOKE_<PROVIDER>_MODEL."""

import os

import openai
import pytest

from conftest import MASTER, running_gateway

# provider → (variables that must be set, default model, extra deployment TOML)
PROVIDERS = {
    "openai": (["OPENAI_API_KEY"], "gpt-4o-mini", ""),
    "anthropic": (["ANTHROPIC_API_KEY"], "claude-3-5-haiku-latest", ""),
    "gemini": (["GEMINI_API_KEY"], "gemini-2.0-flash", ""),
    "bedrock": (
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"],
        "anthropic.claude-3-haiku-20240307-v1:0",
        "",
    ),
    "azure": (
        ["AZURE_API_KEY", "AZURE_API_BASE"],
        os.environ.get("AZURE_DEPLOYMENT", "gpt-4o-mini"),
        f'api_base = "{os.environ.get("AZURE_API_BASE", "")}"',
    ),
}


def enabled(provider):
    needed = PROVIDERS[provider][0]
    return os.environ.get("TOLLGATE_SMOKE") == "1" and all(os.environ.get(v) for v in needed)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_real_provider_answers_plain_and_streamed(provider):
    if not enabled(provider):
        pytest.skip(f"set TOLLGATE_SMOKE=1 and {', '.join(PROVIDERS[provider][0])} to run")
    _, default_model, extra = PROVIDERS[provider]
    model = os.environ.get(f"TOLLGATE_SMOKE_{provider.upper()}_MODEL", default_model)
    models = f"""
[[models.smoke.deployments]]
provider = "{provider}"
model = "{model}"
{extra}
"""
    with running_gateway(models) as url:
        c = openai.OpenAI(base_url=url, api_key=MASTER, max_retries=0)
        r = c.chat.completions.create(
            model="smoke", max_tokens=20, messages=[{"role": "user", "content": "Say hi in one word."}]
        )
        assert r.choices[0].message.content
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        chunks = list(
            c.chat.completions.create(
                model="smoke",
                max_tokens=20,
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Say hi in one word."}],
            )
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert chunks[-1].usage.completion_tokens > 0
