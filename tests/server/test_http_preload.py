"""hooks.on_startup.preload and --watch-config, against a llamaswap subprocess."""

from __future__ import annotations

from pathlib import Path

from llamaswap_proc import fake_model, llamaswap

from helpers import wait_until_sync

PRELOAD = (
    "models:\n"
    + fake_model("first")
    + fake_model("second", "aliases: [second-alias]")
    + fake_model("third")
    + "groups:\n"
    + "  together: {swap: false, exclusive: true, members: [first, second]}\n"
    + "hooks:\n  on_startup:\n    preload: [first, second-alias, unknown-dropped]\n"
)


def test_preload_starts_the_listed_models_in_order(tmp_path: Path) -> None:
    with llamaswap(tmp_path, PRELOAD) as server:

        def both_ready() -> bool:
            running = server.running()
            return [e["model"] for e in running] == ["first", "second"] and all(
                e["state"] == "ready" for e in running
            )

        assert wait_until_sync(both_ready, 15), server.running()
        assert "third" not in server.running_models()


def test_watch_config_picks_up_a_new_model(tmp_path: Path) -> None:
    config = "models:\n" + fake_model("one")
    with llamaswap(tmp_path, config, extra_args=("--watch-config",)) as server:
        assert server.chat("one").status == 200
        assert server.chat("two").status == 404
        server.write_config(config + fake_model("two"))
        assert wait_until_sync(lambda: server.chat("two").status == 200, 15)
        server.write_config("models: [not, a, mapping]\n")  # broken: old config keeps serving
        assert wait_until_sync(lambda: "reload rejected" in server.log(), 15)
        assert server.chat("two").status == 200
