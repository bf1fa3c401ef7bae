"""`devices`, `hostMemory`, per-model `resources` and `sleep`, sizes and the `${GPU}` macro."""

from __future__ import annotations

import pytest

from llamaswap.config import config_schema
from llamaswap.config.resources import Endpoint, device_index
from llamaswap.config.sizes import GIB, MIB, format_size, parse_size

from ._helpers import load, messages

HARDWARE = """
devices:
  gpu0: {memory: 24GiB}
  gpu1: {memory: 12GiB}
hostMemory: 64GiB
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GiB", 24 * GIB),
        ("24 GiB", 24 * GIB),
        ("1.5GiB", 3 * GIB // 2),
        ("12Gi", 12 * GIB),
        ("512MiB", 512 * MIB),
        ("512MB", 512_000_000),
        ("8G", 8_000_000_000),
        ("1kB", 1000),
        ("100", 100),
        (100, 100),
        ("7B", 7),
    ],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["x", "-1GiB", "1PiB", "GiB", "", "1 gib", True, -5, None])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(20 * GIB) == "20GiB"
    assert format_size(3 * GIB // 2) == "1.5GiB"
    assert format_size(300 * MIB) == "300MiB"
    assert format_size(12) == "12B"


def test_declared_hardware_and_resources() -> None:
    c = load(
        HARDWARE
        + """
models:
  big: {cmd: "s ${PORT}", resources: {memory: 20GiB}}
  split: {cmd: "s ${PORT}", resources: {memory: {gpu0: 10GiB, gpu1: 8GiB}}}
  small: {cmd: "s ${PORT}", resources: {memory: 4GiB, devices: [gpu1], hostMemory: 1GiB}}
  plain: {cmd: "s ${PORT}"}
"""
    )
    assert c.devices["gpu0"].memory == 24 * GIB
    assert c.host_memory == 64 * GIB
    big, split, small = (c.models[m].resources for m in ("big", "split", "small"))
    assert big is not None and split is not None and small is not None
    assert (big.memory, big.devices, big.total(), big.asleep()) == (
        20 * GIB,
        [],
        20 * GIB,
        20 * GIB,
    )
    assert split.memory == {"gpu0": 10 * GIB, "gpu1": 8 * GIB}
    assert split.total() == 18 * GIB
    assert (small.devices, small.asleep()) == (["gpu1"], GIB)
    assert c.models["plain"].resources is None and c.models["plain"].sleep is None


def test_device_index_from_name_order_or_field() -> None:
    c = load("devices: {gpu3: {memory: 1GiB}, card: {memory: 1GiB}, x: {memory: 1, index: 7}}\n")
    assert [device_index(c.devices, n) for n in ("gpu3", "card", "x")] == [3, 1, 7]
    assert messages("devices: {a1: {memory: 1GiB}, b: {memory: 1GiB, index: 1}}\n") == [
        "devices.b.index: devices a1 and b have the same index 1"
    ]


def test_bad_size_is_reported_at_its_path() -> None:
    assert messages("models:\n  m: {cmd: s, proxy: 'http://h:1', resources: {memory: 4Gx}}\n") == [
        'models.m.resources.memory: Value error, invalid size "4Gx": expected a number with a '
        "unit such as 24GiB"
    ]
    assert messages("devices: {gpu0: {memory: lots}}\n") == [
        'devices.gpu0.memory: Value error, invalid size "lots": expected a number with a unit '
        "such as 24GiB"
    ]
    assert messages("hostMemory: -1\n") == ["hostMemory: Value error, a size must be >= 0, got -1"]


def test_models_that_can_never_fit_or_name_unknown_devices() -> None:
    text = (
        HARDWARE
        + """
models:
  huge: {cmd: "s ${PORT}", resources: {memory: 30GiB}}
  pinned: {cmd: "s ${PORT}", resources: {memory: 16GiB, devices: [gpu1]}}
  nowhere: {cmd: "s ${PORT}", resources: {memory: 1GiB, devices: [gpu7]}}
  split: {cmd: "s ${PORT}", resources: {memory: {gpu0: 1GiB, gpu1: 13GiB}}}
  both: {cmd: "s ${PORT}", resources: {memory: {gpu0: 1GiB}, devices: [gpu0]}}
  asleep: {cmd: "s ${PORT}", resources: {memory: 10GiB, hostMemory: 65GiB}, sleep: vllm}
