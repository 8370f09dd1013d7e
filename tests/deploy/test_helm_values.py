"""Each Helm values file under deploy/, merged over the chart's defaults, is valid for the official
Dagster chart and describes the deployment the issue asks for."""

import copy

import jsonschema
import pytest

from metrics_pipeline.datapump.assets.hourly import build_hourly_aggregates
from metrics_pipeline.partitions import parse_partitions_start
from metrics_pipeline.resources import URL_VARIABLES

from .chart import (
    INSTANCE_YAML,
    MANIFESTS,
    REPO,
    VALUES_FILES,
    chart_schema,
    chart_values,
    coalesce,
    load_manifests,
    load_yaml,
    render_instance,
    subchart_values,
)

pytestmark = pytest.mark.usefixtures("chart_dir")

values_files = pytest.mark.parametrize(
    "values_file", VALUES_FILES, ids=[p.name for p in VALUES_FILES]
)


def schema_errors(schema: dict, values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(values)]


def secrets_by_name() -> dict[str, dict]:
    return {
        doc["metadata"]["name"]: doc
        for path in MANIFESTS
        for doc in load_manifests(path)
        if doc["kind"] == "Secret"
    }


def the_deployment(values: dict) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def test_there_are_values_files():
    assert VALUES_FILES, "deploy/helm/ has no values file"


@values_files
def test_values_validate_against_the_chart_schema(values_file):
    values = chart_values(values_file)
    assert schema_errors(chart_schema(), values) == []
    # Helm also checks the subchart's values against the subchart's own schema.
    sub_schema = chart_schema("user-deployments.values.schema.json")
    assert schema_errors(sub_schema, subchart_values(values)) == []


@values_files
def test_the_schema_check_catches_a_misspelt_key(values_file):
    values = chart_values(values_file)
    typo = coalesce(values, {"runLauncher": {"config": {"k8sRunLauncher": {"resorces": {}}}}})
    assert any("resorces" in e for e in schema_errors(chart_schema(), typo))
    no_port = copy.deepcopy(values)
    del no_port["dagster-user-deployments"]["deployments"][0]["port"]
    assert schema_errors(
        chart_schema("user-deployments.values.schema.json"), subchart_values(no_port)
    )


@values_files
def test_runs_get_a_pod_each_and_the_instance_is_an_external_postgresql(values_file):
    values = chart_values(values_file)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlHost"]
    # The password comes from our Secret, not from one the chart would generate from values.
    assert values["generatePostgresqlPasswordSecret"] is False
    secret = secrets_by_name()[values["global"]["postgresqlSecretName"]]
    assert "postgresql-password" in secret["stringData"]


@values_files
def test_the_user_deployment_serves_metrics_pipeline_definitions(values_file):
    deployment = the_deployment(chart_values(values_file))
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "metrics_pipeline.definitions"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'module_name = "metrics_pipeline.definitions"' in pyproject


@values_files
def test_the_metrics_urls_come_from_a_secret_in_the_code_server_and_the_run_pods(values_file):
    values = chart_values(values_file)
    deployment = the_deployment(values)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    code_secrets = [ref["name"] for ref in deployment["envSecrets"]]
    run_secrets = [ref["name"] for ref in launcher["envSecrets"]]
    # Run pods do not inherit the code server's settings (includeConfigInLaunchedRuns is off,
    # so the code server's resources never replace the run requests): they name the Secret too.
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is False
    assert code_secrets == run_secrets
    secrets = secrets_by_name()
    wanted = {variable for variable, _ in URL_VARIABLES.values()}
    assert wanted == {"METRICS_CATALOG_URL", "METRICS_WAREHOUSE_URL", "METRICS_SHARD_URL_TEMPLATE"}
    provided = {key for name in code_secrets for key in secrets[name]["stringData"]}
    assert wanted <= provided
    # No URL in plain values, where `helm get values` would show it.
    plain = {e["name"] for e in (deployment.get("env") or [])} | set(launcher.get("envVars") or [])
    assert not plain & wanted


@values_files
def test_run_pods_request_resources_and_run_as_the_images_non_root_user(values_file):
    values = chart_values(values_file)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {"cpu", "memory"} <= set(launcher["resources"]["requests"])
    assert launcher["securityContext"]["runAsNonRoot"] is True
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    # runAsNonRoot needs a numeric USER in the image, the same uid the pods run as.
    user_lines = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split(":")[0] == str(
        launcher["securityContext"]["runAsUser"]
    )
    deployment = the_deployment(values)
    assert deployment["podSecurityContext"]["runAsUser"] == launcher["securityContext"]["runAsUser"]


@values_files
def test_the_shard_pool_is_limited_per_run_and_matches_the_instance_without_helm(values_file):
    values = chart_values(values_file)
    assert build_hourly_aggregates(parse_partitions_start(None)).op.pool == "biller_shards"
    pools = values["concurrency"]["pools"]
    assert values["concurrency"]["enabled"] is True
    assert pools["granularity"] == "run"
    assert isinstance(pools["defaultLimit"], int) and pools["defaultLimit"] >= 1
    # Both ways of deploying enforce the same limits.
    assert render_instance(values)["concurrency"] == load_yaml(INSTANCE_YAML)["concurrency"]
