"""Contracts of docker-compose.yml, the Dockerfile and the Prometheus config it mounts.

No Docker engine runs here, so these read the YAML: the file is valid against the Compose
Specification's JSON Schema (vendored in tests/contract/schemas/, see SOURCE.md there), the
services exist, images are pinned, every mounted local path exists, every service has a
healthcheck and waits for the health of what it needs, state lives in named volumes, no password
is written in the repository, and the pieces agree with each other (broker address, metrics port,
provisioning paths, Grafana major vs the dashboard SDK's). ``docker compose config`` and
``promtool check config`` run too when those tools are installed, and so does compose-config,
Docker Compose v2's own loader (compose-go) built by scripts/setup from tests/contract/composecheck,
which interpolates ``${VAR:?message}`` from .env and checks consistency as ``docker compose config``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
SERVICES = {"kafka", "worker", "simulator", "prometheus", "grafana"}
PASSWORD_VARIABLE = "GRAFANA_ADMIN_PASSWORD"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(local path, container path) of each bind mount (short syntax)."""
    binds = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            binds.append((source, target))
    return binds


def _option(command: list[str], flag: str, joined: str = "") -> str:
    """The value of ``flag`` in ``command``: the next item, or after ``flag=`` when ``joined``."""
    if joined:
        return next(item.split(joined, 1)[1] for item in command if item.startswith(flag + joined))
    return command[command.index(flag) + 1]


def test_the_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def _compose_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{error.json_path}: {error.message}" for error in _compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_compose_schema_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    """The schema is strict enough to catch a typo, so the test above means something."""
    services = dict(compose["services"])
    services["worker"] = {**services["worker"], "healthcheck": {"test": ["CMD", "true"], "intervall": "5s"}}
    assert not _compose_validator().is_valid({**compose, "services": services})


def test_every_service_has_a_healthcheck_and_restarts(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} does not come back after a crash"


def test_services_wait_for_the_health_of_what_they_need(services: dict[str, dict[str, Any]]) -> None:
    needs = {"kafka": set(), "worker": {"kafka"}, "simulator": {"kafka", "worker"},
             "prometheus": {"worker"}, "grafana": {"prometheus"}}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (long syntax)"
        assert set(depends) == needs[name], name
        for other, how in depends.items():
            assert how["condition"] == "service_healthy", f"{name} starts before {other} is healthy"
            assert "healthcheck" in services[other]


def test_state_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Kafka's log, the worker's tables, Prometheus' TSDB and Grafana's database survive
    ``docker compose down`` and a re-created container."""
    expected = {"kafka": ("kafka_data", services["kafka"]["environment"]["KAFKA_LOG_DIRS"]),
                "worker": ("worker_data", services["worker"]["environment"]["DMTWIN_DATA_DIR"]),
                "prometheus": ("prometheus_data", _option(services["prometheus"]["command"],
                                                          "--storage.tsdb.path", "=")),
                "grafana": ("grafana_data", "/var/lib/grafana")}
    for name, (volume, path) in expected.items():
        named = [v.split(":")[:2] for v in services[name].get("volumes", []) if not v.startswith((".", "/"))]
        assert [volume, path] in named, f"{name}: {path} is not in the named volume {volume}"
        assert volume in compose["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "chown dmtwin /app/data" in dockerfile, "the worker's volume must belong to its user"


def test_the_worker_publishes_its_pages_on_every_interface(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    env = worker["environment"]
    assert env["DMTWIN_WEB_HOST"] == "0.0.0.0" and env["DMTWIN_METRICS_HOST"] == "0.0.0.0"
    web, metrics = env["DMTWIN_WEB_PORT"], _option(worker["command"], "--metrics-port")
    assert {f"{web}:{web}", f"{metrics}:{metrics}"} <= set(worker["ports"])
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"localhost:{metrics}/metrics" in probe and f"localhost:{web}/hosts/" in probe


def test_prometheus_cannot_be_stopped_over_http(services: dict[str, dict[str, Any]]) -> None:
    assert not any("enable-lifecycle" in flag for flag in services["prometheus"]["command"])
    assert not any("enable-admin-api" in flag for flag in services["prometheus"]["command"])


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])


def test_grafana_major_is_the_one_the_dashboard_sdk_targets(services: dict[str, dict[str, Any]]) -> None:
    sdk = importlib.metadata.version("grafana-foundation-sdk")  # e.g. "1769699379!11.6.0"
    target = sdk.split("!")[-1]
    grafana = services["grafana"]["image"].rpartition(":")[2]
    assert grafana.split(".")[0] == target.split(".")[0], (grafana, sdk)


def test_every_mounted_local_path_exists(services: dict[str, dict[str, Any]]) -> None:
    binds = [bind for service in services.values() for bind in _binds(service)]
    assert len(binds) >= 3
    for source, _ in binds:
        assert (ROOT / source).exists(), f"{source} is mounted but missing"


def test_worker_and_simulator_are_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "pip install ." in dockerfile
    for name in ("worker", "simulator"):
        assert services[name]["build"] == "."
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "twin", "streams", "examples"):
        assert needed not in ignored, f".dockerignore drops {needed}, which the image needs"
    assert (ROOT / "examples" / "dozen.toml").exists()


