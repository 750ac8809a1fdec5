"""The HTTP/1.1 server of auth and api: uvicorn's httptools protocol, with limits.

Why this, and not another server: uvicorn with httptools (llhttp, the parser of Node.js) is
the fastest HTTP/1.1 stack for an ASGI app, and llhttp is strict: bare LF, obsolete line
folding, a duplicated or signed Content-Length, Transfer-Encoding with Content-Length, bad
chunk sizes and terminators are all parse errors. What uvicorn lacks is what a hostile
client needs (issue 9): no limit on the request head (a 1 MiB header was served), no
timeout while a head or body is incomplete (slowloris connections stayed open for good), a
chunk size of 2^63 waited for its data forever, and a refused request left only a warning
without request id or client address. Granian and Hypercorn were considered, not adopted:
they too refuse a malformed request below the ASGI app, so our access line for it would
need hooks into their own logging, and a new server would change the hot path that a later
issue measures (neither was measured here). So `serve()` keeps uvicorn and httptools and
gives it `protocol_class`, a subclass of uvicorn's ``HttpToolsProtocol`` that adds, at a
few microseconds per well-formed request:

- a limit on the request head (request line and header fields, `HttpLimits`): the parser
  is never fed more than the limit while a head is incomplete, so a 1 MiB header costs
  16 KiB of parsing; 431 (414 for the target alone) before the application runs;
- a limit on the number of header fields: 431;
- a header timeout: a connection whose head is not complete within ``header_timeout`` of
  its start, or of its previous response, gets 408 when it had started a request (else a
  plain close, as an idle keep-alive connection);
- a body timeout: a body not complete within ``body_timeout`` of its head gets 408 (a
  close when the response was sent already), so a head followed by a stalled body cannot
  hold a connection either;
- a chunk larger than `MAX_CHUNK_BYTES` is refused with 413 as soon as its size line is
  read, instead of waiting for the data;
- every refusal is answered (400 for a parse error) with ``Connection: close``, the
  connection is half-closed at once and closed when the client closes or after
  `LINGER_SECONDS` (closing with unread input would reset the connection and lose the
  answer), and it writes exactly one access line (`bulwark.common.http.log_access`);
- an upgrade request (WebSocket is off) is served as a plain request, then the connection
  is closed: llhttp stops parsing HTTP after it, and so do we.

This relies on uvicorn internals (the protocol's callbacks and attributes, the
request-response cycle's flags), so ``bulwark-common`` pins uvicorn to the minor version it
was written for, and ``libs/common/tests/test_http_server.py`` fails on a version it does
not know or whose internals moved.
"""

from __future__ import annotations

import asyncio
import http
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from bulwark.common.http import (
    REFUSAL_STATE,
    UNPARSED_ROUTE,
    HttpLimits,
    Refusal,
    TrustedProxies,
    log_access,
    problem_body,
    request_id_or_none,
    resolve_client_ip,
)

if TYPE_CHECKING:
    from asyncio import TimerHandle

#: The largest chunk of a chunked request body accepted (Bulwark's bodies are at most
#: 64 KiB); a larger chunk size is answered 413 as soon as it is read.
MAX_CHUNK_BYTES = 1024 * 1024
#: Longest chunk-size line (size and extensions) accepted; RFC 9112 §7.1.1 asks servers to
#: limit extensions. A longer one is a 400.
MAX_CHUNK_LINE = 1024
#: Seconds a refused connection is kept half-closed, its input read and dropped, so the
#: client receives the answer before the connection is closed.
LINGER_SECONDS = 2.0

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+(?=[ \t;]|\Z)")
_TAIL_BYTES = 2 * MAX_CHUNK_LINE
_REQUEST_LINE_SLACK = 32  # method, version, spaces and CRLF around the request target


class _RefusedError(Exception):
    """Raised from a parser callback to stop parsing a request that is refused (httptools
    turns it into an ``HttpParserCallbackError``)."""


