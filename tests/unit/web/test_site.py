"""Each server's own decoy site (web.site): two servers share no file, size, ETag or
Last-Modified a censor could search for, the dates lie in the months before the install, and
the site is written once and then left alone."""

from __future__ import annotations

import html
import random
import re
import struct
import time
from collections import Counter
from pathlib import Path

import pytest

from elsewhere.web.decoy_content import DecoyContent
from elsewhere.web.site import DAY, build, ensure_site, generate


def site(tmp_path: Path, name: str) -> DecoyContent:
    directory = tmp_path / name
    directory.mkdir()
    generate(directory)
    return DecoyContent.load(directory)


def test_two_servers_share_no_file_bytes_etag_or_date(tmp_path: Path) -> None:
    one, two = site(tmp_path, "one"), site(tmp_path, "two")
    for a in one.files.values():
        for b in two.files.values():
            assert a.body != b.body
            assert a.etag != b.etag
            assert a.last_modified != b.last_modified
    # and within one site no two files were saved in the same second
    for content in (one, two):
        dates = [f.mtime for f in content.files.values()]
        assert len(set(dates)) == len(dates)


def test_no_byte_string_is_common_to_many_sites_beyond_html_itself() -> None:
    """What a censor would grep for: a title, a heading, a class, a stylesheet line."""
    now = time.time()
    titles, firsts, styles = set(), set(), set()
    for seed in range(40):
        files = build(random.Random(seed), now)
        index = files["index.html"][0]
        title = re.search(rb"<title>(.*)</title>", index)
        h1 = re.search(rb"<h1>(.*)</h1>", index)
        assert title and h1
        titles.add(title[1])
        firsts.add(h1[1])
        css = next(body for name, (body, _) in files.items() if name.endswith(".css"))
        styles.add(css)
    assert len(titles) > 35
    assert len(firsts) > 10
    assert len(styles) == 40


def test_dates_are_in_the_past_and_spread_over_months() -> None:
    now = time.time()
    for seed in range(200):
        files = build(random.Random(seed), now)
        mtimes = [mtime for _, mtime in files.values()]
        assert all(isinstance(t, int) for t in mtimes)
        assert max(mtimes) < now - 3 * DAY  # nothing was saved around the install
        assert min(mtimes) > now - 1200 * DAY
        assert max(mtimes) - min(mtimes) > 60 * DAY
        assert len({time.gmtime(t)[:2] for t in mtimes}) >= 2  # more than one month


def test_a_site_has_what_visitors_and_crawlers_ask_for_and_links_that_resolve() -> None:
    now = time.time()
    for seed in range(200):
        files = build(random.Random(seed), now)
        assert {"index.html", "404.html", "robots.txt", "favicon.ico"} <= set(files)
        pages = [name for name in files if name.endswith(".html") and name != "404.html"]
        assert 3 <= len(pages) <= 5
        for name, (body, _) in files.items():
            assert len(body) < 16 * 1024, name  # modest, and one gzip chunk for the decoy
            if name.endswith(".html"):
                for link in re.findall(rb'(?:href)="([^"]*)"', body):
                    target = link.decode().lstrip("/") or "index.html"
                    assert target in files, (seed, name, link)
        robots = files["robots.txt"][0].decode()
        assert "User-agent: *\n" in robots


def test_nothing_in_a_site_mentions_what_the_server_really_is() -> None:
    words = re.compile(
        rb"proxy|vpn|tunnel|trojan|vless|shadowsocks|v2ray|xray|elsewhere|censor|[{}]", re.I
    )
    now = time.time()
    for seed in range(300):
        for name, (body, _) in build(random.Random(seed), now).items():
            if not name.endswith((".html", ".txt")):
                continue
            found = words.search(body)
            assert found is None, (seed, name, found)


def test_the_favicon_is_an_icon_a_browser_reads() -> None:
    now = time.time()
    for seed in range(30):
        icon = build(random.Random(seed), now)["favicon.ico"][0]
        reserved, kind, count = struct.unpack_from("<HHH", icon)
        assert (reserved, kind) == (0, 1) and 1 <= count <= 3
        for i in range(count):
            w, h, _, _, planes, bits, size, offset = struct.unpack_from(
                "<BBBBHHII", icon, 6 + 16 * i
            )
            assert w == h and bits == 32 and planes == 1
            frame = icon[offset : offset + size]
            assert len(frame) == size
            assert frame.startswith(b"\x89PNG\r\n\x1a\n") or frame[:4] == b"(\0\0\0"


