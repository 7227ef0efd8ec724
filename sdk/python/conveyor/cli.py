"""The `conveyor` client commands: worker, enqueue, jobs, queues and schedules.

They use the SDK alone (Client and Worker), so they work against any coordinator; the
server's command line adds them next to `serve` with `add_client_commands`. Each command's
handler takes the parsed Namespace and returns the exit code: 0 done, 1 the coordinator
refused or the awaited job did not succeed (`error: CODE: message` on stderr), 2 a usage
error."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import math
import os
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf.descriptor_pb2 import FileDescriptorSet
from google.protobuf.message import DecodeError

from conveyor import _cli_output as out
from conveyor import _contracts
from conveyor.client import DEFAULT_ADDRESS, Client
from conveyor.errors import ConveyorError, WaitTimeout
from conveyor.models import Job, JobSpec, JobState, MisfirePolicy, OverlapPolicy, RateLimit
from conveyor.worker import Worker

ADDRESS_ENV = "CONVEYOR_ADDRESS"
TLS_CA_ENV = "CONVEYOR_TLS_CA"
EXIT_ERROR = 1
EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C
# Pages fetched by `jobs list`, `queues list` and `schedules list` (the server allows 1000).
_PAGE_SIZE = 500
_HELP_WIDTH = 79
# WaitJob long-polls at most this long per call; longer waits call again.
_MAX_WAIT_PER_CALL = 300.0

# A string: argparse's action classes cannot be subscripted at run time.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Action = Callable[[Client, argparse.Namespace], Awaitable[int]]
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """The command was given something it cannot use; exits 2, like argparse's own errors."""


def add_client_commands(commands: Commands) -> None:
    """Adds `worker`, `enqueue`, `jobs`, `queues`, `schedules`, `task-types` and
    `conformance` to the `conveyor` parser."""
    common = _connection_options()
    _add_worker(commands)
    _add_conformance(commands)
    _add_enqueue(commands, common)
    _add_jobs(commands, common)
    _add_queues(commands, common)
    _add_schedules(commands, common)
    _add_task_types(commands, common)


# -- running a command -----------------------------------------------------------------------


def error_code(error: ConveyorError) -> str:
    """The gRPC status name, or for the SDK's own outcomes (JobFailed...) the class name in
    the same SHOUTING_SNAKE form."""
    if error.code is not None:
        return str(error.code.name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).upper()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _guarded(run: Callable[[], int]) -> int:
    """Runs a command, turning the errors a user can act on into a line on stderr."""
    try:
        return run()
    except ConveyorError as error:
        _fail(f"{error_code(error)}: {error}")
        return EXIT_ERROR
    except UsageError as error:
        _fail(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED


def _client_handler(action: Action) -> Handler:
    def handle(args: argparse.Namespace) -> int:
        roots = Path(args.tls_ca).read_bytes() if args.tls_ca else None

        async def run() -> int:
            async with Client(args.address, tls_root_certificates=roots) as client:
                return await action(client, args)

        return _guarded(lambda: asyncio.run(run()))

    return handle


def _emit(args: argparse.Namespace, value: object, text: str) -> None:
    print(out.dumps(value) if args.json else text, flush=True)


# -- argument types --------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_arg(text: str) -> float:
    """Seconds from "90", "1.5", "30s", "5m", "2h" or "7d"."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give seconds (90, 1.5) or a number with s, m, h or d "
            "(30s, 5m, 2h, 7d)"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _timedelta_arg(text: str) -> timedelta:
    return timedelta(seconds=duration_arg(text))


def run_at_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2030-01-31T09:00:00+01:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one, e.g. {text}Z or {text}+01:00"
        )
    return value


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Accepts the word "none" too, meaning "clear this setting" (back to the default)."""

    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_or_none


def rate_limit_arg(text: str) -> RateLimit | None:
    """ "RATE/BURST", or "RATE" alone for a burst of one second's worth; "none" clears."""
    if text.strip().lower() == "none":
        return None
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
    except ValueError:
        rate, burst = math.nan, 0
    if not (math.isfinite(rate) and rate > 0 and burst >= 1):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate limit: give RATE/BURST (jobs per second / jobs at once), "
            "e.g. 5/10, or none"
        )
    return RateLimit(rate=rate, burst=burst)


