"""Command line: `llamaswap [serve] --config FILE`, `check-config FILE`, `schema`.

Flags accept one or two dashes (`-config` like llama-swap, or `--config`).
This is the only module that turns errors into exit codes.
"""

from __future__ import annotations

import sys

import click

from llamaswap import __version__


def _normalise_single_dash(argv: list[str]) -> list[str]:
    """Accept Go-style `-config x` by rewriting long single-dash flags to `--config x`."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            out.append("-" + arg)
        else:
            out.append(arg)
    return out


@click.group(invoke_without_command=True)
@click.option("--version", "show_version", is_flag=True, help="Print the version and exit.")
@click.pass_context
def cli(ctx: click.Context, show_version: bool) -> None:
    """llamaswap: hot-swapping proxy for local inference servers."""
    if show_version:
        click.echo(f"version: {__version__}")
        ctx.exit(0)


def main(argv: list[str] | None = None) -> None:
    args = _normalise_single_dash(list(sys.argv[1:] if argv is None else argv))
    cli.main(args=args, prog_name="llamaswap")
