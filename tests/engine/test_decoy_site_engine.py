"""The TLS port's decoy serving a server's own site: `decoy = "<dir>"` beside
`fallback = "decoy"` serves that directory's files (their bytes, their mtimes) as the decoy
alone would; "decoy" without it keeps serving the packaged site."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_tls_inbound import open_tls, server_config, without_date

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.errors import ConfigError
from elsewhere.inbounds.fallback import DecoyFallback, make_fallback
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import DecoyContent, default_content
from elsewhere.web.site import generate


@pytest.fixture
def own_site(tmp_path: Path) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    generate(directory)
    return directory


def decoy_config(tmp_path: Path, site: Path) -> dict[str, Any]:
    config = server_config(tmp_path, 1)
    config["inbounds"][0] |= {"fallback": "decoy", "decoy": str(site), "decide_timeout": 30}
    return config


async def test_the_tls_port_serves_the_servers_own_site(tmp_path: Path, own_site: Path) -> None:
    content = DecoyContent.load(own_site)
    page = next(
        p for p in content.files if p.endswith(".html") and p not in ("/index.html", "/404.html")
    )
    index = content.files["/index.html"]
    requests = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        f"GET {page} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode(),
        b"GET /wp-login.php HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /robots.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"If-None-Match: " + index.etag.encode() + b"\r\n\r\n",
    ]
    answers = []
    async with Engine(from_mapping(decoy_config(tmp_path, own_site))) as engine:
        port = engine.inbounds[0].port  # type: ignore[attr-defined]
        for request in requests:
            reader, writer = await open_tls(port)
            writer.write(request)
            answers.append(await asyncio.wait_for(reader.read(-1), 5))
            writer.close()
        assert engine.stats.probes == len(requests)
    for request, answer in zip(requests, answers, strict=True):
        alone = DecoySite(content, now=0)
        alone.feed(request, 0)
        assert without_date(answer) == without_date(alone.data_to_send())
    # the answers are this site's, not the packaged one's
    assert answers[0].endswith(index.body)
    assert f"ETag: {index.etag}\r\n".encode() in answers[0]
    assert f"Last-Modified: {index.last_modified}\r\n".encode() in answers[0]
    assert answers[2].startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert answers[2].endswith(content.files["/404.html"].body)
    assert answers[4].startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert default_content().files["/index.html"].body not in answers[0]


def test_decoy_alone_keeps_meaning_the_packaged_site(tmp_path: Path) -> None:
    fallback = make_fallback("tls", {"fallback": "decoy"})
    assert isinstance(fallback, DecoyFallback) and fallback.content is default_content()
    fallback = make_fallback("tls", {})
    assert isinstance(fallback, DecoyFallback) and fallback.content is default_content()


def test_a_decoy_directory_is_read_with_its_files_and_mtimes(own_site: Path) -> None:
    fallback = make_fallback("tls", {"fallback": "decoy", "decoy": str(own_site)})
    assert isinstance(fallback, DecoyFallback)
    for path in own_site.iterdir():
        file = fallback.content.files["/" + path.name]
        assert file.body == path.read_bytes()
        assert file.mtime == int(path.stat().st_mtime)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"fallback": "127.0.0.1:8080", "decoy": "/srv/site"}, ["drop one of them"]),
        ({"fallback": "decoy", "decoy": "/nonexistent/site"}, ["not a directory"]),
        ({"decoy": 5}, ["not a directory"]),
    ],
    ids=["with-upstream", "missing", "not-a-path"],
)
def test_a_wrong_decoy_option_is_one_clear_error(options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        make_fallback("tls", options)
    message = str(error.value)
    assert message.startswith('inbound "tls": ') and "\n" not in message
    for word in words:
        assert word in message


def test_an_empty_decoy_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        make_fallback("tls", {"decoy": str(tmp_path)})
