"""`/api/performance`, `/api/hardware` and the host gauges of `/metrics`, over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from helpers import wait_until
from inprocess import fake_models_yaml, running_llamaswap
from llamaswap.config.load import load_config_text
from llamaswap.config.model import PerformanceConfig
from llamaswap.observe import hardware
from llamaswap.observe.performance import PerformanceSettings, format_rfc3339
from llamaswap.server.state import performance_settings

MODELS = fake_models_yaml(["m"])
DISABLED = "performance:\n  disabled: true\n" + MODELS


def test_performance_settings_from_the_config() -> None:
    assert performance_settings(PerformanceConfig()) == PerformanceSettings(False, 5.0)
    config = PerformanceConfig(every="1m30s", disabled=True)
    assert performance_settings(config) == PerformanceSettings(True, 90.0)


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def metric_names(session: aiohttp.ClientSession, base: str) -> set[str]:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


async def test_the_app_samples_on_its_own_while_it_runs() -> None:
    async with running_llamaswap(MODELS) as (base, state), aiohttp.ClientSession() as session:
        # The first sample comes a second after startup, then every `performance.every`.
        await wait_until(lambda: state.performance.latest() is not None, message="a sample")
        status, body = await get_json(session, f"{base}/api/performance")
        assert status == 200
        assert len(body["sys_stats"]) >= 1


async def test_performance_returns_samples_and_filters_by_after() -> None:
    async with running_llamaswap(MODELS) as (base, state), aiohttp.ClientSession() as session:
        first = await state.performance.sample_now()
        second = await state.performance.sample_now()
        assert first is not None
        assert second is not None
        status, body = await get_json(session, f"{base}/api/performance")
        assert status == 200
        assert body["enabled"] is True
        assert body["gpu_stats"] == []  # no GPU tool on the test hosts
        stamps = [s["timestamp"] for s in body["sys_stats"]]
        assert format_rfc3339(first.timestamp) in stamps
        assert format_rfc3339(second.timestamp) in stamps
        entry = body["sys_stats"][-1]
        assert entry["mem_total_mb"] > 0
        assert len(entry["cpu_util_per_core"]) >= 1

        after = format_rfc3339(first.timestamp)
        status, body = await get_json(session, f"{base}/api/performance?after={after}")
        assert status == 200
        stamps = [s["timestamp"] for s in body["sys_stats"]]
        assert after not in stamps
        assert format_rfc3339(second.timestamp) in stamps

        # An offset other than Z names the same instant.
        offset = "2999-01-01T01:00:00+01:00"
        params = {"after": offset}
        async with session.get(f"{base}/api/performance", params=params) as resp:
            assert resp.status == 200
            assert (await resp.json())["sys_stats"] == []


@pytest.mark.parametrize("after", ["yesterday", "2024-01-01", "2024-01-01T10:00:00"])
async def test_bad_after_is_a_400_in_the_error_envelope(after: str) -> None:
    async with running_llamaswap(MODELS) as (base, _), aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/performance", params={"after": after}) as resp:
            assert resp.status == 400
            body = await resp.json()
        assert body["error"]["message"] == "invalid 'after' timestamp, use RFC3339 format"


async def test_disabled_is_a_503_and_metrics_keep_request_counters() -> None:
    async with running_llamaswap(DISABLED) as (base, state), aiohttp.ClientSession() as session:
        assert await state.performance.sample_now() is None
        assert await get_json(session, f"{base}/api/performance") == (503, {"enabled": False})
        names = await metric_names(session, base)
        assert "llamaswap_queue_depth" in names
        assert not {n for n in names if n.startswith(("llamaswap_cpu", "llamaswap_memory"))}


async def test_metrics_show_host_gauges_after_a_sample() -> None:
    async with running_llamaswap(MODELS) as (base, state), aiohttp.ClientSession() as session:
        await state.performance.sample_now()
        names = await metric_names(session, base)
        for name in (
            "llamaswap_cpu_util_percent",
            "llamaswap_memory_total_bytes",
            "llamaswap_memory_used_bytes",
            "llamaswap_memory_free_bytes",
            "llamaswap_swap_total_bytes",
            "llamaswap_swap_used_bytes",
            "llamaswap_load_average",
            "llamaswap_queue_depth",
        ):
            assert name in names, name


async def test_reload_switches_sampling_off_and_on() -> None:
    async with running_llamaswap(MODELS) as (base, state), aiohttp.ClientSession() as session:
        await state.performance.sample_now()
        start_port = state.config.start_port
        state.reconfigure_observe(load_config_text(f"startPort: {start_port}\n" + DISABLED))
        assert await get_json(session, f"{base}/api/performance") == (503, {"enabled": False})
        assert "llamaswap_memory_total_bytes" not in await metric_names(session, base)

        enabled = f"startPort: {start_port}\nperformance:\n  every: 10s\n" + MODELS
        state.reconfigure_observe(load_config_text(enabled))
        assert state.performance.every == 10
        await state.performance.sample_now()
        status, body = await get_json(session, f"{base}/api/performance")
        assert status == 200
        assert len(body["sys_stats"]) == 1  # the history started again


async def test_hardware_snapshot() -> None:
    async with running_llamaswap(MODELS) as (base, _), aiohttp.ClientSession() as session:
        status, body = await get_json(session, f"{base}/api/hardware")
        assert status == 200
        assert body["hostname"]
        assert body["operating_system"]["kernel"]
        assert body["cpu"]["logical_thread_count"] >= 1
        assert body["memory"]["capacity_bytes"] > 0
        assert body["accelerators"] == []
        assert await get_json(session, f"{base}/api/hardware") == (200, body)  # cached


async def test_hardware_detection_failure_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, Any]:
        raise hardware.HardwareError("hardware detection failed: no /proc")

    monkeypatch.setattr(hardware, "read_hardware", broken)
    async with running_llamaswap(MODELS) as (base, _), aiohttp.ClientSession() as session:
        status, body = await get_json(session, f"{base}/api/hardware")
        assert status == 503
        assert body["error"]["message"] == "hardware detection failed: no /proc"


@pytest.mark.parametrize("path", ["/api/performance", "/api/hardware"])
async def test_routes_need_the_api_key(path: str) -> None:
    config = 'apiKeys: ["sk-one"]\n' + MODELS
    async with running_llamaswap(config) as (base, _), aiohttp.ClientSession() as session:
        async with session.get(f"{base}{path}") as resp:
            assert resp.status == 401
        headers = {"Authorization": "Bearer sk-one"}
        async with session.get(f"{base}{path}", headers=headers) as resp:
            assert resp.status == 200
