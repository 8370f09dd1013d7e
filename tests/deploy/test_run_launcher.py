"""The run launcher, run queue and executor configuration, as the Helm chart renders them from
deploy/helm/*.yaml and as deploy/dagster.yaml states them, pass Dagster's own config validation;
the Kubernetes Job a run would get is a valid Job with our requests, Secrets and user."""

import uuid
from urllib.parse import unquote_plus

import kubernetes
import kubernetes_validate
import pytest
from dagster import DagsterInvalidConfigError, DagsterRun, instance_for_test, validate_run_config
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext

from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.resources import URL_VARIABLES

from .chart import (
    EXAMPLE_IMAGE,
    INSTANCE_YAML,
    KUBERNETES_VERSIONS,
    MANIFESTS,
    VALUES_FILES,
    chart_values,
    load_manifests,
    load_yaml,
    offline_launcher_config,
    render_instance,
    write_kubeconfig,
)

SOURCES = [*(("helm", p) for p in VALUES_FILES), ("dagster.yaml", INSTANCE_YAML)]
sources = pytest.mark.parametrize(
    "source", SOURCES, ids=[f"{kind}:{path.name}" for kind, path in SOURCES]
)


def instance_sections(source, request) -> dict:
    kind, path = source
    if kind == "helm":
        request.getfixturevalue("chart_dir")
        return render_instance(chart_values(path), release="dagster", namespace="metrics")
    return load_yaml(path)


def secret_keys(name: str) -> set[str]:
    return {
        key
        for path in MANIFESTS
        for doc in load_manifests(path)
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == name
        for key in doc["stringData"]
    }


def example_secret_env() -> dict[str, str]:
    """The keys of the example Secrets, as a pod that mounts them sees them."""
    env = {}
    for path in MANIFESTS:
        for doc in load_manifests(path):
            if doc["kind"] == "Secret":
                env.update(doc["stringData"])
    return env


@pytest.fixture
def offline_instance(request, tmp_path, monkeypatch):
    """A Dagster instance with the source's run launcher, run coordinator and concurrency
    sections (storage: a temporary SQLite one; no cluster needed)."""

    def make(source):
        sections = instance_sections(source, request)
        monkeypatch.setenv("DAGSTER_K8S_JOB_NAMESPACE", "metrics")
        monkeypatch.setenv("DAGSTER_HOME", "/opt/dagster/dagster_home")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig")
        overrides = {
            "run_launcher": offline_launcher_config(sections["run_launcher"], kubeconfig),
            "run_coordinator": sections["run_coordinator"],
            "concurrency": sections["concurrency"],
        }
        return sections, overrides

    return make


def run_pod_job(launcher: K8sRunLauncher, run: DagsterRun, image: str) -> dict:
    """The Kubernetes Job K8sRunLauncher.launch_run would create for ``run`` (the same calls,
    without the API request)."""
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job_config = context.get_k8s_job_config(job_image=image, run_launcher=launcher)
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name=f"dagster-run-{run.run_id}",
        pod_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


@sources
def test_the_run_launcher_is_a_valid_k8s_run_launcher(source, offline_instance):
    sections, overrides = offline_instance(source)
    with instance_for_test(overrides=overrides) as instance:
        # Building it runs Dagster's config validation of the whole section.
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.service_account_name
        assert launcher.job_namespace == "metrics"
        assert launcher.resources["requests"]["cpu"] and launcher.resources["requests"]["memory"]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity.value == "run"
        assert pools.default_pool_limit == sections["concurrency"]["pools"]["default_limit"]


@sources
def test_a_misspelt_launcher_key_fails_dagsters_validation(source, offline_instance):
    _, overrides = offline_instance(source)
    overrides["run_launcher"]["config"]["resorces"] = {}
    with (
        instance_for_test(overrides=overrides) as instance,
        pytest.raises(DagsterInvalidConfigError, match="resorces"),
    ):
        _ = instance.run_launcher


def test_the_k8s_run_launcher_cannot_be_built_without_a_service_account(tmp_path):
    config = load_yaml(INSTANCE_YAML)["run_launcher"]["config"]
    kwargs = {
        **{k: v for k, v in config.items() if k not in ("service_account_name", "job_namespace")},
        "load_incluster_config": False,
        "kubeconfig_file": str(write_kubeconfig(tmp_path / "kubeconfig")),
        "dagster_home": "/opt/dagster/dagster_home",
    }
    with pytest.raises(TypeError, match="service_account_name"):
        K8sRunLauncher(**kwargs)


@sources
def test_a_run_pod_is_a_valid_job_with_our_requests_secrets_and_user(source, offline_instance):
    sections, overrides = offline_instance(source)
    launcher_config = sections["run_launcher"]["config"]
    with instance_for_test(overrides=overrides) as instance:
        run = DagsterRun(
            job_name="hourly_job",
            run_id=str(uuid.uuid4()),
            tags={"dagster/partition": "101|2026-11-20-05:00"},
        )
        job = run_pod_job(instance.run_launcher, run, EXAMPLE_IMAGE)
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == EXAMPLE_IMAGE
    assert container["resources"] == launcher_config["resources"]
    secret_refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    assert set(launcher_config["env_secrets"]) <= set(secret_refs)
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == launcher_config["service_account_name"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    # The run worker opens the instance (its reference travels in the args, with environment
    # references unresolved): the pod must have the instance database's credentials.
    env = {e["name"]: e for e in container.get("env", [])}
    if "postgres_password_secret" in launcher_config:  # the chart: password from its Secret
        ref = env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {
            "name": launcher_config["postgres_password_secret"],
            "key": "postgresql-password",
        }
    else:  # without Helm: the whole URL from a Secret
        assert load_yaml(INSTANCE_YAML)["storage"]["postgres"]["postgres_url"] == {
            "env": "DAGSTER_PG_URL"
        }
        assert any("DAGSTER_PG_URL" in secret_keys(name) for name in secret_refs)


def test_every_job_validates_with_the_example_secret_and_runs_in_its_run_pod(monkeypatch):
    """Run config as a run pod resolves it: resources read the Secret's variables (EnvVar).
    The jobs use the in-process executor: one pod per run, no pod per step (so the k8s_job_executor
    and its config do not apply)."""
    secret = example_secret_env()
    for key, value in secret.items():
        monkeypatch.setenv(key, value)
    defs = build_definitions(secret)
    # The implicit asset job (backfills, launches from the UI) too.
    names = [job.name for job in defs.resolve_all_job_defs()]
    assert {"hourly_job", "daily_job", "weekly_job", "__ASSET_JOB"} <= set(names)
    for name in names:
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "in_process", name
        validate_run_config(job, {})
    # The check is not vacuous: without a Secret key the run config does not resolve.
    variable = URL_VARIABLES["warehouse"][0]
    monkeypatch.delenv(variable)
    with pytest.raises(DagsterInvalidConfigError, match=variable):
        validate_run_config(defs.resolve_job_def("hourly_job"), {})


def test_example_shard_urls_name_the_driver_the_image_installs():
    dockerfile = (INSTANCE_YAML.parent / "Dockerfile").read_text()
    assert "ACCEPT_EULA=Y" in dockerfile and "msodbcsql18" in dockerfile
    assert '"ODBC Driver 18 for SQL Server"' in dockerfile
    assert "dagster-postgres" in dockerfile
    for key, url in example_secret_env().items():
        if url.startswith("mssql+pyodbc://"):
            assert "driver=ODBC Driver 18 for SQL Server" in unquote_plus(url), key
