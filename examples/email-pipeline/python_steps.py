"""The Python steps of the email pipeline: parse_email, scan_attachment and score_spam.

Run from this directory, after ./generate.sh:

    conveyor worker python_steps:worker      # or: python python_steps.py

parse_email fans one message out into part jobs (analyze_text and check_links run on the
Node.js worker, scan_attachment here) and a score_spam job that joins their verdicts.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import PurePosixPath

from conveyor import Client, JobContext, JobState, NonRetryableError, Retry, Worker
from google.protobuf.message import Message
from pipeline_contracts import QUEUE, pb

ADDRESS = os.environ.get("CONVEYOR_ADDRESS", "127.0.0.1:7345")
SPAM_THRESHOLD = 0.5
# score_spam polls its parts every 0.2 s, and each poll is an attempt: allow a minute of them
# (the queue's default of 20 attempts would give up after 4 s, e.g. while a worker starts).
SCORE_MAX_ATTEMPTS = 300

# The worker id says which language ran a job (visible as Job.leased_by and in each attempt).
worker = Worker(
    ADDRESS,
    [QUEUE],
    concurrency=20,
    worker_id=f"python-steps-{socket.gethostname()}-{os.getpid()}",
)

_client: Client | None = None


def client() -> Client:
    """The handlers' own Client, made on first use: a grpc.aio channel belongs to the event loop
    it is made on (the worker's), and `conveyor worker --address` may change the address after
    this module was imported."""
    global _client
    if _client is None:
        _client = Client(worker.address)
    return _client


def noisy_or(scores: Iterable[float]) -> float:
    """Combines independent pieces of evidence: the chance that at least one of them is right.
    Stays within 0..1 however many there are, and one strong signal is enough."""
    clean = 1.0
    for score in scores:
        clean *= 1.0 - score
    return 1.0 - clean


# -- parse_email ------------------------------------------------------------------------------

URL = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)


@dataclass
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass
class ParsedMessage:
    subject: str
    text: str
    urls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    return html.unescape(" ".join(" ".join(parser.chunks).split()))


def split_email(raw: bytes) -> ParsedMessage:
    """The subject, the readable body, every link and every attachment of a raw message."""
    # policy.default gives EmailMessage, whose get_body/iter_attachments know MIME structure.
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        text = body.get_content()
        if body.get_content_type() == "text/html":
            text = html_to_text(text)
    # Links are collected from every text part: an HTML part may link where its plain-text
    # twin does not say.
    urls: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "text" and not part.is_attachment():
            for url in URL.findall(part.get_content()):
                url = url.rstrip(".,;:!?)")
                if url not in urls:
                    urls.append(url)
    attachments = [
        Attachment(
            filename=part.get_filename() or "unnamed",
            content_type=part.get_content_type(),
            content=part.get_payload(decode=True) or b"",
        )
        for part in message.iter_attachments()
    ]
    return ParsedMessage(str(message["subject"] or ""), text, urls, attachments)


@worker.task(pb.ParseEmail)
async def parse_email(job: JobContext) -> bytes:
    request: pb.ParseEmail = job.message
    parsed = split_email(request.raw)
    parts: list[Message] = [
        pb.AnalyzeText(email_id=request.email_id, subject=parsed.subject, text=parsed.text)
    ]
    if parsed.urls:
        parts.append(pb.CheckLinks(email_id=request.email_id, urls=parsed.urls))
    parts += [
        pb.ScanAttachment(
            email_id=request.email_id,
            filename=a.filename,
            content_type=a.content_type,
            content=a.content,
        )
        for a in parsed.attachments
    ]
    # Idempotency keys derived from this job's id: if this attempt dies after enqueuing and
    # the job runs again, the retry gets the same part jobs back instead of a second set.
    enqueued = await asyncio.gather(
        *(
            client().enqueue(
                QUEUE, part, parent_job_id=job.job_id, idempotency_key=f"{job.job_id}.part{i}"
            )
            for i, part in enumerate(parts)
        )
    )
    part_job_ids = [e.job_id for e in enqueued]
    score = await client().enqueue(
        QUEUE,
        pb.ScoreSpam(email_id=request.email_id, part_job_ids=part_job_ids),
        parent_job_id=job.job_id,
        idempotency_key=f"{job.job_id}.score",
        max_attempts=SCORE_MAX_ATTEMPTS,
    )
    return pb.ParsedEmail(
        email_id=request.email_id, part_job_ids=part_job_ids, score_job_id=score.job_id
    ).SerializeToString()


# -- scan_attachment --------------------------------------------------------------------------

EXECUTABLE = {
    ".exe", ".scr", ".com", ".pif", ".bat", ".cmd", ".msi", ".jar",
    ".js", ".jse", ".vbs", ".vbe", ".wsf", ".hta", ".ps1", ".lnk",
}  # fmt: skip
MACRO_ENABLED = {".docm", ".dotm", ".xlsm", ".xltm", ".xlam", ".pptm", ".potm", ".ppsm"}
# What a double extension pretends to be: "invoice.pdf.exe" shows as "invoice.pdf" when
# Windows hides known extensions.
DECOY = {".pdf", ".doc", ".docx", ".xls", ".xlsx", ".jpg", ".jpeg", ".png", ".txt", ".zip"}


# A plain `def`: the worker runs it in a thread, so real scanning (hashing, unpacking) would
# not hold up the event loop that heartbeats every running job.
@worker.task(pb.ScanAttachment)
def scan_attachment(job: JobContext) -> bytes:
    request: pb.ScanAttachment = job.message
    suffixes = [s.lower() for s in PurePosixPath(request.filename).suffixes]
    last = suffixes[-1] if suffixes else ""
    findings: list[tuple[float, str]] = []
    if last in EXECUTABLE:
        findings.append((0.8, f"executable attachment ({last})"))
        if len(suffixes) >= 2 and suffixes[-2] in DECOY:
            findings.append((0.5, f"double extension {suffixes[-2]}{last} hides an executable"))
    if last in MACRO_ENABLED or "macroenabled" in request.content_type.lower():
        findings.append((0.5, f"macro-enabled Office document ({last or request.content_type})"))
    if request.content.startswith(b"MZ") and last not in EXECUTABLE:
        findings.append((0.8, "a Windows program under another name"))
    verdict = pb.PartVerdict(
        part=f"attachment:{request.filename}",
        score=noisy_or(score for score, _ in findings),
        reasons=[reason for _, reason in findings],
    )
    return verdict.SerializeToString()


# -- score_spam -------------------------------------------------------------------------------


@worker.task(pb.ScoreSpam)
async def score_spam(job: JobContext) -> bytes:
    request: pb.ScoreSpam = job.message
    parts = await asyncio.gather(*(client().get_job(i) for i in request.part_job_ids))
    waiting = [p.job_id for p in parts if not p.state.is_terminal]
    if waiting:
        # A join by polling: give up this attempt and look again shortly. The parts usually
        # finish within milliseconds of each other, so this rarely takes more than a few polls.
        raise Retry(f"waiting for {len(waiting)} part job(s)", after=0.2)
    broken = [
        f"{p.task_type} {p.job_id}: {p.state.name}" for p in parts if p.state != JobState.SUCCEEDED
    ]
    if broken:
        # Retrying cannot mend a failed part; a spam score without it would be a guess.
        raise NonRetryableError("part jobs did not succeed: " + "; ".join(broken))
    verdicts = [pb.PartVerdict.FromString(p.result) for p in parts]
    score = noisy_or(v.score for v in verdicts)
    return pb.SpamVerdict(
        email_id=request.email_id,
        score=score,
        spam=score >= SPAM_THRESHOLD,
        reasons=[f"{v.part}: {reason}" for v in verdicts for reason in v.reasons],
    ).SerializeToString()


async def main() -> None:
    try:
        await worker.run(install_signal_handlers=True)
    finally:
        if _client is not None:
            await _client.close()


if __name__ == "__main__":
    # What `conveyor worker` sets up: the worker's start, stop and warnings on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
