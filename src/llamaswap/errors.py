"""The one exception tree of llamaswap.

    LlamaswapError                      base of everything we raise on purpose
    ├── ConfigError                     a config file is unusable; carries every problem found
    ├── CommandError                    a `cmd` string cannot be turned into an argv
    ├── StoreError                      the activity store file (`store.path`) is unusable
    ├── UpstreamError                   an upstream process could not serve
    │   ├── StartError                  spawn failed, exited during start, or health timed out
    │   ├── StartAborted                a start was cancelled by a stop or shutdown
    │   └── ProcessShutdown             the process owner is in its terminal state
    ├── ClientError                     a command could not get its answer from a running server
    └── RequestError                    a request cannot be served; carries the HTTP status
        ├── ModelNotFound               404: no model named / unknown model
        ├── BadRequest                  400: malformed body, form or query
        ├── TooManyRequests             429: concurrencyLimit reached
        └── RequestRejected             other rejections: unload, shutdown, failed start

Library code raises these; only `cli.py` maps them to exit codes and only
`server/responses.py` maps them to HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass


class LlamaswapError(Exception):
    """Base class for every error llamaswap raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: where (a dotted YAML path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_problems(head: str, problems: list[ConfigProblem]) -> str:
    """`head:` then one `  - path: message` line per problem (just `head` when none)."""
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{head}:\n{lines}" if lines else head


class ConfigError(LlamaswapError):
    """A config file cannot be used. `problems` lists every problem found, with YAML paths;
    `warnings` what was found besides (unknown keys), so everything is reported at once."""

    def __init__(
        self,
        problems: list[ConfigProblem],
        source: str = "",
        warnings: list[ConfigProblem] | None = None,
    ) -> None:
        self.problems = list(problems)
        self.source = source
        self.warnings = list(warnings or [])
        text = format_problems(f"invalid config {source}" if source else "invalid config", problems)
        if self.warnings:
            text += "\n" + format_problems("warnings", self.warnings)
        super().__init__(text)


class CommandError(LlamaswapError):
    """A model's `cmd` could not be turned into an argument vector."""


class StoreError(LlamaswapError):
    """The activity store file cannot be used: another schema, corrupt, read-only, full.
    The message names the file and says what is wrong, in words for the operator."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"activity store {path}: {reason}")
        self.path = path
        self.reason = reason


class UpstreamError(LlamaswapError):
    """An upstream process could not do what was asked of it."""


class StartError(UpstreamError):
    """Starting an upstream failed: spawn error, early exit, or health check timeout."""


class StartAborted(UpstreamError):
    """A start was cancelled because the process was asked to stop or shut down."""


class ProcessShutdown(UpstreamError):
    """The process owner is shut down for good; it will not start again."""


class ClientError(LlamaswapError):
    """`llamaswap ps|load|unload|run|logs` failed: no server answers, or it refused (the
    message is one line, meant for the terminal)."""


class RequestError(LlamaswapError):
    """A request cannot be served. `status` is the HTTP status, `code` the OpenAI error code."""

    status: int = 500
    code: str | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class ModelNotFound(RequestError):
    status = 404


class BadRequest(RequestError):
    status = 400


class TooManyRequests(RequestError):
    """429: `concurrency_limit` (llama-swap's answer) or `queue_full` (past `maxQueue`).

    `retry_after` is the number of seconds the client is told to wait (`Retry-After`)."""

    status = 429
    code = "concurrency_limit"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RequestRejected(RequestError):
    status = 500
