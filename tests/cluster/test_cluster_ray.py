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
from click.testing import CliRunner

from helpers import free_port, free_port_block, wait_until_sync

ray = pytest.importorskip("ray")
# Ray's own modules warn at import (pydantic v1-style fields): not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ray.cluster_utils import Cluster

    from llamaswap.cli import cli
    from llamaswap.cluster.app import ClusterOptions, deploy, read_cluster_config, teardown

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]

FAKE = f"{sys.executable} -m llamaswap.testing.fake_upstream --silent"


def fake(name: str, options: str = "") -> str:
    return (
        f"  {name}:\n"
        f"    cmd: {FAKE} --port ${{PORT}} --model ${{MODEL_ID}}{options}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def cluster_config() -> str:
    """Both "machines" are this one: each node gets its own block of model ports."""
    a, b = free_port_block(10), free_port_block(10)
    return CONFIG + (
        "cluster:\n  nodes:\n"
        f"    box-a: {{resources: {{box_a: 1}}, models: [only-a, shared], startPort: {a}}}\n"
        f"    box-b: {{resources: {{box_b: 1}}, models: [shared, only-b, slow-b], "
        f"startPort: {b}}}\n"
    )


CONFIG = (
    "healthCheckTimeout: 30\n"
    "models:\n"
    + fake("only-a")
    + fake("shared")
    + fake("only-b")
    # Never ready while a test runs: a request for it waits on its node, answered by nothing.
    + fake("slow-b", " --startup-delay 120")
    + """groups:
  one:
    swap: true
    exclusive: true
    members: [only-a, shared, only-b]
  slow:
    swap: true
    exclusive: false
    members: [slow-b]
"""
)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

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
    # The router's view of each node lags by up to a second, so the nodes are chosen such
    # that the view before this test and the one after agree: `shared` was last on `home`
    # (the previous test put it there, on whichever node Ray picked), `home` ends up
    # holding nothing and `other` one model, so `home` is the right answer either way.
    status, headers, body = client.chat("shared")
    assert status == 200, body
    home = headers["x-llamaswap-node"]
    other = "box-b" if home == "box-a" else "box-a"
    status, _, body = client.call("POST", "/api/models/unload")
    assert status == 200, body
    assert client.running() == []
    only_other = "only-b" if other == "box-b" else "only-a"
    assert client.chat(only_other)[0] == 200  # `other` now holds a model; `home` none
    for _ in range(3):  # and `home` stays the cheaper place while its report catches up
        status, headers, body = client.chat("shared")
        assert status == 200, body
        assert headers["x-llamaswap-node"] == home
    ready = {(e["model"], e["node"]) for e in client.running() if e["state"] == "ready"}
    assert ready == {(only_other, other), ("shared", home)}


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
    assert [m["id"] for m in json.loads(body)["data"]] == ["only-a", "only-b", "shared", "slow-b"]


def test_ollamas_model_lists_hold_every_nodes_models_once(client: Client) -> None:
    status, _, body = client.call("GET", "/api/tags")
    assert status == 200, body
    names = [m["name"] for m in json.loads(body)["models"]]
    assert [n.split(":")[0] for n in names] == ["only-a", "only-b", "shared", "slow-b"]
    client.chat("only-a")
    client.chat("only-b")
    status, _, body = client.call("GET", "/api/ps")
    assert status == 200, body
    loaded = {m["name"].split(":")[0] for m in json.loads(body)["models"]}
    assert {"only-a", "only-b"} <= loaded


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


def test_metrics_merge_every_nodes_series_with_a_node_label(client: Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    assert client.chat("only-a")[0] == 200
    assert client.chat("only-b")[0] == 200
    status, headers, body = client.call("GET", "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    families = list(text_string_to_metric_families(text))
    for family in families:  # one HELP and TYPE per family, whatever the number of nodes
        assert text.count(f"# TYPE {family.name}") <= 2  # `x` and `x_created` share a prefix
    requests = {
        (s.labels["node"], s.labels["model"])
        for f in families
        if f.name == "llamaswap_requests"
        for s in f.samples
        if s.name == "llamaswap_requests_total"
    }
    assert {("box-a", "only-a"), ("box-b", "only-b")} <= requests
    assert ("box-a", "only-b") not in requests
    assert all("node" in s.labels for f in families for s in f.samples)


class Events:
    """An open `/api/events` stream through the ingress, read frame by frame."""

    def __init__(self, port: int, query: str = "") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/api/events" + query)
        self.response = self.conn.getresponse()

    def next(self) -> dict[str, Any]:
        """The next event's envelope (`type`, `data`, `node`)."""
        while True:
            line = self.response.readline()
            assert line, "the event stream ended"
            if line.startswith(b"data:"):
                envelope: dict[str, Any] = json.loads(line[len(b"data:") :])
                return envelope

    def until(self, found: Any, limit: int = 500) -> dict[str, Any]:
        for _ in range(limit):
            event = self.next()
            if found(event):
                return event
        raise AssertionError("no such event")

    def ended(self, limit: int = 10_000) -> bool:
        """Whether the stream ends within `limit` more lines (each within the timeout)."""
        return any(not self.response.readline() for _ in range(limit))

    def close(self) -> None:
        self.conn.close()


def test_events_merge_every_nodes_stream_each_event_naming_its_node(client: Client) -> None:
    events = Events(client.port)
    try:
        assert events.response.status == 200
        assert "text/event-stream" in events.response.getheader("content-type", "")
        first = events.next()
        assert first["type"] == "clusterNodes"
        assert [n["node"] for n in json.loads(first["data"]) if n["streaming"]] == [
            "box-a",
            "box-b",
        ]
        snapshots: dict[str, list[str]] = {}
        while len(snapshots) < 2:
            event = events.until(lambda e: e["type"] == "modelStatus")
            snapshots[event["node"]] = [m["id"] for m in json.loads(event["data"])]
        assert snapshots == {"box-a": ["only-a", "shared"], "box-b": ["only-b", "shared", "slow-b"]}
        # Live events keep coming, from the node that served the request.
        assert client.chat("only-b")[0] == 200
        live = events.until(lambda e: e["type"] == "inflight" and "only-b" in e["data"])
        assert live["node"] == "box-b"
    finally:
        events.close()
    one = Events(client.port, "?node=box-a")
    try:
        first = one.next()
        assert [n["node"] for n in json.loads(first["data"]) if n["streaming"]] == ["box-a"]
        nodes = [one.next()["node"] for _ in range(6)]
        assert set(nodes) == {"box-a"}
    finally:
        one.close()
    status, _, body = client.call("GET", "/api/events?node=box-z")
    assert status == 400 and "box-z" in json.loads(body)["error"]["message"]


def test_ps_through_the_ingress_shows_each_models_node(client: Client) -> None:
    from llamaswap.client_cli import Server, ps_table, running  # noqa: PLC0415

    assert client.chat("only-a")[0] == 200
    assert client.chat("only-b")[0] == 200
    table = ps_table(running(Server(f"http://127.0.0.1:{client.port}")))
    rows = [line.split() for line in table.splitlines()]
    assert rows[0][:2] == ["NODE", "MODEL"]
    assert ["box-a", "only-a", "ready"] in [r[:3] for r in rows]
    assert ["box-b", "only-b", "ready"] in [r[:3] for r in rows]


def stream_chat(port: int, model: str, chunks: int, delay_ms: int) -> Iterator[bytes]:
    """The lines of a slow streamed answer (the fake upstream spaces its chunks)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        conn.request(
            "POST",
            f"/v1/chat/completions?chunks={chunks}&chunk_delay={delay_ms}",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200
        while line := response.readline():
            yield line
    finally:
        conn.close()


def test_a_drained_node_gets_no_new_requests_finishes_its_own_and_unloads(
    client: Client,
) -> None:
    status, headers, _ = client.chat("shared")
    assert status == 200
    home = headers["x-llamaswap-node"]
    other = "box-b" if home == "box-a" else "box-a"
    only_home = "only-a" if home == "box-a" else "only-b"
    # A slow answer in flight on the node when it starts draining.
    lines = stream_chat(client.port, "shared", chunks=15, delay_ms=100)
    started = next(lines)
    assert started.startswith(b"data:")
    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(lambda: b"".join(lines))
        status, _, body = client.call("POST", "/cluster/drain", {"node": home})
        assert status == 200, body
        assert json.loads(body) == {"node": home, "draining": True, "nodeAnswered": True}
        try:
            # New requests for the model go to the other node, at once.
            status, headers, _ = client.chat("shared")
            assert status == 200
            assert headers["x-llamaswap-node"] == other
            # A model only the drained node may run: a clear 503 naming it.
            status, _, refused = client.chat(only_home)
            assert status == 503
            assert home in refused["error"]["message"]
            assert "draining" in refused["error"]["message"]
            status, _, doc = client.call("GET", "/running")
            nodes = {n["node"]: n["draining"] for n in json.loads(doc)["nodes"]}
            assert nodes == {home: True, other: False}
            # The request in flight finishes whole; then the idle model is unloaded.
            assert b"[DONE]" in rest.result(timeout=30)
            assert wait_until_sync(
                lambda: not [e for e in client.running() if e["node"] == home], timeout=15
            )
        finally:  # the CLI's way back
            undo = CliRunner().invoke(cli, ["drain", home, "--undo", "--url", client.url])
            assert undo.exit_code == 0, undo.output
            assert undo.output == f"{home} serves again\n"
    status, headers, _ = client.chat(only_home)
    assert status == 200
    assert headers["x-llamaswap-node"] == home
    status, _, doc = client.call("GET", "/running")
    assert not any(n["draining"] for n in json.loads(doc)["nodes"])
    unknown = CliRunner().invoke(cli, ["drain", "box-z", "--url", client.url])
    assert unknown.exit_code == 1
    assert "no node 'box-z'" in unknown.output and "box-a, box-b" in unknown.output


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
    # Two requests on box-b when it dies: an answer half streamed, and one still waiting
    # for its model to load (nothing sent back yet).
    lines = stream_chat(client.port, "only-b", chunks=300, delay_ms=50)
    assert next(lines).startswith(b"data:")
    with ThreadPoolExecutor(2) as pool:
        rest = pool.submit(lambda: b"".join(lines))
        waiting = pool.submit(client.chat, "slow-b")
        assert wait_until_sync(
            lambda: any(e["model"] == "slow-b" for e in client.running()), timeout=15
        )
        events = Events(client.port)
        assert events.next()["type"] == "clusterNodes"
        ray.kill(replica_actor_on("box_b"), no_restart=True)
        # The merged event stream ends with box-b's (a client reconnects to the survivors).
        assert events.ended()
        events.close()
        cut = rest.result(timeout=30)
        assert b"[DONE]" not in cut
        assert b"box-b failed mid-answer" in cut  # an SSE error event, not a silent end
        status, _, refused = waiting.result(timeout=30)
        assert status == 503
        assert refused["error"]["type"] == "service_unavailable"
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
