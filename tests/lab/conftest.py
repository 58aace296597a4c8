"""Fixtures for the censor lab tests: a freshly built lab per test (torn down after it, whatever
happens), and a shorthand for starting a censor in it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lab_doubles import CensorStarter

from elsewhere.lab.censor import CensorProcess, start_censor
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.topology import Lab

SEED = 7


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(workdir=tmp_path / "lab") as built:
        yield built


@pytest.fixture
def censor(lab: Lab) -> CensorStarter:
    """censor("sni_block", "ip_block", fet_probability=1.0) starts a seeded censor."""

    def start(*techniques: str, **settings: Any) -> CensorProcess:
        config = replace(CensorConfig(seed=SEED), techniques=techniques, **settings)
        return start_censor(lab, config)

    return start
