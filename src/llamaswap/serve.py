"""Running the server: load the config, build the app, listen, reload, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from llamaswap.config.load import load_config
from llamaswap.config.model import Config
from llamaswap.errors import ConfigError, StoreError
from llamaswap.observe.activity import reuse_or_open
from llamaswap.observe.console import ConsoleHandler
from llamaswap.observe.events import EventBus
from llamaswap.observe.load_time_store import LoadTimeFile
from llamaswap.observe.logbuffer import LogBuffer
from llamaswap.router import Router
from llamaswap.server.access_log import ACCESS_LOG
from llamaswap.server.api import profiles
from llamaswap.server.app import build_app
from llamaswap.server.auth import ApiKeyChecker
from llamaswap.server.protocol import Runner
from llamaswap.server.state import AppState, open_store
from llamaswap.swap.load_times import LoadTime

log = logging.getLogger("llamaswap")

WATCH_INTERVAL_S = 2.0
# On shutdown, requests still running (endless streams, SSE feeds) must not hold the exit
# for aiohttp's default 60 s. aiohttp waits up to this long twice (for handlers to finish,
# then again before cancelling them), so ~5 s in all, like llama-swap's HTTP shutdown.
SHUTDOWN_DRAIN_S = 2.5


@dataclass(frozen=True)
class ServeOptions:
    config_path: Path | None
    config_dir: Path | None
    listen: str
    watch_config: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    fast_path: bool = True  # plain model requests skip aiohttp (`server/proxy/fast`)


BARE_PORT_HOST = "127.0.0.1"
"""Where a bare `--listen 8082` binds (llama-swap refuses it; we choose the safe reading)."""


def parse_listen(listen: str) -> tuple[str | None, int]:
    """`host:port`, `[v6]:port`, `:port` (all interfaces, as llama-swap's `:8080`) or a bare
    `port` (127.0.0.1 only). Raises `ValueError` naming the address when it is unusable."""
    text = listen.strip()
    if text.isdigit():
        host, port = BARE_PORT_HOST, text
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"invalid --listen address {listen!r}: expected host:port")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"invalid --listen address {listen!r}: port must be 1-65535")
    host = host.strip("[]")
    return (host or None), number


def listen_url(host: str | None, port: int, tls: bool) -> str:
    """The URL a user on this machine should open for a listening address."""
    scheme = "https" if tls else "http"
    if host is None or host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # every interface includes loopback
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class QuietBadRequests(logging.Filter):
    """aiohttp logs each malformed HTTP request with a traceback (on stderr, via Python's
    last-resort handler). The client got its 400 already; keep one line at DEBUG instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):  # BadHttpMessage and its kin
            log.debug("malformed request: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return False
        return True


def configure_logging(config: Config) -> None:
    # No record is formatted with its thread or process: not looking them up halves the
    # cost of building one (there is one per request: the access line).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    root = logging.getLogger("llamaswap")
    root.setLevel(level)
    aiohttp_server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in aiohttp_server.filters):
        aiohttp_server.addFilter(QuietBadRequests())
    if not root.handlers:
        handler = ConsoleHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        root.addHandler(handler)
    # Only stdout goes quiet: the `proxy` log buffer (/logs/stream/proxy) still gets records.
    quiet = config.log_to_stdout in ("upstream", "none")
    for existing in root.handlers:
        if type(existing) is ConsoleHandler:  # the stdout handler made above
            existing.setLevel(logging.CRITICAL + 1 if quiet else logging.NOTSET)


def report_findings(config: Config) -> None:
    """Log what the config loaded with: models that can never start, ignored keys."""
    for problem in config.unusable:
        log.error("config: %s", problem)
    for problem in config.warnings:
        log.warning("config: %s", problem)
    if config.cluster is not None:
        log.info("config: `cluster:` is read by `llamaswap cluster` only; one machine ignores it")


