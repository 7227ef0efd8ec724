"""Helpers of the dashboard specs."""

from __future__ import annotations

import re


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)