"""
    )
    assert messages(text) == [
        "models.asleep.resources: model asleep: holds 65GiB in host memory while asleep, more "
        "than hostMemory (64GiB): it can never sleep",
        "models.both.resources.devices: model both: resources.devices cannot be used with a "
        "per-device memory map (the map already names the devices)",
        "models.huge.resources.memory: model huge: needs 30GiB on one device, the largest it "
        "may use has 24GiB: it can never be loaded",
        "models.nowhere.resources.devices: model nowhere: unknown device gpu7 "
        "(declared: gpu0, gpu1)",
        "models.pinned.resources.memory: model pinned: needs 16GiB on one device, the largest "
        "it may use has 12GiB: it can never be loaded",
        "models.split.resources.memory.gpu1: model split: needs 13GiB on gpu1, which has "
        "12GiB: it can never be loaded",
    ]


def test_without_declared_devices_only_shapes_are_checked() -> None:
    # Devices are then detected at start; any name and size is accepted here.
    c = load('models:\n  m: {cmd: "s ${PORT}", resources: {memory: 900GiB, devices: [gpu5]}}\n')
    r = c.models["m"].resources
    assert r is not None and r.devices == ["gpu5"]


def test_sleep_preset_and_endpoints() -> None:
    c = load(
        """
models:
  v: {cmd: "s ${PORT}", sleep: vllm}
  e: {cmd: "s ${PORT}", sleep: {sleep: "POST /sleep?level=2", wake: /wake, status: GET /st}}
"""
    )
    v, e = c.models["v"].sleep, c.models["e"].sleep
    assert v is not None and e is not None
    assert (str(v.sleep), str(v.wake), str(v.status)) == (
        "POST /sleep?level=1",
        "POST /wake_up",
        "GET /is_sleeping",
    )
    assert (str(e.sleep), str(e.wake), str(e.status)) == (
        "POST /sleep?level=2",
        "POST /wake",
        "GET /st",
    )


def test_bad_sleep() -> None:
    assert messages('models:\n  m: {cmd: "s ${PORT}", sleep: nap}\n') == [
        'models.m.sleep: Value error, unknown sleep preset "nap" (valid: vllm), or a mapping '
        "with sleep, wake and status endpoints"
    ]
    assert messages('models:\n  m: {cmd: "s ${PORT}", sleep: {sleep: "FETCH /s", wake: /w}}\n') == [
        'models.m.sleep.sleep: Value error, invalid endpoint "FETCH /s": expected '
        '"METHOD /path", e.g. POST /sleep'
    ]
    assert messages('models:\n  m: {cmd: "s ${PORT}", sleep: {sleep: /s}}\n') == [
        "models.m.sleep.wake: Field required"
    ]
    with pytest.raises(ValueError, match="endpoint"):
        Endpoint.parse("POST sleep")


def test_gpu_macro_survives_in_cmd_env_and_cmd_stop_only() -> None:
    c = load(
        """
models:
  m:
    cmd: "s ${PORT} --device ${GPU}"
    cmdStop: "stop ${GPU}"
    env: ["DEV=${GPU}"]
"""
    )
    m = c.models["m"]
    assert (m.cmd, m.cmd_stop, m.env) == ("s 5800 --device ${GPU}", "stop ${GPU}", ["DEV=${GPU}"])
    assert messages('models:\n  m: {cmd: "s ${PORT}", name: "${GPU}"}\n') == [
        "models.m.name: unknown macro '${GPU}' found in m.name"
    ]
    assert messages("macros: {GPU: 1}\n") == ["macros.GPU: macro name 'GPU' is reserved"]


def test_schema_has_the_new_keys() -> None:
    schema = config_schema()
    assert {"devices", "hostMemory"} <= set(schema["properties"])
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert {"resources", "sleep"} <= set(model)
    assert {"memory", "devices", "hostMemory"} <= set(
        schema["$defs"]["ResourcesConfig"]["properties"]
    )
    sleep = model["sleep"]["anyOf"][0]
    assert {"anyOf": [{"enum": ["vllm"]}, {"$ref": "#/$defs/MacroReference"}]} in sleep["anyOf"]
