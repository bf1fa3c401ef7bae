"""The `llamacpp` end-to-end fixtures live in llamacpp_support.py (importable by the tests)."""

from llamacpp_support import llamacpp_assets, llamaswap_gemma

__all__ = ["llamacpp_assets", "llamaswap_gemma"]