def test_kafka_is_kraft_with_two_listeners(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert advertised == ["PLAINTEXT_HOST://localhost:9092", "PLAINTEXT://kafka:19092"]
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == {"CONTROLLER", "PLAINTEXT", "PLAINTEXT_HOST"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:29093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["CLUSTER_ID"]
    assert "healthcheck" in services["kafka"]


def test_worker_and_simulator_commands(services: dict[str, dict[str, Any]]) -> None:
    """Both commands are ones the real CLI accepts, and both talk to the compose broker."""
    from streams.cli import build_parser

    for service in ("worker", "simulator"):
        command = services[service]["command"]
        assert command[0] == "dmtwin"
        args = build_parser().parse_args(command[1:])
        assert "kafka:19092" in (getattr(args, "kafka", None) or "")
        assert services[service]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "--forever" in services["simulator"]["command"], "the stack keeps streaming until stopped"


def test_prometheus_scrapes_the_worker_every_5_s(services: dict[str, dict[str, Any]]) -> None:
    mounts = dict((target, source) for source, target in _binds(services["prometheus"]))
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text(encoding="utf-8"))
    port = _option(services["worker"]["command"], "--metrics-port")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["dmtwin-worker"]
    assert worker["static_configs"][0]["targets"] == [f"worker:{port}"]
    assert worker.get("scrape_interval", config["global"]["scrape_interval"]) == "5s"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_login_anonymous_viewer_and_provisioning(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_USER"] == "admin"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "3000:3000" in grafana["ports"]
    mounts = dict((target, source) for source, target in _binds(grafana))
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/dmtwin.yml").read_text(encoding="utf-8"))
    path = provider["providers"][0]["options"]["path"]
    assert provider["providers"][0]["type"] == "file"
    assert mounts[path] == "./grafana/dashboards"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (ROOT / "grafana/dashboards" / Path(home).name).exists()


def test_no_password_is_written_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    """Grafana's admin password comes from .env, which the user writes from .env.example; compose
    stops with the message of ``${VAR:?message}`` while it is unset or empty."""
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    match = re.fullmatch(r"\$\{(\w+):\?([^}]+)\}", password)
    assert match, f"the admin password must come from the environment, not {password!r}"
    assert match[1] == PASSWORD_VARIABLE and ".env.example" in match[2]
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(rf"^{PASSWORD_VARIABLE}=$", example, re.M), "the example must leave it blank"
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore).read_text(encoding="utf-8").split(), f"{ignore} must keep .env out"
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package 'prometheus')")
def test_promtool_accepts_the_prometheus_config() -> None:
    done = subprocess.run(["promtool", "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


COMPOSE_CONFIG = ROOT / ".venv" / "bin" / "compose-config"
"""Docker Compose v2's loader (compose-go) as a binary; scripts/setup builds it from
tests/contract/composecheck when Go is installed."""
needs_compose_config = pytest.mark.skipif(
    not COMPOSE_CONFIG.exists(), reason="compose-config not built (scripts/setup builds it when Go is installed)")


def _compose_config(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    return subprocess.run([str(COMPOSE_CONFIG), "-f", str(project / COMPOSE.name), "-C", str(project)],
                          capture_output=True, text=True, timeout=60, env={**clean, **env})


@needs_compose_config
def test_compose_v2_loads_the_file_with_a_password() -> None:
    done = _compose_config(ROOT, **{PASSWORD_VARIABLE: "not-a-real-one"})
    assert done.returncode == 0, done.stderr
    project = yaml.safe_load(done.stdout)
    assert set(project["services"]) == SERVICES
    assert project["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "not-a-real-one"
    assert set(project["volumes"]) == {"kafka_data", "worker_data", "prometheus_data", "grafana_data"}


@needs_compose_config
@pytest.mark.parametrize("dotenv", [None, ".env.example"], ids=["no .env", ".env copied, blank"])
def test_compose_v2_stops_with_a_clear_error_without_the_password(tmp_path: Path, dotenv: str | None) -> None:
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    if dotenv:
        shutil.copy(ROOT / dotenv, tmp_path / ".env")
    done = _compose_config(tmp_path)
    assert done.returncode != 0
    assert f"required variable {PASSWORD_VARIABLE} is missing a value" in done.stderr, done.stderr
    assert "copy .env.example to .env" in done.stderr


@needs_compose_config
def test_compose_v2_reads_the_password_from_dot_env(tmp_path: Path) -> None:
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    (tmp_path / ".env").write_text(f"{PASSWORD_VARIABLE}=from-the-file\n", encoding="utf-8")
    done = _compose_config(tmp_path)
    assert done.returncode == 0, done.stderr
    grafana = yaml.safe_load(done.stdout)["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "from-the-file"


@needs_compose_config
def test_compose_v2_rejects_a_broken_file(tmp_path: Path) -> None:
    """The loader is strict enough that the tests above mean something."""
    broken = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    broken["services"]["worker"]["depends_on"] = {"zookeeper": {"condition": "service_healthy"}}
    (tmp_path / COMPOSE.name).write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = _compose_config(tmp_path, **{PASSWORD_VARIABLE: "x"})
    assert done.returncode != 0 and "zookeeper" in done.stderr, done.stderr


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, PASSWORD_VARIABLE: "not-a-real-one"})
    assert done.returncode == 0, done.stderr
