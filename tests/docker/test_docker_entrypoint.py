"""The image's commands run directly (no daemon here): the exact ENTRYPOINT + CMD of
docker/Dockerfile and the commands docker/compose.yaml gives its services, over a project
installed as the image installs it, with the image's environment. SQLite always; PostgreSQL
too once the `postgres` extra installs psycopg (see conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import docker_support as ds
import pytest
from docker_support import Image, Processes, free_port, is_postgres, run

COMPOSE = ds.load_compose()


async def test_image_commands_run_the_installed_project_not_this_checkout(image: Image) -> None:
    probe = "import conveyor, conveyor_server; print(conveyor.__file__, conveyor_server.__file__)"
    code, out, err = await run(["python", "-c", probe], image.environ())
    assert code == 0, err
    assert all(Path(path).is_relative_to(image.bin.parent) for path in out.split()), out


def _loopback() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_entrypoint_serves_and_the_healthcheck_follows_it(
    image: Image, processes: Processes, database: str
) -> None:
    listen = _loopback()
    env = image.environ({"CONVEYOR_LISTEN": listen, "CONVEYOR_DB": database})
    coordinator = await processes.start_coordinator(image.entrypoint + image.cmd, env)
    healthcheck = image.local(image.healthcheck.command)

    healthy, out, err = await run(healthcheck, env)
    assert healthy == 0, err
    assert f"{listen} SERVING" in out

    assert await processes.stop(coordinator) == 0  # SIGTERM, as `docker stop` sends
    unhealthy, _, err = await run(healthcheck, env)
    assert unhealthy == 1
    assert "UNAVAILABLE" in err


async def test_entrypoint_passes_arguments_after_the_image_name_to_serve(
    image: Image, tmp_path: Path
) -> None:
    env = image.environ(
        {"CONVEYOR_LISTEN": _loopback(), "CONVEYOR_DB": f"sqlite:///{tmp_path / 'c.db'}"}
    )
    argv = [*image.entrypoint, "--log-level", "nonsense"]
    code, _, err = await run(argv, env)
    assert code == 2
    assert "--log-level" in err and "nonsense" in err


@pytest.mark.parametrize("variable", ["CONVEYOR_DB", "CONVEYOR_LISTEN"])
async def test_entrypoint_refuses_an_empty_setting_naming_it(image: Image, variable: str) -> None:
    env = image.environ({variable: ""})
    code, _, err = await run([*image.entrypoint, *image.cmd], env)
    assert code != 0
    assert variable in err and "Traceback" not in err


async def test_entrypoint_defaults_listen_on_all_interfaces_with_the_database_in_the_volume(
    image: Image, processes: Processes, tmp_path: Path
) -> None:
    # The image's defaults, with the volume path moved under tmp_path: `conveyor serve` accepts
    # them as they are (0.0.0.0:7345 is taken here or not, so a free port stands in).
    volume = ds.exec_form(
        ds.only(ds.final_stage(ds.instructions(ds.DOCKERFILE.read_text())), "VOLUME").arguments
    )[0]
    database = image.env["CONVEYOR_DB"].replace(volume, str(tmp_path))
    port = free_port()
    listen = image.env["CONVEYOR_LISTEN"].replace(":7345", f":{port}")
    env = image.environ({"CONVEYOR_LISTEN": listen, "CONVEYOR_DB": database})
    await processes.start_coordinator(image.entrypoint + image.cmd, env)

    code, out, err = await run(image.local(image.healthcheck.command), env)
    assert code == 0, err
    assert f"127.0.0.1:{port} SERVING" in out
    assert (tmp_path / "conveyor.db").exists()


def _compose_env(image: Image, service: str, database: str, listen: str) -> dict[str, str]:
    """The service's container environment, with the database and listen address made local
    (the `postgres` host name exists only inside compose's network)."""
    env = ds.service_environment(COMPOSE["services"][service])
    assert env["CONVEYOR_DB"].startswith("postgresql+psycopg://")
    env.update(CONVEYOR_DB=database, CONVEYOR_LISTEN=listen)
    return image.environ(env)


async def test_compose_coordinator_command_runs_with_its_environment(
    image: Image, processes: Processes, database: str
) -> None:
    service = COMPOSE["services"]["coordinator-a"]
    listen = _loopback()
    env = _compose_env(image, "coordinator-a", database, listen)
    coordinator = await processes.start_coordinator(image.entrypoint + service["command"], env)

    # --log-format json reached `conveyor serve`: its log lines are JSON.
    started = [json.loads(line) for line in coordinator.lines if line.startswith(b"{")]
    assert any(entry.get("event") == "coordinator.started" for entry in started)
    code, _, err = await run(image.local(service["healthcheck"]["test"][1:]), env)
    assert code == 0, err


def _worker_directory(tmp_path: Path) -> Path:
    """The worker's working_dir with its bind mounts in place."""
    worker = COMPOSE["services"]["worker"]
    directory = tmp_path / "worker"
    directory.mkdir()
    for volume in worker["volumes"]:
        source, target, _ = volume.split(":")
        relative = Path(target).relative_to(worker["working_dir"])
        shutil.copy(ds.COMPOSE_FILE.parent / source, directory / relative)
    return directory


async def test_compose_worker_runs_a_job_enqueued_through_the_first_coordinator(
    image: Image, processes: Processes, database: str, tmp_path: Path
) -> None:
    # On PostgreSQL as in compose: the worker on coordinator-b, the job enqueued through
    # coordinator-a. SQLite admits one coordinator per file, so there both are coordinator-a.
    first = _loopback()
    env_a = _compose_env(image, "coordinator-a", database, first)
    command = COMPOSE["services"]["coordinator-a"]["command"]
    await processes.start_coordinator(image.entrypoint + command, env_a)
    second = first
    if is_postgres(database):
        second = _loopback()
        env_b = _compose_env(image, "coordinator-b", database, second)
        command = COMPOSE["services"]["coordinator-b"]["command"]
        await processes.start_coordinator(image.entrypoint + command, env_b)

    worker = COMPOSE["services"]["worker"]
    worker_env = image.environ({**worker["environment"], "CONVEYOR_ADDRESS": second})
    await processes.start(worker["entrypoint"], worker_env, cwd=_worker_directory(tmp_path))

    enqueue = ["conveyor", "enqueue", "demo", "greet", "Ada", "--wait", "20", "--address", first]
    code, out, err = await run(enqueue, image.environ())
    assert code == 0, f"{err}\n{processes.logs()}"
    assert "hello, Ada" in out