# -- parsers ---------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output")
    group.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
        help=f"coordinator address (default: ${ADDRESS_ENV} if set, else {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=os.environ.get(TLS_CA_ENV) or None,
        help=f"connect with TLS, trusting this CA certificate (default: ${TLS_CA_ENV} if set; "
        "the token comes from $CONVEYOR_TOKEN)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of readable text (bytes as {encoding, data}, "
        "encoding utf-8 or base64)",
    )
    return parent


def _group(commands: Commands, name: str, summary: str, description: str) -> Commands:
    parser = commands.add_parser(name, help=summary, description=description)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _command(
    commands: Commands,
    name: str,
    summary: str,
    *,
    example: str,
    common: argparse.ArgumentParser,
    action: Action,
    description: str = "",
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description or summary[0].upper() + summary[1:] + "."),
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.set_defaults(handler=_client_handler(action))
    return parser


def _wrap(text: str) -> str:
    # The raw formatter keeps the example on one line; the description is wrapped here.
    return textwrap.fill(text, width=_HELP_WIDTH)


def _add_payload_options(parser: argparse._ActionsContainer, positional: bool) -> None:
    source = parser.add_mutually_exclusive_group()
    if positional:
        source.add_argument(
            "payload", nargs="?", metavar="PAYLOAD", help="the payload, as text (default: empty)"
        )
    else:
        source.add_argument("--payload", help="the payload, as text")
    source.add_argument(
        "--payload-file",
        metavar="PATH",
        help="read the payload (any bytes) from PATH, or from stdin when PATH is -",
    )


def _payload(args: argparse.Namespace) -> bytes | None:
    """The payload the command was given, or None when it was given none."""
    path: str | None = getattr(args, "payload_file", None)
    if path == "-":
        return sys.stdin.buffer.read()
    if path is not None:
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read --payload-file: {error}") from None
    text: str | None = getattr(args, "payload", None)
    return None if text is None else text.encode()


# -- worker ----------------------------------------------------------------------------------


