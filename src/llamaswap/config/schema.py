"""The JSON Schema of a config file, for editors (`llamaswap schema`). Pure.

pydantic gives the shape of the typed config (`Config.model_json_schema`); this module makes
it describe the file as a user writes it:

* every property has a description (the `DESCRIPTIONS` table, worded as
  docs/configuration.md) and its default;
* objects whose keys llamaswap knows are closed (`additionalProperties: false`), so an editor
  flags a typo where `check-config` would warn about it (config/lint.py). Maps keyed by the
  user (`models`, `macros`, `metadata`, `setParams`, matrix `vars`, ...) stay open, and so
  does the top level, the usual place for YAML anchors (`defs:`);
* the other spellings the loader accepts (`strip_params`, snake_case attribute names) are
  valid through `patternProperties`, which editors do not offer for completion;
* `key: null` (or an empty `key:`) is valid everywhere: it means "not set";
* a number, boolean or choice may be written as a macro (`ttl: ${TTL}`), since macros and
  `${env.NAME}` are replaced before values are type-checked; text may be any scalar and a
  whole number any number, as llama-swap reads them (`name: 2024`, `ttl: 30.5`);
* keys read from the raw tree before the typed decode are added: top-level `groups` and
  `matrix` (legacy spellings of `routing.router.settings`) and a model's `macros`.
"""

from __future__ import annotations

import copy
import re
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel

from llamaswap.config.durations import DURATION_SCHEMA
from llamaswap.config.model import LOG_LEVELS, Config
from llamaswap.config.names import STRATEGIES
from llamaswap.config.validate import MODALITIES

