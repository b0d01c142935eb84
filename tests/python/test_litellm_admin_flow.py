"""A LiteLLM admin script, as teams write them against LiteLLM's management
API with a plain HTTP client: organization → team → users by email →
internal users' self-service keys → usage → info endpoints. It must run
against tollgate unchanged."""

import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import MASTER, running_gateway


class Proxy:
    def __init__(self, base):
        self.base = base.removesuffix("/v1")

    def call(self, method, path, key, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ok(self, method, path, key, body=None):
        status, out = self.call(method, path, key, body)
        assert status == 200, (path, status, out)
        return out


@pytest.fixture(scope="module")
def proxy():
    with running_gateway(
        """
[[models.gpt-4o.deployments]]
provider = "mock"
model = "mock-gpt"
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002
[[models.claude.deployments]]
provider = "mock"
model = "mock-gpt"
"""
    ) as url:
        yield Proxy(url)


def test_admin_flow(proxy):
    # The platform team sets up an organization limited to one model.
    org = proxy.ok("POST", "/organization/new", MASTER,
                   {"organization_alias": "Research", "models": ["gpt-4o"], "max_budget": 100})
    org_id = org["organization_id"]

    # A team in it, members given by email only (as HR exports them).
    team = proxy.ok("POST", "/team/new", MASTER, {
        "team_alias": "nlp", "organization_id": org_id,
        "members_with_roles": [
            {"user_email": "lead@corp.example", "role": "admin"},
            {"user_email": "dev@corp.example", "role": "user"},
        ],
    })
    team_id = team["team_id"]
    members = {m["user_id"] for m in team["members_with_roles"]}
    assert len(members) == 3  # two by email, plus the creator

    # The users exist now, with LiteLLM's default role; find them by email.
    users = proxy.ok("GET", "/user/list?user_email=corp.example&sort_by=user_email", MASTER)["users"]
    assert [u["user_email"] for u in users] == ["dev@corp.example", "lead@corp.example"]
    assert all(u["user_role"] == "internal_user" for u in users)
    dev_id = users[0]["user_id"]

    # The admin gives the developer a login key; the developer then serves
    # themself: a team key for their app.
    dev_login = proxy.ok("POST", "/key/generate", MASTER, {"user_id": dev_id})["key"]
    app = proxy.ok("POST", "/key/generate", dev_login,
                   {"team_id": team_id, "key_alias": "nlp-app", "max_budget": 5})
    assert app["user_id"] == dev_id and app["team_id"] == team_id

    # A developer cannot mint keys for others, nor use admin routes.
    status, err = proxy.call("POST", "/key/generate", dev_login, {"user_id": "someone-else"})
    assert status == 403, err
    status, err = proxy.call("POST", "/user/new", dev_login, {"user_id": "x"})
    assert status == 401 and err["error"]["code"] == "401", err

    # Usage: the app key calls the organization's model; the other is refused.
    for _ in range(3):
        status, out = proxy.call("POST", "/v1/chat/completions", app["key"],
                                 {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, out
    status, err = proxy.call("POST", "/v1/chat/completions", app["key"],
                             {"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 403 and err["error"]["type"] == "org_model_access_denied", err

    # Info endpoints see the spend, key, team and organization alike.
    deadline = time.time() + 10
    while True:
        info = proxy.ok("GET", f"/key/info?key={app['key']}", dev_login)["info"]
        org_info = proxy.ok("GET", f"/organization/info?organization_id={org_id}", MASTER)
        if info["spend"] > 0 and org_info["spend"] > 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert info["spend"] > 0
    assert org_info["spend"] == pytest.approx(info["spend"])
    assert [t["team_id"] for t in org_info["teams"]] == [team_id]

    team_info = proxy.ok("GET", f"/team/info?team_id={team_id}", dev_login)
    assert team_info["team_info"]["spend"] == pytest.approx(info["spend"])
    mine = proxy.ok("GET", "/key/list", dev_login)
    assert mine["total_count"] == 2  # their login key and the app key

    # Offboarding: the team admin removes the developer by email.
    lead_login = proxy.ok("POST", "/key/generate", MASTER, {"user_id": users[1]["user_id"]})["key"]
    proxy.ok("POST", "/team/member_delete", lead_login, {"team_id": team_id, "user_email": "dev@corp.example"})
    status, _ = proxy.call("GET", f"/team/info?team_id={team_id}", dev_login)
    assert status == 403
