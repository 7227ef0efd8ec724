"""Fixtures for running docker/'s commands without Docker.

`image` is a stand-in for the built image: the build stage's COPY instructions replayed into a
temporary context (honouring .dockerignore), the project installed from it (not editable, as in
the image) into a fresh virtual environment, and the image's ENV applied. Third-party packages
come from the test environment (a path entry, not an install), so only the project itself is
built. `database` is a fresh database for the coordinator: SQLite, and PostgreSQL on
127.0.0.1:5432 once the project's `postgres` extra installs psycopg (the driver the image's
CONVEYOR_DB names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker_support as ds
import pytest
from docker_support import Image, Processes

# Where PostgreSQL tests create their databases; override for another server.
POSTGRES_ADMIN_URL_ENV = "CONVEYOR_TEST_POSTGRES_URL"
_DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- the image stand-in ------------------------------------------------------------------------


def _replay_copy(context: Path, source: str, destination: str, patterns: list[str]) -> None:
    """COPY source destination, relative to the build stage's WORKDIR (here: `context`)."""
    origin = ds.REPO / source
    target = context / destination
    if origin.is_dir():

        def skip(directory: str, names: list[str]) -> list[str]:
            relative = Path(directory).relative_to(ds.REPO)
            return [name for name in names if ds.ignored(str(relative / name), patterns)]

        shutil.copytree(origin, target, ignore=skip, dirs_exist_ok=True)
        return
    if destination.endswith("/"):
        target = target / origin.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(origin, target)


def _build_context(directory: Path) -> Path:
    """The build stage's files, copied as its COPY instructions say."""
    all_instructions = ds.instructions(ds.DOCKERFILE.read_text())
    build_stage = all_instructions[: len(all_instructions) - len(ds.final_stage(all_instructions))]
    patterns = ds.ignore_patterns()
    for ins in build_stage:
        if ins.keyword == "COPY":
            *sources, destination = ins.arguments.split()
            for source in sources:
                _replay_copy(directory, source, destination, patterns)
    return directory


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    context = _build_context(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The dependencies: this environment's site-packages as a plain path entry (its .pth
    # files, among them the editable install of this checkout, are not run).
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (purelib / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--quiet", "--no-deps", str(context)),
        ],
        check=True,
    )
    stage = ds.final_stage(ds.instructions(ds.DOCKERFILE.read_text()))
    image_env = {key: value for key, value in ds.env(stage).items() if key != "PATH"}
    return Image(
        bin=venv / "bin",
        env=image_env,
        copies=ds.copies(stage),
        entrypoint=ds.exec_form(ds.only(stage, "ENTRYPOINT").arguments),
        cmd=ds.exec_form(ds.only(stage, "CMD").arguments),
        healthcheck=ds.healthcheck(ds.only(stage, "HEALTHCHECK")),
    )


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    if not ds.postgres_store_expected():
        pytest.skip("the postgres extra does not install psycopg: no PostgreSQL store here yet")
    return os.environ.get(POSTGRES_ADMIN_URL_ENV, _DEFAULT_POSTGRES_ADMIN_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database's URL for the coordinator."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conveyor.db'}"
        return
    admin: str = request.getfixturevalue("postgres_admin")
    import psycopg  # type: ignore[import-not-found,unused-ignore]

    name = f"conveyor_docker_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        server = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes ---------------------------------------------------------------------------------


@pytest.fixture
async def processes() -> AsyncIterator[Processes]:
    running = Processes()
    try:
        yield running
    finally:
        await running.close()
