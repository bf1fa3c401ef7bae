"""Command line: `llamaswap [serve] --config FILE`, `check-config FILE`, `schema`, and the
commands for a running server: `ps`, `load`, `unload`, `run`, `logs` (`client_cli`).

Flags accept one or two dashes (`-config` like llama-swap, or `--config`).
This is the only module that turns errors into exit codes.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llamaswap import __version__, client_cli
from llamaswap.client_cli import Server
from llamaswap.errors import ClientError, ConfigError, StoreError, format_problems

DEFAULT_LISTEN = "127.0.0.1:8080"


def _normalise_single_dash(argv: list[str]) -> list[str]:
    """Accept Go-style `-config x` by rewriting long single-dash flags to `--config x`."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":  # what follows is arguments (a prompt may start with `-`)
            return out + argv[i:]
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            out.append("-" + arg)
        else:
            out.append(arg)
    return out


def _check_listen(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse an unusable `--listen` before anything starts (a port out of range, no port)."""
    if value is not None:
        from llamaswap.serve import parse_listen  # noqa: PLC0415 - keep --version fast

        try:
            parse_listen(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("invalid --listen address ")) from exc
    return value


def _serve_options(f: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="Config file (llama-swap compatible YAML).",
        ),
        click.option(
            "--config-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Directory of *.yaml files merged after --config.",
        ),
        click.option(
            "--listen",
            default=None,
            callback=_check_listen,
            help=(
                f"host:port to listen on (default {DEFAULT_LISTEN}; ':PORT' = all interfaces; "
                "a bare PORT = 127.0.0.1 only)."
            ),
        ),
        click.option(
            "--watch-config",
            is_flag=True,
            help="Reload the config when the file changes (SIGHUP always reloads).",
        ),
        click.option(
            "--tls-cert-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="PEM certificate (chain): serve HTTPS. Needs --tls-key-file.",
        ),
        click.option(
            "--tls-key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="PEM private key of --tls-cert-file.",
        ),
        click.option(
            "--fast-path/--no-fast-path",
            default=True,
            envvar="LLAMASWAP_FAST_PATH",
            help=(
                "Serve plain model requests on the uvloop/httptools fast path (default; "
                "plain HTTP only; env LLAMASWAP_FAST_PATH=0 turns it off)."
            ),
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("--version", "show_version", is_flag=True, help="Print the version and exit.")
@_serve_options
@click.pass_context
def cli(
    ctx: click.Context,
    show_version: bool,
    config_path: Path | None,
    config_dir: Path | None,
    listen: str | None,
    watch_config: bool,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    fast_path: bool,
) -> None:
    """llamaswap: hot-swapping proxy for local inference servers (default command: serve)."""
    if show_version:
        click.echo(f"version: {__version__}")
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        serve_params = {k: v for k, v in ctx.params.items() if k != "show_version"}
        ctx.invoke(serve, **serve_params)


@cli.command()
@_serve_options
def serve(
    config_path: Path | None,
    config_dir: Path | None,
    listen: str | None,
    watch_config: bool,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    fast_path: bool,
) -> None:
    """Serve the proxy until SIGINT/SIGTERM (then every upstream is stopped)."""
    from llamaswap.serve import ServeOptions, run  # noqa: PLC0415 - keep --version fast

    if config_path is None and config_dir is None:
        raise click.UsageError("at least one of --config or --config-dir must be provided")
    if (tls_cert_file is None) != (tls_key_file is None):
        raise click.UsageError("--tls-cert-file and --tls-key-file must be given together")
    if tls_cert_file is not None and tls_key_file is not None:
        _check_tls_pair(tls_cert_file, tls_key_file)
    options = ServeOptions(
        config_path=config_path,
        config_dir=config_dir,
        listen=listen or DEFAULT_LISTEN,
        watch_config=watch_config,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
        fast_path=fast_path,
    )
    try:
        run(options)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except StoreError as exc:
        click.echo(f"llamaswap: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"llamaswap: {exc}", err=True)
        sys.exit(1)


def _check_tls_pair(cert: Path, key: Path) -> None:
    """Fail before anything starts when the certificate and key cannot be used together."""
    import ssl  # noqa: PLC0415 - keep --version fast

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        click.echo(
            f"llamaswap: cannot use --tls-cert-file {cert} with --tls-key-file {key}: {exc}",
            err=True,
        )
        sys.exit(1)


@cli.command("check-config")
@click.argument("config_file", type=click.Path(path_type=Path), required=False)
@click.option(
    "--config",
    "config_option",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file (the same as giving it as the argument).",
)
@click.option("--config-dir", type=click.Path(path_type=Path), default=None)
def check_config(
    config_file: Path | None, config_option: Path | None, config_dir: Path | None
) -> None:
    """Validate a config: print every problem with its YAML path, or a summary."""
    from llamaswap.config.load import load_config, summarize  # noqa: PLC0415

    if config_file is not None and config_option is not None and config_file != config_option:
        raise click.UsageError("give the config file once: as the argument or as --config")
    config_file = config_file or config_option
    if config_file is None and config_dir is None:
        raise click.UsageError("a config file is needed: check-config FILE (or --config FILE)")
    try:
        config = load_config(config_file, config_dir)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    source = ", ".join(str(p) for p in (config_file, config_dir) if p is not None)
    if config.unusable:
        # Loads (llama-swap loads it too), but a model that can never start is an error here.
        click.echo(str(ConfigError(config.unusable, source, config.warnings)), err=True)
        sys.exit(1)
    if config.warnings:
        click.echo(format_problems(f"warnings in {source}", config.warnings), err=True)
    click.echo(summarize(config))


@cli.command("cluster")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join: `auto` (the one `ray start` made here) or ray://host:port. "
    "Default: start a local Ray for this machine alone.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address Serve listens on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def cluster(config_path: Path, address: str | None, host: str, port: int) -> None:
    """Serve the config across machines on Ray Serve (docs/cluster.md); Ctrl-C tears down."""
    try:
        from llamaswap.cluster.app import (  # noqa: PLC0415 - needs the optional `ray` extra
            ClusterOptions,
            deploy,
            read_cluster_config,
            teardown,
        )
    except ImportError as exc:
        click.echo(f"llamaswap cluster needs Ray: pip install 'llamaswap[ray]' ({exc})", err=True)
        sys.exit(1)
    try:
        text, config = read_cluster_config(config_path)
    except (ConfigError, OSError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    stop = threading.Event()
    deployed = False

    def on_signal(*_: object) -> None:
        if not deployed:  # a deployment waiting for a machine that never comes
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        url = deploy(ClusterOptions(config_path, address, host, port), text, config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted while deploying: tearing down", err=True)
        teardown()
        sys.exit(130)
    deployed = True
    click.echo(f"llamaswap cluster serving {len(config.models)} models on {url}/v1 (Ctrl-C stops)")
    stop.wait()
    click.echo("tearing the cluster application down")
    teardown()


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the config file (for editors)."""
    from llamaswap.config.load import config_schema  # noqa: PLC0415

    click.echo(json.dumps(config_schema(), indent=2))


# ---- commands for a running server ---------------------------------------------------------


def _server_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--api-key",
        envvar="LLAMASWAP_API_KEY",
        default=None,
        help="The server's API key, sent as a Bearer token (env LLAMASWAP_API_KEY).",
    )(f)
    return click.option(
        "--url",
        envvar="LLAMASWAP_URL",
        default=client_cli.DEFAULT_URL,
        show_default=True,
        help="The running llamaswap (env LLAMASWAP_URL).",
    )(f)


