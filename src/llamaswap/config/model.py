"""The typed shape of a config file (pydantic v2). Every default lives here and nowhere else.

Attributes are snake_case; the YAML spelling (camelCase, or the snake_case llama-swap itself
uses for a few keys) is the alias. Unknown keys are ignored, as llama-swap does. Values that
depend on other values (a model's `ttl` from `globalTTL`, ...) are resolved by `Config`'s
after-validator; everything that can fail is checked by `llamaswap.config.validate`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic.alias_generators import to_camel

from llamaswap.config.durations import Duration
from llamaswap.config.resources import DeviceConfig, ResourcesConfig, Sleep
from llamaswap.config.sizes import ByteSize
from llamaswap.config.yaml12 import scalar_text
from llamaswap.errors import ConfigProblem

if TYPE_CHECKING:
    from llamaswap.config.matrix import CompiledMatrix

Scalar = str | int | float | bool


def _truncate(value: Any) -> Any:
    # A float in an int field is truncated, as Go's yaml.v3 does (`ttl: 30.5` is 30).
    if isinstance(value, float) and math.isfinite(value) and abs(value) < 2**63:
        return int(value)
    return value


# A string field takes any scalar as its Go text (`name: 2024` is "2024"); see yaml12.
Text = Annotated[str, BeforeValidator(scalar_text)]
Int = Annotated[int, BeforeValidator(_truncate)]

DEFAULT_GROUP = "(default)"
DEFAULT_CONCURRENCY_LIMIT = 10
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_WAIT_S = 15.0  # chosen with bench/simulate.py (docs/benchmarks.md)
DEFAULT_MIN_RESIDENT_S = 5.0
# The model `/comfyui/...` is served by; its websocket and concurrency settings are forced.
COMFYUI_MODEL_ID = "comfyui_auto"
COMFYUI_MIN_CONCURRENCY_LIMIT = 50
DEFAULT_UNLOAD_TIMEOUT = 10
DEFAULT_METRICS_MAX_IN_MEMORY = 1000
MIN_HEALTH_CHECK_TIMEOUT = 15
DEFAULT_PROXY = "http://localhost:${PORT}"
DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
DEFAULT_SESSION_ID_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")
PROTECTED_PARAMS = frozenset({"model"})
LOG_LEVELS = ("debug", "info", "warn", "error")


class _Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @_model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # YAML `key: null` (or `key:`) means "not set", as in llama-swap: keep the default.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def sanitize_strip_params(value: Any) -> Any:
    """`"a, b,a ,model"` -> `["a", "b"]`: trimmed, deduplicated, sorted, `model` dropped."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return value
    names = {str(v).strip() for v in value if v is not None}
    return sorted(n for n in names if n and n not in PROTECTED_PARAMS)


def sanitize_set_params(value: Any) -> Any:
    """Drop protected keys (`model`) and order the rest by key, the order they are applied in."""
    if not isinstance(value, dict):
        return value
    return {k: value[k] for k in sorted(value, key=str) if k not in PROTECTED_PARAMS}


class PeerFilters(_Base):
    """Request-body rewrites: keys removed (`stripParams`) and keys set (`setParams`)."""

    strip_params: list[Text] = Field(default_factory=list)
    set_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("strip_params", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return sanitize_strip_params(v)

    @field_validator("set_params", mode="before")
    @classmethod
    def _set(cls, v: Any) -> Any:
        return sanitize_set_params(v)


class ModelFilters(PeerFilters):
    """Peer filters plus per-requested-name `setParamsByID`; legacy `strip_params` accepted."""

    strip_params: list[Text] = Field(
        default_factory=list, validation_alias=AliasChoices("stripParams", "strip_params")
    )
    set_params_by_id: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="setParamsByID")


class Timeouts(_Base):
    """Upstream transport timeouts in seconds; 0 means none."""

    connect: Int = 30
    keepalive: Int = 30
    response_header: Int = 0
    tls_handshake: Int = 10
    expect_continue: Int = 1
    idle_conn: Int = 90


