"""Reading docker/ the way Docker would, without a daemon: the Dockerfile's instructions (final
stage, exec-form commands, ENV, COPY sources), the compose file with its ${VAR:-default}
interpolation and YAML merge keys, and .dockerignore patterns."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import signal
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"

_READY_TIMEOUT = 60.0
_EXIT_TIMEOUT = 30.0
_READY_LINE = b"conveyor coordinator listening on"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest of the logical line, continuations joined


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions in order: comments dropped, `\\` continuations joined
    (a comment line inside a continuation is skipped, as Docker does)."""
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = pending + line
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return found


def final_stage(all_instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage (the image that is run), FROM included."""
    starts = [i for i, ins in enumerate(all_instructions) if ins.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return all_instructions[starts[-1] :]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    """The last `keyword` of the stage (the one Docker applies); it must be there."""
    matching = [ins for ins in stage if ins.keyword == keyword]
    assert matching, f"the final stage has no {keyword}"
    return matching[-1]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array command (exec form); shell form is refused: its signals and quoting differ."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), arguments
    return parsed


@dataclass(frozen=True)
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def healthcheck(instruction: Instruction) -> Healthcheck:
    """HEALTHCHECK [--option=value ...] CMD ["exec", "form"]."""
    options: dict[str, str] = {}
    rest = instruction.arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.strip()
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK must use CMD, not {keyword}"
    return Healthcheck(options, exec_form(command.strip()))


def env(stage: list[Instruction]) -> dict[str, str]:
    """ENV KEY=VALUE pairs of the stage, later ones winning; values as written (unexpanded)."""
    values: dict[str, str] = {}
    for ins in stage:
        if ins.keyword != "ENV":
            continue
        for pair in shlex.split(ins.arguments):
            key, equals, value = pair.partition("=")
            assert equals, f"ENV {pair!r} is the legacy form; write KEY=VALUE"
            values[key] = value
    return values


def copies(stage: list[Instruction]) -> dict[str, str]:
    """Image path -> build-context path of each plain COPY (not --from) of the stage."""
    mapping: dict[str, str] = {}
    for ins in stage:
        if ins.keyword != "COPY":
            continue
        parts = shlex.split(ins.arguments)
        if any(part.startswith("--from") for part in parts):
            continue
        *sources, destination = [part for part in parts if not part.startswith("--")]
        for source in sources:
            mapping[destination] = source
    return mapping


def context_sources(all_instructions: list[Instruction]) -> list[str]:
    """Every build-context path any stage COPYs."""
    sources: list[str] = []
    for ins in all_instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        parts = shlex.split(ins.arguments)
        if any(part.startswith("--from") for part in parts):
            continue
        sources.extend([part for part in parts if not part.startswith("--")][:-1])
    return sources


# -- compose -----------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's interpolation of ${VAR}, ${VAR:-default} and $$ in every string of `value`."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group("braced")
            if name is None:
                return "$"
            found = environ.get(name)
            return found if found else (match.group("default") or "")

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    return value


def load_compose(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker/compose.yaml as compose sees it: YAML merge keys applied (PyYAML's safe loader
    does that), then variables interpolated from `environ` (none set: the defaults)."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    interpolated: dict[str, Any] = interpolate(loaded, environ or {})
    return interpolated


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment:` in either compose form (mapping or KEY=VALUE list)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


# -- .dockerignore -----------------------------------------------------------------------------


def ignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (or a directory above it) out of the context. Enough
    of Docker's rules for the patterns used here: globs, `**/` prefixes, `!` exceptions."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        candidates = [body] + ([body[3:]] if body.startswith("**/") else [])
        if any(
            fnmatch.fnmatchcase(prefix, candidate)
            for prefix in prefixes
            for candidate in candidates
        ):
            verdict = not negate
    return verdict


# -- running the image's commands ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Image:
    """The image's commands, runnable here: `bin` holds its `python` and `conveyor`."""

    bin: Path
    env: dict[str, str]  # the image's ENV (CONVEYOR_*, PYTHON*), PATH excluded
    copies: dict[str, str]  # image path -> repository path of files the final stage COPYs
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: Healthcheck

    def local(self, argv: Sequence[str]) -> list[str]:
        """argv with image paths of copied files made repository paths."""
        return [str(REPO / self.copies[part]) if part in self.copies else part for part in argv]

    def environ(self, overrides: Mapping[str, str] = {}) -> dict[str, str]:
        """The environment a container of the image has (plus this machine's), with overrides."""
        base = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR")}
        base.update(self.env)
        base["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        base.update(overrides)
        return base


def postgres_store_expected() -> bool:
    """Whether the `postgres` extra (what the image installs) brings psycopg, the driver of
    postgresql+psycopg:// URLs: then the coordinator is expected to run on PostgreSQL."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project.get("optional-dependencies", {}).get("postgres", [])
    return any(requirement.lower().startswith("psycopg") for requirement in extra)


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@dataclass
class Running:
    """A started process; a reader keeps its output (stdout and stderr, merged) in `lines`,
    so a chatty process never blocks on a full pipe and a failing test can show its log."""

    process: asyncio.subprocess.Process
    lines: list[bytes] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # the coordinator's ready line
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # end of output

    async def read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line)
            if _READY_LINE in line:
                self.ready.set()
        self.ended.set()

    def log(self) -> str:
        return b"".join(self.lines)[-4000:].decode(errors="replace")


@dataclass
class Processes:
    """Processes started by a test; whatever still runs at the end is killed."""

    started: list[Running] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> Running:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        running = Running(process)
        self.started.append(running)
        self._readers.append(asyncio.create_task(running.read()))
        return running

    async def start_coordinator(self, argv: Sequence[str], env: Mapping[str, str]) -> Running:
        """Starts it and returns once it says it listens (fails if it exits first)."""
        running = await self.start(argv, env)
        ready = asyncio.create_task(running.ready.wait())
        ended = asyncio.create_task(running.ended.wait())
        await asyncio.wait(
            {ready, ended}, timeout=_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        ended.cancel()
        assert running.ready.is_set(), f"not serving; its output:\n{running.log()}"
        return running

    async def stop(self, running: Running) -> int:
        """SIGTERM (what `docker stop` sends) and the exit code."""
        running.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(_EXIT_TIMEOUT):
            code = await running.process.wait()
            await running.ended.wait()
        return code

    def logs(self) -> str:
        return "\n".join(f"--- {r.process.pid}:\n{r.log()}" for r in self.started)

    async def close(self) -> None:
        for running in self.started:
            if running.process.returncode is None:
                running.process.kill()
            await running.process.wait()
        await asyncio.gather(*self._readers)


async def run(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """Runs a command to its end: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(_EXIT_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
