"""Deploying the cluster application: node replicas, request router, ingress."""

from __future__ import annotations

import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Application

from llamaswap.cluster.ingress import Ingress
from llamaswap.cluster.node_replica import NodeReplica
from llamaswap.cluster.nodes import (
    NODE_RESOURCE,
    NODE_RESOURCE_SHARE,
    allowed_models,
    cluster_problems,
)
from llamaswap.cluster.request_router import STATS_PERIOD_S, ResidencyRouter
from llamaswap.config.load import load_config_text
from llamaswap.config.model import Config
from llamaswap.errors import ConfigError, ConfigProblem

log = logging.getLogger("llamaswap.cluster")

APP_NAME = "llamaswap"
# Requests a node replica takes at once before Serve queues at the ingress; the node's own
# scheduler does the real queueing (per model), so this only bounds one replica's load.
NODE_MAX_ONGOING = 1000
# How long `deploy` waits for Serve's proxy to route to the deployed ingress, and how often
# it looks.
ROUTES_TIMEOUT_S = 30.0
ROUTES_POLL_S = 0.1


@dataclass(frozen=True)
class ClusterOptions:
    config_path: Path
    address: str | None = None  # None: start a local Ray; "auto" or ray://... to connect
    host: str = "127.0.0.1"
    port: int = 8080


def read_cluster_config(path: Path) -> tuple[str, Config]:
    """The config's text and its typed form; a config no cluster can run is a ConfigError."""
    text = path.read_text(encoding="utf-8")
    config = load_config_text(text, str(path))
    problems = cluster_problems(config)
    if problems:
        raise ConfigError([ConfigProblem("cluster", p) for p in problems], str(path))
    return text, config


def build_application(text: str, config: Config, source: str) -> Application:
    assert config.cluster is not None
    nodes = config.cluster.nodes
    router_nodes: dict[str, Any] = {
        name: {"resources": dict(node.resources), "models": allowed_models(config, node)}
        for name, node in nodes.items()
    }
    router_options: dict[str, Any] = {
        "request_router_class": ResidencyRouter,
        "request_router_kwargs": {"nodes": router_nodes},
        "request_routing_stats_period_s": STATS_PERIOD_S,
        "request_routing_stats_timeout_s": 5.0,
    }
    node_deployment = serve.deployment(
        name="node",
        num_replicas=len(nodes),
        max_replicas_per_node=1,
        max_ongoing_requests=NODE_MAX_ONGOING,
        ray_actor_options={"num_cpus": 0, "resources": {NODE_RESOURCE: NODE_RESOURCE_SHARE}},
        request_router_config=RequestRouterConfig(**router_options),
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
        graceful_shutdown_timeout_s=15.0,
    )(NodeReplica)
    ingress = serve.deployment(
        name="ingress",
        num_replicas=1,
        max_ongoing_requests=NODE_MAX_ONGOING,
        ray_actor_options={"num_cpus": 0},
    )(Ingress)
    return ingress.bind(node_deployment.bind(text, source), text, source)


def local_resources(config: Config) -> dict[str, float]:
    """A Ray started here stands for one machine: the config's only node."""
    assert config.cluster is not None
    if len(config.cluster.nodes) != 1:
        raise ConfigError(
            [
                ConfigProblem(
                    "cluster.nodes",
                    f"a local Ray is one machine, the config has {len(config.cluster.nodes)} "
                    "nodes: start Ray on each machine and give --address auto (docs/cluster.md)",
                )
            ]
        )
    (node,) = config.cluster.nodes.values()
    return {NODE_RESOURCE: 1.0, **node.resources}


def deploy(options: ClusterOptions, text: str, config: Config) -> str:
    """Connect to (or start) Ray, start Serve's HTTP proxy on `host:port` and deploy; returns
    the URL clients use."""
    if not ray.is_initialized():
        if options.address is None:
            ray.init(resources=local_resources(config), log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(
        build_application(text, config, str(options.config_path)),
        name=APP_NAME,
        route_prefix="/",
    )
    probe = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    wait_for_routes(f"http://{probe}:{options.port}")
    return f"http://{options.host}:{options.port}"


def wait_for_routes(url: str, timeout_s: float = ROUTES_TIMEOUT_S) -> None:
    """Return once Serve's HTTP proxy routes to the ingress. `serve.run` returns when the
    application runs, but the proxy learns its route a moment later and until then answers
    404 `Path '/…' not found`; the ingress answers `/health` itself."""
    deadline = time.monotonic() + timeout_s
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
    while True:
        try:
            with direct.open(url + "/health", timeout=2.0) as response:
                if response.status == 200:
                    return
        except OSError as exc:  # refused, or the proxy's 404 (HTTPError is an OSError)
            if time.monotonic() > deadline:
                message = f"Serve's proxy at {url} does not route to the ingress: {exc}"
                raise RuntimeError(message) from exc
        time.sleep(ROUTES_POLL_S)


def teardown() -> None:
    """Delete the application (each node stops its models) and stop Serve."""
    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # nothing was deployed (interrupted early): nothing to delete
        log.info("nothing to delete: %s", exc)
    serve.shutdown()