def put_interpreter_on_path() -> None:
    """Make `python3` in a model's cmd mean the interpreter llamaswap runs in (a venv's)."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")


class Server:
    """One listening socket; the config-dependent part (router, app state) can be replaced."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.events = EventBus()
        self.upstream_log = LogBuffer()
        self._state: AppState | None = None
        self._runner: web.AppRunner | None = None
        self._mirror: asyncio.Task[None] | None = None
        self._load_times: LoadTimeFile | None = None

    @property
    def state(self) -> AppState:
        """The running config's shared state (after `start`)."""
        assert self._state is not None
        return self._state

    def load(self) -> Config:
        return load_config(self.options.config_path, self.options.config_dir)

    async def start(self, config: Config) -> None:
        """Start the first config's router, then listen."""
        configure_logging(config)
        report_findings(config)
        store = open_store(config)  # an unusable store file stops the start before anything runs
        router = await self._new_router(config)
        self._state = AppState(config, router, ApiKeyChecker(config.api_keys), store=store)
        self._runner = Runner(
            build_app(self._state),
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_DRAIN_S,
            **ACCESS_LOG,
        )
        await self._runner.setup()
        host, port = parse_listen(self.options.listen)
        if self.options.listen.strip().isdigit():
            log.warning(
                "--listen %s has no host: listening on %s:%s only (use :%s for every interface)",
                self.options.listen,
                host,
                port,
                port,
            )
        ssl_context = None
        if self.options.tls_cert_file and self.options.tls_key_file:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.options.tls_cert_file, self.options.tls_key_file)
        site: web.TCPSite
        if self.options.fast_path and ssl_context is None:
            from llamaswap.server.proxy.fast.site import FastSite  # noqa: PLC0415 - opt-in

            site = FastSite(self._runner, host, port, self._state, SHUTDOWN_DRAIN_S)
        else:
            site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: not loopback-only, set apiKeys", self.options.listen)
        url = listen_url(host, port, ssl_context is not None)
        log.info(
            "llamaswap listening on %s with %d models: use %s/v1 (UI: %s/ui/)",
            self.options.listen,
            len(config.models),
            url,
            url,
        )
        if config.log_to_stdout in ("upstream", "both"):
            self._mirror = asyncio.create_task(self._mirror_upstream())
        self._preload(config, router)

    async def _new_router(self, config: Config) -> Router:
        # Learned load times live beside the activity rows when the store is a file.
        self._load_times = LoadTimeFile(config.store.path)
        router = Router(
            config,
            events=self.events,
            upstream_log=self.upstream_log,
            load_times={
                model: LoadTime(saved.seconds, saved.samples)
                for model, saved in self._load_times.read().items()
            },
            on_load_time=self._save_load_time,
        )
        await router.__aenter__()
        return router

    def _save_load_time(self, model: str, learned: LoadTime) -> None:
        if self._load_times is not None:
            self._load_times.save(model, learned.seconds, learned.samples)

    def _follow_store(self, config: Config) -> None:
        """After a reload that moved `store.path`, learned load times go to the new file."""
        wanted = LoadTimeFile(config.store.path)
        if self._load_times is not None and self._load_times.path == wanted.path:
            return
        if self._load_times is not None:
            self._load_times.close()
        self._load_times = wanted

    def _preload(self, config: Config, router: Router) -> None:
        async def preload(model: str) -> None:
            try:
                lease = await router.acquire(model)
            except Exception as exc:  # a failed preload is logged, never fatal
                log.warning("preload of %s failed: %s", model, exc)
                return
            lease.release()
            log.info("preloaded %s", model)

        async def preload_all() -> None:
            for model in config.hooks.on_startup.preload:
                await preload(model)

        if config.hooks.on_startup.preload:
            router.spawn_background(preload_all(), "preload")

    async def _mirror_upstream(self) -> None:
        with self.upstream_log.subscribe() as feed:
            async for chunk in feed:
                sys.stdout.flush()  # our own lines first: ConsoleHandler flushes once a pass
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

    async def reload(self) -> None:
        """Load the config again; a bad one is reported and the running one kept.

        The listening socket stays open and no request is refused: the old router hands over
        to the new one (`Router.hand_over`). Models whose process settings did not change
        keep running with their in-flight requests; a changed or removed model's process is
        stopped once its requests are done, and a changed one starts afresh on demand.
        """
        assert self._state is not None
        try:
            config = self.load()
            store = reuse_or_open(
                self._state.activity, config.store.path, config.metrics_max_in_memory
            )
        except (ConfigError, StoreError) as exc:
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            return
        configure_logging(config)
        report_findings(config)
        router = await self._state.router.hand_over(config)
        self._state.reconfigure_observe(config, store)
        self._follow_store(config)
        self._state.config = config
        self._state.router = router
        self._state.keys = ApiKeyChecker(config.api_keys)
        profiles.reset(self._state)  # spec §2.9: no profile is active after a reload
        log.info("config reloaded: %d models", len(config.models))
        # Clients of /api/events get a fresh modelStatus (new models, names, states).
        self.events.publish("modelState", {"id": None, "reason": "reload"})
        self._preload(config, router)

    async def stop(self) -> None:
        if self._mirror is not None:
            self._mirror.cancel()
            await asyncio.gather(self._mirror, return_exceptions=True)
            self._mirror = None
        if self._runner is not None:
            await self._runner.cleanup()  # stops accepting, then the app's cleanup stops models
            self._runner = None
        if self._load_times is not None:
            self._load_times.close()


def _config_stamp(options: ServeOptions) -> tuple[tuple[str, float, int], ...]:
    files: list[Path] = []
    if options.config_path is not None:
        files.append(options.config_path)
    if options.config_dir is not None and options.config_dir.is_dir():
        files.extend(sorted(options.config_dir.glob("*.y*ml")))
    stamps = []
    for f in files:
        with contextlib.suppress(OSError):
            st = f.stat()
            stamps.append((str(f), st.st_mtime, st.st_size))
    return tuple(stamps)


async def serve_forever(options: ServeOptions) -> None:
    put_interpreter_on_path()
    server = Server(options)
    await server.start(server.load())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    stamp = _config_stamp(options)
    try:
        while not stop.is_set():
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(reload_requested.wait()),
            ]
            timeout = WATCH_INTERVAL_S if options.watch_config else None
            _, pending = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for w in pending:
                w.cancel()
            if stop.is_set():
                break
            new_stamp = _config_stamp(options)
            if reload_requested.is_set() or (options.watch_config and new_stamp != stamp):
                reload_requested.clear()
                stamp = new_stamp
                await server.reload()
    finally:
        log.info("shutting down: stopping every upstream")
        await server.stop()


def run(options: ServeOptions) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        asyncio.run(serve_forever(options))
    else:
        uvloop.run(serve_forever(options))
