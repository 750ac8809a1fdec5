"""The published OpenAPI documents (docs/openapi/) are what the services serve: regenerate
them with ``make openapi`` after changing a route. ``/schema`` serves them in development
only."""

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from bulwark.api import app as api_app
from bulwark.api import settings as api_settings
from bulwark.auth import app as auth_app
from bulwark.auth import settings as auth_settings
from bulwark.common.openapi.document import render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "openapi"
SERVICES: dict[str, Any] = {"api": (api_app, api_settings), "auth": (auth_app, auth_settings)}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_published_document_is_the_one_the_app_produces(service: str) -> None:
    app, _ = SERVICES[service]
    published = (DOCS / f"{service}.json").read_text()
    assert published == render(app.openapi_document()), (
        f"docs/openapi/{service}.json is stale: run `make openapi` and commit the result"
    )


@pytest.mark.security(stride="I", asvs=("V13.4",))
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_schema_is_served_in_development_only(service: str) -> None:
    app, settings = SERVICES[service]
    development = TestClient(app.create_app(settings.from_env(app.DOCUMENT_ENV)))
    served = development.get("/schema/openapi.json")
    assert served.status_code == 200
    assert served.text == (DOCS / f"{service}.json").read_text()
    test_env = {**app.DOCUMENT_ENV, "BULWARK_ENV": "test"}
    assert TestClient(app.create_app(settings.from_env(test_env))).get("/schema").status_code == 404