class PeerTimeouts(Timeouts):
    response_header: Int = 60


class CompatConfig(_Base):
    """Settings for upstreams that are not plain inference servers."""

    # Websocket upgrades bypass the scheduler: they never start the model, never hold it
    # against a swap (a swap may cut them), and are not listed in flight.
    ignore_websockets: bool = False


class CapabilitiesConfig(_Base):
    """What a model can do; an all-empty block means "not configured"."""

    inputs: list[Text] = Field(default_factory=list, alias="in")
    out: list[Text] = Field(default_factory=list)
    tools: bool = False
    reranker: bool = False
    context: Int = 0

    def is_empty(self) -> bool:
        return not (self.inputs or self.out or self.tools or self.reranker or self.context)


class ModelConfig(_Base):
    """One local model: how to start it, where to reach it, how to treat its requests."""

    id: Text = ""
    cmd: Text = ""
    cmd_stop: Text = ""
    proxy: Text = DEFAULT_PROXY
    check_endpoint: Text = "/health"
    ttl: Int = -1
    unload_timeout: Int = 0
    aliases: list[Text] = Field(default_factory=list)
    env: list[Text] = Field(default_factory=list)
    use_model_name: Text = ""
    filters: ModelFilters = Field(default_factory=ModelFilters)
    unlisted: bool = False
    name: Text = ""
    description: Text = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    concurrency_limit: Int = 0
    # Scheduler overrides (0 / None: the `routing.scheduler` value).
    max_queue: Int = 0
    max_wait: Duration | None = None
    send_loading_state: bool = False
    timeouts: Timeouts = Field(default_factory=Timeouts)
    compat: CompatConfig = Field(default_factory=CompatConfig)
    capabilities: CapabilitiesConfig = Field(default_factory=CapabilitiesConfig)
    resources: ResourcesConfig | None = None
    sleep: Sleep | None = None

    # Set by `Config`: True when `concurrencyLimit` was written (llama-swap's 429 semantics).
    _limits_reservations: bool = PrivateAttr(default=False)

    @property
    def limits_reservations(self) -> bool:
        """True when `concurrencyLimit` counts waiting requests too and refuses the excess
        (as llama-swap); False when it only caps requests in flight and the rest queue."""
        return self._limits_reservations

    @field_validator("name", "description", mode="after")
    @classmethod
    def _trim(cls, v: str) -> str:
        return v.strip()


class GroupConfig(_Base):
    """`swap`: one member at a time; `exclusive`: stops other groups; `persistent`: stays."""

    swap: bool = True
    exclusive: bool = True
    persistent: bool = False
    members: list[Text] = Field(default_factory=list)


class MatrixConfig(_Base):
    """Which models may run together: `sets` of DSL expressions over `vars` and model IDs."""

    vars: dict[str, Text] = Field(default_factory=dict)
    evict_costs: dict[str, Int] = Field(default_factory=dict, alias="evict_costs")
    sets: dict[str, Text] = Field(default_factory=dict)


class RouterSettings(_Base):
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    matrix: MatrixConfig | None = None


class RouterConfig(_Base):
    use: Literal["group", "matrix"] = "group"
    settings: RouterSettings = Field(default_factory=RouterSettings)


class FifoSettings(_Base):
    priority: dict[str, Int] = Field(default_factory=dict)


class SchedulerSettings(_Base):
    fifo: FifoSettings = Field(default_factory=FifoSettings)


class BackoffConfig(_Base):
    """Crash-loop backoff: after `after` failed starts in a row (0: never), requests for the
    model are refused for `initial`, doubling on each further failure up to `max`."""

    after: Int = Field(default=3, ge=0)
    initial: Duration = 5.0
    max: Duration = 300.0


