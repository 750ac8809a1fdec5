"""Content checks in a separate process, under a wall-clock deadline and a memory ceiling.

`contents.check_contents` decodes images with Pillow, whose C decoders can neither be
interrupted nor bounded from Python: a thread running one runs on after its caller has given
up. So each check runs in a child process that is killed at its deadline (or as soon as its
caller is cancelled), under ``RLIMIT_AS`` set by the child itself before it reads a byte.

Why a ``forkserver`` context: a plain ``fork`` of the threaded, asyncio API process can copy
a lock held by another thread into the child; ``spawn`` starts an interpreter and imports
Pillow for each check (about 0.1 s). The fork server is one clean single-threaded process,
started on the first check, that has already imported the check modules
(`multiprocessing.set_forkserver_preload`) and forks a child per check in a few
milliseconds (docs/benchmarks.md). The bytes go to the child over a `multiprocessing.Pipe`,
the verdict comes back over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import resource
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from bulwark.api.uploads.contents import ContentRejectedError, check_contents

#: Bytes of address space a check may use per pixel of ``max_pixels``, beyond the fork
#: server's own: the most Pillow was measured to take is 16.3 (a lossless RGBA WebP,
#: decoded into a buffer and copied), then 12 (a progressive CMYK JPEG: libjpeg keeps every
#: coefficient), 4 (an RGBA PNG). See docs/uploads.md.
BYTES_PER_PIXEL = 17
#: Address space allowed beyond the pixels: three copies of the file, and 64 MiB.
FILE_COPIES = 3
SLACK_BYTES = 64 * 1024 * 1024
#: Seconds to wait for a killed child to be reaped.
REAP_SECONDS = 5.0
#: Seconds a child may take to start (the first check starts the fork server, which imports
#: the API's modules: about a second) before the check is given up as unavailable (503).
START_SECONDS = 30.0

#: Imported once by the fork server, not by each child: the check modules, and what the
#: main module imports, as each child runs the main module again (``bulwark-api``, the
#: console script, imports `bulwark.api.cli` and with it the whole app: 2 s a child).
#: ``"__main__"`` alone should do, but CPython 3.11's fork server never receives the main
#: module's path (it asks the preparation data for ``main_path``, which is named
#: ``init_main_from_path``).
_PRELOAD = ["__main__", "bulwark.api.cli", "bulwark.api.uploads.check_preload"]
_CONTEXT = multiprocessing.get_context("forkserver")
_preloaded = False


class CheckUnavailableError(Exception):
    """No process could be started to check a file (the fork server failed): not the
    file's fault, retry later."""


@dataclass(frozen=True)
class CheckLimits:
    """What one check may spend.

    Attributes:
        seconds: wall-clock seconds from the start of the child until it is killed.
        max_pixels: the most pixels of an image (also sizes the memory ceiling).
        max_scans: the most scans of a JPEG (`contents.MAX_JPEG_SCANS`); None: no limit.
        memory_bytes: bytes of address space the child may add to the fork server's, beside
            `FILE_COPIES` of the file (`memory_ceiling`).
    """

    seconds: float
    max_pixels: int
    max_scans: int | None
    memory_bytes: int


def memory_ceiling(max_pixels: int) -> int:
    """Bytes of address space a check may take to decode an image of ``max_pixels``:
    `BYTES_PER_PIXEL` per pixel and `SLACK_BYTES`."""
    return BYTES_PER_PIXEL * max_pixels + SLACK_BYTES


async def check_in_process(
    data: bytes, *, declared_type: str, declared_size: int, limits: CheckLimits
) -> None:
    """`check_contents` of ``data`` in a child process, killed after ``limits.seconds`` or
    when the caller is cancelled (never left running).

    Raises:
        ContentRejectedError: the file is not what was declared (`check_contents`), its
            check took longer than ``limits.seconds``, or needed more than its memory
            ceiling, or crashed the child.
        CheckUnavailableError: no child could be started.
    """
    check = _Check(data, declared_type, declared_size, limits)
    try:
        # The deadline runs from the child's start (`_Check.run`); this one bounds the start
        # too (the first starts the fork server) and a child that would not read its bytes.
        async with asyncio.timeout(limits.seconds + START_SECONDS):
            kind, message = await asyncio.to_thread(check.run)
    except TimeoutError:
        if not check.started:
            raise CheckUnavailableError("the check process did not start") from None
        kind, message = "timeout", ""
    finally:
        check.abandon()  # kills the child if it still runs (also when the caller is cancelled)
    if kind == "ok":
        return
    if kind == "rejected":
        raise ContentRejectedError(message)
    if kind == "timeout":
        raise ContentRejectedError(
            f"Checking the file took longer than {limits.seconds:g} seconds."
        )
    if kind == "memory":
        raise ContentRejectedError("Checking the file needed more memory than allowed.")
    if kind == "unavailable":
        raise CheckUnavailableError(message)
    raise ContentRejectedError("The file could not be checked.")  # the child crashed


