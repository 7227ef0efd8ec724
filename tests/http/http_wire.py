"""Shared by the HTTP tests: the body limit their coordinator runs with."""

# Small, so that the 413 tests send little; every other test body fits easily.
TEST_MAX_BODY_BYTES = 64 * 1024
