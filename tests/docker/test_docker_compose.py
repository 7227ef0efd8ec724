"""docker/compose.yaml as compose reads it (YAML, merge keys, ${VAR:-default}): PostgreSQL, two
coordinators on that one database built from docker/Dockerfile, an example worker, health
checks and start-up order. `docker compose config` checks it too where the plugin exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import docker_support as ds
import pytest
from conveyor.worker import WorkerConfig
from conveyor_server.cli import build_parser

COMPOSE = ds.load_compose()
SERVICES = COMPOSE["services"]
COORDINATORS = ["coordinator-a", "coordinator-b"]
FINAL = ds.final_stage(ds.instructions(ds.DOCKERFILE.read_text()))


def test_compose_starts_postgresql_two_coordinators_and_a_worker() -> None:
    assert set(SERVICES) == {"postgres", *COORDINATORS, "worker"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")


@pytest.mark.parametrize("name", [*COORDINATORS, "worker"])
def test_compose_builds_its_conveyor_services_from_the_dockerfile(name: str) -> None:
    service = SERVICES[name]
    context = (ds.COMPOSE_FILE.parent / service["build"]["context"]).resolve()
    assert context == ds.REPO
    assert (context / service["build"]["dockerfile"]).resolve() == ds.DOCKERFILE
    assert service["image"] == SERVICES["coordinator-a"]["image"]


def test_compose_coordinators_share_one_postgresql_database() -> None:
    urls = {ds.service_environment(SERVICES[name])["CONVEYOR_DB"] for name in COORDINATORS}
    assert len(urls) == 1
    url = urlsplit(urls.pop())
    postgres = ds.service_environment(SERVICES["postgres"])
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]


def test_compose_takes_the_database_password_from_the_environment() -> None:
    compose = ds.load_compose({"POSTGRES_PASSWORD": "from-the-host"})
    services = compose["services"]
    assert ds.service_environment(services["postgres"])["POSTGRES_PASSWORD"] == "from-the-host"
    for name in COORDINATORS:
        url = urlsplit(ds.service_environment(services[name])["CONVEYOR_DB"])
        assert url.password == "from-the-host"


@pytest.mark.parametrize("name", COORDINATORS)
def test_compose_coordinators_run_the_image_entrypoint_listening_on_the_image_port(
    name: str,
) -> None:
    service = SERVICES[name]
    assert "entrypoint" not in service
    assert service["command"] == ["--log-format", "json", "--insecure"]
    listen = ds.service_environment(service)["CONVEYOR_LISTEN"]
    assert listen == f"0.0.0.0:{ds.only(FINAL, 'EXPOSE').arguments}"


@pytest.mark.parametrize("name", COORDINATORS)
def test_compose_coordinator_healthcheck_is_the_image_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"] == ["CMD", *ds.healthcheck(ds.only(FINAL, "HEALTHCHECK")).command]


def test_compose_postgres_healthcheck_asks_over_tcp_for_the_database() -> None:
    check = SERVICES["postgres"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    assert "--host=127.0.0.1" in check and "--dbname=conveyor" in check


@pytest.mark.parametrize(
    ("name", "dependencies"),
    [
        ("coordinator-a", {"postgres"}),
        # The first coordinator migrates the schema before any other starts.
        ("coordinator-b", {"postgres", "coordinator-a"}),
        ("worker", {"coordinator-a", "coordinator-b"}),
    ],
)
def test_compose_services_wait_for_healthy_dependencies(name: str, dependencies: set[str]) -> None:
    depends_on = SERVICES[name]["depends_on"]
    assert set(depends_on) == dependencies
    for dependency in dependencies:
        assert depends_on[dependency] == {"condition": "service_healthy"}
        assert not SERVICES[dependency]["healthcheck"].get("disable")


def test_compose_publishes_coordinators_on_loopback_only() -> None:
    for name in COORDINATORS:
        for port in SERVICES[name]["ports"]:
            assert port.startswith("127.0.0.1:"), port


def test_compose_second_coordinator_can_be_scaled() -> None:
    # No fixed name and no fixed host port: `--scale coordinator-b=N` gives each its own.
    service = SERVICES["coordinator-b"]
    assert "container_name" not in service
    assert service["ports"] == ["127.0.0.1::7345"]


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


@pytest.mark.parametrize("name", COORDINATORS)
def test_compose_stop_outlasts_the_coordinators_shutdown_grace(name: str) -> None:
    serve_defaults = build_parser().parse_args(["serve"])
    assert _seconds(SERVICES[name]["stop_grace_period"]) > serve_defaults.shutdown_grace


def test_compose_stop_outlasts_the_workers_shutdown_grace() -> None:
    assert _seconds(SERVICES["worker"]["stop_grace_period"]) > WorkerConfig().shutdown_grace


def test_compose_worker_mounts_the_demo_worker_it_runs() -> None:
    worker = SERVICES["worker"]
    source, target, mode = worker["volumes"][0].split(":")
    assert (ds.COMPOSE_FILE.parent / source).resolve() == ds.DOCKER_DIR / "demo_worker.py"
    assert Path(target).parent == Path(worker["working_dir"]) and mode == "ro"
    module = Path(target).stem
    assert worker["entrypoint"] == ["conveyor", "worker", f"{module}:worker"]
    assert worker["environment"]["CONVEYOR_ADDRESS"] == "coordinator-b:7345"
    assert worker["healthcheck"] == {"disable": True}


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="no `docker compose` plugin on this machine")
def test_docker_compose_config_accepts_the_file() -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(ds.COMPOSE_FILE), "config", "--quiet"],
        check=True,
        capture_output=True,
    )


def test_docker_readme_documents_compose_up_every_service_and_scaling() -> None:
    readme = (ds.DOCKER_DIR / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up" in readme
    assert "--scale coordinator-b=" in readme
    for name in SERVICES:
        assert f"**`{name}`**" in readme, name
