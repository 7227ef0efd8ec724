"""Runs the email pipeline on the sample messages and prints each one's spam verdict.

Needs a running coordinator (`conveyor serve`) and both workers (python_steps.py and
node/steps.mjs); it starts none of them. Usage, from this directory:

    python run_demo.py [samples/*.eml ...]     # default: every file in samples/
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from conveyor import Client
from pipeline_contracts import HERE, QUEUE, TASK_MESSAGES, pb

ADDRESS = os.environ.get("CONVEYOR_ADDRESS", "127.0.0.1:7345")
SAMPLES = sorted((HERE / "samples").glob("*.eml"))
# Long enough for the slowest part of a first run: the workers connecting and leasing.
TIMEOUT = 30.0


async def register_contracts(client: Client) -> None:
    """Publishes every task type's contract, so that the coordinator checks each payload
    against its message, and makes the queue strict: a job that names no registered contract
    version is refused rather than left for a worker to trip over. Safe to repeat:
    registering the same version with the same message changes nothing."""
    for message_class in TASK_MESSAGES:
        await client.register_task_type(message_class)
    await client.update_queue(QUEUE, strict_task_types=True)


async def run_pipeline(
    client: Client, email_id: str, raw: bytes, timeout: float = TIMEOUT
) -> pb.SpamVerdict:
    """Enqueues parse_email for one message and waits for the pipeline's final verdict."""
    # The task type and version come from the message's (conveyor.v1.task) option.
    parse = await client.enqueue(QUEUE, pb.ParseEmail(email_id=email_id, raw=raw))
    parsed = pb.ParsedEmail.FromString(await client.wait_for_result(parse.job_id, timeout))
    # parse_email has enqueued the part checks and the score_spam job that joins them.
    return pb.SpamVerdict.FromString(await client.wait_for_result(parsed.score_job_id, timeout))


def table(verdicts: Sequence[pb.SpamVerdict]) -> str:
    """One row per email; each further reason on a line of its own under the first."""
    rows = [("email", "score", "spam?", ["reasons"])]
    rows += [
        (v.email_id, f"{v.score:.2f}", "yes" if v.spam else "no", list(v.reasons) or ["-"])
        for v in verdicts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = " " * (sum(widths) + 2 * len(widths))
    lines = []
    for email_id, score, spam, reasons in rows:
        cells = (email_id.ljust(widths[0]), score.ljust(widths[1]), spam.ljust(widths[2]))
        lines.append("  ".join((*cells, reasons[0])))
        lines += [indent + reason for reason in reasons[1:]]
    return "\n".join(lines)


async def main(paths: Sequence[Path]) -> None:
    emails = {path.stem: path.read_bytes() for path in paths}
    async with Client(ADDRESS) as client:
        await register_contracts(client)
        # All pipelines at once: the workers interleave their steps.
        verdicts = await asyncio.gather(
            *(run_pipeline(client, email_id, raw) for email_id, raw in emails.items())
        )
    print(table(verdicts))


if __name__ == "__main__":
    asyncio.run(main([Path(arg) for arg in sys.argv[1:]] or SAMPLES))