class SchedulerConfig(_Base):
    """`use` is llama-swap's scheduler name (only `fifo`); `policy` picks the order."""

    use: Literal["fifo"] = "fifo"
    policy: Literal["batch", "fifo"] = "batch"
    max_queue: Int = Field(default=DEFAULT_MAX_QUEUE, ge=1)
    max_wait: Duration = DEFAULT_MAX_WAIT_S
    min_resident: Duration = DEFAULT_MIN_RESIDENT_S
    cancel_abandoned_loads: bool = False
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    settings: SchedulerSettings = Field(default_factory=SchedulerSettings)


class RoutingConfig(_Base):
    """Who may run together (router) and in which order waiting requests are served (scheduler)."""

    router: RouterConfig = Field(default_factory=RouterConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)


class OnStartup(_Base):
    preload: list[Text] = Field(default_factory=list)


class HooksConfig(_Base):
    on_startup: OnStartup = Field(default_factory=OnStartup, alias="on_startup")


class PeerConfig(_Base):
    """A remote OpenAI-compatible server offering `models`; a plain reverse proxy target."""

    proxy: Text = ""
    api_key: Text = ""
    models: list[Text] = Field(default_factory=list)
    filters: PeerFilters = Field(default_factory=PeerFilters)
    timeouts: PeerTimeouts = Field(default_factory=PeerTimeouts)


class ProfileConfig(_Base):
    """A named set of pins: requested name -> target (empty target = refuse the name)."""

    description: Text = ""
    pins: dict[str, Text | None] = Field(default_factory=dict)


class SelectorSettings(_Base):
    spillover: Int = 1


class SelectorConfig(_Base):
    """A virtual model ID that picks one of `targets` per request by `strategy`."""

    strategy: Text = ""
    targets: list[Text] = Field(default_factory=list)
    settings: SelectorSettings = Field(default_factory=SelectorSettings)
    name: Text = ""
    description: Text = ""
    unlisted: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class StoreConfig(_Base):
    path: Text | None = None


class PerformanceConfig(_Base):
    disabled: bool = False
    every: Text = "5s"


