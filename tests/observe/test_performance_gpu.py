"""GPU tool parsers against recorded outputs, the tool runner, and the hardware snapshot."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from llamaswap.observe import gpu, hardware, performance
from llamaswap.observe.gpu import GpuInfo, GpuReading
from llamaswap.observe.hardware import HardwareCache, HardwareError, parse_cpuinfo

MIB = 1024 * 1024

# nvidia-smi --query-gpu=<NVIDIA_STATS_QUERY> --format=csv,noheader,nounits, two cards; the
# second one reports no memory temperature, fan or power (as consumer and passively cooled
# data-centre cards do).
NVIDIA_STATS = (
    "0, NVIDIA GeForce RTX 4090, GPU-5c0a2f3e-8d1b-4c59-9f61-0e3b7f1a2d44,"
    " 52, N/A, 97, 41, 20480, 24564, 65, 402.17\n"
    "1, NVIDIA A100-SXM4-80GB, GPU-0b8f4a1c-2222-4e3a-8f00-9d1e2c3b4a55,"
    " 34, [N/A], 0, 0, 4, 81920, [Not Supported], [N/A]\n"
)
NVIDIA_INFO = """\
0, NVIDIA GeForce RTX 4090, GPU-5c0a2f3e-8d1b-4c59-9f61-0e3b7f1a2d44, 24564, 550.54.14, 450.00
1, NVIDIA A100-SXM4-80GB, GPU-0b8f4a1c-2222-4e3a-8f00-9d1e2c3b4a55, 81920, 550.54.14, [N/A]
"""
# rocm-smi --showtemp --showuse --showmemuse --showmeminfo vram --showfan --showpower
#          --showproductname --showuniqueid --json (ROCm 6.x spelling)
ROCM_STATS = json.dumps(
    {
        "card0": {
            "Unique ID": "0x5b7c1a2f3e4d6c8b",
            "Temperature (Sensor edge) (C)": "51.0",
            "Temperature (Sensor junction) (C)": "58.0",
            "Temperature (Sensor memory) (C)": "64.0",
            "Fan speed (%)": "31",
            "Average Graphics Package Power (W)": "142.0",
            "GPU use (%)": "37",
            "GPU Memory Allocated (VRAM%)": "4",
            "VRAM Total Memory (B)": "25753026560",
            "VRAM Total Used Memory (B)": "1073741824",
            "Card Series": "Radeon RX 7900 XTX",
            "Card Model": "0x744c",
            "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
            "GFX Version": "gfx1100",
        },
        # An APU on an older ROCm: other power key, lower-case "series", no memory sensor.
        "card1": {
            "Temperature (Sensor edge) (C)": "39.0",
            "Current Socket Graphics Package Power (W)": "12.134",
            "GPU use (%)": "0",
            "GPU Memory Allocated (VRAM%)": "1",
            "Card series": "N/A",
            "Device Name": "Phoenix1",
            "VRAM Total Memory (B)": "4294967296",
            "VRAM Total Used Memory (B)": "72495104",
        },
    }
)
ROCM_INFO = json.dumps(
    {
        "card0": {
            "Card Series": "Radeon RX 7900 XTX",
            "Unique ID": "0x5b7c1a2f3e4d6c8b",
            "VRAM Total Memory (B)": "25753026560",
            "Max Graphics Package Power (W)": "355.0",
        },
        "system": {"Driver version": "6.7.0"},
    }
)


def test_nvidia_stats() -> None:
    first, second = gpu.parse_nvidia_stats(NVIDIA_STATS)
    assert first == GpuReading(
        id=0,
        name="NVIDIA GeForce RTX 4090",
        uuid="GPU-5c0a2f3e-8d1b-4c59-9f61-0e3b7f1a2d44",
        temp_c=52.0,
        vram_temp_c=None,
        util_pct=97.0,
        mem_util_pct=pytest.approx(20480 / 24564 * 100),
        mem_used_bytes=20480 * MIB,
        mem_total_bytes=24564 * MIB,
        fan_speed_pct=65.0,
        power_draw_w=402.17,
    )
    assert second.id == 1
    assert second.fan_speed_pct is None
    assert second.power_draw_w is None
    assert second.vram_temp_c is None
    assert second.mem_total_bytes == 81920 * MIB


def test_nvidia_info() -> None:
    first, second = gpu.parse_nvidia_info(NVIDIA_INFO)
    assert first == GpuInfo(
        index=0,
        vendor="NVIDIA",
        model="NVIDIA GeForce RTX 4090",
        uuid="GPU-5c0a2f3e-8d1b-4c59-9f61-0e3b7f1a2d44",
        memory_bytes=24564 * MIB,
        driver="550.54.14",
        power_limit_w=450.0,
    )
    assert second.power_limit_w is None


def test_rocm_stats() -> None:
    first, second = gpu.parse_rocm_stats(ROCM_STATS)
    assert first == GpuReading(
        id=0,
        name="Radeon RX 7900 XTX",
        uuid="0x5b7c1a2f3e4d6c8b",
        temp_c=51.0,
        vram_temp_c=64.0,
        util_pct=37.0,
        mem_util_pct=pytest.approx(1073741824 / 25753026560 * 100),
        mem_used_bytes=1073741824,
        mem_total_bytes=25753026560,
        fan_speed_pct=31.0,
        power_draw_w=142.0,
    )
    assert second.name == "Phoenix1"
    assert second.power_draw_w == 12.134
    assert second.vram_temp_c is None
    assert second.uuid == ""


def test_rocm_info_takes_the_driver_from_system() -> None:
    (card,) = gpu.parse_rocm_info(ROCM_INFO)
    assert card == GpuInfo(
        index=0,
        vendor="AMD",
        model="Radeon RX 7900 XTX",
        uuid="0x5b7c1a2f3e4d6c8b",
        memory_bytes=25753026560,
        driver="6.7.0",
        power_limit_w=355.0,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        "index, name\n0, x\n",
        "0, a, b, c\n",
    ],
)
def test_nvidia_garbage_is_no_cards(text: str) -> None:
    assert gpu.parse_nvidia_stats(text) == []
    assert gpu.parse_nvidia_info(text) == []


@pytest.mark.parametrize(
    "text", ["", "not json", "[]", '"card0"', '{"card0": 3}', '{"system": {}}', '{"cardX": {}}']
)
def test_rocm_garbage_is_no_cards(text: str) -> None:
    assert gpu.parse_rocm_stats(text) == []
    assert gpu.parse_rocm_info(text) == []


def test_rocm_card_without_readings_is_named_by_its_key() -> None:
    (card,) = gpu.parse_rocm_stats('{"card3": {"GPU use (%)": "N/A"}}')
    assert card == GpuReading(id=3, name="card3")


# ---- running the tools (for real) -----------------------------------------------------------


def test_run_tool_absent_failing_and_slow() -> None:
    assert gpu.run_tool(["llamaswap-no-such-tool-on-path"]) is None
    assert gpu.run_tool([sys.executable, "-c", "raise SystemExit(3)"]) is None
    assert gpu.run_tool([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.2) is None
    assert gpu.run_tool([sys.executable, "-c", "print('0, x')"]) == "0, x\n"


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None or shutil.which("rocm-smi") is not None,
    reason="this host has a GPU tool",
)
def test_no_gpu_tools_no_gpu_readings() -> None:
    assert performance.read_gpus() == ()
    sample, _ = performance.read_sample(None)
    assert sample.gpus == ()


# ---- hardware -------------------------------------------------------------------------------

CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 183
model name\t: 13th Gen Intel(R) Core(TM) i9-13900K
physical id\t: 0

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: 13th Gen Intel(R) Core(TM) i9-13900K
physical id\t: 0
"""
CPUINFO_ARM = """\
processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_parse_cpuinfo() -> None:
    assert parse_cpuinfo(CPUINFO_X86) == {
        "vendor": "GenuineIntel",
        "model": "13th Gen Intel(R) Core(TM) i9-13900K",
        "sockets": 1,
    }
    assert parse_cpuinfo(CPUINFO_ARM) == {"vendor": None, "model": "BCM2835", "sockets": None}
    assert parse_cpuinfo("") == {"vendor": None, "model": None, "sockets": None}


def test_read_hardware_describes_this_host() -> None:
    snap = hardware.read_hardware()
    assert snap["schema_version"] == 1
    assert snap["hostname"]
    assert snap["operating_system"]["family"] == sys.platform.rstrip("0123456789")
    assert snap["cpu"]["logical_thread_count"] >= 1
    assert snap["memory"]["capacity_bytes"] > 0
    assert isinstance(snap["accelerators"], list)


def test_snapshot_lists_gpus() -> None:
    snap = hardware.snapshot_json(
        captured_at=0,
        hostname="h",
        system="Linux",
        os_name="Debian GNU/Linux",
        os_version="12",
        kernel="6.1.0",
        machine="x86_64",
        cpuinfo={"vendor": None, "model": "m", "sockets": 1},
        physical_cores=8,
        logical_cores=16,
        memory_bytes=1,
        gpus=gpu.parse_nvidia_info(NVIDIA_INFO),
    )
    assert snap["accelerators"][0] == {
        "index": 0,
        "kind": "gpu",
        "vendor": "NVIDIA",
        "model": "NVIDIA GeForce RTX 4090",
        "uuid": "GPU-5c0a2f3e-8d1b-4c59-9f61-0e3b7f1a2d44",
        "memory": {"kind": "dedicated", "capacity_bytes": 24564 * MIB},
        "driver": {"name": "nvidia", "version": "550.54.14"},
        "power_limit_watts": 450.0,
    }
    assert snap["cpu"]["physical_core_count"] == 8


async def test_hardware_cache_reads_once_and_retries_failures() -> None:
    calls: list[int] = []

    def flaky() -> dict[str, object]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no /proc")
        return {"n": len(calls)}

    cache = HardwareCache(flaky)
    with pytest.raises(HardwareError, match="hardware detection failed: no /proc"):
        await cache.get()
    assert await cache.get() == {"n": 2}
    assert await cache.get() == {"n": 2}
    assert len(calls) == 2
