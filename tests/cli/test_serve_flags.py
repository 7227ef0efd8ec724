"""`conveyor serve` checks its flags before it starts: out of range is a clear message and
exit code 2, never a coordinator that fails later."""

from __future__ import annotations

import pytest
from conveyor_server.cli import main
from conveyor_server.config import MAX_PAYLOAD_LIMIT, ConfigError, ServerConfig

BAD_FLAGS = {
    "negative payload limit": (["--max-payload-bytes", "-1"], "--max-payload-bytes"),
    "zero payload limit": (["--max-payload-bytes", "0"], "--max-payload-bytes"),
    "payload limit leaving no room for the envelope": (
        ["--max-payload-bytes", str(MAX_PAYLOAD_LIMIT + 1)],
        "--max-payload-bytes",
    ),
    "negative depth": (["--max-depth", "-1"], "--max-depth"),
    "negative grace": (["--shutdown-grace", "-1"], "--shutdown-grace"),
    "grace not a number": (["--shutdown-grace", "nan"], "--shutdown-grace"),
    "no database connections": (["--db-pool-size", "0"], "--db-pool-size"),
    "negative statement timeout": (["--db-statement-timeout", "-1"], "--db-statement-timeout"),
    "statement timeout not a number": (
        ["--db-statement-timeout", "inf"],
        "--db-statement-timeout",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_a_serve_flag_out_of_range_exits_2_naming_it(
    case: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    flags, named = BAD_FLAGS[case]
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/c.db", "--listen", "127.0.0.1:0", *flags])
    assert code == 2
    assert named in capsys.readouterr().err


def test_a_server_config_out_of_range_is_refused_when_built() -> None:
    with pytest.raises(ConfigError, match="--max-depth"):
        ServerConfig(max_depth=-1)


def test_the_largest_payload_limit_is_accepted() -> None:
    assert ServerConfig(max_payload_bytes=MAX_PAYLOAD_LIMIT).max_payload_bytes == MAX_PAYLOAD_LIMIT