__all__ = ["DESCRIPTIONS", "editor_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "llamaswap configuration"
_ROOT = "Config"
_MACRO = "MacroReference"
_MACRO_REF = {"$ref": f"#/$defs/{_MACRO}"}
_META_KEYS = ("description", "default", "title", "examples", "deprecated")

_TIMEOUTS = {
    "connect": "Seconds to establish the TCP connection to the upstream; 0 = no limit.",
    "keepalive": "TCP keep-alive period of upstream connections in seconds; 0 = none.",
    "responseHeader": "Seconds to wait for the upstream's response headers; 0 = no limit.",
    "tlsHandshake": "Seconds the TLS handshake with the upstream may take; 0 = no limit.",
    "expectContinue": "Seconds to wait for `100 Continue` after `Expect: 100-continue`.",
    "idleConn": "Seconds an idle upstream connection is kept open; 0 = no limit.",
}
_STRIP_PARAMS = (
    "Request keys removed from the body: a comma-separated string or a list. Trimmed, "
    "deduplicated, sorted; `model` is never removed. The spelling `strip_params` works too."
)
_SET_PARAMS = "Keys set in the request body (in key order); `model` is ignored."

# Schema definition name (the pydantic class name) -> YAML key -> description.
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Config": {
        "healthCheckTimeout": "Seconds a model may take to become healthy after start; values "
        "below 15 become 15. Also the grace period when a swap stops other models.",
        "logLevel": "`debug`, `info`, `warn` or `error` (case-insensitive); anything else "
        "means `info`.",
        "logTimeFormat": "Timestamp layout of log lines: `ansic`, `unixdate`, `rubydate`, "
        "`rfc822`, `rfc822z`, `rfc850`, `rfc1123`, `rfc1123z`, `rfc3339`, `rfc3339nano`, "
        "`kitchen`, `stamp`, `stampmilli`, `stampmicro`, `stampnano`; empty or unknown: no "
        "timestamp.",
        "logToStdout": "Which logs go to stdout: `proxy`, `upstream`, `both` or `none`.",
        "logRequests": "Deprecated, ignored.",
        "metricsMaxInMemory": "Activity rows kept by the in-memory store (the newest); 0 or "
        "less means 1000. No effect with `store.path`.",
        "captureBuffer": "MiB of request/response captures kept (oldest evicted first); 0 "
        "disables captures.",
        "startPort": "First port handed out for `${PORT}` (in sorted model-ID order); at least 1.",
        "globalTTL": "Default `ttl` of every model in seconds; 0 = never unload.",
        "unloadTimeout": "Seconds a model gets to stop gracefully on unload or TTL before it "
        "is killed; 0 means 10.",
        "sendLoadingState": "Default of every model's `sendLoadingState`.",
        "includeAliasesInList": "List aliases as extra entries in `/v1/models`.",
        "apiKeys": "Accepted API keys (non-empty, no spaces); empty disables authentication. "
        "Typically `${env.KEY}`.",
        "macros": "Macros usable as `${name}` in every value: names of letters, digits, `_`, "
        "`-` (at most 63); values are strings, numbers or booleans. `PORT`, `MODEL_ID`, `PID` "
        "and `GPU` are reserved. A macro may use macros declared before it.",
        "models": "Model ID (the name clients ask for) -> how to start and reach that model.",
        "groups": "Legacy spelling of `routing.router.settings.groups`; cannot be combined "
        "with `routing.router` or `matrix`.",
        "matrix": "Legacy spelling of `routing.router.settings.matrix` (and "
        "`routing.router.use: matrix`); cannot be combined with `routing.router` or `groups`.",
        "routing": "Who may run together (`router`) and in which order waiting requests are "
        "served (`scheduler`). Default: the group router and the batch policy.",
        "hooks": "Actions at startup.",
        "peers": "Remote OpenAI-compatible servers whose models are served as `<peer>/<model>`.",
        "profiles": "Named sets of pins (requested name -> target); at most one is active.",
        "selectors": "Virtual model IDs that pick one of their targets per request.",
        "store": "Where activity rows and learned load times are kept.",
        "performance": "Host CPU/GPU sampling for `/api/performance` and `/metrics`.",
        "ui": "Settings of the web UI.",
        "upstream": "Settings of the `/upstream/<model>/...` routes.",
        "devices": "The accelerators models are placed on: name -> memory and index. "
        "Default: detected at start (nvidia-smi, rocm-smi).",
        "hostMemory": "Host RAM available to sleeping models (a size such as 64GiB). "
        "Default: detected at start.",
        "cluster": "Machines of a `llamaswap cluster` on Ray Serve (docs/cluster.md); "
        "ignored by a single `llamaswap`.",
    },
    "ClusterConfig": {
        "nodes": "Node name -> the Ray resources that mark its machine and the models it may run.",
    },
    "ClusterNode": {
        "resources": "Custom Ray resources only this machine has (as given to `ray start "
        "--resources`); the node replica placed on a machine with all of them serves this node.",
        "models": "Model IDs this node may run. Default: every model.",
        "devices": "This machine's accelerators, replacing the top-level `devices`.",
        "startPort": "This node's first `${PORT}`, replacing the top-level `startPort` (for "
        "several nodes on one machine).",
    },
    "ModelConfig": {
        "id": "Ignored: a model's ID is its key under `models`.",
        "cmd": "Command that starts the server. May span lines; lines whose first non-blank "
        "character is `#` are removed; a trailing `\\` joins lines. Use `${PORT}` for the port.",
        "cmdStop": "Command run to stop the server instead of SIGTERM; `${PID}` is the "
        "server's PID.",
        "proxy": "Base URL requests are forwarded to (scheme and host required). A model "
        "whose `cmd` has no `${PORT}` must set it.",
        "checkEndpoint": "Path polled until it answers 200; `none` disables health checking.",
        "ttl": "Idle seconds before the model is stopped; 0 = never; -1 = `globalTTL`.",
        "unloadTimeout": "Graceful stop seconds for unload and TTL; 0 = the global "
        "`unloadTimeout`.",
        "aliases": "Other names for this model; an alias may belong to one model only.",
        "env": "`NAME=value` entries added to the inherited environment.",
        "useModelName": "Model name sent upstream instead of the ID.",
        "filters": "Request-body rewrites: keys removed and keys set.",
        "unlisted": "Hide from `/v1/models` (still usable).",
        "name": "Shown in `/v1/models`; trimmed.",
        "description": "Shown in `/v1/models`; trimmed.",
        "metadata": "Any tree, shown as `meta.llamaswap` in `/v1/models`; macros keep their type.",
        "macros": "Macros for this model only; a name of a global macro replaces it here.",
        "concurrencyLimit": "When written: llama-swap's limit, counting requests in flight, "
        "queued and waiting for a swap; the excess gets HTTP 429 at once. 0 or less means 10. "
        "When not written: at most 10 in flight, the rest wait in the queue (`maxQueue`).",
        "maxQueue": "Requests that may wait for this model (when `concurrencyLimit` is not "
        "written); one more gets HTTP 429 `queue_full`. 0 = `routing.scheduler.maxQueue`.",
        "maxWait": "Under `policy: batch`, how long a request for this model may wait before "
        "its model goes next. Default: `routing.scheduler.maxWait`.",
        "sendLoadingState": "Stream loading progress to clients while the model starts. "
        "Default: the global `sendLoadingState`.",
        "timeouts": "Upstream transport timeouts in seconds; 0 = none.",
        "compat": "Settings for upstreams that are not plain inference servers.",
        "capabilities": "What the model can do, shown in `/v1/models`.",
        "resources": "Memory the model needs and where it may go, for placement by memory.",
        "sleep": "How to put the model to sleep instead of stopping it: `vllm`, or "
        "`{sleep, wake, status}` endpoints as `METHOD /path`.",
    },
    "ModelFilters": {
        "stripParams": _STRIP_PARAMS,
        "setParams": _SET_PARAMS,
        "setParamsByID": "Requested name -> keys set when the request used that name (after "
        "`setParams`). Keys may use macros (`${MODEL_ID}:high`); every key other than the "
        "model ID becomes an alias of the model.",
    },
    "PeerFilters": {"stripParams": _STRIP_PARAMS, "setParams": _SET_PARAMS},
    "Timeouts": _TIMEOUTS,
    "PeerTimeouts": _TIMEOUTS
    | {"responseHeader": "Seconds to wait for the peer's response headers; 0 = no limit."},
    "CompatConfig": {
        "ignoreWebsockets": "Websocket upgrades on `/upstream/<model>/...` bypass "
        "scheduling: they never start the model, take no lease and do not hold it against "
        "a swap, an unload or TTL. Always true for `comfyui_auto`.",
    },
    "CapabilitiesConfig": {
        "in": "Input modalities: `text`, `audio`, `image`.",
        "out": "Output modalities: `text`, `audio`, `image`.",
        "tools": "The model can call tools.",
        "reranker": "The model is a reranker.",
        "context": "Context length in tokens (>= 0).",
    },
    "ResourcesConfig": {
        "memory": "Memory needed on one device (a size such as 20GiB), or a map device -> "
        "size for a model split over several devices.",
        "devices": "The devices a one-device model may go on (default: all); not allowed "
        "with a per-device memory map.",
        "hostMemory": "Host RAM the model holds while asleep (default: its device memory).",
    },
    "SleepConfig": {
        "sleep": "Endpoint that puts the model to sleep, `METHOD /path` (a bare path means "
        "POST), e.g. `POST /sleep?level=2`.",
        "wake": "Endpoint that wakes the model, e.g. `POST /wake_up`.",
        "status": 'Optional endpoint answering `{"is_sleeping": true|false}`, e.g. '
        "`GET /is_sleeping`.",
    },
    "DeviceConfig": {
        "memory": "The device's memory, a size such as 24GiB (required).",
        "index": "The index CUDA/HIP know the device by; default: the digits that end the "
        "name, else the order of declaration.",
    },
    "RoutingConfig": {
        "router": "Which models may run together: `group` (groups) or `matrix` (sets).",
        "scheduler": "In which order waiting requests are served, and when to swap.",
    },
    "RouterConfig": {
        "use": "`group` (the default; empty means group) or `matrix` (requires `settings.matrix`).",
        "settings": "The groups or the matrix, for the router named by `use`.",
    },
    "RouterSettings": {
        "groups": "Group name -> group. Used when `use: group`; every model in no group "
        "belongs to the group `(default)`. Without groups, one model runs at a time.",
        "matrix": "Which models may run together, as sets over vars and model IDs. Used "
        "(and required) when `use: matrix`.",
    },
    "GroupConfig": {
        "swap": "At most one member runs; asking for another stops it.",
        "exclusive": "Starting a member stops the members of every other group that is not "
        "`persistent`.",
        "persistent": "Never stopped by other groups.",
        "members": "Model IDs (not aliases) in this group; a model may be in one group only.",
    },
    "MatrixConfig": {
        "vars": "Optional short names for model IDs: key (1-32 letters, digits, `-`, `.`) -> "
        "model ID.",
        "evict_costs": "Var or model ID -> cost of stopping it (a positive integer); "
        "default 1. The cheapest set to reach wins.",
        "sets": "Set name -> expression of models that may run together: `&` together, "
        "`|` or (binds looser), parentheses group, `+name` reuses another set. A model in "
        "no set runs alone; equal costs go to the set listed first.",
    },
    "SchedulerConfig": {
        "use": "The scheduler: `fifo`, the only one (empty means fifo).",
        "policy": "`batch` (the default) swaps less: waiting requests of a loaded model are "
        "served before it is swapped away, bounded by `maxWait`; `fifo` is llama-swap's "
        "order: priority, then arrival.",
        "maxQueue": "Per-model queue bound (at least 1); one more request gets HTTP 429 "
        "`queue_full`. Models may set their own.",
        "maxWait": "Under `policy: batch`, no request waits longer for its turn; models may "
        "set their own.",
        "minResident": "Under `policy: batch`, a freshly loaded model in use stays at least "
        "this long.",
        "cancelAbandonedLoads": "Stop a model start once every request waiting for it has left.",
        "backoff": "Crash-loop backoff after failed starts in a row.",
        "settings": "Settings of the scheduler named by `use`.",
    },
    "BackoffConfig": {
        "after": "Failed starts in a row before requests are refused; 0 turns backoff off.",
        "initial": "How long requests are refused (HTTP 503) after `after` failures; doubles "
        "on each further failure.",
        "max": "The longest refusal period.",
    },
    "SchedulerSettings": {"fifo": "Settings of the fifo scheduler."},
    "FifoSettings": {
        "priority": "Model ID or alias -> queue priority (default 0; higher is served first).",
    },
    "HooksConfig": {"on_startup": "Actions when llamaswap starts."},
    "OnStartup": {
        "preload": "Models started at startup; empty and unknown names are dropped, aliases "
        "become model IDs.",
    },
    "PeerConfig": {
        "proxy": "Base URL of the peer (required).",
        "apiKey": "Sent as `Authorization: Bearer` and `x-api-key`.",
        "models": "Models the peer offers (required, non-empty); each answers to "
        "`<peer>/<model>`, and to its bare name when only one peer offers it.",
        "filters": "Request-body rewrites for this peer's models.",
        "timeouts": "Transport timeouts in seconds, as for models; `responseHeader` defaults "
        "to 60.",
    },
    "ProfileConfig": {
        "description": "Shown with the profile.",
        "pins": "Requested name -> target (a model, alias, peer name or selector); null or "
        '"" refuses the name. At least one entry.',
    },
    "SelectorConfig": {
        "strategy": "`pin`: always the first target; `warm`: the first ready, else starting, "
        "else first target; `spillover`: the next target once the busy ones serve "
        "`settings.spillover` requests each.",
        "targets": "Models, aliases or peer names to choose from (not other selectors).",
        "settings": "Settings of the strategy.",
        "name": "Shown in `/v1/models`.",
        "description": "Shown in `/v1/models`.",
        "unlisted": "Hide from `/v1/models` (still usable).",
        "metadata": "Any tree, added to `meta.llamaswap` in `/v1/models`.",
    },
    "SelectorSettings": {
        "spillover": "Requests per target before the next one is used (at least 1).",
    },
    "StoreConfig": {
        "path": "SQLite file keeping activity rows and learned load times across restarts; "
        "default: in memory. Must be a writable (or creatable) file.",
    },
    "PerformanceConfig": {
        "disabled": "Turn off host CPU/GPU sampling.",
        "every": "Sampling interval, a Go duration (`5s`, `1m30s`); at least 5s.",
    },
    "UIConfig": {"activity": "Settings of the activity page."},
    "UIActivity": {
        "session_id": "Request headers shown as a session id; `[]` disables.",
    },
    "UpstreamConfig": {
        "ignorePaths": "Regular expressions of `/upstream/...` paths that never start a "
        "model; empty: the default.",
    },
}

