"""``python -m bench.upload_check``: what one content check of a tiny PNG costs on
``complete``, in a worker thread of the API process (as before) and in a child of the check
fork server (`bulwark.api.uploads.check_process`); prints the median and 95th percentile."""

import asyncio
import io
import statistics
import time
from collections.abc import Awaitable, Callable

from PIL import Image

from bulwark.api.uploads.check_process import CheckLimits, check_in_process, memory_ceiling
from bulwark.api.uploads.contents import MAX_JPEG_SCANS, check_contents

RUNS = 200
MAX_PIXELS = 50_000_000


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def _timed(check: Callable[[], Awaitable[None]]) -> list[float]:
    await check()  # warm: Pillow's plugins, the fork server
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await check()
        seconds.append(time.perf_counter() - started)
    return seconds


async def _main() -> None:
    png = _tiny_png()
    limits = CheckLimits(
        seconds=10.0,
        max_pixels=MAX_PIXELS,
        max_scans=MAX_JPEG_SCANS,
        memory_bytes=memory_ceiling(MAX_PIXELS),
    )

    async def in_thread() -> None:
        await asyncio.to_thread(
            check_contents,
            png,
            declared_type="image/png",
            declared_size=len(png),
            max_pixels=MAX_PIXELS,
        )

    async def in_process() -> None:
        await check_in_process(
            png, declared_type="image/png", declared_size=len(png), limits=limits
        )

    for name, check in (("thread", in_thread), ("process", in_process)):
        seconds = sorted(await _timed(check))
        median, p95 = statistics.median(seconds), seconds[int(len(seconds) * 0.95)]
        print(f"{name:8} median {median * 1000:.1f} ms  p95 {p95 * 1000:.1f} ms  ({RUNS} checks)")


if __name__ == "__main__":
    asyncio.run(_main())
