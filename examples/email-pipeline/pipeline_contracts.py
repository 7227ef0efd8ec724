"""The pipeline's contracts for Python: the classes generate.sh made from
protos/pipeline/v1/pipeline.proto, and the queue every step uses.

Generated code is not committed, so it is imported from gen/ (or from the directory in
$EMAIL_PIPELINE_GEN, which the tests use to keep the checkout clean)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from google.protobuf.message import Message

HERE = Path(__file__).resolve().parent
GEN_DIR = Path(os.environ.get("EMAIL_PIPELINE_GEN") or HERE / "gen")

# All steps, in both languages, share one queue: each worker names the task types it
# implements when it leases, so the coordinator hands it only those.
QUEUE = "email"

if str(GEN_DIR) not in sys.path:
    sys.path.insert(0, str(GEN_DIR))
try:
    from pipeline.v1 import pipeline_pb2 as pb
except ModuleNotFoundError as error:  # the usual first-run mistake: say how to fix it
    raise SystemExit(f"{GEN_DIR} has no generated contracts: run ./generate.sh first") from error

# The payload of every task type; run_demo.py registers each with the coordinator, which then
# refuses a payload that does not parse as its message.
TASK_MESSAGES: tuple[type[Message], ...] = (
    pb.ParseEmail,
    pb.AnalyzeText,
    pb.CheckLinks,
    pb.ScanAttachment,
    pb.ScoreSpam,
)

__all__ = ["GEN_DIR", "QUEUE", "TASK_MESSAGES", "pb"]