_STRING_OR_LIST = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}
_MODALITY_LIST = {"type": "array", "items": {"enum": list(MODALITIES)}}
# Types the loader accepts that pydantic's schema does not show (raw spellings, empty values).
TYPE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "Config": {"logLevel": {"anyOf": [{"enum": list(LOG_LEVELS)}, {"type": "string"}]}},
    "ModelFilters": {"stripParams": _STRING_OR_LIST},
    "PeerFilters": {"stripParams": _STRING_OR_LIST},
    "RouterConfig": {"use": {"enum": ["group", "matrix", ""]}},
    "SchedulerConfig": {"use": {"enum": ["fifo", ""]}},
    "SelectorConfig": {"strategy": {"enum": list(STRATEGIES)}},
    "CapabilitiesConfig": {"in": _MODALITY_LIST, "out": _MODALITY_LIST},
    "PerformanceConfig": {"every": DURATION_SCHEMA["anyOf"][1]},
}
# Keys without which the config is refused (validation says so; the editor can too).
REQUIRED: dict[str, list[str]] = {
    "PeerConfig": ["proxy", "models"],
    "SelectorConfig": ["strategy", "targets"],
    "ProfileConfig": ["pins"],
}
# Keys accepted but not worth offering: valid through `patternProperties`, which editors do
# not complete; and keys that still load but do nothing (shown struck through).
HIDDEN: dict[str, set[str]] = {"ModelConfig": {"id"}}
DEPRECATED: dict[str, set[str]] = {"Config": {"logRequests"}}


