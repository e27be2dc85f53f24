"""compose.yaml and the Kubernetes manifests: valid, and true to the code they run."""

import functools
import json
import re
import shutil
import typing
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.api.main import create_app as api_app
from services.api.settings import ApiSettings
from services.api.timeline import TIMELINE_CONSUMER
from services.ingest.main import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.notify.main import create_app as notify_app
from services.notify.settings import NotifySettings
from services.outbound.consumers import CONSUMER as OUTBOUND_CONSUMER
from services.outbound.main import create_app as outbound_app
from services.outbound.settings import OutboundSettings
from services.router.main import create_app as router_app
from services.router.settings import RouterSettings
from shared import subjects
from shared.commands import PersonStatus, SendReply, subject_of
from shared.ids import SLUG_PATTERN
from shared.preflight import Action, ConversationRef, Request, make_command
from shared.secrets import new_key, new_vapid_pem
from stayhuman import localnats, serve, supervisor
from stayhuman.cli import build_parser, cmd_service
from stayhuman.supervisor import UpSettings
from tests.fuzz import properties
from tests.kustomize import build, containers, pod_specs

ROOT = Path(__file__).parents[2]
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"
PERMISSIONS = ROOT / "deploy" / "k8s" / "base" / "nats" / "permissions.conf"
SERVICE_SETTINGS: dict[str, Any] = {
    "ingest": IngestSettings,
    "router": RouterSettings,
    "notify": NotifySettings,
    "api": ApiSettings,
    "outbound": OutboundSettings,
}
SETTINGS = (*SERVICE_SETTINGS.values(), UpSettings)
KNOWN = {f"STAYHUMAN_{name.upper()}" for settings in SETTINGS for name in settings.model_fields}


def _default(settings: Any, field: str) -> int | None:
    return settings.model_fields[field].default if field in settings.model_fields else None


# Each service's ports are its settings' defaults; the manifests must say the same.
PORTS = {name: _default(settings, f"{name}_port") for name, settings in SERVICE_SETTINGS.items()}
OPS_PORTS = {  # operations listeners: health, readiness, metrics, docs
    name: port
    for name, settings in SERVICE_SETTINGS.items()
    if (port := _default(settings, f"{name}_ops_port")) is not None
}


def test_every_service_runs_everywhere() -> None:
    """A service is run by `stayhuman <name>`, by `up`, as its own NATS user, in compose and on
    Kubernetes: none of them may leave one out."""
    assert set(serve.SERVICES) == set(SERVICE_SETTINGS) == set(supervisor.SERVICES)
    for name in SERVICE_SETTINGS:  # the image's entry point: `stayhuman <name>` is a command
        assert build_parser().parse_args([name]).func is cmd_service, name
    assert set(localnats.SERVICE_USERS) == set(SERVICE_SETTINGS)
    assert PORTS == {"ingest": 8080, "router": 8081, "notify": 8082, "api": 8083, "outbound": 8085}
    assert OPS_PORTS == {"ingest": 9080, "notify": 9082, "api": 9083}
    for name in SERVICE_SETTINGS:  # `up` runs each on the port the service itself defaults to
        assert _default(UpSettings, f"{name}_port") == PORTS[name]
        assert _default(UpSettings, f"{name}_ops_port") == OPS_PORTS.get(name)


@pytest.mark.parametrize("service", sorted(OPS_PORTS))
def test_public_listeners_serve_no_metrics_docs_or_readiness(service: str) -> None:
    """What people and platforms reach from outside names no tenant, team or internals."""
    served = listeners(service)
    assert not {"/metrics", "/docs", "/openapi.json", "/readyz"} & served["public"]
    assert {"/metrics", "/docs", "/openapi.json", "/readyz", "/healthz"} <= served["ops"]


def test_outbound_serves_nothing_but_health_readiness_and_metrics() -> None:
    """Outbound holds the platforms' write credentials: its one listener answers the probes and
    the metrics scraper, and nothing else (no API, no docs)."""
    assert listeners("outbound") == {"public": {"/healthz", "/readyz", "/metrics"}}


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
        "api": lambda: api_app(ApiSettings(nats_url="nats://x", database_url=url, smtp_host="smtp.invalid")),
        "outbound": lambda: outbound_app(OutboundSettings(nats_url="nats://x", database_url=url, **keys)),
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
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "Namespace", "NetworkPolicy",
        "PodDisruptionBudget", "Secret", "Service", "StatefulSet",
    ]  # fmt: skip
    for document in manifests:
        kubernetes_validate.validate(document, "1.33", strict=True)


