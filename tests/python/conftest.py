"""The gateways the SDK tests talk to: `tollgate serve` with the built-in mock
upstream, started once per test module."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

MASTER = "sk-sdk-test-master"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_gateway(models, mock_port=0):
    """`tollgate serve` with the common settings plus `models` (TOML); yields
    its OpenAI base URL and stops it (cleanly) afterwards."""
    binary = os.environ.get("TOLLGATE_BIN", os.path.join(ROOT, "target", "debug", "tollgate"))
    port = free_port()
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
port = {mock_port}
chunks = 5
{models}
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
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


@pytest.fixture(scope="module")
def gateway():
    with running_gateway(
        """
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
    ) as url:
        yield url
