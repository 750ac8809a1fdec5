"""A local SMTP sink: a real SMTP server (aiosmtpd) that stores what it receives, sends nothing.

``bulwark-dev run`` and the integration tests' stacks start one and give the auth service its
``smtp://`` URL; ``bulwark-dev mail`` and ``SmtpSink.wait_for`` read what arrived (the folder
format is ``bulwark.devstack.mailbox``'s). The sender's own tests use it alone, with TLS and
credentials, to talk to a real server::

    files = make_tls_files(tmp_path / "tls")
    with SmtpSink(tmp_path / "mail", tls="starttls", cert=files.cert, key=files.key,
                  auth=("mailer", "secret")) as sink:
        send(sink.url, ...)     # smtp+starttls://127.0.0.1:PORT; trust files.ca
        sink.wait_for("alice@example.com")

What it refuses, with the reply codes of RFC 5321 §4.2.2 and its extensions:
- a message over ``max_bytes`` (default 1 MiB; advertised as SIZE, RFC 1870): 552;
- with ``tls="starttls"``: any MAIL before STARTTLS (RFC 3207): 530;
- with ``auth``: MAIL before a successful AUTH (RFC 4954): 530; AUTH PLAIN or LOGIN before
  TLS (they send the password as is): 538; wrong credentials: 535. A sink without TLS and with
  ``auth`` never accepts a message: a sender must not send credentials in clear;
- a message it cannot write to its folder: 451 (a transient failure: the sender retries).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bulwark.devstack.mailbox import KEEP_MESSAGES, Mailbox, store
from bulwark.devstack.net import free_port

#: Largest message the sink accepts, in bytes (DATA as received).
MAX_MESSAGE_BYTES = 1024 * 1024
#: Seconds the sink waits for its own server to start (and to stop).
START_TIMEOUT = 10.0

TlsMode = Literal["starttls", "implicit"]
_SCHEMES: dict[TlsMode | None, str] = {
    None: "smtp",
    "starttls": "smtp+starttls",
    "implicit": "smtps",
}


class _Store:
    """aiosmtpd handler: each message's DATA goes to the folder (``mailbox.store``)."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        transport = server.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        auth_data = session.auth_data
        try:
            store(
                self.folder,
                envelope.original_content or b"",
                mail_from=envelope.mail_from or "",
                rcpt_tos=envelope.rcpt_tos,
                tls=tls.version() if isinstance(tls, ssl.SSLObject | ssl.SSLSocket) else None,
                auth_login=auth_data.login.decode(errors="replace")
                if session.authenticated and isinstance(auth_data, LoginPassword)
                else None,
                keep=self.keep,
            )
        except OSError as exc:
            # A transient failure (RFC 5321 §4.2.5): the sender keeps the message and retries.
            return f"451 4.3.0 the sink cannot store the message ({exc.strerror or exc})"
        return "250 2.0.0 OK: stored by the Bulwark SMTP sink"


class _Credentials:
    """aiosmtpd authenticator: AUTH PLAIN / LOGIN with exactly one user name and password."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(data.login, self._user) & hmac.compare_digest(
            data.password, self._password
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class _ImplicitTlsSMTP(SMTP):
    """aiosmtpd counts only a STARTTLS session as TLS (``auth_require_tls``), so it would
    refuse AUTH on an implicit-TLS port, where every session is TLS from the first byte."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._auth_require_tls = False


