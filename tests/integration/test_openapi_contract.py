"""Schemathesis against the real services, from their own OpenAPI documents.

The run is the one the schemathesis CLI makes (`schemathesis.engine`): every phase (examples,
coverage, fuzzing, and a stateful run following the documents' links) and every default
check (server errors, status codes, content types, response headers and schemas, positive
data accepted and negative data refused, unsupported methods, ...), with a valid bearer
token. Any failure fails the test and is listed with its reproduction.

Bounded by a count of examples per operation and phase (`MAX_EXAMPLES`), not by time, so
that every phase runs on a slow machine too; derandomized (a fixed seed, no cache of earlier
runs: the same cases each run); the limiter's limits raised out of the fuzzer's reach (429
stays documented; coverage is the point here, not refusals).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.run import PhaseName

from bulwark.api.app import openapi_document as api_document
from bulwark.auth.app import openapi_document as auth_document
from bulwark.devstack.rules import packaged_rules_with_raised_limits

from .conftest import RunningStack, StackFactory
from .helpers import assert_problem, bearer, login, register

#: Examples per operation and phase: enough to reach every documented answer of ours. The
#: run is bounded by this count, not by a time cap, so that every phase runs on a slow
#: machine too (about 20 s for the API and 10 s for auth here; the stack starts in ~15 s).
MAX_EXAMPLES = 50

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def contract_stack(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> RunningStack:
    """A stack whose API and auth limits are out of the fuzzer's reach."""
    rules: Path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(
        packaged_rules_with_raised_limits(domains=frozenset({"bulwark-api", "bulwark-auth"}))
    )
    return stack_factory(env={"ratelimit": {"RATELIMIT_RULES": str(rules)}})


@pytest.fixture
def client_headers(contract_stack: RunningStack) -> dict[str, str]:
    """What a fresh user's app sends on every request, for one test (the auth run logs its
    session out): a valid bearer token and the mobile headers (app version, platform,
    device id)."""
    user = register(contract_stack.auth_url)
    return bearer(login(contract_stack.auth_url, user)["access_token"], user)


#: Operations whose schema-valid input can still be refused, because what the server checks
#: cannot be said in JSON Schema: a value must be one the server issued, or pass a rule of its
#: own. Each names the statuses it may answer such input besides the defaults, and why. Every
#: other operation must accept every schema-valid request.
SEMANTIC_REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "listNotes": (("400",), "a cursor must be one the API issued (its shape is documented)"),
    "registerUser": (("400",), "the password policy and email-validator's address rules"),
    "login": (("400",), "email-validator's address rules"),
    "token": (("400",), "a refresh token must be one the service issued (RFC 6749 §5.2)"),
    "deviceAuthorization": (
        ("400",),
        "the client must be registered for the device grant and the scope (RFC 8628 §3.2)",
    ),
    # An Idempotency-Key's documented pattern (an RFC 8941 string) is not what schemathesis's
    # coverage phase sends for a header (a bare 0): 400, as the draft asks.
    "createNote": (("400", "422"), "a malformed or reused Idempotency-Key (docs/safe-writes.md)"),
    "createUpload": (
        ("400", "422"),
        "the filename and content-type rules (docs/uploads.md); an Idempotency-Key as above",
    ),
    "requestPasswordReset": (("400",), "email-validator's address rules"),
    "confirmPasswordReset": (
        ("400",),
        "a link token or an address and code the service mailed (either, not both), and the"
        " password policy (docs/account.md)",
    ),
    "confirmEmailVerification": (("400",), "a link token or code the service mailed"),
    "confirmEmailChange": (("400",), "a link token or code the service mailed"),
    "undoEmailChange": (("400",), "a link token the service mailed"),
    "changePassword": (("400",), "the current password, and the password policy"),
    "requestEmailChange": (("400",), "the password, and email-validator's address rules"),
    "deleteAccount": (("400",), "the password (docs/account.md)"),
    "updateNote": (("400", "412"), "If-Match must name the note's current ETag"),
    "deleteNote": (("400", "412"), "If-Match, when given, must name the note's current ETag"),
}
#: A check that does not hold for an operation by design, and why.
NOT_CHECKED = {
    # The fuzzer reuses one key ("0") for unrelated creates: a replay answers the first one's
    # 201 (draft-ietf-httpapi-idempotency-key-header §2.5) even once that note is deleted.
    "getNote": ("ensure_resource_availability", "a replayed create may name a deleted note"),
}
#: Operations that answer a missing required header with another 4xx than schemathesis
#: expects: a PATCH without If-Match is 428 Precondition Required (RFC 6585 §3).
MISSING_HEADER_STATUSES = {"updateNote": ("428",)}
#: What schemathesis expects by default of a schema-valid request, and of one missing a
#: required header (its `positive_data_acceptance` and `missing_required_header` checks).
ACCEPTED = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")
MISSING_HEADER = ("400", "401", "403", "406", "415", "422")
#: Longest failure report kept (a fuzzed body can be 100 kB).
REPORT_CHARACTERS = 1500


