"""The decoy's files as nginx's static module sees them: body, MIME type (Debian's mime.types),
mtime and ETag; the packaged site or a server's own folder (web/site.py makes one)."""

from __future__ import annotations

import email.utils
import functools
import hashlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from elsewhere.web.nginx import DEFAULT_TYPE, MIME_TYPES, SITE_MTIME

# the site's content


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file as nginx's static module describes it."""

    body: bytes
    content_type: str
    mtime: int

    @property
    def etag(self) -> str:
        return f'"{self.mtime:x}-{len(self.body):x}"'  # ngx_http_set_etag: mtime-size in hex

    @property
    def last_modified(self) -> str:
        return http_date(self.mtime)


@dataclass(slots=True)
class DecoyContent:
    """The files of a site (URI path -> file) and the state nginx shares across connections:
    its counter of multipart range boundaries."""

    files: Mapping[str, StaticFile]
    index: str = "index.html"
    not_found_page: str | None = "/404.html"
    _boundaries: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def load(cls, directory: Path | None = None) -> DecoyContent:
        """The files of a flat directory (sub-directories are not served). Without one, the
        site shipped in the package, dated SITE_MTIME; a given directory keeps its mtimes."""
        entries: list[tuple[str, bytes, int | None]]
        if directory is None:
            root = resources.files("elsewhere") / "data" / "decoy"
            entries = [(e.name, e.read_bytes(), None) for e in root.iterdir() if e.is_file()]
        else:
            entries = [
                (p.name, p.read_bytes(), int(p.stat().st_mtime))
                for p in Path(directory).iterdir()
                if p.is_file()
            ]
        files = {
            "/" + name: StaticFile(body, _mime_type(name), packaged_mtime(name) if t is None else t)
            for name, body, t in entries
        }
        return cls(files)

    def next_boundary(self) -> int:
        return next(self._boundaries)


def packaged_mtime(name: str) -> int:
    """The fixed mtime a packaged file is served with (and that the nginx test gives it)."""
    offset = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return SITE_MTIME - offset % (60 * 86400)


@functools.lru_cache(maxsize=1)
def default_content() -> DecoyContent:
    return DecoyContent.load()


def _mime_type(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return MIME_TYPES.get(ext.lower(), DEFAULT_TYPE) if dot else DEFAULT_TYPE


def http_date(t: float) -> str:
    return email.utils.formatdate(int(t), usegmt=True)
