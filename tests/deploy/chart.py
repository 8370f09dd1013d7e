"""What the deploy/ tests share: where the files are, and the Helm chart's rules (value merging,
schema, and the rendering of the instance's dagster.yaml) for the parts of the chart we use."""

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: CI clones the repository with shared/ beside it; nothing of the chart is vendored here.
CHART_DIR = REPO.parent / "shared" / "reference" / "dagster-helm"
VALUES_FILES = sorted((DEPLOY / "helm").glob("*.yaml"))
INSTANCE_YAML = DEPLOY / "dagster.yaml"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))

#: The image the examples name; a run pod runs the image of the code location that launched it.
EXAMPLE_IMAGE = "registry.example.com/data-platform/metrics-pipeline:0.1.0"
#: The Kubernetes versions manifests are checked against: an old supported one and the newest known.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def coalesce(defaults: Mapping, overrides: Mapping) -> dict:
    """Helm's merge of user values over chart values: maps merge key by key, anything else
    (lists included) is replaced, and a null deletes the key."""
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def without_remote_refs(node: Any) -> Any:
    """The schema with every ``$ref`` to a remote (Kubernetes) schema removed: those parts are
    unconstrained offline, the rest of each node still applies."""
    if isinstance(node, dict):
        return {
            k: without_remote_refs(v)
            for k, v in node.items()
            if not (k == "$ref" and str(v).startswith(("http://", "https://")))
        }
    if isinstance(node, list):
        return [without_remote_refs(v) for v in node]
    return node


def chart_schema(name: str = "values.schema.json") -> dict:
    return without_remote_refs(json.loads((CHART_DIR / name).read_text()))


def chart_values(values_file: Path) -> dict:
    """The values the dagster chart sees: our file merged over the chart's defaults."""
    return coalesce(load_yaml(CHART_DIR / "values.yaml"), load_yaml(values_file))


def subchart_values(values: Mapping) -> dict:
    """The values the dagster-user-deployments subchart sees: its defaults, then the parent's
    ``dagster-user-deployments`` section, with the parent's globals."""
    sub = coalesce(
        load_yaml(CHART_DIR / "user-deployments.values.yaml"), values["dagster-user-deployments"]
    )
    sub["global"] = coalesce(sub.get("global") or {}, values.get("global") or {})
    return sub


def service_account_name(values: Mapping, release: str) -> str:
    """dagster.serviceAccountName: global, then serviceAccount.name, then the full name (the
    release name when it contains "dagster")."""
    fullname = release if "dagster" in release else f"{release}-dagster"
    return (
        values["global"].get("serviceAccountName")
        or values["serviceAccount"].get("name")
        or fullname
    )


def render_instance(values: Mapping, release: str = "dagster", namespace: str = "metrics") -> dict:
    """The parts of the chart's instance ConfigMap (templates/configmap-instance.yaml and
    helpers/instance/_run-launcher.tpl, _run-coordinator.tpl, _concurrency.tpl) that this
    project sets: run launcher, run coordinator, concurrency, run monitoring, telemetry.
    Storage is left out: it is the chart's own template over postgresql.*, checked by the schema.
    """
    fullname = release if "dagster" in release else f"{release}-dagster"
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": service_account_name(values, release),
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{fullname}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("kubeconfigFile"):
        launcher["kubeconfig_file"] = k8s["kubeconfigFile"]
    if values.get("imagePullSecrets"):
        launcher["image_pull_secrets"] = values["imagePullSecrets"]
    if k8s.get("image"):
        launcher["job_image"] = f"{k8s['image']['repository']}:{k8s['image']['tag']}"
    for key, name in (("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")):
        if k8s.get(key):
            launcher[name] = [ref["name"] for ref in k8s[key] if "name" in ref]
    for key, name in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if k8s.get(key):
            launcher[name] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        launcher["fail_pod_on_run_failure"] = True
    run_k8s = {
        snake: k8s["runK8sConfig"][camel]
        for camel, snake in (
            ("containerConfig", "container_config"),
            ("podSpecConfig", "pod_spec_config"),
            ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
            ("jobSpecConfig", "job_spec_config"),
            ("jobMetadata", "job_metadata"),
        )
        if (k8s.get("runK8sConfig") or {}).get(camel)
    }
    if run_k8s:
        launcher["run_k8s_config"] = run_k8s

    rendered: dict[str, Any] = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    daemon = values["dagsterDaemon"]
    concurrency_on = values["concurrency"]["enabled"]
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
        qrc = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
        config: dict[str, Any] = {}
        if any(v not in (None, [], {}, "") for v in qrc.values()):
            if not concurrency_on or qrc.get("maxConcurrentRuns") is not None:
                config["max_concurrent_runs"] = (
                    -1 if qrc.get("maxConcurrentRuns") is None else qrc["maxConcurrentRuns"]
                )
            for camel, snake in (
                ("tagConcurrencyLimits", "tag_concurrency_limits"),
                ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
                ("dequeueUseThreads", "dequeue_use_threads"),
                ("dequeueNumWorkers", "dequeue_num_workers"),
            ):
                if qrc.get(camel):
                    config[snake] = qrc[camel]
        rendered["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **({"config": config} if config else {}),
        }
    if concurrency_on:
        pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
        concurrency: dict[str, Any] = {}
        pool_cfg = {
            snake: pools[camel]
            for camel, snake in (
                ("defaultLimit", "default_limit"),
                ("granularity", "granularity"),
                ("opGranularityRunBuffer", "op_granularity_run_buffer"),
            )
            if pools.get(camel) is not None
        }
        if pool_cfg:
            concurrency["pools"] = pool_cfg
        run_cfg: dict[str, Any] = {}
        if runs.get("maxConcurrentRuns") is not None:
            run_cfg["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs.get("tagConcurrencyLimits"):
            run_cfg["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
        if run_cfg:
            concurrency["runs"] = run_cfg
        rendered["concurrency"] = concurrency
    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring["enabled"]:
        rendered["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
    return rendered


def write_kubeconfig(path: Path) -> Path:
    """A kubeconfig for a cluster that is never contacted: K8sRunLauncher loads a configuration
    when it is built, and nothing in these tests calls the API."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "offline", "user": {"token": "offline"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
                "current-context": "offline",
            }
        )
    )
    return path


def offline_launcher_config(run_launcher: Mapping, kubeconfig: Path) -> dict:
    """The run_launcher section as given, except that it loads ``kubeconfig`` instead of the
    in-cluster configuration (which exists only inside a pod)."""
    section = copy.deepcopy(dict(run_launcher))
    assert section["config"]["load_incluster_config"] is True
    section["config"]["load_incluster_config"] = False
    section["config"]["kubeconfig_file"] = str(kubeconfig)
    return section
