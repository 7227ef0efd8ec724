"""Registered task contracts, and the payload check every versioned enqueue goes through."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from conveyor_server.core.auth import DEFAULT_NAMESPACE
from conveyor_server.core.clock import Clock
from conveyor_server.core.contracts import TaskType, check_payload, new_task_type
from conveyor_server.core.model import JobSpecInput, Version
from conveyor_server.core.namespaces import qualify_in
from conveyor_server.core.ports import Store


class TaskTypeService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # Registrations never change, so a found one is kept for good. Misses are not kept:
        # another coordinator may register the version at any moment.
        self._known: dict[tuple[str, Version], TaskType] = {}

    async def register(
        self,
        name: str,
        version: Version,
        message_type: str,
        descriptors: bytes,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> TaskType:
        """`name` as the caller knows it (a message's task option names it so); stored
        qualified with `namespace` (core/namespaces.py)."""
        task_type = new_task_type(name, version, message_type, descriptors, self._clock.now())
        stored = dataclasses.replace(task_type, name=qualify_in(namespace, name))
        return await self._store.register_task_type(stored)

    async def get(self, name: str, version: Version | None) -> TaskType:
        return await self._store.get_task_type(name, version)

    async def list(
        self, after: tuple[str, Version] | None, limit: int, namespace: str | None = None
    ) -> list[TaskType]:
        """`namespace`: only that namespace's task types (None: all of them)."""
        return await self._store.list_task_types(after, limit, namespace=namespace)

    async def check_payloads(self, specs: Sequence[JobSpecInput], fields: Sequence[str]) -> None:
        """Raises InvalidArgument for the first payload that is not its registered version's
        message. Jobs without a task_version, or of an unregistered one, are not checked
        here (a strict queue refuses the latter when it stores them)."""
        for spec, field in zip(specs, fields, strict=True):
            if spec.task_version is None:
                continue
            task_type = await self._lookup(spec.task_type, spec.task_version)
            if task_type is not None:
                check_payload(task_type, spec.payload, field)

    async def _lookup(self, name: str, version: Version) -> TaskType | None:
        known = self._known.get((name, version))
        if known is None:
            known = await self._store.find_task_type(name, version)
            if known is not None:
                self._known[(name, version)] = known
        return known
