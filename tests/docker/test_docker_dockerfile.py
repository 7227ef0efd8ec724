"""docker/Dockerfile read structurally (no daemon here to build it): a slim Python base, the
postgres extra installed, a non-root user, no secrets, exec-form commands, the port and volume
it promises, and a build context (.dockerignore) that holds what it copies and nothing private."""

from __future__ import annotations

import re
import shlex
import tomllib

import docker_support as ds
import pytest

ALL = ds.instructions(ds.DOCKERFILE.read_text())
FINAL = ds.final_stage(ALL)
ENV = ds.env(FINAL)
# Names that hold credentials, and a URL with a password in it (scheme://user:password@host).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def test_dockerfile_builds_from_a_slim_python_base() -> None:
    arguments = {
        name: value
        for ins in ALL
        if ins.keyword == "ARG"
        for name, _, value in [ins.arguments.partition("=")]
    }
    froms = [ins.arguments.split()[0] for ins in ALL if ins.keyword == "FROM"]
    assert froms and all(base == "${PYTHON_IMAGE}" for base in froms)
    assert re.fullmatch(r"python:3\.1[1-9]-slim", arguments["PYTHON_IMAGE"])


def test_dockerfile_final_stage_runs_as_an_unprivileged_user() -> None:
    user = ds.only(FINAL, "USER").arguments
    uid, _, gid = user.partition(":")
    assert uid not in {"0", "root"} and gid not in {"0", "root"}
    # Nothing after USER runs as root again, and the uid is the one the image creates.
    assert not [ins for ins in FINAL[FINAL.index(ds.only(FINAL, "USER")) :] if ins.keyword == "RUN"]
    created = " ".join(ins.arguments for ins in FINAL if ins.keyword == "RUN")
    assert f"--uid {uid}" in created and f"--gid {gid}" in created


def test_dockerfile_declares_no_secrets() -> None:
    for ins in ALL:
        if ins.keyword in {"ENV", "ARG", "LABEL"}:
            names = [pair.partition("=")[0] for pair in shlex.split(ins.arguments)]
            assert not [name for name in names if _SECRET_NAME.search(name)], ins
        assert not _URL_PASSWORD.search(ins.arguments), f"a password in {ins.keyword}"
    assert not [source for source in ds.context_sources(ALL) if ".env" in source]


def test_dockerfile_installs_the_project_with_the_postgres_extra() -> None:
    runs = " ".join(ins.arguments for ins in ALL if ins.keyword == "RUN")
    assert 'pip install ".[postgres]"' in runs
    project = tomllib.loads((ds.REPO / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["postgres"]


def test_dockerfile_commands_are_exec_form_so_signals_reach_the_coordinator() -> None:
    entrypoint = ds.exec_form(ds.only(FINAL, "ENTRYPOINT").arguments)
    assert ds.exec_form(ds.only(FINAL, "CMD").arguments) == ["--insecure"]
    # The shell only reads the environment, then `exec` makes the coordinator PID 1.
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert entrypoint[2].startswith("exec conveyor serve ")
    assert '--listen "${CONVEYOR_LISTEN:?' in entrypoint[2]
    assert '--db "${CONVEYOR_DB:?' in entrypoint[2]
    assert entrypoint[2].endswith('"$@"')


def test_dockerfile_listens_on_all_interfaces_at_the_exposed_port() -> None:
    assert ds.only(FINAL, "EXPOSE").arguments == "7345"
    assert ENV["CONVEYOR_LISTEN"] == "0.0.0.0:7345"


def test_dockerfile_keeps_the_default_sqlite_database_in_a_volume_the_user_owns() -> None:
    volume = ds.exec_form(ds.only(FINAL, "VOLUME").arguments)
    assert ENV["CONVEYOR_DB"] == f"sqlite:///{volume[0]}/conveyor.db"
    runs = " ".join(ins.arguments for ins in FINAL if ins.keyword == "RUN")
    assert f"chown conveyor:conveyor {volume[0]}" in runs


def test_dockerfile_healthcheck_runs_the_shipped_script_within_dockers_timeout() -> None:
    check = ds.healthcheck(ds.only(FINAL, "HEALTHCHECK"))
    script = check.command[1]
    assert check.command[0] == "python"
    assert ds.copies(FINAL)[script] == "docker/healthcheck.py"
    # The script's own deadline ends first, so it reports why instead of being killed.
    timeout = float(check.options["timeout"].removesuffix("s"))
    source = (ds.DOCKER_DIR / "healthcheck.py").read_text()
    match = re.search(r"DEFAULT_TIMEOUT_SECONDS = ([0-9.]+)", source)
    assert match and float(match.group(1)) < timeout


def test_build_context_holds_every_file_the_dockerfile_copies() -> None:
    patterns = ds.ignore_patterns()
    for source in ds.context_sources(ALL):
        assert (ds.REPO / source).exists(), source
        assert not ds.ignored(source, patterns), f".dockerignore excludes {source}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "conveyor.db",
        "server/conveyor_server/conveyor.db-wal",
        ".env",
        "docker/.env",
        "server/conveyor_server/__pycache__/main.cpython-311.pyc",
        "sdk/node/node_modules/x/index.js",
        "tests/conftest.py",
    ],
)
def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build_context(path: str) -> None:
    assert ds.ignored(path, ds.ignore_patterns())
