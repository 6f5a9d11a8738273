"""The Kubernetes manifests in registry-server/deploy/, checked offline.

Every object is validated against the Kubernetes OpenAPI JSON schemas shipped by the
``kubernetes-validate`` package (strict: unknown fields are errors), for the oldest
and the newest Kubernetes version it knows. Then the parts that must agree with each
other and with the image are checked: labels and selectors, names of the Secret and
the claim, the port, the htpasswd path, probes, resources and the security context.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from support import REPO

DEPLOY = REPO / "registry-server" / "deploy"
CONTAINERFILE = REPO / "registry-server" / "Containerfile"


def manifests() -> dict[str, dict[str, Any]]:
    """Every object in deploy/ (kustomization.yaml aside), keyed by ``Kind/name``."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = f"{doc['kind']}/{doc['metadata']['name']}"
                assert key not in found, f"{key} defined twice"
                found[key] = doc
    return found


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return dict(objects["Deployment/modelpack-registry"]["spec"]["template"]["spec"])


def test_manifests_match_the_kubernetes_schemas(objects: dict[str, dict[str, Any]]) -> None:
    import kubernetes_validate as kv  # test extras
    from kubernetes_validate.utils import all_versions

    versions = sorted({all_versions()[0], all_versions()[-1]})
    for key, doc in objects.items():
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{key} against Kubernetes {version}: {exc.message} at {exc.path}")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    on_disk = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed == on_disk
    assert [i["name"] for i in kustomization["images"]] == ["modelpack-registry"]


def test_two_replicas_on_one_shared_volume(
    objects: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    deployment = objects["Deployment/modelpack-registry"]["spec"]
    assert deployment["replicas"] == 2
    labels = deployment["template"]["metadata"]["labels"]
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= labels.items()

    claim = objects["PersistentVolumeClaim/modelpack-registry-data"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "modelpack-registry-data"

    # RWX: the new pod mounts the volume while the old ones serve; never drop below 2
    strategy = deployment["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    budget = objects["PodDisruptionBudget/modelpack-registry"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] == 1

    service = objects["Service/modelpack-registry"]["spec"]
    assert service["selector"].items() <= labels.items()
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert service["ports"][0]["targetPort"] == port["name"] == "http"


def test_container_matches_the_image(pod: dict[str, Any]) -> None:
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    exposed = re.search(r"^EXPOSE (\d+)$", CONTAINERFILE.read_text(), re.M)
    assert exposed and container["ports"][0]["containerPort"] == int(exposed.group(1))
    assert env["MODELPACK_PORT"] == exposed.group(1)

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["mountPath"] == env["MODELPACK_DATA"] == "/data"
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["htpasswd"]["secret"]
    assert secret["secretName"] == "modelpack-registry-htpasswd"
    (item,) = secret["items"]
    assert mounts["htpasswd"]["readOnly"] is True and "subPath" not in mounts["htpasswd"]
    assert env["MODELPACK_HTPASSWD"] == f"{mounts['htpasswd']['mountPath']}/{item['path']}"
    assert "MODELPACK_INSECURE" not in env
    # the read-only root filesystem needs a writable /tmp for gunicorn's heartbeats
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]


def test_secret_placeholder_cannot_start_an_open_registry(
    objects: dict[str, dict[str, Any]],
) -> None:
    text = objects["Secret/modelpack-registry-htpasswd"]["stringData"]["htpasswd"]
    users = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert users == [], "never commit real hashes; the placeholder must have no user line"


def test_probes_resources_and_security(pod: dict[str, Any]) -> None:
    (container,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] == "http", probe
    # liveness is more patient than readiness: a busy or briefly stalled volume takes a
    # pod out of the Service long before it gets restarted
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (
        live["periodSeconds"] * live["failureThreshold"]
        > ready["periodSeconds"] * ready["failureThreshold"]
    )

    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] and resources["limits"][kind]

    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    image_user = re.findall(r"^USER (\d+):(\d+)$", CONTAINERFILE.read_text(), re.M)
    assert [(str(context["runAsUser"]), str(context["runAsGroup"]))] == image_user
    assert context["fsGroup"] == context["runAsGroup"]
    own = container["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] > 10  # gunicorn's graceful timeout