class _Controller(Controller):
    """aiosmtpd's threaded TCP controller, serving on a socket bound beforehand (aiosmtpd's
    own bind reports a taken port only after its whole ``ready_timeout``), with
    ``_ImplicitTlsSMTP`` on an implicit-TLS port."""

    def __init__(
        self, handler: Any, *, sock: socket.socket, implicit_tls: bool, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._sock = sock
        self._implicit_tls = implicit_tls

    def _create_server(self) -> Coroutine[Any, Any, asyncio.Server]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        smtp = _ImplicitTlsSMTP if self._implicit_tls else SMTP
        return smtp(self.handler, **self.SMTP_kwargs)


class _DropNoise(logging.Filter):
    """aiosmtpd warns on every AUTH that its own ``Session.login_data`` is deprecated."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_DROP_NOISE = _DropNoise()


def _quiet_aiosmtpd() -> None:
    logging.getLogger("mail.log").addFilter(_DROP_NOISE)  # once: addFilter skips a repeat


class SmtpSink:
    """An SMTP server on ``host:port`` (a free port when not given) in a thread of this
    process, storing every message it accepts in ``folder``.

    ``tls``: None (plain SMTP), ``"starttls"`` (STARTTLS offered and required before MAIL)
    or ``"implicit"`` (TLS from the first byte, RFC 8314); both need ``cert`` and ``key``
    (PEM files, e.g. from ``make_tls_files``). ``auth=(user, password)`` requires AUTH PLAIN
    or LOGIN with them, over TLS only. ``max_bytes`` bounds a message, ``keep`` the folder.
    ``url`` is what a sender is given (``smtp://``, ``smtp+starttls://`` or ``smtps://``).

    Use as a context manager, or call ``start`` and ``stop`` (idempotent). Raises
    ``ValueError`` for TLS without a certificate, ``OSError`` when the port cannot be bound.
    """

    def __init__(
        self,
        folder: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: TlsMode | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        auth: tuple[str, str] | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
        keep: int = KEEP_MESSAGES,
    ) -> None:
        if tls not in _SCHEMES:
            raise ValueError(f"tls must be 'starttls', 'implicit' or None, not {tls!r}")
        if tls is not None and (cert is None or key is None):
            raise ValueError(f"tls={tls!r} needs cert and key (see make_tls_files)")
        self.folder = folder
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.tls = tls
        self.mailbox = Mailbox(folder)
        context = _server_context(cert, key) if cert is not None and key is not None else None
        options: dict[str, Any] = {
            "server_hostname": "localhost",  # not socket.getfqdn(): no DNS look-up
            "data_size_limit": max_bytes,
            "ready_timeout": START_TIMEOUT,
        }
        if tls == "implicit":
            options["ssl_context"] = context
        elif tls == "starttls":
            options["tls_context"] = context
            options["require_starttls"] = True
        if auth is not None:
            options["authenticator"] = _Credentials(*auth)
            options["auth_required"] = True
        self._handler = _Store(folder, keep)
        self._options = options
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:PORT`` (or ``smtp+starttls://``, ``smtps://``), for SMTP_URL."""
        return f"{_SCHEMES[self.tls]}://{self.host}:{self.port}"

    def start(self) -> Self:
        """Listen; returns once the server answers (at most ``START_TIMEOUT`` s). A stopped
        sink may start again, on the same port. Raises ``OSError`` when the port is taken,
        ``TimeoutError`` when the server does not start."""
        if self._controller is not None:
            return self
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _quiet_aiosmtpd()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's own bind
            sock.bind((self.host, self.port))
            sock.listen(100)
            controller = _Controller(
                self._handler,
                sock=sock,
                hostname=self.host,
                port=self.port,
                implicit_tls=self.tls == "implicit",
                **self._options,
            )
        except BaseException:
            sock.close()
            raise
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            controller.loop.close()
            sock.close()
            raise
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and end open sessions; stored messages stay. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def messages(self) -> list[EmailMessage]:
        """Every stored message, oldest first (``Mailbox.messages``)."""
        return self.mailbox.messages()

    def wait_for(
        self, to: str, *, subject_contains: str | None = None, timeout: float = 10.0
    ) -> EmailMessage:
        """The newest message to ``to``, waiting for it (``Mailbox.wait_for``)."""
        return self.mailbox.wait_for(to, subject_contains=subject_contains, timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by ``make_tls_files``: a throwaway CA, and a server certificate it
    signed (for ``localhost`` and ``127.0.0.1``) with its private key."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA, verifying the host name as usual."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls_files(folder: Path, *, days: int = 1) -> TlsFiles:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (P-256 keys, valid ``days`` days) into
    ``folder`` and return their paths. For tests and local runs only: the CA's key is not
    kept, so it can sign nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bulwark throwaway test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
