"""The `cluster:` section and the config each node runs (`cluster.nodes`), without Ray."""

from __future__ import annotations

import logging

import pytest

from llamaswap.cluster.nodes import (
    allowed_models,
    cluster_problems,
    node_for_resources,
    node_tree,
)
from llamaswap.config.load import build_config, load_config_text, parse_config_text
from llamaswap.serve import report_findings

CONFIG = """
models:
  m1: {cmd: run m1, proxy: "http://127.0.0.1:9001", aliases: [one]}
  m2: {cmd: run m2, proxy: "http://127.0.0.1:9002"}
  m3: {cmd: run m3, proxy: "http://127.0.0.1:9003"}
groups:
  g: {members: [m1, m2, m3]}
hooks:
  on_startup: {preload: [one, m3]}
selectors:
  any: {strategy: warm, targets: [m1, m3]}
cluster:
  nodes:
    box-a: {resources: {box_a: 1}, models: [one, m2]}
    box-b:
      resources: {box_b: 1, gpu_big: 2}
      startPort: 7000
      devices: {gpu0: {memory: 24GiB}}
"""


def test_the_cluster_section_loads_without_warnings() -> None:
    config = load_config_text(CONFIG)
    assert config.warnings == []
    assert config.cluster is not None
    assert config.cluster.nodes["box-b"].start_port == 7000
    assert cluster_problems(config) == []


def test_a_node_may_run_its_listed_models_or_every_model() -> None:
    config = load_config_text(CONFIG)
    assert config.cluster is not None
    assert allowed_models(config, config.cluster.nodes["box-a"]) == ["m1", "m2"]
    assert allowed_models(config, config.cluster.nodes["box-b"]) == ["m1", "m2", "m3"]


def test_a_nodes_config_keeps_only_its_models() -> None:
    config = load_config_text(CONFIG)
    tree = node_tree(parse_config_text(CONFIG), config, "box-a")
    node = build_config(tree)
    assert sorted(node.models) == ["m1", "m2"]
    assert node.group_map()["g"].members == ["m1", "m2"]
    assert node.hooks.on_startup.preload == ["m1"]  # `one` is m1; m3 is not on box-a
    assert node.selectors == {}
    assert node.cluster is None


def test_a_nodes_own_devices_and_ports_replace_the_top_level_ones() -> None:
    config = load_config_text(CONFIG)
    node = build_config(node_tree(parse_config_text(CONFIG), config, "box-b"))
    assert node.start_port == 7000
    assert list(node.devices) == ["gpu0"]
    assert sorted(node.models) == ["m1", "m2", "m3"]


def test_a_ray_node_is_the_cluster_node_whose_resources_it_has() -> None:
    config = load_config_text(CONFIG)
    assert config.cluster is not None
    assert node_for_resources(config.cluster, {"CPU": 8, "box_a": 1}) == "box-a"
    assert node_for_resources(config.cluster, {"box_b": 1, "gpu_big": 2}) == "box-b"
    assert node_for_resources(config.cluster, {"box_b": 1, "gpu_big": 1}) is None
    assert node_for_resources(config.cluster, {"CPU": 8}) is None


def test_a_config_no_cluster_can_run_is_explained() -> None:
    assert cluster_problems(load_config_text("models: {}\n")) == [
        "the config has no `cluster.nodes` section (docs/cluster.md)"
    ]
    bad = load_config_text(
        CONFIG.replace("models: [one, m2]", "models: [nope]").replace(
            "{box_b: 1, gpu_big: 2}", "{box_a: 1}"
        )
    )
    assert cluster_problems(bad) == [
        "cluster.nodes.box-a.models: unknown model 'nope'",
        "cluster.nodes.box-b: same resources as node 'box-a'",
    ]


def test_one_machine_ignores_the_cluster_section_with_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="llamaswap"):
        report_findings(load_config_text(CONFIG))
    assert [r.getMessage() for r in caplog.records if "cluster" in r.getMessage()] == [
        "config: `cluster:` is read by `llamaswap cluster` only; one machine ignores it"
    ]
