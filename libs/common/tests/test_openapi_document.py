"""A route is documented from what it has (`bulwark.common.openapi.answers`), with no
per-route work: its dependencies, body and path parameters give its error answers (all
problem+json), and an authenticating dependency its bearer requirement."""

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from bulwark.common.openapi.document import build, openapi_config
from bulwark.common.problems import PROBLEM_JSON
from bulwark.common.schemas import Schema


class Thing(Schema, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=10)]


class Created(Schema, frozen=True):
    id: str


async def caller() -> str:
    return "user"


class Things(Controller):
    path = "/things"

    @post(operation_id="createThing", status_code=201)
    async def create(self, data: JSONBody[Thing], caller: NamedDependency[str]) -> Created:
        return Created(id=data.name)

    @get("/{thing_id:uuid}", operation_id="getThing")
    async def read(self, thing_id: FromPath[uuid.UUID], caller: NamedDependency[str]) -> Thing:
        return Thing(name=str(thing_id)[:10])

    @get("/count", operation_id="countThings", opt={"answers": (409,)})
    async def count(self) -> int:
        return 0


def _document() -> dict[str, Any]:
    app = Litestar(
        route_handlers=[Things],
        dependencies={"caller": Provide(caller)},
        openapi_config=openapi_config("Things", "1"),
    )
    return build(app)


def _problem_statuses(operation: dict[str, Any]) -> list[str]:
    for code, response in operation["responses"].items():
        if int(code) >= 400:
            assert list(response["content"]) == [PROBLEM_JSON], code
    return sorted(code for code in operation["responses"] if int(code) >= 400)


def test_an_authenticated_body_route_answers_what_its_parts_can_refuse() -> None:
    document = _document()
    create = document["paths"]["/things"]["post"]
    assert _problem_statuses(create) == [
        "400",
        "401",
        "403",
        "408",
        "413",
        "414",
        "415",
        "426",
        "429",
        "431",
        "503",
    ]
    assert create["security"] == [{"bearerAuth": []}]
    assert create["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert create["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert "RateLimit" in create["responses"]["201"]["headers"]
    thing = document["components"]["schemas"]["Thing"]
    assert thing["additionalProperties"] is False
    assert thing["properties"]["name"]["maxLength"] == 10
    assert create["responses"]["201"]["links"]["getThing"]["parameters"] == {
        "thing_id": "$response.body#/id"
    }


def test_a_path_parameter_can_be_404_and_a_route_adds_its_own_answers() -> None:
    paths = _document()["paths"]
    assert "404" in paths["/things/{thing_id}"]["get"]["responses"]
    count = paths["/things/count"]["get"]
    assert _problem_statuses(count) == ["400", "408", "409", "414", "426", "431", "503"]
    assert count["security"] == []