def _client_errors(action: Callable[[], None]) -> None:
    """Run `action`; a ClientError is one line on stderr and exit code 1."""
    try:
        action()
    except ClientError as exc:
        click.echo(f"llamaswap: {exc}", err=True)
        sys.exit(1)


@cli.command()
@_server_options
def ps(url: str, api_key: str | None) -> None:
    """List the models running (or starting, stopping, backing off) on a server."""
    server = Server(url, api_key)
    _client_errors(lambda: click.echo(client_cli.ps_table(client_cli.running(server))))


@cli.command()
@click.argument("model")
@_server_options
def load(model: str, url: str, api_key: str | None) -> None:
    """Load MODEL on a running server; return once it is ready."""

    def action() -> None:
        client_cli.load(Server(url, api_key), model)
        click.echo(f"{model} is loaded")

    _client_errors(action)


@cli.command()
@click.argument("model", required=False)
@_server_options
def unload(model: str | None, url: str, api_key: str | None) -> None:
    """Stop MODEL (every model when none is given) on a running server."""

    def action() -> None:
        client_cli.unload(Server(url, api_key), model)
        click.echo(f"{model} is unloaded" if model else "every model is unloaded")

    _client_errors(action)


@cli.command()
@click.argument("node")
@click.option("--undo", is_flag=True, help="Bring the drained NODE back instead.")
@_server_options
def drain(node: str, undo: bool, url: str, api_key: str | None) -> None:
    """Drain NODE of a `llamaswap cluster` (--url: its ingress) for maintenance: no new
    requests go there, those in flight finish, then its models are unloaded."""

    def action() -> None:
        client_cli.drain(Server(url, api_key), node, not undo)
        click.echo(f"{node} serves again" if undo else f"{node} is draining")

    _client_errors(action)


@cli.command()
@click.argument("model")
@click.argument("prompt", required=False)
@_server_options
def run(model: str, prompt: str | None, url: str, api_key: str | None) -> None:
    """Chat with MODEL: answer PROMPT, or read one message a line from stdin (keeping the
    conversation) until end of input or /bye."""
    server = Server(url, api_key)

    def write(text: str) -> None:
        click.echo(text, nl=False)

    def action() -> None:
        if prompt is not None:
            client_cli.answer(server, model, [{"role": "user", "content": prompt}], write)
        else:
            shown = ">>> " if sys.stdin.isatty() else ""
            client_cli.converse(server, model, sys.stdin.readline, write, shown)

    _client_errors(action)


@cli.command()
@click.argument("model", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they come.")
@_server_options
def logs(model: str | None, follow: bool, url: str, api_key: str | None) -> None:
    """Print the server's log, or MODEL's process output ('proxy' and 'upstream' name
    llamaswap's own log and every upstream's output)."""
    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()  # a follower sees each line as it comes

    _client_errors(lambda: client_cli.logs(Server(url, api_key), model, follow, write))


def main(argv: list[str] | None = None) -> None:
    args = _normalise_single_dash(list(sys.argv[1:] if argv is None else argv))
    cli.main(args=args, prog_name="llamaswap")
