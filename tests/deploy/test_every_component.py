"""Every component on Kubernetes: each manifest under deploy/k8s/ is valid for the pinned
Kubernetes versions (the schemas kubernetes-validate bundles, no network), and every image,
command, port, probe path, env var, Secret key and Service reference agrees with the code: the
API's health route, the settings the processes read, the collector's readiness route and the
consumer's metrics port. A renamed route or setting fails here."""

import sqlite3
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from starlette.routing import Route

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.routers import health
from metrics_pipeline.api.server import access_log_of, workers_of
from metrics_pipeline.cli import build_parser
from metrics_pipeline.collected.collector import create_collector_app
from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.definitions import build_resources

from .chart import DEPLOY, EXAMPLE_IMAGE, KUBERNETES_VERSIONS, load_manifests, load_yaml

PATHS = sorted((DEPLOY / "k8s").rglob("*.yaml"))
DOCUMENTS = [(path, doc) for path in PATHS for doc in load_manifests(path)]
NATS_VALUES = load_yaml(DEPLOY / "helm" / "nats" / "values.yaml")
REDIS_VALUES = load_yaml(DEPLOY / "helm" / "redis" / "values.yaml")


class Recording(dict):
    """An environment that remembers every variable asked of it."""

    def __init__(self, values=()):
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def api_variables() -> set[str]:
    env = Recording()
    ApiSettings.from_environ(env)
    workers_of(env)
    access_log_of(env)
    return env.asked


def collected_variables(with_warehouse: bool) -> set[str]:
    env = Recording()
    CollectedSettings.from_environ(env)
    if with_warehouse:
        build_resources(env, resolve=True)
    return env.asked


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in DOCUMENTS if d["kind"] == kind}


def secret_keys() -> dict[str, set[str]]:
    return {
        n: set(d.get("stringData", {})) | set(d.get("data", {}))
        for n, d in of_kind("Secret").items()
    }


def ours() -> dict[str, dict]:
    """The Deployments that run ``metrics-pipeline`` commands, by name."""
    out = {}
    for name, d in of_kind("Deployment").items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        if c.get("command", [""])[0] == "metrics-pipeline":
            out[name] = d
    return out


def container(name: str) -> dict:
    (c,) = ours()[name]["spec"]["template"]["spec"]["containers"]
    return c


def option(c: dict, flag: str) -> int:
    return int(c["command"][c["command"].index(flag) + 1])


