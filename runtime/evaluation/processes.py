"""A `mirage serve` process of its own, as a user runs it: for the bench's soak and `mirage loadtest`."""

from __future__ import annotations

import asyncio
import collections
import re
import sys

SERVER_START_S = 300
"""Seconds a server process may take to say it is serving (a cold numba cache compiles kernels)."""


async def server_process(*flags: str) -> tuple[asyncio.subprocess.Process, int, collections.deque, list]:
    """A `mirage serve` process on a free loopback port (with ``flags``): (process, port, the tail of
    its stderr, the tasks reading its output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime", "serve", "--host", "127.0.0.1", "--port", "0", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    errors: collections.deque = collections.deque(maxlen=40)

    async def drain(stream, keep) -> None:
        async for line in stream:
            if keep is not None:
                keep.append(line.decode(errors="replace").rstrip())

    async def port() -> int:
        while True:
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                raise RuntimeError(
                    f"the server process exited ({proc.returncode}) before serving:\n" + "\n".join(errors)
                )
            found = re.search(rb"serving mirage\.v1 on \S+:(\d+)", line)
            if found:
                return int(found.group(1))

    readers = [asyncio.ensure_future(drain(proc.stderr, errors))]
    try:
        bound = await asyncio.wait_for(port(), SERVER_START_S)
    except BaseException:
        await stop_process(proc, readers)
        raise
    readers.append(asyncio.ensure_future(drain(proc.stdout, None)))
    return proc, bound, errors, readers


async def stop_process(proc: asyncio.subprocess.Process, readers: list) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    for task in readers:
        task.cancel()