def test_the_site_is_written_once_and_an_edited_site_is_kept(tmp_path: Path) -> None:
    directory, created = ensure_site(tmp_path)
    assert created and directory == tmp_path / "site"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime) for p in directory.iterdir()}
    (directory / "index.html").write_text("<p>mine</p>\n")
    again, created = ensure_site(tmp_path)
    assert again == directory and not created
    assert (directory / "index.html").read_text() == "<p>mine</p>\n"
    after = {p.name: (p.read_bytes(), p.stat().st_mtime) for p in directory.iterdir()}
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != "index.html"} == {
        k: v for k, v in before.items() if k != "index.html"
    }
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging left behind


def test_a_failed_first_write_leaves_nothing_to_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elsewhere.web import site as module

    def broken(directory: Path, **_: object) -> None:
        (directory / "index.html").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(module, "generate", broken)
    with pytest.raises(OSError, match="disk full"):
        ensure_site(tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    directory, created = ensure_site(tmp_path)
    assert created and (directory / "index.html").read_bytes() != b"half"


# The texts are in our public source: a sentence copied verbatim onto every site would let a
# full-text search of HTTP bodies (Censys, Shodan) list every server. Each run of eight words
# should be this site's own, short of chance.

SHINGLE = 8
SITES = 50
# A run of eight words may recur on at most this many of the 50 sites (8%): the eight kinds of
# site share their subjects, so about six sites tell of the same bakery or piano tuner, and
# an eight-word search that finds a few of every hundred servers, among the many real sites
# that say the same, is not a list of servers. The text started at 14 of 50.
MOST_SITES_PER_SHINGLE = 4
# Runs that are no one's in particular, and so no sign of us.
BOILERPLATE = ("all rights reserved", "text and pictures")


def visible_texts(body: bytes) -> list[str]:
    """The texts a visitor reads, as a search index would take them: each run between two
    tags other than links, outside <head>, in one line."""
    text = re.sub(r"<head>.*?</head>", " ", body.decode(), flags=re.S)
    text = re.sub(r"</?a\b[^>]*>", "", text)
    return [" ".join(html.unescape(part).split()) for part in re.split(r"<[^>]+>", text)]


def shingles(files: dict[str, tuple[bytes, int]]) -> set[str]:
    out = set()
    for name, (body, _) in files.items():
        if not name.endswith(".html"):
            continue
        for text in visible_texts(body):
            words = [w for w in re.sub(r"[^\w' -]", " ", text.lower()).split() if w]
            for i in range(len(words) - SHINGLE + 1):
                run = " ".join(words[i : i + SHINGLE])
                if not any(phrase in run for phrase in BOILERPLATE):
                    out.add(run)
    return out


def test_no_run_of_eight_words_recurs_on_more_than_a_few_sites() -> None:
    now = time.time()
    sites = Counter[str]()
    for seed in range(SITES):
        sites.update(shingles(build(random.Random(seed), now)))
    ((run, count),) = sites.most_common(1)
    assert count <= MOST_SITES_PER_SHINGLE, (run, count)


def test_composed_texts_read_as_plain_english() -> None:
    now = time.time()
    faults = re.compile(
        r"[{}\[\]|<>]|  |\s[,.;:!?]|[,;:]{2}|\.\.|,\.|\b(\w+) \1\b"
        r"|\ban (?!hour|honest)[b-df-hj-np-tv-z]|\ba (?!uni|use|usu|one|euro)[aeiou]",
        re.I,
    )
    for seed in range(SITES):
        files = build(random.Random(seed), now)
        for name, (body, _) in files.items():
            if not name.endswith(".html"):
                continue
            for line in body.decode().splitlines():
                assert "  " not in line.strip(), (seed, name, line)
            for text in visible_texts(body):
                found = faults.search(text)
                assert found is None, (seed, name, text, found)
                if text.endswith((".", "?")) and text[0].isalpha():
                    assert text[0].isupper(), (seed, name, text)
