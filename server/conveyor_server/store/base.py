"""Moved to conveyor_server.core.ports (the core owns the storage seam; store/ implements it).
Re-exported here for a while so that out-of-tree imports keep working."""

from conveyor_server.core.ports import (
    ExpiryDecider,
    Fire,
    FirePlanner,
    Isolated,
    PlannedFires,
    Processed,
    ReceiptDecider,
    Store,
)

__all__ = [
    "ExpiryDecider",
    "Fire",
    "FirePlanner",
    "Isolated",
    "PlannedFires",
    "Processed",
    "ReceiptDecider",
    "Store",
]
