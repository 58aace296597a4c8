"""Every TOML example in docs/config.md is a config the engine accepts, once its placeholders
("…" for secrets, the certbot paths) are filled in: the documentation cannot drift from the
options the code reads."""

from __future__ import annotations

import base64
import os
import re
import tomllib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from engine.tls_helpers import make_cert

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
PSK = base64.b64encode(os.urandom(32)).decode()  # a 2022-blake3-aes-256-gcm key


def filled(block: str, cert: Path, key: Path, site: Path) -> dict[str, Any]:
    block = block.replace('"/etc/letsencrypt/live/example.com/fullchain.pem"', f'"{cert}"')
    block = block.replace('"/etc/letsencrypt/live/example.com/privkey.pem"', f'"{key}"')
    block = block.replace('"/var/lib/elsewhere/site"', f'"{site}"')
    block = block.replace('psk = "…"', f'psk = "{PSK}"')
    block = block.replace('uuid = "…"', f'uuid = "{uuid.uuid4()}"')
    block = block.replace('pin = "…"', f'pin = "{os.urandom(32).hex()}"')
    block = block.replace(
        "2022-blake3-aes-256-gcm:…@", f"2022-blake3-aes-256-gcm:{quote(PSK, safe='')}@"
    )
    block = block.replace('"ss://…"', '"ss://YWVzLTI1Ni1nY206c2VjcmV0@192.0.2.1:8388"')
    block = block.replace('"…"', '"secret"')
    config = tomllib.loads(block)
    config.setdefault("inbounds", [{"type": "mixed", "port": 0}])
    config.setdefault("outbounds", [{"type": "direct"}])
    return config


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_example_is_a_config_the_engine_accepts(index: int, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>hello</p>\n")
    engine = Engine(from_mapping(filled(BLOCKS[index], cert, key, site)))
    assert engine.inbounds and engine.outbounds