def test_services_have_probes_limits_budgets_and_autoscaling(manifests: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    assert set(deployments) == {f"stayhuman-{name}" for name in PORTS}
    services = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Service"}
    for name, port in PORTS.items():  # each one's public port, and only that, behind its Service
        container = deployments[f"stayhuman-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [name]
        assert [(p["port"], p["targetPort"]) for p in services[f"stayhuman-{name}"]["spec"]["ports"]] == [
            (port, "http")
        ]
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


def test_outbound_lets_in_only_the_scraper_and_reaches_only_nats_the_database_dns_and_https(
    manifests: list[dict[str, Any]],
) -> None:
    """The pods holding the platforms' write credentials take connections on their one port
    (probes, metrics) and open them only to NATS, PostgreSQL, DNS and HTTPS on public addresses."""
    policies = {d["metadata"]["name"]: d["spec"] for d in manifests if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"stayhuman-outbound"}
    policy = policies["stayhuman-outbound"]
    deployment = next(d for d in manifests if d["metadata"]["name"] == "stayhuman-outbound")
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]  # both ways, what is not listed is refused
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    assert ingress["from"] == [{"namespaceSelector": {}}]  # from pods of the cluster: the scraper
    egress = {
        (port["protocol"], port["port"]): rule.get("to", "anywhere")
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    nats = next(d for d in manifests if d["kind"] == "StatefulSet")
    assert egress.pop(("TCP", 4222)) == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": nats["metadata"]["name"]}}}
    ]
    assert nats["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "nats"
    blocks = [to["ipBlock"] for to in egress.pop(("TCP", 443))]
    assert [block["cidr"] for block in blocks] == ["0.0.0.0/0", "::/0"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(blocks[0]["except"])
    assert {"fc00::/7", "fe80::/10"} <= set(blocks[1]["except"])
    assert egress == {("TCP", 5432): "anywhere", ("UDP", 53): "anywhere", ("TCP", 53): "anywhere"}


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
    "api": set(),
    "outbound": {"STAYHUMAN_SECRET_KEY"},  # opens the reply credentials `apply` sealed
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


@functools.cache
def nats_users() -> dict[str, dict[str, Any]]:
    """The users of the NATS permissions file: the variable of each one's password, and the
    subjects each may publish and subscribe to."""
    found = re.findall(
        r"user: (\w+)\s+password: \$(\w+)\s+permissions: \{\s+publish: (\[.*?\])\s+subscribe: (\[.*?\])",
        PERMISSIONS.read_text(),
    )
    return {
        user: {"password": variable, "publish": json.loads(publish), "subscribe": json.loads(subscribe)}
        for user, variable, publish, subscribe in found
    }


def allows(patterns: list[str], subject: str) -> bool:
    """Whether a NATS permission list lets `subject` through (`*` one token, `>` the rest)."""
    tokens = subject.split(".")

    def matches(pattern: list[str]) -> bool:
        for index, token in enumerate(pattern):
            if token == ">":
                return len(tokens) > index
            if index >= len(tokens) or token not in ("*", tokens[index]):
                return False
        return len(tokens) == len(pattern)

    return any(matches(pattern.split(".")) for pattern in patterns)


def test_every_service_is_its_own_nats_user_everywhere(
    compose: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    """Each service connects as itself, with its own password, wherever it runs; the servers read
    every user's password from their environment."""
    users = nats_users()
    assert set(users) == {*SERVICE_SETTINGS, localnats.OPERATOR}
    variables = {user: f"NATS_{user.upper()}_PASSWORD" for user in users}
    assert {user: users[user]["password"] for user in users} == variables
    made = {user: "x" for user in (*localnats.SERVICE_USERS, localnats.OPERATOR)}  # `up`'s users
    assert set(localnats.server_environment(made)) == set(variables.values())
    for node in ("nats-1", "nats-2", "nats-3"):
        assert set(variables.values()) <= set(compose["services"][node]["environment"])
    for name in SERVICE_SETTINGS:
        environment = compose["services"][name]["environment"]
        assert environment["STAYHUMAN_NATS_USER"] == name
        assert environment["STAYHUMAN_NATS_PASSWORD"].startswith(f"${{{variables[name]}:?")
    secret = next(d for d in manifests if d["kind"] == "Secret")
    nats = next(d for d in manifests if d["kind"] == "StatefulSet")
    given_to_nats = {
        v["name"]: v["valueFrom"]["secretKeyRef"]["key"]
        for v in nats["spec"]["template"]["spec"]["containers"][0]["env"]
        if v["name"] in variables.values()
    }
    assert given_to_nats == {variable: f"nats-{user}-password" for user, variable in variables.items()}
    assert set(given_to_nats.values()) <= set(secret["data"])
    seen = set()
    for _workload, spec in pod_specs(manifests):
        for container in spec["containers"]:
            if "stayhuman" not in container["image"] or container["args"][0] not in SERVICE_SETTINGS:
                continue
            service = container["args"][0]
            seen.add(service)
            env = {v["name"]: v for v in container["env"]}
            assert env["STAYHUMAN_NATS_USER"]["value"] == service
            reference = env["STAYHUMAN_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": "stayhuman-secrets", "key": f"nats-{service}-password"}
    assert seen == set(SERVICE_SETTINGS)


SLUGS = st.from_regex(SLUG_PATTERN, fullmatch=True)
CONVERSATION_IDS = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)


@properties(300)
@given(
    action=st.sampled_from(typing.get_args(Action)), tenant=SLUGS, conversation=CONVERSATION_IDS, person=SLUGS
)
def test_the_api_may_send_every_command_a_person_can_ask_for(
    action: Action, tenant: str, conversation: str, person: str
) -> None:
    """Whatever a person asks for in the inbox, the command the API builds for it (with the same
    code as the command line) is published on a subject the api's NATS user may publish."""
    request = Request(action, conversation=conversation, person=person, status=PersonStatus.away)
    command = make_command(request, ConversationRef(conversation, tenant), deadline_version=1)
    assert allows(nats_users()["api"]["publish"], subject_of(command)), subject_of(command)


def test_the_api_consumes_the_events_and_publishes_nothing_but_commands() -> None:
    """The timeline consumer: it declares itself, acknowledges and dead-letters on its own
    subjects; the api cannot write any event, outcome, interaction or other consumer's letter."""
    api = nats_users()["api"]
    events, timeline = subjects.EVENTS_STREAM, TIMELINE_CONSUMER
    assert api["subscribe"] == ["_INBOX.>"]  # the answers to its requests and publishes
    for subject in (
        f"$JS.API.CONSUMER.DURABLE.CREATE.{events}.{timeline}",
        f"$JS.API.CONSUMER.MSG.NEXT.{events}.{timeline}",
        f"$JS.ACK.{events}.{timeline}.1.42.42.1700000000000000000.0",
        subjects.dead_letter(stream=events, consumer=timeline),
    ):
        assert allows(api["publish"], subject), subject
    conversation = "0" * 32
    for subject in (
        subjects.conversation_event(tenant_id="kettle", conversation_id=conversation, event="assigned"),
        subjects.command_outcome(tenant_id="kettle", person_id="kai", outcome="applied"),
        subjects.deadline(tenant_id="kettle", conversation_id=conversation),
        subjects.interaction_received(tenant_id="kettle", account_id="kettle-fb"),
        subjects.tenant_command(tenant_id="kettle", verb="recompute"),
        subjects.timer_schedule(tenant_id="kettle", conversation_id=conversation),
        subjects.dead_letter(stream=events, consumer="notify-deadlines"),
        subjects.dead_letter(stream=subjects.COMMANDS_STREAM, consumer=timeline),
        f"$JS.ACK.{subjects.COMMANDS_STREAM}.router-commands.1.1.1.1700000000000000000.0",
        "$KV.SH_POLL_LEASES.kettle-fb",
        "sh.alert.kettle.sent",
        # what only apply and the router's own timers send: people never ask for these
        subjects.person_command(person_id="kai", verb="hand_over"),
        subjects.person_command(person_id="kai", verb="check_availability"),
        subjects.conversation_command(tenant_id="kettle", conversation_id=conversation, verb="auto_resolve"),
    ):
        assert not allows(api["publish"], subject), subject


def test_outbound_consumes_the_reply_commands_and_publishes_only_what_became_of_them() -> None:
    """Its consumer of the reply commands: it declares it, acknowledges and dead-letters on its
    own subjects; it publishes the sent reply as the brand's interaction, the reply's events, the
    command's outcome and a failing connection, and no command, no other event or letter."""
    outbound = nats_users()["outbound"]
    commands, replies = subjects.COMMANDS_STREAM, OUTBOUND_CONSUMER
    assert outbound["subscribe"] == ["_INBOX.>"]
    conversation = "0" * 32
    for subject in (
        f"$JS.API.STREAM.INFO.{commands}",
        f"$JS.API.STREAM.INFO.{subjects.INTERACTIONS_STREAM}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{commands}.{replies}",
        f"$JS.API.CONSUMER.MSG.NEXT.{commands}.{replies}",
        f"$JS.ACK.{commands}.{replies}.1.42.42.1700000000000000000.0",
        subjects.dead_letter(stream=commands, consumer=replies),
        subjects.interaction_received(tenant_id="kettle", account_id="kettle-fb"),
        subjects.reply_event(tenant_id="kettle", conversation_id=conversation),
        subjects.command_outcome(tenant_id="kettle", person_id=None, outcome="applied"),
        subjects.command_outcome(tenant_id="kettle", person_id=None, outcome="rejected"),
        subjects.connector_problem(tenant_id="kettle", account_id="kettle-fb"),
    ):
        assert allows(outbound["publish"], subject), subject
    for subject in (
        subjects.outbound_command(tenant_id="kettle", conversation_id=conversation, verb="reply"),
        subjects.conversation_command(
            tenant_id="kettle", conversation_id=conversation, verb="mark_responded"
        ),
        subjects.notify_command(tenant_id="kettle", conversation_id=conversation, verb="acknowledge"),
        subjects.person_command(person_id="kai", verb="set_status"),
        subjects.conversation_event(tenant_id="kettle", conversation_id=conversation, event="responded"),
        subjects.deadline(tenant_id="kettle", conversation_id=conversation),
        subjects.timer_schedule(tenant_id="kettle", conversation_id=conversation),
        subjects.alert_event(tenant_id="kettle", outcome="sent"),
        subjects.archive(source="meta"),
        subjects.dead_letter(stream=commands, consumer="router-commands"),
        subjects.dead_letter(stream=subjects.EVENTS_STREAM, consumer=TIMELINE_CONSUMER),
        f"$JS.ACK.{subjects.EVENTS_STREAM}.{TIMELINE_CONSUMER}.1.42.42.1700000000000000000.0",
        f"$JS.ACK.{subjects.INTERACTIONS_STREAM}.router-interactions.1.42.42.1700000000000000000.0",
        "$KV.SH_POLL_LEASES.kettle-fb",
    ):
        assert not allows(outbound["publish"], subject), subject


@properties(100)
@given(tenant=SLUGS, conversation=CONVERSATION_IDS, person=SLUGS)
def test_only_the_inbox_and_the_operator_may_ask_for_a_reply(
    tenant: str, conversation: str, person: str
) -> None:
    """A reply is posted for a person signed in to the inbox: the api publishes its command (and
    the command line may replay one from the dead letters); no other service can ask for one."""
    command = SendReply(
        tenant_id=tenant, conversation_id=conversation, person_id=person, session="0" * 64, text="Hello"
    )
    users = nats_users()
    assert {user for user, user_of in users.items() if allows(user_of["publish"], subject_of(command))} == {
        "api",
        localnats.OPERATOR,
    }
    for verb in ("delete", "edit"):  # the api sends replies, nothing else outbound might one day do
        other = subjects.outbound_command(tenant_id=tenant, conversation_id=conversation, verb=verb)
        assert not allows(users["api"]["publish"], other), other
