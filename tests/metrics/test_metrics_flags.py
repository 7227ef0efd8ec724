"""`--metrics-listen` and `--dashboard-listen`: off unless given, loopback unless a host is
named, refused at once when malformed."""

from __future__ import annotations

import pytest
from conveyor_server.cli import _config, build_parser, main
from conveyor_server.config import ServerConfig


def serve_config(*flags: str) -> ServerConfig:
    return _config(build_parser().parse_args(["serve", *flags]))


def test_the_http_endpoints_are_off_unless_asked_for() -> None:
    config = serve_config()
    assert config.metrics_listen is None and config.dashboard_listen is None


def test_a_bare_port_listens_on_loopback() -> None:
    config = serve_config("--metrics-listen", ":9464", "--dashboard-listen", "8080")
    assert config.metrics_listen == "127.0.0.1:9464"
    assert config.dashboard_listen == "127.0.0.1:8080"


def test_a_named_host_is_kept() -> None:
    assert serve_config("--metrics-listen", "0.0.0.0:9464").metrics_listen == "0.0.0.0:9464"


def test_a_malformed_listen_address_exits_2_naming_the_flag(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/c.db", "--dashboard-listen", "host:x"])
    assert code == 2
    assert "--dashboard-listen" in capsys.readouterr().err