def _add_worker(commands: Commands) -> None:
    parser = commands.add_parser(
        "worker",
        help="run a Worker defined in your code",
        description=_wrap(
            "Import MODULE (looked up from the current directory first), take its attribute "
            "ATTR, which must be a conveyor.Worker, and run it until SIGTERM or SIGINT, then "
            "shut down gracefully: running jobs get the worker's shutdown grace to finish, the "
            "rest are handed back. Exits 2 when MODULE:ATTR is not a Worker."
        ),
        epilog="example:\n  conveyor worker tasks:worker --concurrency 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", metavar="MODULE:ATTR", help="where the Worker is, e.g. tasks:worker"
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=os.environ.get(ADDRESS_ENV) or None,
        help=f"coordinator address (default: ${ADDRESS_ENV} if set, else the address the "
        "Worker was made with)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="jobs run at once (overrides the Worker's)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=duration_arg,
        metavar="DURATION",
        help="how long running jobs may finish after SIGTERM (overrides the Worker's)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="lowest level logged to stderr, unless your module set up logging "
        "(default: %(default)s)",
    )
    parser.set_defaults(handler=_run_worker)


def load_worker(target: str) -> Worker:
    """The Worker at MODULE:ATTR (ATTR may be dotted); UsageError says what is wrong."""
    module_name, colon, attribute = target.partition(":")
    if not (colon and module_name and attribute):
        raise UsageError(f"{target!r} is not MODULE:ATTR, e.g. tasks:worker")
    # Like uvicorn and celery: the directory the command runs in holds the user's modules.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only the named module (or its package) being missing is a usage error; an import
        # missing inside it is the module's own bug and keeps its traceback.
        missing = error.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise
        raise UsageError(f"cannot import module {module_name!r} (from {here}): {error}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(found, Worker):
        raise UsageError(f"{target} is a {type(found).__name__}, not a conveyor.Worker")
    return found


def _run_worker(args: argparse.Namespace) -> int:
    def run() -> int:
        worker = load_worker(args.target)
        if args.address:
            worker.address = args.address
        overrides: dict[str, Any] = {}
        if args.concurrency is not None:
            overrides["concurrency"] = args.concurrency
        if args.shutdown_grace is not None:
            overrides["shutdown_grace"] = args.shutdown_grace
        if overrides:
            # replace() runs the config's validation again; run() reads the config afresh.
            worker.config = dataclasses.replace(worker.config, **overrides)
        # After the import: a module that configured logging itself keeps its own setup.
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        try:
            asyncio.run(worker.run(install_signal_handlers=True))
        except ValueError as error:  # e.g. a Worker with no handler registered
            raise UsageError(str(error)) from None
        return 0

    return _guarded(run)


# -- conformance -----------------------------------------------------------------------------

# The scenario names, repeated here so that `--help` does not import the kit.
_CONFORMANCE_SCENARIOS = (
    "success",
    "retryable-failure",
    "non-retryable-failure",
    "timeout-and-re-lease",
    "heartbeat",
    "checkpoint",
    "cancellation",
    "graceful-shutdown",
    "version-routing",
    "idle-long-poll",
    "concurrency",
    "fencing",
    "receipt-across-restart",
    "sigterm-during-long-poll",
    "payload-limit",
)


def _add_conformance(commands: Commands) -> None:
    parser = commands.add_parser(
        "conformance",
        help="check that a worker program keeps the worker protocol",
        description=_wrap(
            "Start a coordinator of its own (python -m conveyor_server serve, on a free "
            "loopback port, in a temporary directory), then run each scenario against a fresh "
            "run of the worker command, on a queue of its own: the command gets "
            "CONVEYOR_ADDRESS and CONVEYOR_QUEUE in its environment and must implement the "
            "conformance task types (docs/conformance.md). Prints a line per scenario and "
            "exits 0 only if all pass, 1 otherwise."
        ),
        epilog="example:\n"
        '  conveyor conformance --worker-cmd "python -m conveyor.conformance_worker"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--worker-cmd",
        required=True,
        metavar="CMD",
        help="shell command that runs the worker program",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=_CONFORMANCE_SCENARIOS,
        metavar="NAME",
        help="run only this scenario (repeatable; default: all of "
        + ", ".join(_CONFORMANCE_SCENARIOS)
        + ")",
    )
    parser.add_argument(
        "--timeout",
        type=duration_arg,
        default=20.0,
        metavar="DURATION",
        help="how long one scenario waits for a job before failing (default: 20s)",
    )
    parser.set_defaults(handler=_run_conformance)


def _run_conformance(args: argparse.Namespace) -> int:
    # Imported here: the kit is only needed by this command.
    from conveyor import conformance

    names = args.scenario or list(_CONFORMANCE_SCENARIOS)

    def run() -> int:
        try:
            return asyncio.run(conformance.run(args.worker_cmd, names, args.timeout))
        except RuntimeError as error:  # the coordinator did not start
            _fail(str(error))
            return EXIT_ERROR

    return _guarded(run)


# -- enqueue ---------------------------------------------------------------------------------


def _add_enqueue(commands: Commands, common: argparse.ArgumentParser) -> None:
    parser = _command(
        commands,
        "enqueue",
        "enqueue one job and print its id",
        description="Enqueue one job and print its id (followed by 'deduplicated' when the "
        "idempotency key matched an existing job). With --wait, also wait for its result: "
        "exit 1 when the job fails for good, is cancelled or the wait runs out.",
        example="conveyor enqueue email send_welcome ada@example.com --priority 5 --wait 30",
        common=common,
        action=_enqueue,
    )
    parser.add_argument("queue", metavar="QUEUE", help="queue name")
    parser.add_argument("task_type", metavar="TASK_TYPE", help="task type the worker runs")
    _add_payload_options(parser, positional=True)
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--delay",
        type=duration_arg,
        metavar="DURATION",
        help="run no sooner than this from now (seconds, or 30s, 5m, 2h, 7d)",
    )
    when.add_argument(
        "--run-at",
        type=run_at_arg,
        metavar="ISO8601",
        help="run no sooner than this time, with a zone (2030-01-31T09:00:00Z)",
    )
    parser.add_argument(
        "--priority", type=int, default=0, metavar="N", help="higher runs first (default: 0)"
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="attempts before the job is dead-lettered",
    )
    parser.add_argument(
        "--lease-duration",
        type=duration_arg,
        metavar="DURATION",
        help="how long a worker may go silent before the job is handed to another",
    )
    parser.add_argument(
        "--idempotency-key", metavar="KEY", help="enqueue at most once per key in the queue"
    )
    parser.add_argument(
        "--throttle-key", metavar="KEY", help="the bucket of the queue's per-key rate limit"
    )
    parser.add_argument("--parent", metavar="JOB_ID", help="the job that enqueued this one")
    parser.add_argument(
        "--wait",
        nargs="?",
        type=duration_arg,
        const=math.inf,
        metavar="SECONDS",
        help="wait for the result and print it; for at most SECONDS if given",
    )


async def _enqueue(client: Client, args: argparse.Namespace) -> int:
    result = await client.enqueue(
        args.queue,
        args.task_type,
        _payload(args) or b"",
        run_at=args.run_at,
        delay=args.delay,
        priority=args.priority,
        max_attempts=args.max_attempts,
        lease_duration=args.lease_duration,
        idempotency_key=args.idempotency_key,
        parent_job_id=args.parent,
        throttle_key=args.throttle_key,
    )
    line = result.job_id + (" deduplicated" if result.deduplicated else "")
    if args.wait is None:
        _emit(args, result, line)
        return 0
    if not args.json:
        print(line, flush=True)  # the id at once: the wait may be long
    timeout = None if math.isinf(args.wait) else args.wait
    value = await client.wait_for_result(result.job_id, timeout=timeout)
    if args.json:
        print(out.dumps({**out.to_json(result), "result": out.bytes_json(value)}), flush=True)
    else:
        print(out.fields([out.labelled_bytes("result", value)]), flush=True)
    return 0


# -- jobs ------------------------------------------------------------------------------------

_STATES = [s.name.lower() for s in JobState if s != JobState.UNSPECIFIED]


def _add_jobs(commands: Commands, common: argparse.ArgumentParser) -> None:
    jobs = _group(commands, "jobs", "inspect and steer jobs", "Inspect and steer jobs.")
    for verb, action, summary, description in (
        ("get", _jobs_get, "show one job with its attempt history", ""),
        (
            "cancel",
            _jobs_cancel,
            "cancel a job",
            "Cancel a job: one that is waiting ends CANCELLED at once; a running one is asked "
            "to stop and ends CANCELLED when its worker reports.",
        ),
        ("retry", _jobs_retry, "replay a FAILED or CANCELLED job with a fresh attempt budget", ""),
        (
            "wait",
            _jobs_wait,
            "wait until a job is finished and show it",
            "Wait until a job is SUCCEEDED, FAILED or CANCELLED and show it (exit 0 whichever "
            "it is); exit 1 with WAIT_TIMEOUT if it is still unfinished after --timeout.",
        ),
    ):
        parser = _command(
            jobs,
            verb,
            summary,
            description=description,
            example=f"conveyor jobs {verb} 01a2146389b66d0255daa5925ef53581",
            common=common,
            action=action,
        )
        parser.add_argument("job_id", metavar="JOB_ID", help="the job's id, as enqueue printed it")
        if verb == "wait":
            parser.add_argument(
                "--timeout",
                type=duration_arg,
                metavar="SECONDS",
                help="give up after this long (default: wait as long as it takes)",
            )
    listing = _command(
        jobs,
        "list",
        "list jobs, newest first",
        example="conveyor jobs list --queue email --state failed --limit 20",
        common=common,
        action=_jobs_list,
    )
    listing.add_argument("--queue", help="only jobs of this queue")
    listing.add_argument("--state", type=str.lower, choices=_STATES, help="only jobs in this state")
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="at most this many (default: 50)",
    )


