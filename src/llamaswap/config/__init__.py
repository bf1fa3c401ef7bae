"""Configuration: the typed model of a config file, its loader, macros and the matrix DSL."""

from llamaswap.config.load import config_schema, load_config, load_config_text, summarize
from llamaswap.config.matrix import CompiledMatrix, MatrixDecision, compile_matrix
from llamaswap.config.model import Config, GroupConfig, ModelConfig

__all__ = [
    "CompiledMatrix",
    "Config",
    "GroupConfig",
    "MatrixDecision",
    "ModelConfig",
    "compile_matrix",
    "config_schema",
    "load_config",
    "load_config_text",
    "summarize",
]
