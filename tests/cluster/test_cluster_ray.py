"""A llamaswap cluster on a real local Ray cluster: two Ray nodes standing for two machines
(custom resources `box_a`, `box_b`), fake upstreams, the OpenAI SDK through Serve's proxy.

One cluster and one deployment serve the module (starting Ray and Serve takes ~20 s);
tests that kill a node replica run last.
"""

from __future__ import annotations

import http.client
import json
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port, free_port_block, wait_until_sync

ray = pytest.importorskip("ray")
# Ray's own modules warn at import (pydantic v1-style fields): not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ray.cluster_utils import Cluster

    from llamaswap.cluster.app import ClusterOptions, deploy, read_cluster_config, teardown

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]

FAKE = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"


def fake(name: str) -> str:
    return (
        f"  {name}:\n"
        f"    cmd: {FAKE} --port ${{PORT}} --model ${{MODEL_ID}}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def cluster_config() -> str:
    """Both "machines" are this one: each node gets its own block of model ports."""
    a, b = free_port_block(10), free_port_block(10)
    return CONFIG + (
        "cluster:\n  nodes:\n"
        f"    box-a: {{resources: {{box_a: 1}}, models: [only-a, shared], startPort: {a}}}\n"
        f"    box-b: {{resources: {{box_b: 1}}, models: [shared, only-b], startPort: {b}}}\n"
    )


CONFIG = (
    "healthCheckTimeout: 30\n"
    "models:\n"
    + fake("only-a")
    + fake("shared")
    + fake("only-b")
    + """groups:
  one:
    swap: true
    exclusive: true
    members: [only-a, shared, only-b]
"""
)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def chat(self, model: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers, body = self.call(
            "POST",
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        return status, headers, json.loads(body)

    def running(self) -> list[dict[str, Any]]:
        status, _, body = self.call("GET", "/running")
        assert status == 200, body
        entries: list[dict[str, Any]] = json.loads(body)["running"]
        return entries


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    path = Path(tmp_path_factory.mktemp("cluster")) / "cluster.yaml"
    path.write_text(cluster_config())
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"llamaswap": 1, "box_a": 1}},
    )
    cluster.add_node(num_cpus=1, resources={"llamaswap": 1, "box_b": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    try:
        text, config = read_cluster_config(path)
        deploy(ClusterOptions(path, port=port), text, config)
        yield Client(port)
    finally:
        teardown()
        ray.shutdown()
        cluster.shutdown()


def test_a_model_only_node_a_may_run_goes_to_a(client: Client) -> None:
    status, headers, body = client.chat("only-a")
    assert status == 200, body
    assert headers["x-llamaswap-node"] == "box-a"
    assert body["model"] == "only-a"


def test_a_model_only_node_b_may_run_goes_to_b(client: Client) -> None:
    status, headers, body = client.chat("only-b")
    assert status == 200, body
    assert headers["x-llamaswap-node"] == "box-b"


def test_a_model_loaded_on_one_node_keeps_going_there(client: Client) -> None:
    status, headers, body = client.chat("shared")
    assert status == 200, body
    home = headers["x-llamaswap-node"]
    for _ in range(5):
        status, headers, again = client.chat("shared")
        assert status == 200, again
        assert headers["x-llamaswap-node"] == home
        assert again["pid"] == body["pid"]  # the same upstream process: nothing reloaded
    shared = [e for e in client.running() if e["model"] == "shared"]
    assert [(e["node"], e["state"]) for e in shared] == [(home, "ready")]


def test_a_model_no_node_holds_loads_where_nothing_is_evicted(client: Client) -> None:
    status, _, body = client.call("POST", "/api/models/unload")
    assert status == 200, body
    assert client.running() == []
    assert client.chat("only-b")[0] == 200  # box-b now holds a model; box-a holds none
    for _ in range(3):  # and stays the cheaper place while its report catches up
        status, headers, body = client.chat("shared")
        assert status == 200, body
        assert headers["x-llamaswap-node"] == "box-a"
    ready = {(e["model"], e["node"]) for e in client.running() if e["state"] == "ready"}
    assert ready == {("only-b", "box-b"), ("shared", "box-a")}


def test_concurrent_requests_for_models_on_different_nodes_each_reach_their_node(
    client: Client,
) -> None:
    models = ["only-a", "only-b"] * 6
    with ThreadPoolExecutor(len(models)) as pool:
        replies = list(pool.map(client.chat, models))
    for model, (status, headers, body) in zip(models, replies, strict=True):
        assert status == 200, body
        assert body["model"] == model
        assert headers["x-llamaswap-node"] == ("box-a" if model == "only-a" else "box-b")


def test_models_lists_every_nodes_models_once(client: Client) -> None:
    status, _, body = client.call("GET", "/v1/models")
    assert status == 200, body
    assert [m["id"] for m in json.loads(body)["data"]] == ["only-a", "only-b", "shared"]


def test_running_names_each_models_node(client: Client) -> None:
    client.chat("only-a")
    client.chat("only-b")
    nodes = {(e["model"], e["node"]) for e in client.running() if e["state"] == "ready"}
    assert ("only-a", "box-a") in nodes
    assert ("only-b", "box-b") in nodes


def test_the_openai_sdk_streams_through_the_ingress(client: Client) -> None:
    import openai  # noqa: PLC0415 - a test extra

    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{client.port}/v1", api_key="x")
    stream = sdk.chat.completions.create(
        model="only-b", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    chunks = list(stream)
    assert len(chunks) > 1
    assert all(c.model == "only-b" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_an_unknown_model_gets_llamaswaps_error(client: Client) -> None:
    status, _, body = client.call("POST", "/v1/chat/completions", {"model": "nope", "messages": []})
    assert 400 <= status < 500, body
    assert "error" in json.loads(body)


def replica_actor_on(resource: str) -> Any:
    """The live node replica actor placed on the Ray node that has `resource`."""
    from ray.util.state import list_actors  # noqa: PLC0415

    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        if actor.class_name.endswith(":node") and actor.node_id in node_ids:
            return ray.get_actor(actor.name, namespace=actor.ray_namespace)
    raise AssertionError(f"no node replica on the node with {resource}")


def test_killing_a_node_replica_leaves_the_others_serving(client: Client) -> None:
    status, _, before = client.chat("only-b")
    assert status == 200, before
    ray.kill(replica_actor_on("box_b"), no_restart=True)
    # The other node serves on, at once and every time.
    for _ in range(5):
        status, headers, body = client.chat("only-a")
        assert status == 200, body
        assert headers["x-llamaswap-node"] == "box-a"
    # The killed node's upstream does not outlive it.
    import psutil  # noqa: PLC0415

    assert wait_until_sync(lambda: not psutil.pid_exists(before["pid"]), timeout=15)
    # Serve starts a new replica on that machine; requests for its models wait for it (the
    # request router never sends them to box-a) and are served again.
    status, headers, after = client.chat("only-b")
    assert status == 200, after
    assert headers["x-llamaswap-node"] == "box-b"
    assert after["pid"] != before["pid"]
