"""Declared hardware and what each model needs of it: `devices`, `hostMemory`, a model's
`resources` and `sleep`. The typed shapes here; `resource_problems` checks them against each
other (pure) and is called by `llamaswap.config.validate`.

```yaml
devices: {gpu0: {memory: 24GiB}, gpu1: {memory: 12GiB, index: 1}}
hostMemory: 64GiB
models:
  big:   {resources: {memory: 20GiB}}                      # on any one device
  split: {resources: {memory: {gpu0: 10GiB, gpu1: 8GiB}}}  # over these devices
  small: {resources: {memory: 4GiB, devices: [gpu1]}}      # on one of these devices
  vllm:  {sleep: vllm}                                     # evicted by sleeping, not stopping
```
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llamaswap.config.sizes import SIZE_SCHEMA, ByteSize, format_size, parse_size
from llamaswap.errors import ConfigProblem

if TYPE_CHECKING:
    from llamaswap.config.model import Config

__all__ = [
    "DeviceConfig",
    "Endpoint",
    "ResourcesConfig",
    "Sleep",
    "SleepConfig",
    "device_index",
    "resource_problems",
]

_HTTP_METHODS = ("GET", "POST", "PUT")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


class _Base(BaseModel):
    # As the config model's base: camelCase aliases, unknown keys ignored, `key: null` absent.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class DeviceConfig(_Base):
    """One accelerator: its memory, and the index the vendor's runtime knows it by.

    Without `index`, the digits that end the name are used (`gpu1` -> 1), else the order
    the device is declared in.
    """

    memory: ByteSize
    index: int | None = Field(default=None, ge=0)


def _memory(value: Any) -> int | dict[str, int]:
    # One validator for both forms, so a bad size is reported once, at its own path.
    if isinstance(value, dict):
        return {str(k): parse_size(v) for k, v in value.items()}
    return parse_size(value)


Memory = Annotated[
    int | dict[str, int],
    BeforeValidator(_memory),
    WithJsonSchema(
        {
            "anyOf": [
                SIZE_SCHEMA,
                {"type": "object", "additionalProperties": SIZE_SCHEMA},
            ],
            "description": "a size on one device, or a map device -> size for a split model",
        }
    ),
]


class ResourcesConfig(_Base):
    """What a model needs: `memory` on one device (a size) or split over devices (a map
    device -> size); `devices` restricts where a one-device model may go; `hostMemory` is
    what it holds in host RAM while asleep (default: its device memory)."""

    memory: Memory = 0
    devices: list[str] = Field(default_factory=list)
    host_memory: ByteSize | None = None

    def total(self) -> int:
        """Device memory summed over every device the model uses."""
        return sum(self.memory.values()) if isinstance(self.memory, dict) else self.memory

    def asleep(self) -> int:
        """Host memory held while asleep."""
        return self.total() if self.host_memory is None else self.host_memory


class Endpoint(_Base):
    """`METHOD /path?query`, called on the model's `proxy`."""

    method: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`"POST /sleep?level=1"` or a bare path (`/wake_up`, meaning POST)."""
        parts = text.split()
        if len(parts) == 1:
            parts = ["POST", parts[0]]
        if len(parts) != 2 or parts[0].upper() not in _HTTP_METHODS or not parts[1].startswith("/"):
            raise ValueError(
                f'invalid endpoint "{text}": expected "METHOD /path", e.g. POST /sleep'
            )
        return cls(method=parts[0].upper(), path=parts[1])

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


_VLLM = {"sleep": "POST /sleep?level=1", "wake": "POST /wake_up", "status": "GET /is_sleeping"}
SLEEP_PRESETS: Mapping[str, Mapping[str, str]] = {"vllm": _VLLM}


class SleepConfig(_Base):
    """How to put a model to sleep (GPU memory freed, process kept) and wake it.

    `sleep: vllm` is vLLM's sleep mode, level 1 (weights offloaded to host RAM); otherwise
    give the endpoints: `{sleep: "POST /sleep?level=2", wake: "POST /wake_up",
    status: "GET /is_sleeping"}` (`status` optional: answers JSON `{"is_sleeping": bool}`).
    """

    sleep: Endpoint
    wake: Endpoint
    status: Endpoint | None = None

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            preset = SLEEP_PRESETS.get(data.strip().lower())
            if preset is None:
                raise ValueError(
                    f'unknown sleep preset "{data}" (valid: {", ".join(SLEEP_PRESETS)}), '
                    "or a mapping with sleep, wake and status endpoints"
                )
            return dict(preset)
        return data

    @field_validator("sleep", "wake", "status", mode="before")
    @classmethod
    def _endpoint(cls, v: Any) -> Any:
        return Endpoint.parse(v) if isinstance(v, str) else v


_ENDPOINT_SCHEMA = {"type": "string", "pattern": r"^((GET|POST|PUT)\s+)?/\S*$"}
# Written out by hand: the YAML takes a preset name or endpoint strings, not the parsed shape.
Sleep = Annotated[
    SleepConfig,
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(SLEEP_PRESETS)},
                {
                    "type": "object",
                    "properties": {
                        "sleep": _ENDPOINT_SCHEMA,
                        "wake": _ENDPOINT_SCHEMA,
                        "status": _ENDPOINT_SCHEMA,
                    },
                    "required": ["sleep", "wake"],
                },
            ],
            "description": "vllm, or {sleep, wake, status} endpoints as METHOD /path",
        }
    ),
]


def device_index(devices: Mapping[str, DeviceConfig], name: str) -> int:
    """The runtime index of device `name` (for CUDA_VISIBLE_DEVICES and `${GPU}`)."""
    device = devices[name]
    if device.index is not None:
        return device.index
    match = _TRAILING_DIGITS.search(name)
    return int(match.group(1)) if match else list(devices).index(name)


def resource_problems(config: Config) -> Iterator[ConfigProblem]:
    """Devices a model names must be declared; a model must fit on what it may use.

    Without a `devices` block the devices are detected at start, so only the shapes are
    checked here; the same fit check then runs against what was detected.
    """
    devices = config.devices
    indices: dict[int, str] = {}
    for name in devices:
        index = device_index(devices, name)
        if index in indices:
            yield ConfigProblem(
                f"devices.{name}.index",
                f"devices {indices[index]} and {name} have the same index {index}",
            )
        indices.setdefault(index, name)
    for model_id in sorted(config.models):
        m = config.models[model_id]
        if m.resources is None:
            continue
        yield from model_resource_problems(model_id, m.resources, devices)
        host = config.host_memory
        if m.sleep is not None and host is not None and m.resources.asleep() > host:
            yield ConfigProblem(
                f"models.{model_id}.resources",
                f"model {model_id}: holds {format_size(m.resources.asleep())} in host memory "
                f"while asleep, more than hostMemory ({format_size(host)}): it can never sleep",
            )


def model_resource_problems(
    model_id: str, r: ResourcesConfig, devices: Mapping[str, DeviceConfig]
) -> Iterator[ConfigProblem]:
    """Problems of one model's `resources` against `devices` (declared or detected)."""
    where = f"models.{model_id}.resources"
    if isinstance(r.memory, dict) and r.devices:
        yield ConfigProblem(
            f"{where}.devices",
            f"model {model_id}: resources.devices cannot be used with a per-device memory map "
            "(the map already names the devices)",
        )
        return
    named = list(r.memory) if isinstance(r.memory, dict) else r.devices
    path = f"{where}.memory" if isinstance(r.memory, dict) else f"{where}.devices"
    unknown = [d for d in named if d not in devices]
    if devices and unknown:
        yield ConfigProblem(
            path,
            f"model {model_id}: unknown device {', '.join(unknown)} "
            f"(declared: {', '.join(devices)})",
        )
        return
    if not devices:
        return
    if isinstance(r.memory, dict):
        for name, need in r.memory.items():
            have = devices[name].memory
            if need > have:
                yield ConfigProblem(
                    f"{where}.memory.{name}",
                    f"model {model_id}: needs {format_size(need)} on {name}, which has "
                    f"{format_size(have)}: it can never be loaded",
                )
        return
    allowed = r.devices or list(devices)
    largest = max(devices[d].memory for d in allowed)
    if r.memory > largest:
        yield ConfigProblem(
            f"{where}.memory",
            f"model {model_id}: needs {format_size(r.memory)} on one device, the largest it "
            f"may use has {format_size(largest)}: it can never be loaded",
        )
