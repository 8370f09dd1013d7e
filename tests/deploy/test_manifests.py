"""The raw Kubernetes manifests under deploy/k8s/ (valid for Kubernetes:
test_every_component.py) agree with deploy/dagster.yaml (service account, its permissions, instance ConfigMap, Secrets, image)."""

import kubernetes_validate
import pytest

from .chart import INSTANCE_YAML, KUBERNETES_VERSIONS, MANIFESTS, load_manifests, load_yaml

DOCUMENTS = [(path, doc) for path in MANIFESTS for doc in load_manifests(path)]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] == kind}


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} >= {"secrets.example.yaml", "without-helm.yaml"}


def test_strict_validation_rejects_a_misspelt_field():
    deployment = dict(by_kind("Deployment")["dagster-daemon"])
    deployment["spec"] = {**deployment["spec"], "replica": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_run_launchers_service_account_may_create_run_jobs():
    launcher = load_yaml(INSTANCE_YAML)["run_launcher"]["config"]
    account = launcher["service_account_name"]
    assert account in by_kind("ServiceAccount")
    bindings = [
        b
        for b in by_kind("RoleBinding").values()
        if {"kind": "ServiceAccount", "name": account} in b["subjects"]
    ]
    assert bindings
    role = by_kind("Role")[bindings[0]["roleRef"]["name"]]
    assert any(
        "batch" in rule["apiGroups"] and "jobs" in rule["resources"] and "create" in rule["verbs"]
        for rule in role["rules"]
    )


def test_every_dagster_process_gets_the_instance_and_the_secrets_it_needs():
    launcher = load_yaml(INSTANCE_YAML)["run_launcher"]["config"]
    secrets = by_kind("Secret")
    assert set(launcher["env_secrets"]) <= set(secrets)
    images = set()
    for name, deployment in by_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        images.add(container["image"])
        assert pod["serviceAccountName"] == launcher["service_account_name"], name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        config_maps = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        assert launcher["instance_config_map"] in config_maps, name
        refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
        assert "dagster-instance-db" in refs, name
        assert set(refs) <= set(secrets), name
    # Code server, webserver and daemon run one image, the one run pods inherit.
    assert len(images) == 1
    code = by_kind("Deployment")["metrics-pipeline-code"]["spec"]["template"]["spec"]
    (container,) = code["containers"]
    assert container["args"][-2:] == ["-m", "metrics_pipeline.definitions"]
    assert {"name": "DAGSTER_CURRENT_IMAGE", "value": images.pop()} in container["env"]


def test_the_required_kubernetes_validate_bundles_every_pinned_version():
    """kubernetes-validate X.Y bundles the schemas of Kubernetes up to X.Y: the lowest version
    pyproject.toml allows must know the newest pinned version, or an install that resolves it
    fails every validation with VersionNotSupportedError."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    from .chart import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (requirement,) = [
        Requirement(r)
        for r in project["optional-dependencies"]["dev"]
        if Requirement(r).name == "kubernetes-validate"
    ]
    (lowest,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    newest = max(Version(v) for v in KUBERNETES_VERSIONS)
    assert (lowest.major, lowest.minor) >= (newest.major, newest.minor), requirement
    assert newest in requirement.specifier
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(by_kind("Deployment")["dagster-daemon"], version, strict=True)