async def _jobs_get(client: Client, args: argparse.Namespace) -> int:
    job = await client.get_job(args.job_id)
    _emit(args, job, out.job_text(job))
    return 0


async def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    state = JobState[args.state.upper()] if args.state else None
    jobs: list[Job] = []
    token = ""  # nosec B105 # a page cursor, not a secret
    while len(jobs) < args.limit:
        page = await client.list_jobs(
            args.queue, state, page_size=min(args.limit - len(jobs), _PAGE_SIZE), page_token=token
        )
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
    jobs = jobs[: args.limit]
    _emit(args, jobs, out.jobs_table(jobs))
    return 0


async def _jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = await client.cancel_job(args.job_id)
    _emit(args, job, out.job_text(job))
    return 0


async def _jobs_retry(client: Client, args: argparse.Namespace) -> int:
    job = await client.retry_job(args.job_id)
    _emit(args, job, out.job_text(job))
    return 0


async def _jobs_wait(client: Client, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    while True:
        remaining = _MAX_WAIT_PER_CALL
        if deadline is not None:
            remaining = max(0.0, min(remaining, deadline - loop.time()))
        job = await client.wait_job(args.job_id, remaining)
        if job.state.is_terminal:
            _emit(args, job, out.job_text(job))
            return 0
        if deadline is not None and loop.time() >= deadline:
            raise WaitTimeout(job)


# -- queues ----------------------------------------------------------------------------------

_RETENTION_STATES = ("succeeded", "failed", "cancelled")
_RETRY_FIELDS = ("initial_backoff", "multiplier", "max_backoff", "jitter")
_QUEUE_FIELDS = (
    "rate_limit",
    "per_key_rate_limit",
    "max_concurrency",
    "paused",
    "lease_duration",
    "max_attempts",
)


def _add_queues(commands: Commands, common: argparse.ArgumentParser) -> None:
    queues = _group(
        commands,
        "queues",
        "inspect queues and set their limits",
        "Inspect queues and set their limits, defaults and retention. A queue exists as soon "
        "as a job or a setting names it.",
    )
    get = _command(
        queues,
        "get",
        "show a queue's settings and job counts",
        example="conveyor queues get email",
        common=common,
        action=_queues_get,
    )
    get.add_argument("name", metavar="NAME", help="queue name")
    _command(
        queues,
        "list",
        "list queues with their job counts",
        example="conveyor queues list --json",
        common=common,
        action=_queues_list,
    )
    update = _command(
        queues,
        "update",
        "change some of a queue's settings",
        description="Change the settings named; the others stay as they are. DURATION is "
        "seconds or a number with s, m, h or d. 'none' clears a limit or default.",
        example="conveyor queues update email --rate-limit 10/20 --max-concurrency 5",
        common=common,
        action=_queues_update,
    )
    update.add_argument("name", metavar="NAME", help="queue name")
    _add_queue_limits(update)
    _add_queue_defaults(update)
    for verb, action, summary in (
        ("pause", _queues_pause, "stop handing out the queue's jobs (enqueue still works)"),
        ("resume", _queues_resume, "hand out the queue's jobs again"),
    ):
        parser = _command(
            queues,
            verb,
            summary,
            example=f"conveyor queues {verb} email",
            common=common,
            action=action,
        )
        parser.add_argument("name", metavar="NAME", help="queue name")


# Every queue setting defaults to SUPPRESS, which leaves options that were not given out of
# the Namespace: only those given reach the update mask.


def _add_queue_limits(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("flow control")
    limits.add_argument(
        "--rate-limit",
        type=rate_limit_arg,
        metavar="RATE/BURST",
        default=argparse.SUPPRESS,
        help="jobs leased per second / at most at once, across the queue (e.g. 5/10); none",
    )
    limits.add_argument(
        "--per-key-rate-limit",
        type=rate_limit_arg,
        metavar="RATE/BURST",
        default=argparse.SUPPRESS,
        help="the same, per throttle key of the jobs; none",
    )
    limits.add_argument(
        "--max-concurrency",
        type=non_negative_int,
        metavar="N",
        default=argparse.SUPPRESS,
        help="jobs leased at once across all workers (0: no cap)",
    )
    limits.add_argument(
        "--paused",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="pause or resume the queue",
    )


def _add_queue_defaults(parser: argparse.ArgumentParser) -> None:
    defaults = parser.add_argument_group("defaults for jobs enqueued without their own")
    defaults.add_argument(
        "--max-attempts",
        type=_or_none(positive_int),
        metavar="N",
        default=argparse.SUPPRESS,
        help="attempts before a job is dead-lettered; none",
    )
    defaults.add_argument(
        "--lease-duration",
        type=_or_none(duration_arg),
        metavar="DURATION",
        default=argparse.SUPPRESS,
        help="how long a worker may go silent; none",
    )
    for field, kind, text in (
        ("initial-backoff", _or_none(_timedelta_arg), "delay before the second attempt"),
        ("multiplier", _or_none(_float_between(1, 100)), "growth of the delay per attempt"),
        ("max-backoff", _or_none(_timedelta_arg), "longest delay between attempts"),
        ("jitter", _or_none(_float_between(0, 1)), "random spread of each delay, 0 to 1"),
    ):
        defaults.add_argument(
            f"--retry-{field}",
            type=kind,
            metavar="DURATION" if "backoff" in field else "X",
            default=argparse.SUPPRESS,
            help=f"retry policy: {text}; none",
        )
    retention = parser.add_argument_group("retention of finished jobs")
    for state in _RETENTION_STATES:
        retention.add_argument(
            f"--retain-{state}",
            type=duration_arg,
            metavar="DURATION",
            default=argparse.SUPPRESS,
            help=f"how long {state.upper()} jobs are kept",
        )


async def _queues_get(client: Client, args: argparse.Namespace) -> int:
    queue = await client.get_queue(args.name)
    _emit(args, queue, out.queue_text(queue))
    return 0


async def _queues_list(client: Client, args: argparse.Namespace) -> int:
    queues, token = await client.list_queues(page_size=_PAGE_SIZE)
    while token:
        more, token = await client.list_queues(page_size=_PAGE_SIZE, page_token=token)
        queues.extend(more)
    _emit(args, queues, out.queues_table(queues))
    return 0


async def _queues_update(client: Client, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {f: getattr(args, f) for f in _QUEUE_FIELDS if hasattr(args, f)}
    retry = {f: getattr(args, f"retry_{f}") for f in _RETRY_FIELDS if hasattr(args, f"retry_{f}")}
    retention = {
        s: getattr(args, f"retain_{s}") for s in _RETENTION_STATES if hasattr(args, f"retain_{s}")
    }
    if not (changes or retry or retention):
        # An empty update mask would mean "every field" to the coordinator.
        raise UsageError("name at least one setting to change (see conveyor queues update -h)")
    if retry or retention:
        # The retry policy and the retention are each replaced whole: start from the queue's
        # current ones so that naming one part keeps the others.
        current = await client.get_queue(args.name)
        if retry:
            changes["retry_policy"] = dataclasses.replace(current.retry_policy, **retry)
        if retention:
            changes["retention"] = {
                "succeeded": current.retention_succeeded,
                "failed": current.retention_failed,
                "cancelled": current.retention_cancelled,
                **retention,
            }
    queue = await client.update_queue(args.name, **changes)
    _emit(args, queue, out.queue_text(queue))
    return 0


async def _queues_pause(client: Client, args: argparse.Namespace) -> int:
    queue = await client.pause_queue(args.name)
    _emit(args, queue, out.queue_text(queue))
    return 0


async def _queues_resume(client: Client, args: argparse.Namespace) -> int:
    queue = await client.resume_queue(args.name)
    _emit(args, queue, out.queue_text(queue))
    return 0


# -- schedules -------------------------------------------------------------------------------

_MISFIRE = {
    "skip": MisfirePolicy.SKIP,
    "run-once": MisfirePolicy.RUN_ONCE,
    "catch-up": MisfirePolicy.CATCH_UP,
}
_OVERLAP = {"allow": OverlapPolicy.ALLOW, "skip": OverlapPolicy.SKIP}
_SCHEDULE_FIELDS = ("cron", "timezone", "catch_up_limit", "paused")
_TEMPLATE_FIELDS = ("queue", "task_type", "priority", "max_attempts", "lease_duration")


def _add_schedules(commands: Commands, common: argparse.ArgumentParser) -> None:
    schedules = _group(
        commands,
        "schedules",
        "manage recurring (cron) jobs",
        "Manage schedules: named cron expressions that enqueue a job from a template.",
    )
    create = _command(
        schedules,
        "create",
        "create a schedule",
        description="Create a schedule. CRON has 5 fields, or 6 with seconds first.",
        example='conveyor schedules create nightly-report --cron "0 3 * * *" '
        "--timezone Europe/Berlin --queue reports --task-type build_report",
        common=common,
        action=_schedules_create,
    )
    create.add_argument("name", metavar="NAME", help="schedule name")
    _add_schedule_settings(create, creating=True)
    update = _command(
        schedules,
        "update",
        "change some of a schedule's settings",
        description="Change the settings named; the others (and the rest of the job "
        "template) stay as they are.",
        example='conveyor schedules update nightly-report --cron "30 3 * * *" --priority 5',
        common=common,
        action=_schedules_update,
    )
    update.add_argument("name", metavar="NAME", help="schedule name")
    _add_schedule_settings(update, creating=False)
    for verb, action, summary in (
        ("get", _schedules_get, "show a schedule and its next fire time"),
        ("delete", _schedules_delete, "delete a schedule (jobs it enqueued stay)"),
        ("pause", _schedules_pause, "stop a schedule from firing"),
        ("resume", _schedules_resume, "let a paused schedule fire again"),
    ):
        parser = _command(
            schedules,
            verb,
            summary,
            example=f"conveyor schedules {verb} nightly-report",
            common=common,
            action=action,
        )
        parser.add_argument("name", metavar="NAME", help="schedule name")
    _command(
        schedules,
        "list",
        "list schedules",
        example="conveyor schedules list",
        common=common,
        action=_schedules_list,
    )


# The options of `create` have defaults; those of `update` are SUPPRESSed when not given, so
# that only the options given reach the update mask.


def _add_schedule_settings(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    _add_schedule_timing(parser, creating)
    _add_schedule_template(parser, creating)


def _schedule_defaults(creating: bool) -> tuple[Callable[[object], object], Callable[[str], str]]:
    """The default to give an option, and the note for its help."""

    def default(value: object) -> object:
        return value if creating else argparse.SUPPRESS

    def noted(value: str) -> str:
        return f" (default: {value})" if creating else ""

    return default, noted


def _add_schedule_timing(parser: argparse.ArgumentParser, creating: bool) -> None:
    default, noted = _schedule_defaults(creating)
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--cron", required=creating, default=default(None), help='when it fires, e.g. "0 3 * * *"'
    )
    timing.add_argument(
        "--timezone",
        default=default("UTC"),
        help="IANA zone the cron is read in, e.g. Europe/Berlin" + noted("UTC"),
    )
    timing.add_argument(
        "--misfire",
        choices=list(_MISFIRE),
        default=default("run-once"),
        help="fires missed while the coordinator was down: skip them, run one, or catch up"
        + noted("run-once"),
    )
    timing.add_argument(
        "--catch-up-limit",
        type=non_negative_int,
        metavar="N",
        default=default(0),
        help="most missed fires run with --misfire catch-up (0: the coordinator's default)",
    )
    timing.add_argument(
        "--overlap",
        choices=list(_OVERLAP),
        default=default("allow"),
        help="fire while the previous job is unfinished, or skip" + noted("allow"),
    )
    timing.add_argument(
        "--paused",
        action=argparse.BooleanOptionalAction,
        default=default(False),
        help="create or set the schedule paused (or not)",
    )


def _add_schedule_template(parser: argparse.ArgumentParser, creating: bool) -> None:
    default, noted = _schedule_defaults(creating)
    template = parser.add_argument_group("the job it enqueues")
    template.add_argument(
        "--queue", required=creating, default=default(None), help="queue the job goes to"
    )
    template.add_argument(
        "--task-type", required=creating, default=default(None), help="task type of the job"
    )
    _add_payload_options(template, positional=False)
    template.add_argument(
        "--priority",
        type=int,
        metavar="N",
        default=default(0),
        help="higher runs first" + noted("0"),
    )
    template.add_argument(
        "--max-attempts",
        type=_or_none(positive_int),
        metavar="N",
        default=default(None),
        help="attempts before a job is dead-lettered; none: the queue's default",
    )
    template.add_argument(
        "--lease-duration",
        type=_or_none(duration_arg),
        metavar="DURATION",
        default=default(None),
        help="how long a worker may go silent; none: the queue's default",
    )


def _policies(args: argparse.Namespace) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    if hasattr(args, "misfire"):
        policies["misfire_policy"] = _MISFIRE[args.misfire]
    if hasattr(args, "overlap"):
        policies["overlap_policy"] = _OVERLAP[args.overlap]
    return policies


async def _schedules_create(client: Client, args: argparse.Namespace) -> int:
    template = JobSpec(
        queue=args.queue,
        task_type=args.task_type,
        payload=_payload(args) or b"",
        priority=args.priority,
        max_attempts=args.max_attempts,
        lease_duration=args.lease_duration,
    )
    schedule = await client.create_schedule(
        args.name,
        args.cron,
        template,
        timezone=args.timezone,
        catch_up_limit=args.catch_up_limit,
        paused=args.paused,
        **_policies(args),
    )
    _emit(args, schedule, out.schedule_text(schedule))
    return 0


async def _schedules_update(client: Client, args: argparse.Namespace) -> int:
    changes = {f: getattr(args, f) for f in _SCHEDULE_FIELDS if hasattr(args, f)}
    changes.update(_policies(args))
    template = {f: getattr(args, f) for f in _TEMPLATE_FIELDS if hasattr(args, f)}
    payload = _payload(args)
    if payload is not None:
        template["payload"] = payload
    if not (changes or template):
        # An empty update mask would mean "every field" to the coordinator.
        raise UsageError("name at least one setting to change (see conveyor schedules update -h)")
    if template:
        # The job template is replaced whole: start from the current one so that naming one
        # part keeps the others.
        current = await client.get_schedule(args.name)
        changes["job"] = dataclasses.replace(current.job, **template)
    schedule = await client.update_schedule(args.name, **changes)
    _emit(args, schedule, out.schedule_text(schedule))
    return 0


async def _schedules_get(client: Client, args: argparse.Namespace) -> int:
    schedule = await client.get_schedule(args.name)
    _emit(args, schedule, out.schedule_text(schedule))
    return 0


async def _schedules_list(client: Client, args: argparse.Namespace) -> int:
    schedules, token = await client.list_schedules(page_size=_PAGE_SIZE)
    while token:
        more, token = await client.list_schedules(page_size=_PAGE_SIZE, page_token=token)
        schedules.extend(more)
    _emit(args, schedules, out.schedules_table(schedules))
    return 0


async def _schedules_delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete_schedule(args.name)
    _emit(args, {"name": args.name, "deleted": True}, f"deleted schedule {args.name}")
    return 0


async def _schedules_pause(client: Client, args: argparse.Namespace) -> int:
    schedule = await client.pause_schedule(args.name)
    _emit(args, schedule, out.schedule_text(schedule))
    return 0


async def _schedules_resume(client: Client, args: argparse.Namespace) -> int:
    schedule = await client.resume_schedule(args.name)
    _emit(args, schedule, out.schedule_text(schedule))
    return 0


# -- task-types ----------------------------------------------------------------------------


def _add_task_types(commands: Commands, common: argparse.ArgumentParser) -> None:
    task_types = _group(
        commands,
        "task-types",
        "register and inspect versioned task contracts",
        "Task contracts: protobuf messages declaring (conveyor.v1.task) = {name, version}. Once "
        "a version is registered, Enqueue checks that its payloads are that message.",
    )
    register = _command(
        task_types,
        "register",
        "register one version of a task contract",
        description="Register MESSAGE_TYPE from a descriptor set, so that no generated "
        "Python code is needed (any language's contracts can be registered). Its name and "
        "version come from the message's (conveyor.v1.task) option unless given.",
        example="conveyor task-types register acme.email.v1.SendEmail --descriptor-set email.binpb",
        common=common,
        action=_task_types_register,
    )
    register.add_argument(
        "message_type", metavar="MESSAGE_TYPE", help="full message name, package included"
    )
    register.add_argument(
        "--descriptor-set",
        required=True,
        type=Path,
        metavar="FILE",
        help="from `protoc --include_imports --descriptor_set_out=FILE ...` or `buf build -o FILE`",
    )
    register.add_argument("--name", help="task type name (default: from the task option)")
    register.add_argument("--version", help="MAJOR.MINOR.PATCH (default: from the task option)")
    get = _command(
        task_types,
        "get",
        "show one registered version (the highest without --version)",
        example="conveyor task-types get send_email --version 1.2.0",
        common=common,
        action=_task_types_get,
    )
    get.add_argument("name", metavar="NAME", help="task type name")
    get.add_argument("--version", default="", help="MAJOR.MINOR.PATCH (default: the highest)")
    _command(
        task_types,
        "list",
        "list every registered version",
        example="conveyor task-types list",
        common=common,
        action=_task_types_list,
    )


async def _task_types_register(client: Client, args: argparse.Namespace) -> int:
    try:
        descriptors = FileDescriptorSet.FromString(args.descriptor_set.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read --descriptor-set: {error}") from None
    except DecodeError:
        raise UsageError(f"{args.descriptor_set} is not a FileDescriptorSet") from None
    try:
        message_class = _contracts.message_class_from_set(descriptors, args.message_type)
        task_type = await client.register_task_type(
            message_class, name=args.name, version=args.version
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    _emit(args, out.task_type_json(task_type), out.task_type_text(task_type))
    return 0


async def _task_types_get(client: Client, args: argparse.Namespace) -> int:
    task_type = await client.get_task_type(args.name, args.version)
    _emit(args, out.task_type_json(task_type), out.task_type_text(task_type))
    return 0


async def _task_types_list(client: Client, args: argparse.Namespace) -> int:
    page = await client.list_task_types(page_size=_PAGE_SIZE)
    found = list(page.task_types)
    while page.next_page_token:
        page = await client.list_task_types(page_size=_PAGE_SIZE, page_token=page.next_page_token)
        found.extend(page.task_types)
    _emit(args, [out.task_type_json(t) for t in found], out.task_types_table(found))
    return 0
