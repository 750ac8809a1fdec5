"""Uploads on the S3 backend, against a real S3-compatible server: moto in server mode, started
once for this module on a free loopback port, with a private bucket. The API (a real process)
signs URLs that the test uses with plain HTTP, as a phone would.

moto does not check the signatures of pre-signed URLs (it accepts another Content-Type or
length, even a forged signature), so what S3 would enforce is shown by what is signed: the
URL's ``X-Amz-SignedHeaders`` and its lifetime.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from mypy_boto3_s3 import S3Client

from . import upload_files
from .conftest import RunningStack, StackFactory
from .helpers import assert_problem, bearer, login, register

pytestmark = pytest.mark.security(stride="T", asvs=("V5.2",))

BUCKET = "bulwark-uploads-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class S3Server:
    """The running moto server and a client of its bucket. moto keeps its state in this
    process, so a server stopped and started again on the same port has the same objects."""

    server: ThreadedMotoServer
    url: str
    client: S3Client

    def restart(self) -> None:
        """Start the server again on its port, after a test stopped it."""
        host, port = urllib.parse.urlsplit(self.url).netloc.split(":")
        self.server = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
        self.server.start()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=BUCKET, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] != "404":
                raise
            return False
        return True


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto on a free loopback port, once for the module, with a private bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    running = S3Server(server, url, client)
    try:
        client.create_bucket(Bucket=BUCKET)
        client.put_public_access_block(
            Bucket=BUCKET,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        yield running
    finally:
        client.close()
        running.server.stop()


@pytest.fixture(scope="module")
def s3_stack(stack_factory: StackFactory, s3: S3Server) -> RunningStack:
    return stack_factory(
        env={
            "api": {
                "UPLOADS_BACKEND": "s3",
                "S3_BUCKET": BUCKET,
                "S3_ENDPOINT_URL": s3.url,
                "S3_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                **CREDENTIALS,
            }
        }
    )


def _headers(stack: RunningStack) -> tuple[str, dict[str, str]]:
    user = register(stack.auth_url)
    return user.user_id, bearer(login(stack.auth_url, user)["access_token"], user)


def _create(
    stack: RunningStack, headers: dict[str, str], name: str, kind: str, size: int
) -> dict[str, Any]:
    body = {"filename": name, "contentType": kind, "size": size}
    response = httpx.post(f"{stack.api_url}/v1/uploads", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_upload_flow_through_s3(s3_stack: RunningStack, s3: S3Server) -> None:
    owner, headers = _headers(s3_stack)
    _, mallory = _headers(s3_stack)
    data = upload_files.png()
    created = _create(s3_stack, headers, "holiday.png", "image/png", len(data))
    upload_id, put = created["upload"]["id"], created["uploadRequest"]
    key = f"uploads/{owner}/{upload_id}"

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(put["url"]).query)
    assert urllib.parse.urlsplit(put["url"]).path == f"/{BUCKET}/{key}"
    assert query["X-Amz-SignedHeaders"] == [
        "content-length;content-type;host;x-amz-server-side-encryption"
    ]
    assert 0 < int(query["X-Amz-Expires"][0]) <= 900
    assert put["headers"] == {
        "Content-Type": "image/png",
        "Content-Length": str(len(data)),
        "x-amz-server-side-encryption": "AES256",
    }
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    stored = s3.client.head_object(Bucket=BUCKET, Key=key)
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["ContentType"] == "image/png"

    url = f"{s3_stack.api_url}/v1/uploads/{upload_id}"
    for response in (
        httpx.get(url, headers=mallory),
        httpx.post(f"{url}/complete", headers=mallory),
        httpx.delete(url, headers=mallory),
    ):
        assert_problem(response, 404)
    assert s3.exists(key)

    completed = httpx.post(f"{url}/complete", headers=headers)
    assert completed.status_code == 200, completed.text
    download = completed.json()["download"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(download["url"]).query)
    assert query["response-content-disposition"] == [
        "attachment; filename=\"holiday.png\"; filename*=UTF-8''holiday.png"
    ]
    # The PUT URL still works until it expires, but downloads are of the checked bytes.
    assert not s3.exists(key)
    html = b"<html><script>alert(1)</script>".ljust(len(data))
    assert httpx.put(put["url"], content=html, headers=put["headers"]).status_code == 200
    got = httpx.get(download["url"])
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("attachment;")
    checked = s3.client.head_object(Bucket=BUCKET, Key=f"files/{owner}/{upload_id}")
    assert checked["ServerSideEncryption"] == "AES256"

    assert httpx.delete(url, headers=headers).status_code == 204
    assert not s3.exists(key)
    assert not s3.exists(f"files/{owner}/{upload_id}")
    assert_problem(httpx.get(url, headers=headers), 404)


@pytest.mark.parametrize(
    ("name", "kind", "data"),
    [
        pytest.param("page.png", "image/png", upload_files.html_behind_png_header(), id="html"),
        pytest.param("vector.png", "image/png", upload_files.SVG, id="svg-as-png"),
        pytest.param("bomb.png", "image/png", upload_files.png_bomb(10_000, 10_000), id="bomb"),
    ],
)
def test_bad_bodies_are_refused_and_deleted_from_s3(
    s3_stack: RunningStack, s3: S3Server, name: str, kind: str, data: bytes
) -> None:
    owner, headers = _headers(s3_stack)
    created = _create(s3_stack, headers, name, kind, len(data))
    put, upload_id = created["uploadRequest"], created["upload"]["id"]
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    key = f"uploads/{owner}/{upload_id}"
    assert s3.exists(key)
    url = f"{s3_stack.api_url}/v1/uploads/{upload_id}"
    assert_problem(httpx.post(f"{url}/complete", headers=headers), 422)
    assert not s3.exists(key)
    assert_problem(httpx.get(url, headers=headers), 404)


def test_an_object_larger_than_declared_is_refused(s3_stack: RunningStack, s3: S3Server) -> None:
    # S3 refuses another length than signed; moto does not, and neither would a lax
    # S3-compatible store: the API's own check catches it, reading declared size + 1 bytes.
    owner, headers = _headers(s3_stack)
    data = upload_files.png()
    created = _create(s3_stack, headers, "photo.png", "image/png", len(data))
    key = f"uploads/{owner}/{created['upload']['id']}"
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=data + b"\0" * 100_000)
    url = f"{s3_stack.api_url}/v1/uploads/{created['upload']['id']}/complete"
    assert "size" in str(assert_problem(httpx.post(url, headers=headers), 422)["detail"])
    assert not s3.exists(key)


@pytest.mark.security(stride="D", asvs=("V16.5",))
def test_s3_down_is_a_503_and_the_upload_waits(s3_stack: RunningStack, s3: S3Server) -> None:
    owner, headers = _headers(s3_stack)
    data = upload_files.png()
    created = _create(s3_stack, headers, "photo.png", "image/png", len(data))
    put, upload_id = created["uploadRequest"], created["upload"]["id"]
    assert httpx.put(put["url"], content=data, headers=put["headers"]).status_code == 200
    url = f"{s3_stack.api_url}/v1/uploads/{upload_id}"
    s3.server.stop()
    try:
        started = time.monotonic()
        down = httpx.post(f"{url}/complete", headers=headers, timeout=30)
        assert assert_problem(down, 503)["detail"] == "File storage is unavailable; retry shortly."
        assert down.headers["retry-after"]
        assert time.monotonic() - started < 15  # two attempts, each bounded
        assert_problem(httpx.delete(url, headers=headers), 503)
    finally:
        s3.restart()
    assert httpx.get(url, headers=headers).json()["state"] == "pending"
    assert httpx.post(f"{url}/complete", headers=headers).status_code == 200
    assert s3.exists(f"files/{owner}/{upload_id}")
    assert not s3.exists(f"uploads/{owner}/{upload_id}")
