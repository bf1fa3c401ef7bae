"""llamaswap: one OpenAI/Anthropic-compatible endpoint that hot-swaps local inference servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llamaswap")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
