"""The rendered overlays comply with the deployment policies (tests/k8s/policies.py), and
each policy reports a broken copy of them: the failure it exists for."""

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import policies
from .conftest import K8S, OVERLAYS, render

Objects = list[dict[str, Any]]

OVERLAY_POLICIES: list[Callable[[Objects], list[str]]] = [
    policies.missing_resources,
    policies.missing_probes,
    policies.insecure_containers,
    policies.missing_graceful_stop,
    policies.unpinned_images,
    policies.uncovered_by_pdb,
    policies.uncovered_by_network_policy,
    policies.missing_default_deny,
    policies.unknown_settings,
    policies.rules_not_reloadable,
    policies.unreachable_auth_peers,
]


@pytest.mark.security(stride="ED", asvs=("V13.2",))
@pytest.mark.parametrize("policy", OVERLAY_POLICIES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_complies(
    rendered: dict[str, Objects], overlay: str, policy: Callable[[Objects], list[str]]
) -> None:
    assert policy(rendered[overlay]) == []


def _find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    container: dict[str, Any] = _find(objects, kind, name)["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _drop(objects: Objects, kind: str, name: str) -> None:
    objects.remove(_find(objects, kind, name))


def _config(objects: Objects, name: str) -> dict[str, str]:
    """The data of the generated ConfigMap ``name`` (its name carries a hash suffix)."""
    data: dict[str, str] = next(
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].rsplit("-", 1)[0] == name
    )
    return data


# Each case breaks one thing in a copy of the production overlay (the development one for
# its StatefulSets) and names the policy that must report it.
BREAKS: dict[str, tuple[str, Callable[[Objects], list[str]], Callable[[Objects], object]]] = {
    "no memory limit": (
        "production",
        policies.missing_resources,
        lambda o: _container(o, "Deployment", "bulwark-auth")["resources"]["limits"].pop("memory"),
    ),
    "job without requests": (
        "production",
        policies.missing_resources,
        lambda o: _container(o, "Job", "bulwark-api-migrate")["resources"].pop("requests"),
    ),
    "no readiness probe": (
        "production",
        policies.missing_probes,
        lambda o: _container(o, "Deployment", "bulwark-ratelimit").pop("readinessProbe"),
    ),
    "statefulset without liveness probe": (
        "development",
        policies.missing_probes,
        lambda o: _container(o, "StatefulSet", "bulwark-redis").pop("livenessProbe"),
    ),
    "writable root filesystem": (
        "production",
        policies.insecure_containers,
        lambda o: _container(o, "Deployment", "bulwark-api")["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    ),
    "privilege escalation": (
        "production",
        policies.insecure_containers,
        lambda o: _container(o, "Deployment", "bulwark-api")["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
    ),
    "capabilities kept": (
        "production",
        policies.insecure_containers,
        lambda o: _container(o, "Job", "bulwark-auth-migrate")["securityContext"].pop(
            "capabilities"
        ),
    ),
    "root allowed": (
        "production",
        policies.insecure_containers,
        lambda o: (
            _container(o, "Deployment", "bulwark-ratelimit")["securityContext"].pop("runAsNonRoot"),
            _find(o, "Deployment", "bulwark-ratelimit")["spec"]["template"]["spec"][
                "securityContext"
            ].pop("runAsNonRoot"),
        ),
    ),
    "no seccomp profile": (
        "development",
        policies.insecure_containers,
        lambda o: (
            _container(o, "StatefulSet", "bulwark-postgres")["securityContext"].pop(
                "seccompProfile"
            ),
            _find(o, "StatefulSet", "bulwark-postgres")["spec"]["template"]["spec"][
                "securityContext"
            ].pop("seccompProfile"),
        ),
    ),
    "service-account token mounted": (
        "production",
        policies.insecure_containers,
        lambda o: _find(o, "Deployment", "bulwark-auth")["spec"]["template"]["spec"].pop(
            "automountServiceAccountToken"
        ),
    ),
    "no preStop": (
        "production",
        policies.missing_graceful_stop,
        lambda o: _container(o, "Deployment", "bulwark-api").pop("lifecycle"),
    ),
    "grace period shorter than preStop": (
        "production",
        policies.missing_graceful_stop,
        lambda o: _find(o, "Deployment", "bulwark-api")["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=5
        ),
    ),
    "latest tag": (
        "production",
        policies.unpinned_images,
        lambda o: _container(o, "Deployment", "bulwark-api").update(
            image="registry.example.com:5000/bulwark-api:latest"
        ),
    ),
    "untagged image": (
        "production",
        policies.unpinned_images,
        lambda o: _container(o, "Deployment", "bulwark-api").update(
            image="registry.example.com:5000/bulwark-api"
        ),
    ),
    "no PDB": (
        "production",
        policies.uncovered_by_pdb,
        lambda o: _drop(o, "PodDisruptionBudget", "bulwark-ratelimit"),
    ),
    "PDB selecting other pods": (
        "production",
        policies.uncovered_by_pdb,
        lambda o: _find(o, "PodDisruptionBudget", "bulwark-auth")["spec"]["selector"].update(
            matchLabels={"app.kubernetes.io/name": "bulwark-other"}
        ),
    ),
    "no NetworkPolicy of its own": (
        "production",
        policies.uncovered_by_network_policy,
        lambda o: _drop(o, "NetworkPolicy", "bulwark-ratelimit"),
    ),
    "no default deny": (
        "production",
        policies.missing_default_deny,
        lambda o: _drop(o, "NetworkPolicy", "default-deny"),
    ),
    "default deny allowing egress": (
        "production",
        policies.missing_default_deny,
        lambda o: _find(o, "NetworkPolicy", "default-deny")["spec"].update(egress=[{}]),
    ),
    "misspelt setting": (
        "production",
        policies.unknown_settings,
        lambda o: _container(o, "Deployment", "bulwark-api")["env"].append(
            {"name": "RATELIMIT_TARGETS", "value": "bulwark-ratelimit:50051"}
        ),
    ),
    "rules mounted with subPath": (
        "production",
        policies.rules_not_reloadable,
        lambda o: _container(o, "Deployment", "bulwark-ratelimit")["volumeMounts"][0].update(
            subPath="rules.yaml"
        ),
    ),
    "rules outside the mount": (
        "production",
        policies.rules_not_reloadable,
        lambda o: _container(o, "Deployment", "bulwark-ratelimit")["env"].append(
            {"name": "RATELIMIT_RULES", "value": "/app/rules.yaml"}
        ),
    ),
    "no egress to the SMTP server": (
        "production",
        policies.unreachable_auth_peers,
        lambda o: _drop(o, "NetworkPolicy", "allow-smtp"),
    ),
    "SMTP server on a port not allowed": (
        "staging",
        policies.unreachable_auth_peers,
        lambda o: _config(o, "bulwark-auth-config").update(
            SMTP_URL="smtps://smtp.example.com:2465"
        ),
    ),
    "breached-password check without egress": (
        "production",
        policies.unreachable_auth_peers,
        lambda o: _config(o, "bulwark-auth-config").update(BREACHED_PASSWORD_CHECK="hibp"),
    ),
}


@pytest.mark.security(stride="ED", asvs=("V13.2",))
@pytest.mark.parametrize("case", BREAKS)
def test_policy_reports_a_broken_copy(rendered: dict[str, Objects], case: str) -> None:
    overlay, policy, breaks = BREAKS[case]
    objects = copy.deepcopy(rendered[overlay])
    assert policy(objects) == []
    breaks(objects)
    assert len(policy(objects)) >= 1


@pytest.mark.security(stride="S", asvs=("V13.3", "V9.2"))
def test_staging_and_production_share_no_key_secret_and_no_issuer(
    rendered: dict[str, Objects],
) -> None:
    assert policies.signing_key_secrets(rendered["staging"]) == {"bulwark-signing-keys-staging"}
    assert policies.signing_key_secrets(rendered["production"]) == {
        "bulwark-signing-keys-production"
    }
    for first, second in [("staging", "production"), ("development", "staging")]:
        assert policies.shared_between_environments(rendered[first], rendered[second]) == []


def _auth_pod_spec(objects: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = _find(objects, "Deployment", "bulwark-auth")["spec"]["template"]["spec"]
    return spec


@pytest.mark.security(stride="S", asvs=("V13.3", "V9.2"))
def test_sharing_a_key_secret_or_the_issuer_is_reported(rendered: dict[str, Objects]) -> None:
    staging = copy.deepcopy(rendered["staging"])
    production = rendered["production"]
    for volume in _auth_pod_spec(staging)["volumes"]:
        if volume["name"] == "signing-keys":
            volume["secret"]["secretName"] = "bulwark-signing-keys-production"
    assert policies.shared_between_environments(staging, production) == [
        "both mount the key Secret bulwark-signing-keys-production"
    ]
    staging = copy.deepcopy(rendered["staging"])
    config = next(o for o in staging if o["kind"] == "ConfigMap" and "ISSUER" in o.get("data", {}))
    config["data"]["ISSUER"] = "https://bulwark.example.com"
    assert policies.shared_between_environments(staging, production) == [
        "both have ISSUER=https://bulwark.example.com"
    ]
    staging = copy.deepcopy(rendered["staging"])
    _auth_pod_spec(staging)["volumes"] = [
        v for v in _auth_pod_spec(staging)["volumes"] if v["name"] != "signing-keys"
    ]
    assert policies.shared_between_environments(staging, production) == [
        "an environment mounts no signing-key Secret at KEYS_DIR"
    ]


def test_the_rules_configmap_is_the_packaged_default() -> None:
    packaged = K8S.parents[1] / "services/ratelimit/src/bulwark/ratelimit/rules.yaml"
    assert (K8S / "base" / "rules.yaml").read_bytes() == Path(packaged).read_bytes(), (
        "deploy/k8s/base/rules.yaml differs from the packaged default: copy it over"
    )


@pytest.mark.security(stride="E", asvs=("V13",))
def test_the_ingress_routes_auth_paths_to_auth_and_the_rest_of_v1_to_the_api(
    rendered: dict[str, Objects],
) -> None:
    for overlay in OVERLAYS:
        ingress = _find(rendered[overlay], "Ingress", "bulwark")
        assert ingress["spec"]["ingressClassName"] == "nginx"
        (rule,) = ingress["spec"]["rules"]
        assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
        routes = {
            p["path"]: (p["pathType"], p["backend"]["service"]["name"])
            for p in rule["http"]["paths"]
        }
        auth = ("Prefix", "bulwark-auth")
        assert routes == {
            "/v1/users": auth,
            "/v1/auth": auth,
            "/oauth2": auth,
            "/.well-known": auth,
            "/signin": auth,
            "/device": auth,
            "/account": auth,
            "/v1": ("Prefix", "bulwark-api"),
        }


def test_the_first_deploy_step_holds_what_the_migrations_need_and_no_service(
    rendered: dict[str, Objects],
) -> None:
    # deploy/k8s/README.md applies `-l 'app.kubernetes.io/component notin (auth,api,ratelimit)'`
    # first, waits for the Jobs, then applies the rest.
    for overlay in OVERLAYS:
        first = [
            o
            for o in rendered[overlay]
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            not in {"auth", "api", "ratelimit"}
        ]
        names = {policies.name_of(o) for o in first}
        assert not any(o["kind"] == "Deployment" for o in first)
        assert f"Namespace/bulwark-{overlay}" in names
        jobs = [o for o in first if o["kind"] == "Job"]
        assert len(jobs) == 2
        for job in jobs:
            spec = job["spec"]["template"]["spec"]
            assert f"ServiceAccount/{spec['serviceAccountName']}" in names
            for source in spec["containers"][0]["envFrom"]:
                assert f"ConfigMap/{source['configMapRef']['name']}" in names
        if overlay == "development":
            assert {"StatefulSet/bulwark-postgres", "StatefulSet/bulwark-redis"} <= names


def test_the_breached_password_component_turns_the_check_on_with_its_egress(
    tmp_path: Path, rendered: dict[str, Objects]
) -> None:
    # An overlay of production that adds the component, as the README tells an operator to.
    # kustomize takes relative paths only.
    overlay = os.path.relpath(K8S / "overlays" / "production", tmp_path)
    component = os.path.relpath(K8S / "components" / "breached-password-check", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\ncomponents: [{component}]\n"
    )
    objects = render(tmp_path)
    assert _config(objects, "bulwark-auth-config")["BREACHED_PASSWORD_CHECK"] == "hibp"
    assert (
        _config(rendered["production"], "bulwark-auth-config")["BREACHED_PASSWORD_CHECK"] == "off"
    )
    for policy in OVERLAY_POLICIES:
        assert policy(objects) == [], policy.__name__
    # HTTPS to the internet, never to the cluster's own networks or the cloud's metadata.
    (rule,) = _find(objects, "NetworkPolicy", "allow-hibp")["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
    assert "169.254.0.0/16" in rule["to"][0]["ipBlock"]["except"]
    assert "10.0.0.0/8" in rule["to"][0]["ipBlock"]["except"]
    objects.remove(_find(objects, "NetworkPolicy", "allow-hibp"))
    assert policies.unreachable_auth_peers(objects) != []