def editor_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a config file, as `llamaswap schema` prints it."""
    schema = Config.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema["$defs"]
    _add_raw_keys(schema)
    _lift_sleep(defs)
    models = schema["properties"]["models"]
    # A model whose body is empty (every line commented out) loads as an empty model.
    models["additionalProperties"] = _nullable(models["additionalProperties"])
    classes = _model_classes(Config)
    for name, node in [(_ROOT, schema), *defs.items()]:
        if "properties" in node:
            _finish_object(name, node, classes.get(name), closed=name != _ROOT)
    defs[_MACRO] = {
        "type": "string",
        "pattern": r"\$\{[^}]+\}",
        "description": "a value given by a macro or an environment variable: ${NAME}, ${env.NAME}",
    }
    schema["description"] = (
        "A llamaswap (llama-swap compatible) config file. See docs/configuration.md."
    )
    return {"$schema": DIALECT, "title": TITLE, **{k: v for k, v in schema.items() if k != "title"}}


def _add_raw_keys(schema: dict[str, Any]) -> None:
    """Keys read before the typed decode (config/normalise.py, the model macros in load.py)."""
    props = schema["properties"]
    props["groups"] = {
        "type": "object",
        "additionalProperties": {"$ref": "#/$defs/GroupConfig"},
    }
    props["matrix"] = {"$ref": "#/$defs/MatrixConfig"}
    schema["$defs"]["ModelConfig"]["properties"]["macros"] = copy.deepcopy(props["macros"])


def _lift_sleep(defs: dict[str, Any]) -> None:
    """Give the endpoints form of `sleep` a definition of its own, so it is described and
    closed like every other object (resources.py writes it inline)."""
    prop = defs["ModelConfig"]["properties"]["sleep"]
    branches = prop["anyOf"][0]["anyOf"]
    for i, branch in enumerate(branches):
        if branch.get("type") == "object":
            defs["SleepConfig"] = {"title": "SleepConfig", **branch}
            branches[i] = {"$ref": "#/$defs/SleepConfig"}


def _finish_object(
    name: str, node: dict[str, Any], cls: type[BaseModel] | None, closed: bool
) -> None:
    described = DESCRIPTIONS.get(name, {})
    overrides = TYPE_OVERRIDES.get(name, {})
    fields = _fields_by_key(cls) if cls is not None else {}
    others: dict[str, Any] = {}
    for key, prop in list(node["properties"].items()):
        meta = {k: prop[k] for k in _META_KEYS if k in prop and k != "title"}
        shape = overrides.get(key) or {k: v for k, v in prop.items() if k not in _META_KEYS}
        field = fields.get(key)
        if field is not None and "default" not in meta:
            default = _factory_default(field)
            if default is not None:
                meta["default"] = default
        if key in described:
            meta["description"] = described[key]
        if key in DEPRECATED.get(name, ()):
            meta["deprecated"] = True
        new = {**_nullable(_as_written(copy.deepcopy(shape))), **meta}
        node["properties"][key] = new
        if key in HIDDEN.get(name, ()):
            others[key] = node["properties"].pop(key)
        elif field is not None:
            # By reference: the same value, without a second copy in every editor's list.
            where = "#" if name == _ROOT else f"#/$defs/{name}"
            same = {"$ref": f"{where}/properties/{key}", "description": f"Same as `{key}`."}
            for spelling in _other_spellings(key, field[0], field[1]):
                others[spelling] = same
    if others:
        node["patternProperties"] = {f"^{re.escape(k)}$": v for k, v in sorted(others.items())}
    if name in REQUIRED:
        node["required"] = REQUIRED[name]
    if closed:
        node["additionalProperties"] = False


def _fields_by_key(cls: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """YAML key -> (attribute name, FieldInfo)."""
    return {(f.alias or n): (n, f) for n, f in cls.model_fields.items()}


def _other_spellings(key: str, attribute: str, field: Any) -> list[str]:
    """Spellings the loader accepts besides `key`: validation aliases and the attribute name."""
    names = [attribute]
    if isinstance(field.validation_alias, AliasChoices):
        names += [c for c in field.validation_alias.choices if isinstance(c, str)]
    elif isinstance(field.validation_alias, str):
        names.append(field.validation_alias)
    return sorted({n for n in names if n != key})


def _factory_default(field: tuple[str, Any]) -> Any:
    """The value of a `default_factory` (pydantic leaves it out) when it is a plain value."""
    info = field[1]
    if info.default_factory is None:
        return None
    value = info.get_default(call_default_factory=True, validated_data={})
    return value if isinstance(value, list | dict) else None


def _as_written(node: dict[str, Any], in_union: bool = False) -> dict[str, Any]:
    """`node` widened to what may be written for it (a union's branches are left as they are):

    * a number, boolean or choice may be a macro, `${NAME}`;
    * plain text may be any scalar, which llama-swap reads as its text (`name: 2024`), and a
      whole number any number, which it truncates (`ttl: 30.5`), as Go's yaml.v3 decodes them.
    """
    if "$ref" in node:
        return node
    if "anyOf" in node:
        node["anyOf"] = [_as_written(b, in_union=True) for b in node["anyOf"]]
        return node
    if isinstance(node.get("items"), dict):
        node["items"] = _as_written(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _as_written(node["additionalProperties"])
    if not in_union and node.get("type") == "string" and node.keys() == {"type"}:
        node["type"] = ["string", "number", "boolean"]
    if not in_union and node.get("type") == "integer":
        node["type"] = "number"
    if "enum" in node or "const" in node or node.get("type") in ("integer", "number", "boolean"):
        return {"anyOf": [node, _MACRO_REF]}
    return node


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`node` or null: `key: null` and an empty `key:` mean "not set"."""
    null = {"type": "null"}
    if "anyOf" in node and len(node) == 1:
        return node if null in node["anyOf"] else {"anyOf": [*node["anyOf"], null]}
    return {"anyOf": [node, null]}


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `root`'s fields, by class name (pydantic's def name)."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[Any] = [root]
    while pending:
        item = pending.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item.__name__ in found:
                continue
            found[item.__name__] = item
            pending += [f.annotation for f in item.model_fields.values()]
        else:
            pending += list(typing.get_args(item))  # unions, Annotated, list/dict
    return found