def test_every_folder_is_here():
    assert {p.parent.name for p in PATHS} >= {"k8s", "collected", "portal"}
    assert set(ours()) >= {"metrics-api", "metrics-collector", "metrics-consumer"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    [d for _, d in DOCUMENTS],
    ids=[f"{p.parent.name}/{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCUMENTS],
)
def test_manifest_is_valid_kubernetes(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_schemas_are_bundled_not_fetched(monkeypatch):
    """Validation needs no network: with sockets refused, a bad manifest is still refused."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    bad = dict(of_kind("PodDisruptionBudget")["metrics-api"])
    bad["spec"] = {**bad["spec"], "minAvailabel": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", ["metrics-api", "metrics-collector", "metrics-consumer"])
def test_commands_images_env_and_secrets_are_the_codes(name):
    c = container(name)
    assert c["image"] == EXAMPLE_IMAGE
    args = build_parser().parse_args(c["command"][1:])  # a real command line of the CLI
    known = {
        "api": api_variables,
        "collector": lambda: collected_variables(False),
        "consumer": lambda: collected_variables(True),
    }[args.command]()
    names = {e["name"] for e in c.get("env", [])}
    assert names <= known, f"{name}: variables the code does not read: {names - known}"
    keys = secret_keys()
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in keys.get(ref["name"], set()), (name, ref)
    for source in c.get("envFrom", []):
        secret = source["secretRef"]["name"]
        assert secret in keys
        assert keys[secret] & known, f"{name}: {secret} holds nothing it reads"
    volumes = {v["name"]: v for v in ours()[name]["spec"]["template"]["spec"].get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        assert volumes[mount["name"]]["secret"]["secretName"] in keys
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["readinessProbe"] and c["livenessProbe"]
    pod = ours()[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def mounted_file(name: str, variable: str) -> tuple[str, str]:
    """The Secret and key a file variable points at (through the container's mounts)."""
    c = container(name)
    path = next(e["value"] for e in c["env"] if e["name"] == variable)
    volumes = {v["name"]: v for v in ours()[name]["spec"]["template"]["spec"]["volumes"]}
    for mount in c["volumeMounts"]:
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder):
            return volumes[mount["name"]]["secret"]["secretName"], path[len(folder) :]
    raise AssertionError(f"{name}: {variable}={path} is not in a mounted Secret")


@pytest.mark.parametrize(
    "name, variable",
    [
        ("metrics-api", "METRICS_API_TOKENS_FILE"),
        ("metrics-collector", "METRICS_COLLECTOR_TOKENS_FILE"),
    ],
)
def test_token_files_are_keys_of_mounted_secrets(name, variable):
    secret, key = mounted_file(name, variable)
    assert key in secret_keys()[secret]


def test_the_api_probes_its_health_route_on_its_port_with_replicas_and_a_budget(tmp_path):
    deployment = ours()["metrics-api"]
    assert deployment["spec"]["replicas"] >= 2
    c = container("metrics-api")
    sqlite3.connect(tmp_path / "w.db").close()  # the API opens an existing warehouse
    app = create_app(ApiSettings(warehouse_url=f"sqlite:///{tmp_path / 'w.db'}"))
    (health_path,) = [r.path for r in health.router.routes]
    assert health_path in app.openapi()["paths"]
    (port,) = c["ports"]
    assert port["containerPort"] == option(c, "--port")
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": health_path, "port": port["name"]}
    env = {e["name"] for e in c["env"]}
    assert {"REDIS_URL", "METRICS_API_EXPORT_SECRET", "METRICS_API_TOKENS_FILE"} <= env
    warehouse = {"METRICS_WAREHOUSE_URL", "METRICS_CATALOG_URL"}
    (source,) = c["envFrom"]
    assert warehouse <= secret_keys()[source["secretRef"]["name"]]
    budget = of_kind("PodDisruptionBudget")["metrics-api"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_the_collector_probes_its_own_readiness_route():
    c = container("metrics-collector")
    routes = {r.path: r for r in create_collector_app(CollectedSettings()).routes}
    assert isinstance(routes.get(c["readinessProbe"]["httpGet"]["path"]), Route)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the bus-connected one
    assert c["livenessProbe"]["httpGet"]["path"] in routes
    (port,) = c["ports"]
    assert port["containerPort"] == option(c, "--port")


def test_the_consumer_exposes_its_metrics_port():
    deployment = ours()["metrics-consumer"]
    c = container("metrics-consumer")
    port = option(c, "--metrics-port")
    assert port > 0  # 0 turns the metrics server off
    (declared,) = c["ports"]
    assert declared["containerPort"] == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": declared["name"]}


def test_services_and_ingress_point_at_pods_and_ports_that_exist():
    deployments = of_kind("Deployment")
    services = of_kind("Service")
    for name, service in services.items():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {name} selects no Deployment"
        ports = {
            p["name"]
            for d in selected
            for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in ports, (name, p)
    for ingress in of_kind("Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names


def test_the_ingress_sends_the_collectors_path_to_the_collector():
    collector_paths = {r.path for r in create_collector_app(CollectedSettings()).routes}
    (ingress,) = of_kind("Ingress").values()
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert paths["/collect"] == "metrics-collector" and "/collect" in collector_paths
    assert paths["/"] == "metrics-api"


def test_the_ingress_sends_every_ingestion_route_of_the_collector_to_it():
    """What clients send to (the seed's /collect and the OTLP/HTTP /v1/metrics) reaches the
    collector through the example Ingress: anything left to "/" would be the API's 404."""
    app = create_collector_app(CollectedSettings())
    ingestion = {r.path for r in app.routes if isinstance(r, Route) and "POST" in r.methods}
    assert ingestion >= {"/collect", "/v1/metrics"}
    (ingress,) = of_kind("Ingress").values()
    rules = [
        (p["path"], p["pathType"], p["backend"]["service"]["name"])
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    ]

    def backend(path: str) -> str:
        # Kubernetes: an Exact match first, then the longest Prefix by path elements.
        for rule_path, kind, service in rules:
            if kind == "Exact" and rule_path == path:
                return service
        prefixes = [
            (len(rule_path.rstrip("/").split("/")), service)
            for rule_path, kind, service in rules
            if kind == "Prefix"
            and (
                rule_path == "/"
                or path == rule_path
                or path.startswith(rule_path.rstrip("/") + "/")
            )
        ]
        return max(prefixes)[1]

    for path in sorted(ingestion):
        assert backend(path) == "metrics-collector", path
    assert backend("/api/health") == "metrics-api"
    assert backend("/collected") == "metrics-api"  # the dashboard's page, not the collector's


def test_nats_is_a_three_node_jetstream_on_volumes_and_the_stream_has_three_copies():
    config = NATS_VALUES["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    store = config["jetstream"]["fileStore"]
    assert config["jetstream"]["enabled"] and store["enabled"] and store["pvc"]["enabled"]
    for name in ("metrics-collector", "metrics-consumer"):
        env = {e["name"]: e.get("value") for e in container(name)["env"]}
        replicas = CollectedSettings.from_environ(env).stream_replicas
        assert replicas == config["cluster"]["replicas"]
    # The collector's user: its password from a Secret of the examples, the bus URL's user.
    ref = NATS_VALUES["container"]["env"]["COLLECTOR_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in secret_keys()[ref["name"]]
    (user,) = config["merge"]["authorization"]["users"]
    bus = urlsplit(of_kind("Secret")["metrics-collected-bus"]["stringData"]["METRICS_BUS_URL"])
    assert bus.username == user["user"] and bus.hostname == "nats" and bus.port == 4222


def test_the_stream_config_carries_the_replicas():
    from metrics_pipeline.collected.bus import stream_config

    settings = CollectedSettings.from_environ({"METRICS_BUS_STREAM_REPLICAS": "3"})
    assert stream_config(settings).num_replicas == 3
    assert stream_config(CollectedSettings()).num_replicas == 1


def test_redis_values_and_the_apis_redis_url_agree():
    auth = REDIS_VALUES["auth"]
    assert auth["existingSecretPasswordKey"] in secret_keys()[auth["existingSecret"]]
    assert REDIS_VALUES["architecture"] == "standalone"
    url = urlsplit(of_kind("Secret")["metrics-api"]["stringData"]["REDIS_URL"])
    # Bitnami names the Service <release>-master; the values' comment names the release.
    assert url.scheme == "redis" and url.hostname == "metrics-redis-master" and url.port == 6379


def test_the_service_monitor_scrapes_the_apis_metrics_route(tmp_path):
    """deploy/prometheus/servicemonitor.yaml selects the API's Service by its labels, scrapes a
    port of it by name on a path the API serves, and names the job the rules watch."""
    monitor = load_yaml(DEPLOY / "prometheus" / "servicemonitor.yaml")
    selector = monitor["spec"]["selector"]["matchLabels"]
    [service] = [
        s
        for s in of_kind("Service").values()
        if selector.items() <= s["metadata"].get("labels", {}).items()
    ]
    api = container("metrics-api")
    assert service["spec"]["selector"].items() <= (
        ours()["metrics-api"]["spec"]["template"]["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    sqlite3.connect(tmp_path / "w.db").close()  # the API opens an existing warehouse
    app = create_app(ApiSettings(warehouse_url=f"sqlite:///{tmp_path / 'w.db'}"))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        scraped = client.get(endpoint["path"])
    assert scraped.status_code == 200 and "metrics_pipeline_" in scraped.text
    assert api["command"][1] == "api"
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert f'job="{job}"' in (DEPLOY / "prometheus" / "rules.yml").read_text()
