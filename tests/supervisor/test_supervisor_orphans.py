"""No orphans: SIGKILL of the supervising process takes its upstream children down too."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from helpers import fake_upstream_cmd, free_port, wait_until
from helpers import pid_gone as gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG")

PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from llamaswap.observe.logbuffer import LogBuffer
    from llamaswap.supervisor.process import ProcessSpec, UpstreamProcess

    async def main() -> None:
        cmd, proxy = sys.argv[1], sys.argv[2]
        spec = ProcessSpec("m1", cmd, "", proxy, "/health", (), 15.0)
        proc = UpstreamProcess(spec, logs=LogBuffer())
        await proc.ensure_ready()
        print(f"UPSTREAM {proc.pid}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_sigkill_of_parent_kills_upstream(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    port = free_port()
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        fake_upstream_cmd(port, "--silent"),
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
    )
    upstream: int | None = None
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 20)
        assert line.startswith(b"UPSTREAM "), line
        upstream = int(line.split()[1])
        assert not gone(upstream)
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
        await wait_until(lambda: gone(upstream), timeout=5, message="upstream gone")
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if upstream is not None and not gone(upstream):
            psutil.Process(upstream).kill()