def _config(base_url: str, headers: dict[str, str]) -> SchemathesisConfig:
    """The run's configuration (schemathesis.toml's keys): every check at its defaults but
    the `SEMANTIC_REFUSALS` exceptions; UTF-8 text only (the services refuse lone surrogates as
    not Unicode, and schemathesis would count a surrogate pair as two characters)."""
    return SchemathesisConfig.from_dict(
        {
            "seed": 12345,
            # No cache of earlier runs (.schemathesis/): each run the same, and nothing
            # written into the checkout.
            "cache": {"enabled": False},
            "base-url": base_url,
            # An explicit client-side rate (never reached) instead of "auto", which waits out
            # every 429's Retry-After and retries: the login backoff (per email, not raised
            # here) would spend the run waiting. A 429 is a documented answer like any other.
            "rate-limit": "1000/s",
            "headers": headers,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "codec": "utf-8",
            },
            "operations": [
                {
                    "include-operation-id": operation,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [*ACCEPTED, *SEMANTIC_REFUSALS[operation][0]]
                        },
                        **(
                            {
                                "missing_required_header": {
                                    "expected-statuses": [
                                        *MISSING_HEADER,
                                        *MISSING_HEADER_STATUSES[operation],
                                    ]
                                }
                            }
                            if operation in MISSING_HEADER_STATUSES
                            else {}
                        ),
                    },
                }
                for operation in SEMANTIC_REFUSALS
            ]
            + [
                {"include-operation-id": operation, "checks": {check: {"enabled": False}}}
                for operation, (check, _why) in NOT_CHECKED.items()
            ],
        }
    )


#: Phases that must run: schemathesis alternates fuzzing and stateful rounds until the time
#: cap, after one coverage pass (the stateful one needs the documents' links).
REQUIRED_PHASES = frozenset({PhaseName.COVERAGE, PhaseName.FUZZING, PhaseName.STATEFUL_TESTING})


def _failures(document: dict[str, Any], base_url: str, headers: dict[str, str]) -> Iterator[str]:
    """Run schemathesis with every phase and default check; yield each failure's report, and
    one for each of `REQUIRED_PHASES` that did not run."""
    schema = schemathesis.openapi.from_dict(document, config=_config(base_url, headers))
    ran: set[PhaseName] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished) and event.status != Status.SKIP:
            ran.add(event.phase.name)
        if isinstance(event, events.ScenarioFinished) and event.status == Status.FAILURE:
            for case_id, checks in event.recorder.checks.items():
                interaction = event.recorder.interactions.get(case_id)
                answer = interaction.response if interaction is not None else None
                answered = "" if answer is None else f"answered {answer.status_code}: "
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        report = (
                            f"[{event.phase.value}] {event.label}: {check.name}: "
                            f"{failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}\n"
                            f"{answered}{answer.content[:300]!r}"
                            if answer is not None
                            else f"[{event.phase.value}] {event.label}: {check.name}: "
                            f"{failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
                        yield report[:REPORT_CHARACTERS]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            yield f"error: {event!r}"[:REPORT_CHARACTERS]
    yield from (f"the {phase.value} phase did not run" for phase in REQUIRED_PHASES - ran)


@pytest.mark.security(stride="TD", asvs=("V2.2", "V4.1"))
@pytest.mark.parametrize("service", ["api", "auth"])
def test_the_service_does_what_its_document_says(
    contract_stack: RunningStack, client_headers: dict[str, str], service: str
) -> None:
    document = api_document() if service == "api" else auth_document()
    base_url = contract_stack.api_url if service == "api" else contract_stack.auth_url
    failures = sorted(set(_failures(document, base_url, client_headers)))
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)


def test_a_patch_changes_something_and_never_sends_null(
    contract_stack: RunningStack, client_headers: dict[str, str]
) -> None:
    """What the document says of ``PATCH /v1/notes/{id}`` (``minProperties: 1``, no null):
    an empty body and a null field are 400s naming the problem, and change nothing."""
    headers = client_headers
    created = httpx.post(
        f"{contract_stack.api_url}/v1/notes", json={"title": "kept"}, headers=headers
    )
    note = f"{contract_stack.api_url}/v1/notes/{created.json()['id']}"
    null = assert_problem(
        httpx.patch(note, json={"title": None, "body": "x"}, headers=headers), 400
    )
    assert [error["field"] for error in null["errors"]] == ["title"]
    empty = assert_problem(httpx.patch(note, json={}, headers=headers), 400)
    assert empty["errors"] == [{"field": "body", "message": "give at least one field to change"}]
    assert httpx.get(note, headers=headers).json()["title"] == "kept"
