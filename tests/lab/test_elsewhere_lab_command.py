"""`elsewhere lab`: the engine configs it writes are TOML the engine reads; a person gets one
clear line when the lab cannot run, a Debian peer that is missing is skipped with a note, and a
real run prints the matrix and writes its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from elsewhere.config import from_mapping
from elsewhere.control.cli import main
from elsewhere.lab import plan, run
from elsewhere.lab.elsewhere_transports import ElsewhereShadowsocks, ElsewhereSs2022, toml_text
from elsewhere.lab.topology import Lab


def test_configs_are_written_as_toml_the_engine_reads(tmp_path: Path) -> None:
    tricky = {"inbounds": [{"type": "x", "prefix": 'HTTP/1.1 "\\ é', "udp": False,
                            "keys": [{"id": "a", "n": 1.5}], "opts": {"path": "/p"}}],
              "timeouts": {"idle": 60}}
    assert tomllib.loads(toml_text(tricky)) == tricky
    for transport in (ElsewhereShadowsocks(), ElsewhereSs2022()):
        for config in transport.configs(Lab(workdir=tmp_path)):  # not built: SS needs no CA
            parsed = tomllib.loads(toml_text(config))
            assert parsed == config
            from_mapping(parsed)


def test_the_prefix_reaches_the_client_config_byte_for_byte(tmp_path: Path) -> None:
    _, client = ElsewhereShadowsocks(prefix=b"HTTP/1.1 ").configs(Lab(workdir=tmp_path))
    assert tomllib.loads(toml_text(client))["outbounds"][0]["prefix"] == "HTTP/1.1 "


def test_without_root_the_lab_command_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run.os, "geteuid", lambda: 1000)
    assert main(["lab", "--quick"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "needs root" in lines[0] and lines[0].startswith("elsewhere: ")


def test_a_missing_debian_peer_is_skipped_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_which = shutil.which

    def which(command: str, *args: Any, **kwargs: Any) -> str | None:
        return None if command in ("v2ray", "openvpn") else real_which(command, *args, **kwargs)

    monkeypatch.setattr(run.shutil, "which", which)
    transports, skipped = run.choose_transports(None, quick=False)
    names = [t.name for t in transports]
    assert "v2ray-vless-tls" not in names and "openvpn" not in names
    assert "apt-get install v2ray" in skipped["v2ray-vless-tls"]
    assert {"direct", "shadowsocks-libev", "elsewhere-ss-prefix", "elsewhere-vless-ws"} <= set(
        names)


def test_unknown_names_are_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--transports", "tor"]) == 2
    assert "unknown transport 'tor'" in capsys.readouterr().err
    assert main(["lab", "--techniques", "great_wall"]) == 2
    assert "unknown technique" in capsys.readouterr().err


@pytest.mark.lab
def test_a_run_prints_the_matrix_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "matrix.json"
    done = subprocess.run(
        [sys.executable, "-m", "elsewhere", "lab", "--transports", "direct,elsewhere-ss-prefix",
         "--techniques", "dns_poison+sni_block+ip_block", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Survival matrix" in done.stdout and "elsewhere-ss-prefix" in done.stdout
    rows = {r["transport"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["direct"]["reached"] == 0 and rows["direct"]["detected"]
    assert rows["elsewhere-ss-prefix"]["survived"]
    assert rows["elsewhere-ss-prefix"]["seen_from"] == plan.SERVER
