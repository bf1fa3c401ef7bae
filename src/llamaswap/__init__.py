"""llamaswap: one OpenAI/Anthropic-compatible endpoint that hot-swaps local inference servers."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata on first use: importlib.metadata pulls
    # in zipfile, csv, email and more that serving never needs.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        found = version("llamaswap")
    except PackageNotFoundError:  # running from a source tree without an install
        found = "0.0.0"
    globals()["__version__"] = found
    return found
