"""Every example config in examples/ loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.config import config_schema, load_config, summarize

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert any(p.name == "fake.yaml" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    config = load_config(path, env={"HOME": "/home/someone", "MODELS": "/models"})
    assert config.models
    assert summarize(config)


def test_fake_example_shape() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "fake.yaml", env={})
    assert len(config.models) == 3
    for m in config.models.values():
        assert "llamaswap.testing.fake_upstream" in m.cmd
        assert m.proxy.startswith("http://")
    groups = config.group_map()
    assert any(g.swap and len(g.members) == 2 for g in groups.values())


def test_schema_uses_yaml_spellings() -> None:
    schema = config_schema()
    assert "healthCheckTimeout" in schema["properties"]
    assert "globalTTL" in schema["properties"]


def test_placement_example_declares_devices_and_resources() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "placement.yaml", env={})
    assert set(config.devices) == {"gpu0", "gpu1"}
    assert all(m.resources is not None for m in config.models.values())
    assert config.models["chat-small"].sleep is not None
