"""Every object of every overlay validates offline against the Kubernetes schemas, strictly
(unknown fields are errors), for the oldest Kubernetes the manifests support and the newest
whose schemas kubernetes-validate bundles."""

import copy
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from .conftest import OVERLAYS
from .policies import name_of

#: The oldest Kubernetes the manifests need: the preStop `sleep` action is on by default
#: from 1.30 (beta; GA in 1.34).
OLDEST = "1.30"


def schema_errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    """One line per object that does not validate against ``version``'s strict schemas."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{name_of(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name_of(obj)}: {exc.message}")
    return errors


@pytest.mark.parametrize("version", [OLDEST, latest_version()])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    assert rendered[overlay], "the overlay rendered nothing"
    assert schema_errors(rendered[overlay], version) == []


def test_a_misspelt_or_mistyped_field_is_an_error(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = copy.deepcopy(rendered["production"])
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # not a field
    service = next(obj for obj in objects if obj["kind"] == "Service")
    service["spec"]["ports"][0]["port"] = "http"  # a number
    errors = schema_errors(objects, OLDEST)
    assert len(errors) == 2, errors
    assert "terminationGracePeriod" in errors[0] + errors[1]


def test_an_unknown_kind_is_an_error() -> None:
    errors = schema_errors(
        [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}], OLDEST
    )
    assert errors == [
        "Widget/w: Couldn't find schema for kind Widget with api version example.com/v1 "
        f"for kubernetes version {OLDEST}"
    ]