class _Check:
    """One child process and the blocking exchange with it (`run`, in a worker thread)."""

    def __init__(self, data: bytes, declared_type: str, declared_size: int, limits: CheckLimits):
        self._data = data
        self._parent, child = _CONTEXT.Pipe()
        self._child_end = child
        self._process: BaseProcess = _CONTEXT.Process(
            target=_child_main,
            args=(
                child,
                declared_type,
                declared_size,
                limits,
                limits.memory_bytes + FILE_COPIES * len(data),
            ),
            name="upload-check",
            daemon=True,
        )
        self._seconds = limits.seconds
        self._abandoned = threading.Event()
        self._started = threading.Event()

    @property
    def started(self) -> bool:
        """Whether the child has been started."""
        return self._started.is_set()

    def run(self) -> tuple[str, str]:
        """Start the child, send it the bytes, wait for its verdict until ``seconds`` after
        its start: ``("ok", "")``, ``("rejected", why)``, ``("timeout", "")``,
        ``("memory", "")``, ``("crashed", "")`` or ``("unavailable", why)``. Always ends with
        the child killed and reaped."""
        try:
            _ensure_preload()
            try:
                self._process.start()
            except OSError as exc:
                return "unavailable", f"no check process: {exc}"
            deadline = time.monotonic() + self._seconds
            self._started.set()
            self._child_end.close()
            if self._abandoned.is_set():  # the caller left while the child was starting
                return "crashed", ""
            try:
                self._parent.send_bytes(self._data)
                if not self._parent.poll(max(0.0, deadline - time.monotonic())):
                    return "timeout", ""
                kind, message = self._parent.recv()
            except (OSError, EOFError):  # the child died (killed, crashed, out of memory)
                return "crashed", ""
            return str(kind), str(message)
        finally:
            self._kill()
            self._process.join(REAP_SECONDS)
            self._parent.close()

    def abandon(self) -> None:
        """Kill the child now if it runs (without waiting: `run` reaps it); if it is still
        starting, `run` kills it once started."""
        self._abandoned.set()
        if self._started.is_set():
            self._kill()

    def _kill(self) -> None:
        if self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError, ValueError):
                self._process.kill()


def _ensure_preload() -> None:
    global _preloaded  # noqa: PLW0603 - once per process, before the fork server starts
    if not _preloaded:
        _CONTEXT.set_forkserver_preload(_PRELOAD)
        _preloaded = True


def _child_main(
    conn: Connection, declared_type: str, declared_size: int, limits: CheckLimits, extra: int
) -> None:
    """In the child: cap the address space at its current size + ``extra`` and the CPU time
    just past the deadline, read the bytes, check them, answer ``(kind, message)``."""
    _limit_memory(extra)
    # A backstop should the API process die before it kills this one: the kernel ends a
    # process past its CPU limit (SIGXCPU), and a single thread uses no more CPU time than
    # wall-clock time, so this never ends a check that the deadline would not.
    cpu_seconds = math.ceil(limits.seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    try:
        data = conn.recv_bytes(declared_size + 1)
        check_contents(
            data,
            declared_type=declared_type,
            declared_size=declared_size,
            max_pixels=limits.max_pixels,
            max_scans=limits.max_scans,
        )
    except ContentRejectedError as rejected:
        conn.send(("rejected", str(rejected)))
    except MemoryError:
        conn.send(("memory", ""))
    else:
        conn.send(("ok", ""))


def _limit_memory(extra: int) -> None:
    """``RLIMIT_AS`` of this process: its current virtual size + ``extra`` bytes (Linux
    reads the size from ``/proc``; elsewhere no ceiling is set, the deadline still holds)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            current = int(statm.read().split()[0]) * resource.getpagesize()
    except OSError:
        return
    limit = current + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
