"""Policies over rendered Kubernetes objects (deploy/k8s): each returns its violations.

A function takes the objects of one rendered overlay (the dicts ``kubectl kustomize``
prints) and returns one line per violation, naming the object and the container; an empty
list means the overlay complies. The tests run them on every overlay, and on a broken copy
to see each one catch what it is for.
"""

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Obj = dict[str, Any]

#: Kinds whose pods serve traffic and so need probes and a graceful stop.
SERVING_KINDS = ("Deployment", "StatefulSet")
#: Kinds that run pods.
WORKLOAD_KINDS = (*SERVING_KINDS, "DaemonSet", "Job")

REPOSITORY = Path(__file__).resolve().parents[2]
#: Where the services read their settings.
SOURCE_DIRS = (REPOSITORY / "libs", REPOSITORY / "services")


def name_of(obj: Obj) -> str:
    """``Kind/name`` of ``obj``."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload, or None for another kind."""
    if obj["kind"] not in WORKLOAD_KINDS:
        return None
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, Obj]]:
    """``(workload, pod spec, container)`` for every container and init container."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield obj, spec, container


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) matches
    ``labels``; an empty selector matches everything."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _pod_labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"].get("labels", {})
    return labels


def missing_resources(objects: list[Obj]) -> list[str]:
    """Containers without CPU and memory requests and limits."""
    return [
        f"{name_of(obj)} container {c['name']}: no {kind}.{resource}"
        for obj, _, c in containers(objects)
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in c.get("resources", {}).get(kind, {})
    ]


def missing_probes(objects: list[Obj]) -> list[str]:
    """Containers of serving workloads without a startup, readiness or liveness probe."""
    return [
        f"{name_of(obj)} container {c['name']}: no {probe}"
        for obj, _, c in containers(objects)
        if obj["kind"] in SERVING_KINDS
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if probe not in c
    ]


def insecure_containers(objects: list[Obj]) -> list[str]:
    """Containers not hardened: not runAsNonRoot, writable root filesystem, privilege
    escalation allowed, capabilities not all dropped, no RuntimeDefault seccomp profile;
    pods that mount a service-account token."""
    found = []
    for obj, spec, c in containers(objects):
        pod_context = spec.get("securityContext", {})
        context = c.get("securityContext", {})
        where = f"{name_of(obj)} container {c['name']}"
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot", False)):
            found.append(f"{where}: may run as root")
        if context.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: root filesystem writable")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: privilege escalation allowed")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities not all dropped")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            found.append(f"{where}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            found.append(f"{where}: the pod mounts a service-account token")
    return found


def missing_graceful_stop(objects: list[Obj]) -> list[str]:
    """Serving containers without a preStop hook, or whose pod's grace period does not
    outlast a preStop sleep by 10 s (for the requests in flight after SIGTERM)."""
    found = []
    for obj, spec, c in containers(objects):
        if obj["kind"] != "Deployment":
            continue
        pre_stop = c.get("lifecycle", {}).get("preStop")
        if pre_stop is None:
            found.append(f"{name_of(obj)} container {c['name']}: no preStop hook")
            continue
        sleep = pre_stop.get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < sleep + 10:
            found.append(f"{name_of(obj)}: grace period {grace} s, preStop sleep {sleep} s")
    return found


_PINNED = re.compile(r"^[^:@\s]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


def unpinned_images(objects: list[Obj]) -> list[str]:
    """Images without a tag or digest, or tagged ``latest``."""
    found = []
    for obj, _, c in containers(objects):
        image = c["image"]
        last = image.rsplit("/", 1)[-1]
        match = _PINNED.match(last)
        if match is None or not (match.group(1) or match.group(2)):
            found.append(f"{name_of(obj)} container {c['name']}: image {image} is not pinned")
        elif match.group(1) == ":latest":
            found.append(f"{name_of(obj)} container {c['name']}: image {image} is latest")
    return found


def _of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def uncovered_by_pdb(objects: list[Obj]) -> list[str]:
    """Deployments whose pods no PodDisruptionBudget selects."""
    budgets = _of_kind(objects, "PodDisruptionBudget")
    return [
        f"{name_of(obj)}: no PodDisruptionBudget"
        for obj in _of_kind(objects, "Deployment")
        if not any(selects(b["spec"]["selector"], _pod_labels(obj)) for b in budgets)
    ]


def uncovered_by_network_policy(objects: list[Obj]) -> list[str]:
    """Deployments without a NetworkPolicy of their own: one that selects their pods and
    no other Deployment's (the namespace-wide default deny and DNS rules do not count, nor
    do rules shared by several services, such as metrics scraping)."""
    deployments = _of_kind(objects, "Deployment")
    policies = _of_kind(objects, "NetworkPolicy")

    def own(policy: Obj, deployment: Obj) -> bool:
        selected = [
            d for d in deployments if selects(policy["spec"]["podSelector"], _pod_labels(d))
        ]
        return selected == [deployment]

    return [
        f"{name_of(deployment)}: no NetworkPolicy of its own"
        for deployment in deployments
        if not any(own(policy, deployment) for policy in policies)
    ]


def missing_default_deny(objects: list[Obj]) -> list[str]:
    """No NetworkPolicy that selects every pod and allows no ingress and no egress."""
    for policy in _of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if (
            spec["podSelector"] == {}
            and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            return []
    return ["no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"]


def _env(container: Obj) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


def config_values(objects: list[Obj], container: Obj) -> dict[str, str]:
    """The plain values ``container`` gets: its ConfigMaps' (envFrom), then its own."""
    maps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in _of_kind(objects, "ConfigMap")}
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(maps.get(source.get("configMapRef", {}).get("name", ""), {}))
    values.update({k: v["value"] for k, v in _env(container).items() if "value" in v})
    return values


