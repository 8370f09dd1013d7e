"""deploy/k8s/collected/: the collector and consumer Deployments (their validity against the
Kubernetes schemas: test_every_component.py) run real ``metrics-pipeline`` commands, probe routes the collector serves, and read the bus URL from a
Secret of the example."""

import pytest

from metrics_pipeline.cli import build_parser
from metrics_pipeline.collected.collector import create_collector_app
from metrics_pipeline.collected.settings import CollectedSettings

from .chart import DEPLOY, EXAMPLE_IMAGE, load_manifests

FOLDER = DEPLOY / "k8s" / "collected"
DOCUMENTS = [doc for path in sorted(FOLDER.glob("*.yaml")) for doc in load_manifests(path)]


def named(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in DOCUMENTS if d["kind"] == kind}


def container(name: str) -> dict:
    (c,) = named("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("name", ["metrics-collector", "metrics-consumer"])
def test_deployments_run_cli_commands_with_probes_resources_and_the_bus_secret(name):
    c = container(name)
    assert c["image"] == EXAMPLE_IMAGE
    assert c["command"][0] == "metrics-pipeline"
    build_parser().parse_args(c["command"][1:])  # a real command line of the CLI
    assert c["readinessProbe"] and c["livenessProbe"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    (bus,) = [e for e in c["env"] if e["name"] == "METRICS_BUS_URL"]
    ref = bus["valueFrom"]["secretKeyRef"]
    assert ref["key"] in named("Secret")[ref["name"]]["stringData"]
    pod = named("Deployment")[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_collector_is_replicated_behind_a_service_and_probes_its_own_routes():
    deployment = named("Deployment")["metrics-collector"]
    assert deployment["spec"]["replicas"] >= 2
    c = container("metrics-collector")
    port = c["command"][c["command"].index("--port") + 1]
    (declared,) = c["ports"]
    assert str(declared["containerPort"]) == port
    paths = {r.path for r in create_collector_app(CollectedSettings()).routes}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in paths
        assert c[probe]["httpGet"]["port"] == declared["name"]
    service = named("Service")["metrics-collector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == declared["name"]
    keys_file = next(e["value"] for e in c["env"] if e["name"] == "METRICS_COLLECTOR_TOKENS_FILE")
    (mount,) = c["volumeMounts"]
    assert keys_file.startswith(mount["mountPath"])


def test_consumer_replicas_share_one_durable_consumer_and_reach_the_warehouse():
    c = container("metrics-consumer")
    env = {e["name"]: e for e in c["env"]}
    assert env["METRICS_BUS_CONSUMER"]["value"]
    assert {"secretRef": {"name": "metrics-pipeline-env"}} in c["envFrom"]
    port = c["command"][c["command"].index("--metrics-port") + 1]
    assert str(c["ports"][0]["containerPort"]) == port
