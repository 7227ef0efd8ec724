"""Name qualification (core/namespaces.py): pure rules, no server."""

from __future__ import annotations

import pytest
from conveyor_server.core.model import LeasedJob
from conveyor_server.core.namespaces import (
    MAX_STORED_NAME,
    Scope,
    local_of,
    namespace_of,
    qualify_in,
)
from conveyor_server.core.push import PushConfig, request_headers
from conveyor_server.errors import InvalidArgument
from hypothesis import given
from hypothesis import strategies as st

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@given(names, names)
def test_a_qualified_name_is_in_its_namespace_and_nowhere_else(namespace: str, local: str) -> None:
    stored = qualify_in(namespace, local)
    assert (namespace_of(stored), local_of(stored)) == (namespace, local)
    assert Scope(namespace).local(stored) == local
    assert Scope(namespace + "x").local(stored) is None


def test_the_default_namespace_stores_names_unchanged() -> None:
    assert qualify_in("default", "mail") == "mail"
    assert namespace_of("mail") == "default"
    assert Scope().local("alpha/mail") is None


def test_namespaces_differ_by_case() -> None:
    assert Scope("Alpha").local("alpha/mail") is None


def test_a_name_that_does_not_fit_with_its_namespace_is_invalid() -> None:
    room = MAX_STORED_NAME - len("alpha/")
    assert len(qualify_in("alpha", "q" * room)) == MAX_STORED_NAME
    with pytest.raises(InvalidArgument, match=f"at most {room} characters"):
        qualify_in("alpha", "q" * (room + 1))


def test_queue_globs_apply_to_the_local_name() -> None:
    scope = Scope("alpha", ("mail*",))
    assert scope.owns_queue("alpha/mail-eu")
    assert not scope.owns_queue("alpha/billing")
    assert not scope.owns_queue("mail")


@st.composite
def name_and_glob(draw: st.DrawFn) -> tuple[str, str]:
    """A local name and a glob made from it (so that it mostly matches): a slice of the name
    becomes `*`, `?`, a set `[c]`, `[!c]`, or stays; plus some globs that match nothing."""
    local = draw(names)
    start = draw(st.integers(0, len(local)))
    end = draw(st.integers(start, len(local)))
    part = local[start:end]
    wildcard = draw(
        st.sampled_from(["*", "?" * len(part), f"[{part[:1]}]", "[!/]" * len(part), part, "["])
    )
    return local, local[:start] + wildcard + local[end:]


@given(names, name_and_glob())
def test_every_queue_a_glob_admits_starts_with_a_prefix_the_store_narrows_by(
    namespace: str, local_and_glob: tuple[str, str]
) -> None:
    """The store's SQL keeps only names starting with a prefix of the filter; the exact test
    comes after it, so the prefixes must never drop a queue the globs match."""
    local, glob = local_and_glob
    names_filter = Scope(namespace, (glob,)).queue_names()
    assert names_filter is not None
    stored = qualify_in(namespace, local)
    if names_filter.admits(stored):
        assert any(stored.startswith(prefix) for prefix in names_filter.prefixes)


def test_error_text_loses_the_namespace_prefix() -> None:
    text = "queue 'alpha/mail' not found; task type \"alpha/send\""
    assert Scope("alpha").unqualify_text(text) == "queue 'mail' not found; task type \"send\""
    assert Scope().unqualify_text(text) == text


def test_a_push_shows_the_endpoint_the_names_of_the_queues_namespace() -> None:
    job = LeasedJob(
        job_id="j",
        lease_token="t",
        queue="alpha/mail",
        task_type="alpha/send",
        payload=b"",
        attempt=1,
        max_attempts=3,
        lease_expires_at=0,
        lease_duration=1,
        checkpoint=None,
        created_at=0,
        parent_job_id=None,
    )
    headers = request_headers(PushConfig(url="http://x"), job, deadline=0, now=0)
    assert (headers["Conveyor-Queue"], headers["Conveyor-Task-Type"]) == ("mail", "send")
