"""The Kubernetes manifests in registry-server/deploy/ and deploy-bucket/, checked offline.

Every object is validated against the Kubernetes OpenAPI JSON schemas shipped by the
``kubernetes-validate`` package (strict: unknown fields are errors), for the oldest
and the newest Kubernetes version it knows. Then the parts that must agree with each
other and with the image are checked: labels and selectors, names of the Secret and
the claim, the port, the htpasswd path, probes, resources and the security context.

The bucket variant (deploy-bucket/) is a kustomize overlay of deploy/, so it is
checked as ``kubectl kustomize`` renders it (kubectl ships kustomize and builds
offline; the machine image has it): the same schemas, then its invariants: no
volume claim and no data volume, no fixed replica count, a HorizontalPodAutoscaler
aimed at the Deployment, ``serve --storage s3://...`` with every ``$(VAR)`` of its
arguments defined, S3 credentials from the pod's identity or an optional Secret, and
the base's probes, limits and security context unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import REPO

DEPLOY = REPO / "registry-server" / "deploy"
DEPLOY_BUCKET = REPO / "registry-server" / "deploy-bucket"
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


def kustomize(folder: Path) -> dict[str, dict[str, Any]]:
    """``kubectl kustomize FOLDER`` (offline), keyed by ``Kind/name``."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to build the kustomizations: apt-get install kubectl")
    built = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, f"kubectl kustomize {folder}: {built.stderr}"
    found: dict[str, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(built.stdout):
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        assert key not in found, f"{key} rendered twice"
        found[key] = doc
    return found


def validate(objects: dict[str, dict[str, Any]]) -> None:
    import kubernetes_validate as kv  # test extras
    from kubernetes_validate.utils import all_versions

    versions = sorted({all_versions()[0], all_versions()[-1]})
    for key, doc in objects.items():
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{key} against Kubernetes {version}: {exc.message} at {exc.path}")


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    return kustomize(DEPLOY)


@pytest.fixture(scope="module")
def bucket() -> dict[str, dict[str, Any]]:
    return kustomize(DEPLOY_BUCKET)


def pod_of(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return dict(objects["Deployment/modelpack-registry"]["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return dict(objects["Deployment/modelpack-registry"]["spec"]["template"]["spec"])


def test_manifests_match_the_kubernetes_schemas(objects: dict[str, dict[str, Any]]) -> None:
    validate(objects)


def test_kustomize_builds_what_the_files_say(
    objects: dict[str, dict[str, Any]], built: dict[str, dict[str, Any]]
) -> None:
    assert sorted(built) == sorted(objects)
    validate(built)
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    (container,) = pod_of(built)["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"


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


@pytest.mark.parametrize("variant", ["folder", "bucket"])
def test_probes_resources_and_security(
    variant: str, pod: dict[str, Any], bucket: dict[str, dict[str, Any]]
) -> None:
    if variant == "bucket":
        pod = pod_of(bucket)
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


# -- the bucket variant (deploy-bucket/) -------------------------------------------------
S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")


def test_bucket_manifests_match_the_kubernetes_schemas(
    bucket: dict[str, dict[str, Any]],
) -> None:
    validate(bucket)


def test_bucket_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((DEPLOY_BUCKET / "kustomization.yaml").read_text())
    assert "../deploy" in kustomization["resources"]
    listed = sorted(
        [r for r in kustomization["resources"] if r.endswith(".yaml")]
        + [p["path"] for p in kustomization["patches"]]
    )
    on_disk = sorted(p.name for p in DEPLOY_BUCKET.glob("*.yaml"))
    assert sorted([*listed, "kustomization.yaml"]) == on_disk
    assert [g["name"] for g in kustomization["configMapGenerator"]] == [
        "modelpack-registry-storage"
    ]


def test_bucket_replicas_are_stateless(bucket: dict[str, dict[str, Any]]) -> None:
    kinds = {key.split("/")[0] for key in bucket}
    assert "PersistentVolumeClaim" not in kinds and "StatefulSet" not in kinds
    deployment = bucket["Deployment/modelpack-registry"]["spec"]
    # the autoscaler owns the count; a fixed one would be reset by every apply
    assert "replicas" not in deployment
    pod = pod_of(bucket)
    for volume in pod["volumes"]:
        kind = set(volume) - {"name"}
        assert kind <= {"secret", "emptyDir", "configMap", "projected"}, volume
        if "emptyDir" in volume:
            assert volume["emptyDir"]["medium"] == "Memory", volume
    (container,) = pod["containers"]
    assert all(m["mountPath"] != "/data" for m in container["volumeMounts"])
    names = [e["name"] for e in container["env"]]
    assert "MODELPACK_DATA" not in names and len(names) == len(set(names))
    # a rolling update can start new pods before old ones go: nothing is shared
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_autoscaler_targets_the_deployment(bucket: dict[str, dict[str, Any]]) -> None:
    (hpa,) = [doc for key, doc in bucket.items() if key.startswith("HorizontalPodAutoscaler/")]
    deployment = bucket["Deployment/modelpack-registry"]
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 2 <= low < high
    # the budget must let a drain proceed at the lowest count
    budget = bucket["PodDisruptionBudget/modelpack-registry"]["spec"]
    assert budget["minAvailable"] < low
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    # a Utilization target is a share of the request: the container must have one
    (container,) = pod_of(bucket)["containers"]
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Resource"
        resource = metric["resource"]["name"]
        assert resource in container["resources"]["requests"], resource
        assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100


def resolve(value: str, container: dict[str, Any], objects: dict[str, dict[str, Any]]) -> str:
    """Expand ``$(VAR)`` as the kubelet does, from ``env`` (values or ConfigMap keys)."""
    env = {e["name"]: e for e in container["env"]}

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"$({name}) in the arguments but not in env"
        entry = env[name]
        if "value" in entry:
            return str(entry["value"])
        ref = entry["valueFrom"]["configMapKeyRef"]
        config = objects.get(f"ConfigMap/{ref['name']}")
        assert config is not None, f"{name}: no ConfigMap {ref['name']}"
        assert ref["key"] in config["data"], f"{name}: no key {ref['key']}"
        return str(config["data"][ref["key"]])

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


def test_bucket_pods_serve_an_s3_storage(bucket: dict[str, dict[str, Any]]) -> None:
    (container,) = pod_of(bucket)["containers"]
    args = [resolve(a, container, bucket) for a in container["args"]]
    assert args[0] == "serve"
    assert "--data" not in args
    assert args.count("--storage") == 1
    storage = args[args.index("--storage") + 1]
    assert S3_URL.match(storage), storage
    region = args[args.index("--s3-region") + 1]
    assert re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region), region
    # the readiness probe is what takes a pod out of the Service
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_bucket_credentials_come_from_the_pod_identity_or_a_secret(
    bucket: dict[str, dict[str, Any]],
) -> None:
    pod = pod_of(bucket)
    account = bucket[f"ServiceAccount/{pod['serviceAccountName']}"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role)
    # IRSA mounts its own projected token; the Kubernetes API token stays out
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    (source,) = container["envFrom"]
    assert source["secretRef"] == {"name": "modelpack-registry-s3", "optional": True}
    assert not any(key.startswith("Secret/modelpack-registry-s3") for key in bucket)
    # no key ever sits in a ConfigMap or a plain env value
    plain = [e["name"] for e in container["env"] if "value" in e]
    plain += [k for k, v in bucket.items() if k.startswith("ConfigMap/") for k in v["data"]]
    assert not [n for n in plain if "SECRET" in n or "ACCESS_KEY" in n], plain


def test_bucket_variant_keeps_the_base_pod(
    built: dict[str, dict[str, Any]], bucket: dict[str, dict[str, Any]]
) -> None:
    base, pod = pod_of(built), pod_of(bucket)
    for key in ("securityContext", "affinity", "terminationGracePeriodSeconds",
                "enableServiceLinks"):  # fmt: skip
        assert pod[key] == base[key], key
    (base_container,) = base["containers"]
    (container,) = pod["containers"]
    for key in ("image", "ports", "resources", "securityContext", "lifecycle",
                "startupProbe", "readinessProbe", "livenessProbe"):  # fmt: skip
        assert container[key] == base_container[key], key
    # every setting of the base but the data folder is still there, unchanged
    base_env = {e["name"]: e for e in base_container["env"]}
    env = {e["name"]: e for e in container["env"]}
    assert {n: e for n, e in base_env.items() if n != "MODELPACK_DATA"}.items() <= env.items()
    base_volumes = {v["name"]: v for v in base["volumes"] if v["name"] != "data"}
    assert base_volumes == {v["name"]: v for v in pod["volumes"]}
    for key in ("Secret/modelpack-registry-htpasswd", "Service/modelpack-registry"):
        assert bucket[key] == built[key], key


def test_storage_docs_match_the_bucket_variant(bucket: dict[str, dict[str, Any]]) -> None:
    """docs/storage.md's lifecycle rule, IAM policy and replication name the bucket and
    prefix that deploy-bucket/ serves, and its layout names every key the store uses."""
    import json

    from modelpack_registry.storage.base import keys

    (config,) = [v for k, v in bucket.items() if k.startswith("ConfigMap/")]
    match = re.fullmatch(r"s3://([^/]+)/(.+)", config["data"]["MODELPACK_STORAGE"])
    assert match, config["data"]
    name, prefix = match.group(1), match.group(2).rstrip("/") + "/"
    text = (REPO / "docs" / "storage.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    lifecycle = next(b for b in blocks if "Rules" in b and "Role" not in b)
    by_prefix = {r["Filter"]["Prefix"]: r for r in lifecycle["Rules"]}
    assert by_prefix[prefix]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert by_prefix[prefix + keys.TMP]["Expiration"] == {"Days": 1}
    assert all(r["Status"] == "Enabled" for r in lifecycle["Rules"])

    policy = next(b for b in blocks if "Statement" in b)
    granted = {(a, s["Resource"]) for s in policy["Statement"] for a in s["Action"]}
    objects = f"arn:aws:s3:::{name}/{prefix}*"
    assert granted == {
        ("s3:ListBucket", f"arn:aws:s3:::{name}"),
        ("s3:ListBucketMultipartUploads", f"arn:aws:s3:::{name}"),
        *((a, objects) for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                 "s3:AbortMultipartUpload")),
    }  # fmt: skip

    replication = next(b for b in blocks if "Role" in b)
    replicated = [r["Filter"]["Prefix"] for r in replication["Rules"]]
    assert len({r["Priority"] for r in replication["Rules"]}) == len(replicated)
    assert not any(p.startswith(prefix + keys.TMP) for p in replicated)
    layout = text.split("## The bucket layout", 1)[1].split("```", 2)[1]
    for key in (keys.PACKAGES, keys.META, keys.YANKED, keys.STAGES, keys.OWNERS,
                keys.RESERVED, keys.TOKENS, keys.GENERATION, keys.TMP):  # fmt: skip
        assert f"  {key}" in layout, key
        if key != keys.TMP:
            assert any((prefix + key).startswith(p) for p in replicated), key


def container_env(container: dict[str, Any], objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (values, ConfigMap keys)."""
    return {e["name"]: resolve(f"$({e['name']})", container, objects) for e in container["env"]}


@pytest.mark.parametrize("variant", ["folder", "bucket"])
def test_the_image_entrypoint_runs_what_the_deployment_says(
    variant: str,
    built: dict[str, dict[str, Any]],
    bucket: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The Deployment's args and env, through registry-server/docker-entrypoint.sh, give
    ``modelpack-registry serve`` one location: the data volume, or the bucket alone
    (the server refuses ``--data`` beside ``--storage``)."""
    objects = bucket if variant == "bucket" else built
    (container,) = pod_of(objects)["containers"]
    stub = tmp_path / "modelpack-registry"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    secret = tmp_path / "htpasswd"
    secret.write_text("alice:$2y$05$abcdefghijklmnopqrstuu5Bq9vE2fTHtY0cBm1XRDZJ0mQ0vjZ0e\n")
    env = {"PATH": os.environ["PATH"], **container_env(container, objects)}
    env.update(MODELPACK_REGISTRY_BIN=str(stub), MODELPACK_HTPASSWD=str(secret))
    args = [resolve(a, container, objects) for a in container["args"]]
    entrypoint = REPO / "registry-server" / "docker-entrypoint.sh"
    for command in (args, ["verify"], ["reindex"]):
        ran = subprocess.run(["sh", str(entrypoint), *command], env=env, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        argv = ran.stdout.splitlines()
        assert argv[0] == command[0], argv
        if variant == "bucket":
            assert "--data" not in argv, argv
            # serve names the bucket; the maintenance commands read MODELPACK_STORAGE
            assert command != args or argv[argv.index("--storage") + 1].startswith("s3://")
            assert S3_URL.match(env["MODELPACK_STORAGE"])
        else:
            assert argv[argv.index("--data") + 1] == "/data" and "--storage" not in argv
        if command == args:
            assert argv[argv.index("--port") + 1] == env["MODELPACK_PORT"]
            assert argv[argv.index("--htpasswd") + 1] == str(secret)
