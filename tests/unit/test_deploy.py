"""compose.yaml and the Kubernetes manifests: valid, and true to the code they run."""

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.ingest.main import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.notify.main import create_app as notify_app
from services.notify.settings import NotifySettings
from services.router.main import create_app as router_app
from services.router.settings import RouterSettings
from shared.secrets import new_key, new_vapid_pem
from stayhuman.supervisor import UpSettings
from tests.kustomize import build, containers, pod_specs

ROOT = Path(__file__).parents[2]
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"
SETTINGS = (IngestSettings, RouterSettings, NotifySettings, UpSettings)
KNOWN = {f"STAYHUMAN_{name.upper()}" for settings in SETTINGS for name in settings.model_fields}
PORTS = {"ingest": 8080, "router": 8081, "notify": 8082}
OPS_PORTS = {"ingest": 9080, "notify": 9082}  # operations listeners: health, readiness, metrics, docs


@pytest.mark.parametrize("service", ["ingest", "notify"])
def test_public_listeners_serve_no_metrics_docs_or_readiness(service: str) -> None:
    """What people and platforms reach from outside names no tenant, team or internals."""
    served = listeners(service)
    assert not {"/metrics", "/docs", "/openapi.json", "/readyz"} & served["public"]
    assert {"/metrics", "/docs", "/openapi.json", "/readyz", "/healthz"} <= served["ops"]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    # Render a copy, with the example secrets file standing in for the real one.
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", copy)
    overlay = copy / "overlays" / "example"
    return build(overlay, {"secrets.env": (overlay / "secrets.env.example").read_text()})


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def listeners(service: str) -> dict[str, set[str]]:
    """The paths each listener of a service serves: `public`, and `ops` when it has one."""
    url = "postgresql://user:pass@db.invalid/stayhuman"  # building an app opens no connection
    keys: dict[str, Any] = {"secret_key": new_key()}
    apps = {
        "ingest": lambda: ingest_app(IngestSettings(nats_url="nats://x", database_url=url, **keys)),
        "router": lambda: router_app(RouterSettings(nats_url="nats://x", database_url=url)),
        "notify": lambda: notify_app(
            NotifySettings(
                nats_url="nats://x",
                database_url=url,
                smtp_host="smtp.invalid",
                vapid_private_key=new_vapid_pem(),
                **keys,
            )
        ),
    }
    app = apps[service]()
    served = {"public": _paths(app.routes)}
    ops = getattr(app.state, "ops_app", None)
    if ops is not None:
        served["ops"] = _paths(ops.routes)
    return served


def _paths(routes: list[Any]) -> set[str]:
    """Every path of an app, through routers included in it."""
    found: set[str] = set()
    for route in routes:
        if hasattr(route, "original_router"):
            found |= _paths(route.original_router.routes)
        elif hasattr(route, "path"):
            found.add(route.path)
    return found


def test_every_manifest_validates_against_kubernetes(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted({d["kind"] for d in manifests})
    assert kinds == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "Namespace",
        "PodDisruptionBudget", "Secret", "Service", "StatefulSet",
    ]  # fmt: skip
    for document in manifests:
        kubernetes_validate.validate(document, "1.33", strict=True)