def auth_pod(objects: list[Obj]) -> tuple[Obj, Obj]:
    """The pod spec and container of the auth Deployment (the ``bulwark-auth`` image)."""
    return next(
        (spec, c)
        for obj, spec, c in containers(objects)
        if obj["kind"] == "Deployment" and c["image"].split(":")[0].endswith("bulwark-auth")
    )


def signing_key_secrets(objects: list[Obj]) -> set[str]:
    """Names of the Secrets mounted at the auth service's KEYS_DIR."""
    spec, container = auth_pod(objects)
    keys_dir = config_values(objects, container).get("KEYS_DIR")
    mounted = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == keys_dir}
    return {
        v["secret"]["secretName"]
        for v in spec.get("volumes", [])
        if v["name"] in mounted and "secret" in v
    }


def shared_between_environments(first: list[Obj], second: list[Obj]) -> list[str]:
    """What two environments must not share: a signing-key Secret, the issuer, the
    audience, BULWARK_ENV; or an environment without its own key Secret."""
    found = []
    keys_first, keys_second = signing_key_secrets(first), signing_key_secrets(second)
    if not keys_first or not keys_second:
        found.append("an environment mounts no signing-key Secret at KEYS_DIR")
    found += [f"both mount the key Secret {name}" for name in sorted(keys_first & keys_second)]
    values_first = config_values(first, auth_pod(first)[1])
    values_second = config_values(second, auth_pod(second)[1])
    for name in ("ISSUER", "AUDIENCE", "BULWARK_ENV"):
        if values_first.get(name) == values_second.get(name):
            found.append(f"both have {name}={values_first.get(name)}")
    return found


def _settings_names() -> set[str]:
    names: set[str] = set()
    for directory in SOURCE_DIRS:
        for path in directory.glob("*/src/**/*.py"):
            names.update(re.findall(r'"([A-Z][A-Z0-9_]+)"', path.read_text()))
    return names


def unknown_settings(objects: list[Obj]) -> list[str]:
    """Environment variables given to a Bulwark container that no service reads (a name
    not quoted in libs/*/src or services/*/src; ``OTEL_*`` are the SDK's own)."""
    known = _settings_names()
    found = []
    for obj, _, c in containers(objects):
        if "bulwark-" not in c["image"]:
            continue
        for name in sorted(config_values(objects, c).keys() | _env(c).keys()):
            if name not in known and not name.startswith("OTEL_"):
                found.append(f"{name_of(obj)} container {c['name']}: {name} is read by nothing")
    return found


def rules_not_reloadable(objects: list[Obj]) -> list[str]:
    """The rate limiter's RATELIMIT_RULES is not inside a ConfigMap mounted as a directory
    (a subPath mount, or a file elsewhere, never sees the kubelet's ``..data`` swap)."""
    found = []
    for obj, spec, c in containers(objects):
        if obj["kind"] != "Deployment" or "bulwark-ratelimit" not in c["image"]:
            continue
        rules = config_values(objects, c).get("RATELIMIT_RULES", "")
        maps = {v["name"] for v in spec.get("volumes", []) if "configMap" in v}
        mounts = [
            m
            for m in c.get("volumeMounts", [])
            if m["name"] in maps and rules.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        if not mounts:
            found.append(f"{name_of(obj)}: RATELIMIT_RULES={rules!r} is in no ConfigMap mount")
        found += [
            f"{name_of(obj)}: the rules are mounted with subPath" for m in mounts if "subPath" in m
        ]
    return found


def egress_ports(objects: list[Obj], labels: Mapping[str, str]) -> set[int | str] | None:
    """The ports NetworkPolicies let pods labelled ``labels`` connect to, whatever the
    peer; None when a rule allows every port."""
    ports: set[int | str] = set()
    for policy in _of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec.get("policyTypes", []) or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            if not rule.get("ports"):
                return None
            ports.update(
                port["port"] for port in rule["ports"] if port.get("protocol", "TCP") == "TCP"
            )
    return ports


#: The port of each SMTP_URL scheme when the URL names none (bulwark.auth.mail.delivery).
SMTP_PORTS = {"smtps": 465, "smtp+starttls": 587, "smtp": 25}


def unreachable_auth_peers(objects: list[Obj]) -> list[str]:
    """Servers outside the cluster the auth service is set to call but no NetworkPolicy lets
    it reach: the SMTP server's port (``SMTP_URL``), HTTPS (443) with
    ``BREACHED_PASSWORD_CHECK=hibp``."""
    found = []
    for obj, _, c in containers(objects):
        if obj["kind"] != "Deployment" or not c["image"].split(":")[0].endswith("bulwark-auth"):
            continue
        values = config_values(objects, c)
        needed = []
        if values.get("SMTP_URL"):
            url = urlsplit(values["SMTP_URL"])
            needed.append(("SMTP_URL", url.port or SMTP_PORTS.get(url.scheme, 25)))
        if values.get("BREACHED_PASSWORD_CHECK", "").strip().lower() == "hibp":
            needed.append(("BREACHED_PASSWORD_CHECK=hibp", 443))
        allowed = egress_ports(objects, _pod_labels(obj))
        found += [
            f"{name_of(obj)}: {setting} needs egress to TCP {port}; no NetworkPolicy allows it"
            for setting, port in needed
            if allowed is not None and port not in allowed
        ]
    return found