_DETAILS = {
    "invalid_request": "The request is not valid HTTP/1.1.",
    "header_too_large": "The request head is larger than the server accepts.",
    "uri_too_long": "The request target is longer than the server accepts.",
    "too_many_headers": "The request has more header fields than the server accepts.",
    "header_timeout": "The request head was not received in time.",
    "body_timeout": "The request body was not received in time.",
    "chunk_too_large": "A chunk of the request body is larger than the server accepts.",
    "chunk_line_too_long": "A chunk-size line of the request body is too long.",
    "body_too_large": "The request body is larger than the server accepts.",
    "trailer_refused": "The request carries trailer fields, which the server does not accept.",
    "invalid_host": "The request needs exactly one Host header field.",
}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Bulwark's limits (see the module docstring).

    Use `protocol_class` to get one bound to settings; ``limits`` and ``trusted_proxies``
    are class attributes because uvicorn creates one protocol per connection itself.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    trusted_proxies: ClassVar[TrustedProxies] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Same arguments as uvicorn's protocol (uvicorn calls it per connection)."""
        super().__init__(*args, **kwargs)
        # Connection state.
        self._input_closed = False  # refused or upgraded: later input is read and dropped
        self._deferred: bytes | None = None  # a refusal waiting for earlier responses
        # The header timeout: a deadline (None while no head is awaited) and one timer per
        # connection that checks it, re-armed only when it fires early: starting and
        # stopping the clock on every request costs no timer operation.
        self._head_deadline: float | None = None
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._active: RequestResponseCycle | None = None  # the cycle whose app runs
        # The message being read.
        self._in_head = True  # waiting for a request head, or reading one
        self._head_bytes = 0  # bytes read in this head phase
        self._head_counted = True  # whether _head_bytes counts this head from its start
        self._message_begun = False
        self._started = time.perf_counter()
        self._message_cycle: RequestResponseCycle | None = None  # its cycle, once it has one
        self._chunk_open = False  # its body is inside a chunk (size line read)
        self._chunk_unchecked = False  # a chunk-size line was read and not yet checked
        self._chunk_got = 0  # bytes of that chunk read in the same read
        self._tail = b""  # last bytes read of a body, for a chunk-size line across reads
        self._body_bytes = 0  # bytes read after the head of the message being read

    # Connection life cycle ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timeout: a connection must send a head in time."""
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timers, then as uvicorn."""
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed ``data`` to the parser, no more than the head limit while a head is
        incomplete; answer a refusal as soon as one is decided."""
        if self._input_closed:
            return
        self._unset_keepalive_if_required()
        if self._in_head and not self._message_begun:
            self._head_bytes, self._head_counted = 0, True
        if self._over_body_budget(data):
            return
        rest = self._feed_head(data) if self._in_head else data
        if rest is None or not self._feed(rest):
            return
        if self._in_head and self._message_begun and len(self.headers) > self.limits.max_headers:
            self._refuse(Refusal(431, "too_many_headers"))
            return
        if self._chunk_unchecked and self._chunk_open:
            self._check_chunk_size(data)
        if self._message_begun and not self._in_head and not self._input_closed:
            # A body is being read: keep its end, and time it.
            self._tail = (self._tail + data[-_TAIL_BYTES:])[-_TAIL_BYTES:]
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._body_timeout
                )

    def _feed_head(self, data: bytes) -> bytes | None:
        """While a head is incomplete, feed no more of ``data`` than may still be head;
        return what remains to feed, or None when the connection was refused."""
        room = max(self.limits.max_header_bytes - self._head_bytes, 0)
        if len(data) <= room:
            self._head_bytes += len(data)
            return data
        # Only what may still be head: if the head does not end in it, it is too big.
        if not self._feed(data[:room]):
            return None
        if self._in_head:
            too_big = self._head_refusal(too_big=True)
            self._refuse(too_big or Refusal(431, "header_too_large"))
            return None
        return data[room:]

    def _over_body_budget(self, data: bytes) -> bool:
        """Count ``data`` against ``limits.max_body_bytes`` when it comes after a head; True
        (and the request refused 413) past the budget."""
        if not self._message_begun or self._in_head:
            return False
        self._body_bytes += len(data)
        if self._body_bytes <= self.limits.max_body_bytes:
            return False
        self._refuse(Refusal(413, "body_too_large"))
        return True

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection was refused or stopped reading."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_after_response()
        except httptools.HttpParserError:
            # Also raised for a callback's _RefusedError: the refusal is answered already.
            self._refuse(Refusal(400, "invalid_request"))
        return not self._input_closed

    # Parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts: its head is timed from now if no wait is timed already."""
        super().on_message_begin()
        self._message_begun = True
        self._body_bytes = 0
        self._started = time.perf_counter()
        self._message_cycle = None
        self._chunk_open = self._chunk_unchecked = False
        if self._head_deadline is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        """Refuse a head over the limits, or without exactly one Host field in HTTP/1.1 (RFC
        9112 §3.2: a server MUST answer 400), before uvicorn starts the application."""
        self._in_head = False
        self._head_deadline = None  # stop the header clock
        refusal = None
        if len(self.headers) > self.limits.max_headers or not self._head_counted:
            refusal = self._head_refusal(too_big=False)
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if refusal is None and (
            hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1")
        ):
            refusal = Refusal(400, "invalid_host")
        if refusal is not None:
            self._refuse(refusal)
            raise _RefusedError
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._message_cycle = self.cycle
        self._tail = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header field, as uvicorn; a trailer field (after the head, at the end of a
        chunked body) is refused: uvicorn would append it to the request's headers, where
        the application could take it for a field of the head (an ``Authorization`` or
        ``X-Forwarded-For`` that no proxy in front saw)."""
        if not self._in_head:
            self._refuse(Refusal(400, "trailer_refused"))
            raise _RefusedError
        super().on_header(name, value)

    def on_chunk_header(self) -> None:
        """A chunk-size line was read: check it once this read is parsed."""
        self._chunk_open = self._chunk_unchecked = True
        self._chunk_got = 0

    def on_chunk_complete(self) -> None:
        """The chunk and its CRLF were read."""
        self._chunk_open = False

    def on_body(self, body: bytes) -> None:
        """Count the bytes of the open chunk, then as uvicorn."""
        if self._chunk_open:
            self._chunk_got += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request was read whole: the next head phase starts."""
        super().on_message_complete()
        self._message_begun = False
        self._in_head = True
        self._head_bytes, self._head_counted = 0, False
        self._message_cycle = None
        self._chunk_open = self._chunk_unchecked = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # Responses and pipelining -----------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._active = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        """As uvicorn; then answer a refusal that waited for this response, or time the
        wait for the next head."""
        super().on_response_complete()
        if self._deferred is not None:
            if not self._busy():
                self._answer(self._deferred)
        elif self._in_head and self._head_deadline is None and self.timeout_keep_alive_task:
            self._arm_head_timer()

    def _busy(self) -> bool:
        """Whether an earlier request still has a response to send."""
        active = self._active
        return bool(self.pipeline) or (active is not None and not active.response_complete)

    # Limits -----------------------------------------------------------------------------

    def _head_refusal(self, *, too_big: bool) -> Refusal | None:
        """The refusal the head read so far deserves, or None. ``too_big``: the head
        was found over the byte limit by counting bytes read."""
        headers = self.headers or []
        if len(headers) > self.limits.max_headers:
            return Refusal(431, "too_many_headers")
        limit = self.limits.max_header_bytes
        if not too_big and self._head_counted:
            return None  # the whole head arrived within the limit
        url = getattr(self, "url", b"")
        if len(url) + _REQUEST_LINE_SLACK >= limit:
            return Refusal(414, "uri_too_long")  # the target alone took (nearly) all of it
        size = len(url) + sum(len(name) + len(value) + 4 for name, value in headers)
        if too_big or size > limit:
            return Refusal(431, "header_too_large")
        return None

    def _check_chunk_size(self, data: bytes) -> None:
        """Refuse the chunk whose size line this read ended with, if too large: the read
        ends with that line and the ``_chunk_got`` bytes of its data after it."""
        self._chunk_unchecked = False
        end = len(data) - self._chunk_got
        stream = data[max(end - _TAIL_BYTES, 0) : end]
        if end < _TAIL_BYTES:
            stream = self._tail + stream
        if not stream.endswith(b"\r\n"):
            return  # the chunk is whole, only its CRLF is missing: nothing to wait for
        line = stream[stream.rfind(b"\n", 0, len(stream) - 2) + 1 : -2]
        if len(line) > MAX_CHUNK_LINE:
            self._refuse(Refusal(400, "chunk_line_too_long"))
            return
        size = _CHUNK_SIZE.match(line)  # None on a trailer line after the last chunk
        if size is not None and int(size.group(), 16) > MAX_CHUNK_BYTES:
            self._refuse(Refusal(413, "chunk_too_large"))

    # Timers -------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        """Start the header clock, unless it runs already."""
        if self._head_deadline is not None or self._input_closed:
            return
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timeout)

    def _cancel_timers(self) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._head_deadline is None:
            return  # the head came in time; the clock is stopped
        if self.loop.time() < self._head_deadline:
            # The clock was restarted since this timer was set: wait for its deadline.
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timeout)
            return
        self._head_deadline = None
        if self._message_begun and self._in_head:
            self._refuse(Refusal(408, "header_timeout"))
        elif not self._busy() and not self.transport.is_closing():
            self.transport.close()  # idle: nothing was asked, nothing to answer

    def _body_timeout(self) -> None:
        self._body_timer = None
        if not (self._message_begun and not self._in_head):
            return
        if self.flow.read_paused and self._message_cycle is not None:
            # The app has not taken what was read: the client is not the one waiting.
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)
            return
        self._refuse(Refusal(408, "body_timeout"))

    # Refusals -----------------------------------------------------------------------------

    def _stop_after_response(self) -> None:
        """Read no more requests on this connection; close it after the current response."""
        self._input_closed = True
        self._cancel_timers()
        cycle = self._message_cycle or self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def _refuse(self, refusal: Refusal) -> None:
        """Stop reading, answer ``refusal`` once earlier responses are sent, log it once."""
        if self._input_closed:
            return
        self._input_closed = True
        self._cancel_timers()
        cycle = self._message_cycle
        if cycle is not None and any(queued is cycle for queued, _ in self.pipeline):
            # Parsed, but its application has not started: it never will.
            self.pipeline = type(self.pipeline)(e for e in self.pipeline if e[0] is not cycle)
            self.cycle = self._active  # type: ignore[assignment]
            cycle = None
        if cycle is not None and cycle.response_complete:
            self.transport.close()  # answered already (without reading the whole body)
            return
        if cycle is not None:
            # The application is serving it: its access line reports the refusal.
            state = cycle.scope["state"]
            if cycle.response_started:
                state[REFUSAL_STATE] = refusal
                self.transport.close()  # cannot answer twice; the client sees the close
                return
            cycle.disconnected = True  # the app's response, if any, is not written
            cycle.message_event.set()  # and a receive() waiting for the body returns
            request_id = state.setdefault("request_id", self._request_id())
            response, body_bytes = self._response(refusal, request_id)
            state[REFUSAL_STATE] = refusal._replace(response_bytes=body_bytes)
            self._answer(response)
            return
        request_id = self._request_id()
        response, body_bytes = self._response(refusal, request_id)
        self._log(refusal, request_id, body_bytes)
        if self._busy():
            self._deferred = response  # pipelined: answered after the earlier responses
        else:
            self._answer(response)

    def _request_id(self) -> str:
        for name, value in self.headers or []:
            if name == b"x-request-id":
                return request_id_or_none(value.decode("latin-1")) or uuid.uuid4().hex
        return uuid.uuid4().hex

    def _response(self, refusal: Refusal, request_id: str) -> tuple[bytes, int]:
        body = problem_body(refusal.status, _DETAILS[refusal.reason], request_id)
        phrase = http.HTTPStatus(refusal.status).phrase
        head = [f"HTTP/1.1 {refusal.status} {phrase}\r\n".encode()]
        head.extend(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\nx-request-id: %s\r\n\r\n" % (len(body), request_id.encode())
        )
        return b"".join(head) + body, len(body)

    def _answer(self, response: bytes) -> None:
        """Write ``response``, half-close, drop further input, close after the linger."""
        self._deferred = None
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(response)
        self.flow.resume_reading()  # keep reading (and dropping) until the client closes
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _log(self, refusal: Refusal, request_id: str, response_bytes: int) -> None:
        headers = self.headers if self._message_begun and self.headers is not None else []
        forwarded_for = [v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for"]
        # The method was parsed if the target was started (llhttp reads the method first).
        target: bytes = getattr(self, "url", b"")
        started = self._message_begun and bool(target)
        method = self.parser.get_method().decode("ascii", "replace") if started else None
        log_access(
            {"headers": headers},
            request_id=request_id,
            method=method,
            route=UNPARSED_ROUTE,
            status=refusal.status,
            seconds=time.perf_counter() - self._started,
            request_bytes=0,
            response_bytes=response_bytes,
            client_ip=resolve_client_ip(
                self.client[0] if self.client else None, forwarded_for, self.trusted_proxies
            ),
            refused=refusal.reason,
        )


def protocol_class(
    limits: HttpLimits, trusted_proxies: TrustedProxies = ()
) -> type[GuardedHttpToolsProtocol]:
    """A `GuardedHttpToolsProtocol` bound to ``limits`` and ``trusted_proxies``, for
    ``uvicorn.run(http=...)``."""
    return type(
        "BulwarkHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "trusted_proxies": tuple(trusted_proxies)},
    )
