"""The dependency rules of DESIGN.md, checked by parsing imports (nothing is executed)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "llamaswap"

# cli → server → router → {swap, supervisor} → {config, observe}; a layer may import only
# from layers to its right (and from inside its own package). `__main__` sits left of cli;
# `serve` (running the server: config, app, listen, reload) sits between cli and server;
# `client_cli` (the commands that talk to a running server over HTTP) sits beside serve;
# `cluster` (the Ray Serve deployment) sits above serve: each node replica runs serve's Server.
LAYERS: dict[str, int] = {
    "__main__": 0,
    "cli": 1,
    "cluster": 2,
    "serve": 3,
    "client_cli": 3,
    "server": 4,
    "router": 5,
    "swap": 6,
    "supervisor": 6,
    "config": 7,
    "observe": 7,
}
FREE = {"errors", "testing", ""}  # "" = the package root (`from llamaswap import __version__`)
SWAP_FORBIDDEN = {"asyncio", "aiohttp", "time", "logging"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit_of(path: Path) -> str:
    """The first component below llamaswap/ (`server` for server/app.py, `cli` for cli.py)."""
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py") if first != "__init__.py" else ""


def imported(path: Path) -> list[str]:
    """Absolute dotted names imported by a module (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ["llamaswap", *path.relative_to(PACKAGE).parent.parts]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            # `from pkg import name` imports the module pkg.name only when that is a module.
            names.extend(
                f"{module}.{alias.name}"
                for alias in node.names
                if is_module(f"{module}.{alias.name}")
            )
    return names


def is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "llamaswap":
        return False
    where = PACKAGE.joinpath(*parts[1:])
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def llamaswap_unit(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "llamaswap":
        return None
    return parts[1] if len(parts) > 1 else ""


def test_the_package_is_found() -> None:
    found = {unit_of(p) for p in modules()}
    assert {"swap", "config", "server", "supervisor"} <= found


def test_swap_is_pure() -> None:
    offenders: list[str] = []
    for path in sorted((PACKAGE / "swap").rglob("*.py")):
        for name in imported(path):
            top = name.split(".")[0]
            if top in SWAP_FORBIDDEN or llamaswap_unit(name) in {"server", "supervisor", "router"}:
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_dependencies_point_one_way() -> None:
    offenders: list[str] = []
    for path in modules():
        unit = unit_of(path)
        if unit in FREE or unit not in LAYERS:
            continue
        for name in imported(path):
            other = llamaswap_unit(name)
            if other is None or other in FREE or other == unit:
                continue
            if other not in LAYERS or LAYERS[other] <= LAYERS[unit]:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == [], "\n".join(offenders)


def test_every_unit_has_a_layer() -> None:
    unknown = {unit_of(p) for p in modules()} - set(LAYERS) - FREE
    assert unknown <= {"ui"}, unknown
