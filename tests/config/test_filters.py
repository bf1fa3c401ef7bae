"""Model filters: stripParams sanitising, setParams, setParamsByID auto-aliases (spec §2.4)."""

from __future__ import annotations

from llamaswap.config.model import PeerFilters

from ._helpers import load, messages


def test_strip_params_sanitised() -> None:
    f = PeerFilters.model_validate({"stripParams": " temperature, model ,top_k,,temperature, a.b "})
    assert f.strip_params == ["a.b", "temperature", "top_k"]


def test_set_params_protected_removed_and_sorted() -> None:
    f = PeerFilters.model_validate({"setParams": {"z": 1, "model": "x", "a": {"n": 2}}})
    assert list(f.set_params.items()) == [("a", {"n": 2}), ("z", 1)]


def test_legacy_strip_params_key_for_models_only() -> None:
    c = load(
        """
        models:
          m:
            cmd: "s ${PORT}"
            filters: {strip_params: "b, a"}
        peers:
          p: {proxy: "http://h", models: [x], filters: {strip_params: "b"}}
        """
    )
    assert c.models["m"].filters.strip_params == ["a", "b"]
    # populate-by-name makes the snake spelling work for peers too; harmless, documented.
    assert c.peers["p"].filters.strip_params == ["b"]


def test_set_params_by_id_auto_aliases() -> None:
    c = load(
        """
        models:
          model1:
            cmd: "s ${PORT}"
            aliases: ["model1:low"]
            filters:
              setParams: {reasoning: medium}
              setParamsByID:
                "${MODEL_ID}": {reasoning: medium}
                "${MODEL_ID}:high": {reasoning: high}
                "model1:low": {reasoning: low}
        """
    )
    m = c.models["model1"]
    assert m.aliases == ["model1:low", "model1:high"]
    assert c.resolve_model("model1:high") == "model1"
    assert m.filters.set_params_by_id["model1:high"] == {"reasoning": "high"}


def test_set_params_by_id_conflicts() -> None:
    assert messages(
        """
        models:
          a:
            cmd: "s ${PORT}"
            aliases: [shared]
          b:
            cmd: "s ${PORT}"
            filters:
              setParamsByID:
                a: {x: 1}
                shared: {x: 2}
        """
    ) == [
        "models.b.filters.setParamsByID: model b filters.setParamsByID: key 'a' conflicts with "
        "an existing model ID",
        "models.b.filters.setParamsByID: duplicate alias 'shared' in model b "
        "filters.setParamsByID, already used by model a",
    ]