class UIActivity(_Base):
    session_id: list[Text] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_ID_HEADERS), alias="session_id"
    )

    @field_validator("session_id", mode="after")
    @classmethod
    def _normalise(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        for h in (s.strip() for s in v):
            if h and h.lower() not in seen:
                seen.add(h.lower())
                out.append(h)
        return out


class UIConfig(_Base):
    activity: UIActivity = Field(default_factory=UIActivity)


class UpstreamConfig(_Base):
    ignore_paths: list[Text] = Field(default_factory=lambda: list(DEFAULT_IGNORE_PATHS))

    @field_validator("ignore_paths", mode="after")
    @classmethod
    def _default_when_empty(cls, v: list[str]) -> list[str]:
        return v or list(DEFAULT_IGNORE_PATHS)


class Config(_Base):
    """A whole, validated config file. Build it with `llamaswap.config.load`."""

    health_check_timeout: Int = 120
    log_level: Text = "info"
    log_time_format: Text = ""
    log_to_stdout: Literal["proxy", "upstream", "both", "none"] = "proxy"
    log_requests: bool = False
    metrics_max_in_memory: Int = DEFAULT_METRICS_MAX_IN_MEMORY
    capture_buffer: Int = 5
    start_port: Int = 5800
    global_ttl: Int = Field(default=0, alias="globalTTL")
    unload_timeout: Int = DEFAULT_UNLOAD_TIMEOUT
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    api_keys: list[Text] = Field(default_factory=list)
    macros: dict[str, Scalar] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    peers: dict[str, PeerConfig] = Field(default_factory=dict)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    selectors: dict[str, SelectorConfig] = Field(default_factory=dict)
    store: StoreConfig = Field(default_factory=StoreConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    host_memory: ByteSize | None = None

    _alias_map: dict[str, str] | None = PrivateAttr(default=None)
    _matrix: CompiledMatrix | None = PrivateAttr(default=None)
    # Found by the loader without refusing the config (config/lint.py).
    _warnings: list[ConfigProblem] = PrivateAttr(default_factory=list)
    _unusable: list[ConfigProblem] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[ConfigProblem]:
        """Keys llama-swap would ignore (typos), each with its YAML path."""
        return self._warnings

    @property
    def unusable(self) -> list[ConfigProblem]:
        """Models that can never start (no `cmd`): errors for `check-config`, logged at load."""
        return self._unusable

    @field_validator("health_check_timeout", mode="after")
    @classmethod
    def _clamp_health(cls, v: int) -> int:
        return max(v, MIN_HEALTH_CHECK_TIMEOUT)

    @field_validator("log_level", mode="after")
    @classmethod
    def _log_level(cls, v: str) -> str:
        level = v.strip().lower()
        return level if level in LOG_LEVELS else "info"

    @field_validator("metrics_max_in_memory", mode="after")
    @classmethod
    def _metrics_max(cls, v: int) -> int:
        return v if v > 0 else DEFAULT_METRICS_MAX_IN_MEMORY

    @_model_validator(mode="after")
    def _resolve_models(self) -> Config:
        """Fill inherited model values: id, ttl, unloadTimeout, concurrency, loading state;
        force `comfyui_auto`'s compat and concurrency values."""
        if self.unload_timeout == 0:
            self.unload_timeout = DEFAULT_UNLOAD_TIMEOUT
        for model_id, m in self.models.items():
            m.id = model_id
            if m.ttl == -1:
                m.ttl = self.global_ttl
            if m.unload_timeout == 0:
                m.unload_timeout = self.unload_timeout
            # A limit the user wrote keeps llama-swap's meaning (waiting requests count).
            m._limits_reservations = m.concurrency_limit > 0
            if m.concurrency_limit <= 0:
                m.concurrency_limit = DEFAULT_CONCURRENCY_LIMIT
            if m.max_queue <= 0:
                m.max_queue = self.routing.scheduler.max_queue
            if m.max_wait is None:
                m.max_wait = self.routing.scheduler.max_wait
            if "send_loading_state" not in m.model_fields_set:
                m.send_loading_state = self.send_loading_state
            if model_id == COMFYUI_MODEL_ID:
                # A ComfyUI page keeps its websocket open and fires many small requests.
                m.compat.ignore_websockets = True
                m.concurrency_limit = max(m.concurrency_limit, COMFYUI_MIN_CONCURRENCY_LIMIT)
                m._limits_reservations = True
        return self

    def resolve_model(self, name: str) -> str | None:
        """The real model ID for `name` (an ID, an alias or a setParamsByID key), else None."""
        if name in self.models:
            return name
        if self._alias_map is None:
            self._alias_map = {}
            for model_id in sorted(self.models):
                for alias in self.models[model_id].aliases:
                    self._alias_map.setdefault(alias, model_id)
        return self._alias_map.get(name)

    def uses_matrix(self) -> bool:
        return self.routing.router.use == "matrix"

    def group_map(self) -> dict[str, GroupConfig]:
        """Group router only: configured groups plus `(default)` holding every ungrouped model."""
        if self.uses_matrix():
            return {}
        groups = dict(self.routing.router.settings.groups)
        grouped = {m for g in groups.values() for m in g.members}
        groups[DEFAULT_GROUP] = GroupConfig(
            members=sorted(m for m in self.models if m not in grouped)
        )
        return groups

    def fifo_priority(self, model_id: str) -> int:
        """Queue priority of a model (higher is served first); priorities keyed by alias count."""
        return self.routing.scheduler.settings.fifo.priority.get(model_id, 0)

    def compiled_matrix(self) -> CompiledMatrix | None:
        """The compiled matrix in matrix mode (compiled by the loader), else None."""
        if not self.uses_matrix():
            return None
        if self._matrix is None:
            from llamaswap.config.matrix import compile_matrix  # noqa: PLC0415 - import cycle

            settings = self.routing.router.settings.matrix or MatrixConfig()
            self._matrix = compile_matrix(settings, self.models)
        return self._matrix