def test_services_have_probes_limits_budgets_and_autoscaling(manifests: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    assert set(deployments) == {f"stayhuman-{name}" for name in PORTS}
    budgets = {d["metadata"]["name"] for d in manifests if d["kind"] == "PodDisruptionBudget"}
    autoscaled = {
        d["spec"]["scaleTargetRef"]["name"] for d in manifests if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert autoscaled == {"stayhuman-ingest", "stayhuman-router"}
    for name, deployment in deployments.items():
        assert name in budgets
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployments["stayhuman-ingest"]["spec"]["replicas"] == 3  # the overlay's
    assert all(
        c["image"] == "registry.example.com/stayhuman:0.1.0"
        for c in containers(manifests)
        if "stayhuman" in c["image"]
    )
    assert all(d["metadata"].get("namespace") == "stayhuman" for d in manifests if d["kind"] != "Namespace")
    nats = next(d for d in manifests if d["kind"] == "StatefulSet")
    assert nats["spec"]["replicas"] == 3 and "nats" in budgets


def test_manifests_use_only_real_ports_paths_and_settings(manifests: list[dict[str, Any]]) -> None:
    config = next(
        d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "stayhuman-config"
    )
    assert set(config["data"]) <= KNOWN, set(config["data"]) - KNOWN
    secret = next(d for d in manifests if d["kind"] == "Secret")
    for workload, spec in pod_specs(manifests):
        for container in spec["containers"]:
            if "stayhuman" not in container["image"]:
                continue
            service = container["args"][0]
            for variable in container.get("env", []):
                assert variable["name"] in KNOWN, variable["name"]
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference and not reference.get("optional"):
                    assert reference["key"] in secret["data"], reference["key"]
            if service in PORTS:
                assert container["ports"][0]["containerPort"] == PORTS[service]
                served = listeners(service)
                named = {port["name"]: port["containerPort"] for port in container["ports"]}
                expected = {
                    "http": PORTS[service],
                    **({"ops": OPS_PORTS[service]} if service in OPS_PORTS else {}),
                }
                assert named == expected
                for probe in ("readinessProbe", "livenessProbe"):
                    listener = "ops" if container[probe]["httpGet"]["port"] == "ops" else "public"
                    assert container[probe]["httpGet"]["path"] in served[listener]
                assert f"STAYHUMAN_{service.upper()}_PORT" in KNOWN
            else:
                assert workload["kind"] == "Job" and service == "migrate"


def test_compose_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)  # the draft the specification names


def test_compose_runs_a_three_node_cluster_and_two_replicas_of_each_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", "mail"} <= set(services)
    for name in PORTS:
        assert services[name]["deploy"]["replicas"] == 2
        assert services[name]["command"] == [name]
        environment = services[name]["environment"]
        assert set(environment) <= KNOWN, set(environment) - KNOWN
        assert environment["STAYHUMAN_NATS_REPLICAS"] == "3"
        health = " ".join(services[name]["healthcheck"]["test"])
        assert f"localhost:{OPS_PORTS.get(name, PORTS[name])}/readyz" in health
        for dependency, condition in services[name]["depends_on"].items():
            assert condition["condition"] in ("service_healthy", "service_completed_successfully"), dependency
    assert services["migrate"]["command"] == ["migrate"]
    text = (ROOT / "compose.yaml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text and "${NATS_INGEST_PASSWORD:?" in text  # no secret committed


def test_the_image_runs_as_non_root_with_every_service_port_exposed() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER stayhuman" in dockerfile
    assert 'ENTRYPOINT ["stayhuman"]' in dockerfile
    assert "rm -f /opt/stayhuman/bin/nats-server" in dockerfile  # the cluster runs its own
    exposed = next(line for line in dockerfile.splitlines() if line.startswith("EXPOSE"))
    assert exposed.split()[1:] == [str(port) for port in PORTS.values()]


# Which service needs which key: every replica of it gets the same one from the installation's
# secrets, since a service never makes a key of its own.
KEYS = {
    "ingest": {"STAYHUMAN_SECRET_KEY"},
    "notify": {"STAYHUMAN_SECRET_KEY", "STAYHUMAN_VAPID_PRIVATE_KEY", "STAYHUMAN_LINK_KEY"},
    "router": set(),
}
SECRET_KEYS = {
    "STAYHUMAN_SECRET_KEY": "secret-key",
    "STAYHUMAN_VAPID_PRIVATE_KEY": "vapid-private-key",
    "STAYHUMAN_LINK_KEY": "link-key",
}


def test_kubernetes_passes_each_service_its_keys_from_the_secret(manifests: list[dict[str, Any]]) -> None:
    secret = next(d for d in manifests if d["kind"] == "Secret")
    seen = set()
    for _workload, spec in pod_specs(manifests):
        for container in spec["containers"]:
            service = container["args"][0] if "stayhuman" in container["image"] else None
            if service not in KEYS:
                continue
            seen.add(service)
            given = {
                v["name"]: v["valueFrom"]["secretKeyRef"]
                for v in container.get("env", [])
                if v["name"] in SECRET_KEYS and "secretKeyRef" in v.get("valueFrom", {})
            }
            assert set(given) == KEYS[service], (service, set(given))
            for name, reference in given.items():
                assert reference["name"] == "stayhuman-secrets" and reference["key"] == SECRET_KEYS[name]
                assert reference.get("optional", False) == (name == "STAYHUMAN_LINK_KEY")  # derived if unset
    assert seen == set(KEYS)
    assert {"secret-key", "vapid-private-key"} <= set(secret["data"])


def test_compose_passes_each_service_its_keys_and_requires_them(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    for service, keys in KEYS.items():
        environment = compose["services"][service]["environment"]
        assert {name for name in environment if name in SECRET_KEYS} == keys, service
        for name in keys - {"STAYHUMAN_LINK_KEY"}:
            assert environment[name].startswith(f"${{{name}:?"), (service, name)  # stops compose when unset
    assert compose["services"]["notify"]["environment"]["STAYHUMAN_LINK_KEY"] == "${STAYHUMAN_LINK_KEY:-}"
    assert "${STAYHUMAN_VAPID_PRIVATE_KEY:?" in text


def test_up_runs_its_nats_with_the_cluster_permissions() -> None:
    """`stayhuman up` ships a copy of the permissions file (deploy/ is not installed): the same."""
    packaged = ROOT / "stayhuman" / "nats-permissions.conf"
    assert (
        packaged.read_text() == (ROOT / "deploy" / "k8s" / "base" / "nats" / "permissions.conf").read_text()
    )
