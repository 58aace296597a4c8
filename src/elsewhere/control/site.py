"""Each server's own decoy web site: a small, plain static site (a bakery, a piano tuner, a
translator, somebody's notes) written once into the data directory and served by the TLS port's
decoy (codecs.decoy, imitating nginx). No two servers show the same page: names, texts, page
set, file names, markup, styling, favicon, sizes and dates are all drawn from os.urandom, so
no page, size, ETag (nginx's is hex(mtime)-hex(size)) or Last-Modified found on one server
finds the others. The texts are package data (data/site/), and so public: each is a template
with a choice every few words, composed anew for each site (_compose), so that no sentence a
censor reads there finds our servers in a full-text index of web pages."""

from __future__ import annotations

import colorsys
import functools
import html
import json
import math
import os
import random
import re
import secrets
import shutil
import struct
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SITE_DIR = "site"
DAY = 86400
# The site was "made" this long ago and "last edited" this long ago, in days: a site that
# appeared the day the server did would date the server.
AGE = (150.0, 1100.0)
LAST_EDIT = (4.0, 75.0)
PAGE_TYPES = ("about", "services", "notes", "faq", "contact")
STYLE_NAMES = ("style.css", "main.css", "site.css", "screen.css", "styles.css")


def ensure_site(data: Path) -> tuple[Path, bool]:
    """The site in `data`/site, generated on the first call and never again (its operator may
    have edited it); and whether this call made it. It is written beside and renamed into
    place, so an interrupted first run leaves no half site that would then be kept."""
    site = data / SITE_DIR
    if site.exists():
        return site, False
    data.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".site-", dir=data))
    try:
        generate(staging)
        staging.chmod(0o755)
        staging.rename(site)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if site.is_dir():  # another first run got there first
            return site, False
        raise
    return site, True


def generate(
    directory: Path, *, now: float | None = None, rng: random.Random | None = None
) -> None:
    """Write a new site into the existing, empty `directory`, its files dated in the months
    before `now` (the wall clock unless given)."""
    files = build(rng or secrets.SystemRandom(), time.time() if now is None else now)
    for name, (body, mtime) in files.items():
        path = directory / name
        path.write_bytes(body)
        path.chmod(0o644)
        os.utime(path, (mtime, mtime))


def build(rng: random.Random, now: float) -> dict[str, tuple[bytes, int]]:
    """The site's files: name -> (bytes, mtime)."""
    return _Builder(rng, now).files()


# the plan of one site


@dataclass
class _Look:
    """How this site's author happens to write HTML and CSS."""

    doctype: str
    lang: str
    indent: str
    head_indent: bool
    newline: str
    wrap: int  # 0: one line per paragraph
    prefix: str  # "/" or "" before links
    title_sep: str
    nav_list: bool
    header: tuple[str, str]  # tag, attributes
    main: tuple[str, str]
    footer: tuple[str, str]
    classes: dict[str, str]
    describe: bool
    icon_link: bool
    tagline: bool
    card_tag: str
    heading: str  # the tag of headings under h1


@dataclass
class _Page:
    kind: str
    file: str
    label: str
    mtime: int = 0


class _Builder:
    """One site: its kind (from data/site/kinds.json), people, dates and look, then its files."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self.now = now
        words, kinds = _data()
        self.words: dict[str, Any] = words
        self.kind: dict[str, Any] = rng.choice(kinds)
        self.i = self.kind["voice"] == "i"  # written as "I", not "we"
        self.start = now - rng.uniform(*AGE) * DAY
        self.last = now - rng.uniform(*LAST_EDIT) * DAY
        self.ctx = self._people()
        self.look = self._look()
        self.pages: list[_Page] = []
        self.style = rng.choice(STYLE_NAMES)

    def files(self) -> dict[str, tuple[bytes, int]]:
        rng, start, last = self.rng, self.start, self.last
        chosen = [t for t in self.kind["pages"] if t in PAGE_TYPES]
        chosen = sorted(rng.sample(chosen, rng.randint(2, min(4, len(chosen)))), key=chosen.index)
        used: set[str] = {"index.html", "404.html"}
        self.pages = [_Page("index", "index.html", rng.choice(self.words["home"]))]
        for kind in chosen:
            info = self.words["pages"][kind]
            file = rng.choice([f for f in info["files"] if f not in used])
            used.add(file)
            label = rng.choice(info["labels_i" if self.i else "labels"])
            self.pages.append(_Page(kind, file, label))
        for page in self.pages:
            page.mtime = self._when(start + 2 * DAY, last)
        newest = next((p for p in self.pages if p.kind == "notes"), self.pages[0])
        newest.mtime = int(last)

        out: dict[str, tuple[bytes, int]] = {}
        for page in self.pages:
            out[page.file] = (self._render(page), page.mtime)
        out["404.html"] = (self._missing(), self._when(start, min(start + 30 * DAY, last)))
        out[self.style] = (self._css(), self._when(start + DAY, start + (last - start) * 0.7))
        robots = self._when(start, start + 3 * DAY)
        out["robots.txt"] = (self._robots(robots), robots)
        out["favicon.ico"] = (_favicon(rng), self._when(start, start + 5 * DAY))
        return out

    def _when(self, lo: float, hi: float) -> int:
        return int(self.rng.uniform(lo, max(lo, hi)))

    # who and where

    def _people(self) -> dict[str, str]:
        rng, w = self.rng, self.words
        first, first2 = rng.sample(w["first"], 2)
        surname, surname2 = rng.sample(w["surname"], 2)
        town = rng.choice(w["town_start"]) + rng.choice(w["town_end"])
        ctx = {
            "first": first,
            "first2": first2,
            "surname": surname,
            "surname2": surname2,
            "owner": f"{first} {surname}",
            "town": town,
            "street": rng.choice(w["street"]),
            "number": str(rng.randint(1, 140)),
            "year": str(time.gmtime(self.start).tm_year - rng.randint(2, 14)),
            "word": rng.choice(self.kind["words"]) if self.kind["words"] else town,
            "month": rng.choice(w["months"]),
            "next_year": str(time.gmtime(self.last).tm_year + 1),
            "price": str(rng.randint(7, 38) * 5 - rng.choice((0, 0, 1))),
            "small_price": str(rng.randint(3, 18)),
        }
        ctx["trade_years"] = str(time.gmtime(self.now).tm_year - int(ctx["year"]))
        ctx["name"] = rng.choice(self.kind["names"]).format_map(ctx)
        ctx["tagline"] = self._compose(rng.choice(self.kind["taglines"])).format_map(ctx)
        first_year, last_year = time.gmtime(self.start).tm_year, time.gmtime(self.last).tm_year
        ctx["years"] = (
            f"{first_year}&ndash;{last_year}"
            if last_year > first_year and rng.random() < 0.7
            else str(rng.choice([first_year, last_year]))
        )
        return ctx

    def _text(self, template: str) -> str:
        """A plain-text template composed, filled in and escaped for HTML."""
        return html.escape(self._compose(template).format_map(self.ctx), quote=False)

    def _markup(self, template: str) -> str:
        """An HTML template composed and filled in with escaped values."""
        return self._compose(template).format_map(
            {k: v if k == "years" else html.escape(v) for k, v in self.ctx.items()}
        )

    def _compose(self, template: str) -> str:
        """One wording of a template: each `[a|b|c]` becomes one of its options (innermost
        first; an empty option makes a clause optional), each `<<a|b|c>>` a list of its items
        in any order ("b, c and a"), then each phrase of the thesaurus
        (data/site/words.json "swap") becomes any phrase of its group. The texts are in our
        public source, so a sentence copied verbatim would let a full-text search of HTTP
        bodies find every server: with a choice every few words, no run of eight words is
        likely to recur on another server. `{slots}` are left for format_map."""
        rng = self.rng
        text = template
        while (found := _CHOICE.search(text)) is not None:  # innermost first
            if found[1] is not None:
                chosen = rng.choice(found[1].split("|"))
            else:
                items = found[2].split("|")
                rng.shuffle(items)
                last = rng.choice((" and ", ", and ")) if len(items) > 2 else " and "
                chosen = ", ".join(items[:-1]) + last + items[-1]
            text = text[: found.start()] + chosen + text[found.end() :]
        swap, pattern = _thesaurus()

        def replace(match: re.Match[str]) -> str:
            old = match[0]
            new = rng.choice(swap[old.lower()])
            return new[:1].upper() + new[1:] if old[:1].isupper() else new

        parts = _SLOT.split(text)  # thesaurus words inside {slots} are not words
        parts[::2] = [pattern.sub(replace, part) for part in parts[::2]]
        text = "".join(parts)
        text = _ARTICLE.sub(_article, text)
        text = _SENTENCE.sub(lambda m: m[0].upper(), text)  # a list may now lead
        return _LOOSE.sub(r"\1", _SPACES.sub(" ", text)).strip()

    def _look(self) -> _Look:
        rng = self.rng

        def pick(*options: str) -> str:
            return rng.choice(options)

        tag = rng.random() < 0.7  # HTML5 elements rather than divs with ids
        return _Look(
            doctype=pick("<!DOCTYPE html>", "<!doctype html>", "<!DOCTYPE HTML>"),
            lang=pick("en", "en", "en-GB", "en-US"),
            indent=pick("", "  ", "  ", "    ", "\t"),
            head_indent=rng.random() < 0.4,
            newline="\r\n" if rng.random() < 0.1 else "\n",
            wrap=rng.choice((0, 0, rng.randint(72, 100))),
            prefix=pick("/", "/", ""),
            title_sep=pick(" — ", " | ", " - ", " &middot; ", " :: "),
            nav_list=rng.random() < 0.5,
            header=("header", "") if tag else ("div", f' id="{pick("header", "top", "masthead")}"'),
            main=("main", "") if tag else ("div", f' id="{pick("content", "main", "body")}"'),
            footer=("footer", "") if tag else ("div", f' id="{pick("footer", "bottom")}"'),
            classes={
                "wrap": pick("wrap", "container", "page", "inner", "site"),
                "brand": pick("brand", "logo", "site-name", "site-title", "name"),
                "tagline": pick("tagline", "strap", "subtitle", "motto"),
                "intro": pick("intro", "lead", "hero", "welcome", "opening"),
                "cards": pick("cards", "services", "grid", "boxes", "offer", "columns"),
                "small": pick("small", "muted", "meta", "date", "quiet"),
                "post": pick("post", "entry", "item", "news-item", "note"),
                "current": pick("current", "active", "here", "on", "selected"),
            },
            describe=rng.random() < 0.7,
            icon_link=rng.random() < 0.6,
            tagline=rng.random() < 0.5,
            card_tag=pick("article", "div", "section"),
            heading=pick("h2", "h2", "h3"),
        )

    # pages

    def _render(self, page: _Page) -> bytes:
        kind, rng, c = self.kind, self.rng, self.look.classes
        h = self.look.heading
        body: list[tuple[int, str]] = []
        if page.kind == "index":
            title = self.rng.choice(
                [
                    self._text("{name}") + self.look.title_sep + self._text("{tagline}"),
                    self._text("{name}"),
                ]
            )
            description = self._text("{name}: {tagline}")
            body.append((0, f'<div class="{c["intro"]}">'))
            body.append((1, f"<h1>{self._text(rng.choice(kind['headlines']))}</h1>"))
            for para in self._some(kind["intro"], 1, 3):
                body.append((1, f"<p>{self._text(para)}</p>"))
            body.append((0, "</div>"))
            body.append((0, f'<div class="{c["cards"]}">'))
            for name, text in self._some(kind["services"], 3, 4):
                tag = self.look.card_tag
                body += [(1, f"<{tag}>"), (2, f"<{h}>{self._text(name)}</{h}>")]
                body += [(2, f"<p>{self._text(text)}</p>"), (1, f"</{tag}>")]
            body.append((0, "</div>"))
            if rng.random() < 0.5:
                hours = self._hours()
                body.append((0, f'<p class="{c["small"]}">{hours}</p>'))
        else:
            heading = self._text(
                rng.choice(self.words["titles"][page.kind + ("_i" if self.i else "")])
            )
            title = heading + self.look.title_sep + self._text("{name}")
            description = heading + ", " + self._text("{name}")
            body.append((0, f"<h1>{heading}</h1>"))
            body += self._content(page)
        return self._document(page, title, description, body)

    def _content(self, page: _Page) -> list[tuple[int, str]]:
        kind, rng, words, c, h = (
            self.kind,
            self.rng,
            self.words,
            self.look.classes,
            self.look.heading,
        )
        body: list[tuple[int, str]] = []
        if page.kind == "about":
            body += [(0, f"<p>{self._text(p)}</p>") for p in self._some(kind["about"], 2, 4)]
        elif page.kind == "services":
            for name, text in self._some(kind["services"], 4, 6):
                body += [(0, f"<{h}>{self._text(name)}</{h}>"), (0, f"<p>{self._text(text)}</p>")]
        elif page.kind == "notes":
            posts = self._some(kind["notes"], 3, 5)
            dates = sorted(
                (self._when(self.start + 7 * DAY, page.mtime) for _ in posts), reverse=True
            )
            dates[0] = page.mtime - rng.randint(0, 3 * 3600)
            form = rng.randrange(3)
            for (name, text), when in zip(posts, dates, strict=True):
                body += [
                    (0, f'<div class="{c["post"]}">'),
                    (1, f"<{h}>{self._text(name)}</{h}>"),
                    (1, f'<p class="{c["small"]}">{self._date(when, form)}</p>'),
                    (1, f"<p>{self._text(text)}</p>"),
                    (0, "</div>"),
                ]
        elif page.kind == "faq":
            body.append((0, "<dl>"))
            for question, answer in self._some(kind["faq"], 3, 4):
                body += [
                    (1, f"<dt>{self._text(question)}</dt>"),
                    (1, f"<dd>{self._text(answer)}</dd>"),
                ]
            body.append((0, "</dl>"))
        else:  # contact
            where = words["contact_i" if self.i else "contact_we"]
            body.append((0, f"<p>{self._text(rng.choice(where))}</p>"))
            body.append((0, f"<p>{self._hours()}</p>"))
            body.append(
                (0, f'<p class="{c["small"]}">{self._text(rng.choice(words["contact_end"]))}</p>')
            )
        return body

    def _hours(self) -> str:
        """Opening hours: days, times, the way of writing them and the exceptions, each this
        site's own."""
        rng = self.rng
        first, last = rng.randrange(3), rng.randrange(3, 6)
        opens = rng.choice((7, 8, 8, 9, 9, 10)) * 60 + rng.choice((0, 0, 30, 15))
        closes = rng.choice((15, 16, 17, 17, 18, 19)) * 60 + rng.choice((0, 0, 30))
        style = rng.randrange(4)
        dash = rng.choice(("\N{EN DASH}", "-", " to ", " till ", " until "))

        def at(minutes: int) -> str:
            h, m = divmod(minutes, 60)
            if style < 2:
                return f"{h:0{style + 1}d}:{m:02d}"
            clock = f"{(h - 1) % 12 + 1}" + (f".{m:02d}" if m else "")
            if style == 2:
                clock += rng.choice((" am", "am")) if h < 12 else rng.choice((" pm", "pm"))
            return clock

        span = rng.choice((" to ", "\N{EN DASH}", " through ")).join((_DAYS[first], _DAYS[last]))
        lead = rng.choice(("Open ", "Opening hours: ", "", "Hours: ", "Usually open "))
        text = lead + span + rng.choice((", ", " ", ": ")) + f"{at(opens)}{dash}{at(closes)}."
        extras = [
            self._compose(template)
            for template in self.words["hours_extra"]
            if "{month}" not in template or rng.random() < 0.5
        ]
        if last < 5:
            noon = rng.choice((12, 13, 14)) * 60
            extras.append(
                f"{_DAYS[last + 1]}s {at(opens + rng.choice((0, 60, 90)))}{dash}{at(noon)}."
            )
        chosen = rng.sample(extras, rng.randint(0, 2))
        text = " ".join([text, *chosen]).format_map(self.ctx)
        return html.escape(text[0].upper() + text[1:], quote=False)

    def _missing(self) -> bytes:
        words, rng = self.words, self.rng
        page = _Page("404", "404.html", "")
        body = [
            (0, f"<h1>{self._text(rng.choice(words['missing_head']))}</h1>"),
            (0, f"<p>{self._markup(rng.choice(words['missing_text']))}</p>"),
        ]
        title = self._text(rng.choice(words["missing_title"])) + self.look.title_sep
        return self._document(page, title + self._text("{name}"), None, body, nav=False)

    def _document(
        self,
        page: _Page,
        title: str,
        description: str | None,
        body: list[tuple[int, str]],
        *,
        nav: bool = True,
    ) -> bytes:
        look, c = self.look, self.look.classes
        prefix = "/" if page.kind == "404" else look.prefix  # it answers at any path
        lines: list[tuple[int, str]] = [(0, look.doctype), (0, f'<html lang="{look.lang}">')]
        head = [
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>",
        ]
        if description and look.describe:
            head.append(f'<meta name="description" content="{description}">')
        head.append(f'<link rel="stylesheet" href="{prefix}{self.style}">')
        if look.icon_link:
            head.append(f'<link rel="icon" href="{prefix}favicon.ico">')
        inner = 1 if look.head_indent else 0
        lines += [(0, "<head>"), *((inner, line) for line in head), (0, "</head>"), (0, "<body>")]
        tag, attrs = look.header
        lines.append((0, f"<{tag}{attrs}>"))
        brand = self._text("{name}")
        home = prefix or "index.html"
        lines.append((1, f'<a class="{c["brand"]}" href="{home}">{brand}</a>'))
        if look.tagline:
            lines.append((1, f'<p class="{c["tagline"]}">{self._text("{tagline}")}</p>'))
        if nav:
            lines += self._nav(page, prefix)
        lines.append((0, f"</{tag}>"))
        tag, attrs = look.main
        lines.append((0, f"<{tag}{attrs}>"))
        lines += [(depth + 1, text) for depth, text in body]
        lines.append((0, f"</{tag}>"))
        tag, attrs = look.footer
        footer = self._markup(self.rng.choice(self.words["footer"]))
        lines += [(0, f"<{tag}{attrs}>"), (1, f"<p>{footer}</p>"), (0, f"</{tag}>")]
        lines += [(0, "</body>"), (0, "</html>")]
        return self._join(lines)

    def _nav(self, page: _Page, prefix: str) -> list[tuple[int, str]]:
        current = self.look.classes["current"]
        links = []
        for other in self.pages:
            href = (prefix or "index.html") if other.kind == "index" else prefix + other.file
            mark = f' class="{current}"' if other is page else ""
            links.append(f'<a href="{href}"{mark}>{html.escape(other.label)}</a>')
        if self.look.nav_list:
            return [
                (1, "<nav>"),
                (2, "<ul>"),
                *((3, f"<li>{a}</li>") for a in links),
                (2, "</ul>"),
                (1, "</nav>"),
            ]
        return [(1, "<nav>"), *((2, a) for a in links), (1, "</nav>")]

    def _join(self, lines: list[tuple[int, str]]) -> bytes:
        look = self.look
        out: list[str] = []
        for depth, text in lines:
            pad = look.indent * depth
            if look.wrap and text.startswith("<p>") and len(pad) + len(text) > look.wrap:
                width = max(40, look.wrap - len(pad))
                out += [
                    pad + part
                    for part in textwrap.wrap(
                        text, width, break_long_words=False, break_on_hyphens=False
                    )
                ]
            else:
                out.append(pad + text)
        return (look.newline.join(out) + look.newline).encode()

    def _some(self, items: Sequence[Any], lo: int, hi: int) -> list[Any]:
        return self.rng.sample(list(items), min(len(items), self.rng.randint(lo, hi)))

    def _date(self, when: int, form: int) -> str:
        t = time.gmtime(when)
        month = self.words["months"][t.tm_mon - 1]
        if form == 0:
            return f"{t.tm_mday} {month} {t.tm_year}"
        if form == 1:
            return f"{month} {t.tm_mday}, {t.tm_year}"
        return f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d}"

    # the other files

    def _css(self) -> bytes:
        rng, c = self.rng, self.look.classes
        hue = rng.random()
        sat = rng.uniform(0.25, 0.75)

        def colour(lightness: float, saturation: float, shift: float = 0.0) -> str:
            r, g, b = colorsys.hls_to_rgb((hue + shift) % 1.0, lightness, saturation)
            return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"

        paper = colour(rng.uniform(0.955, 1.0), rng.uniform(0.1, 0.5))
        ink = colour(rng.uniform(0.08, 0.2), rng.uniform(0.05, 0.3))
        accent = colour(rng.uniform(0.28, 0.45), sat, rng.choice((0.0, 0.0, 0.5, 0.33)))
        muted = colour(rng.uniform(0.38, 0.5), rng.uniform(0.05, 0.2))
        rule = colour(rng.uniform(0.8, 0.9), rng.uniform(0.1, 0.3))
        width = rng.choice((f"{rng.randint(52, 68)}rem", f"{rng.randint(44, 62) * 20}px"))
        pad = f"{rng.choice((1, 1.25, 1.5, 2))}rem"
        names = {"paper": paper, "ink": ink, "accent": accent, "muted": muted, "rule": rule}
        use_vars = rng.random() < 0.5
        prefix = rng.choice(("", "c-", "color-"))

        def v(name: str) -> str:
            return f"var(--{prefix}{name})" if use_vars else names[name]

        header, main, footer = (
            _selector(self.look.header),
            _selector(self.look.main),
            _selector(self.look.footer),
        )
        rules: list[tuple[str, list[tuple[str, str]]]] = []
        if use_vars:
            rules.append((":root", [(f"--{prefix}{k}", x) for k, x in names.items()]))
        if rng.random() < 0.6:
            rules.append(
                (
                    "*, *::before, *::after" if rng.random() < 0.5 else "*",
                    [("box-sizing", "border-box")],
                )
            )
        rules += [
            ("html", [("font-size", f"{rng.choice((15, 16, 16, 17, 18))}px")]),
            (
                "body",
                _shuffled(
                    rng,
                    [
                        ("margin", "0"),
                        ("background", v("paper")),
                        ("color", v("ink")),
                        ("font-family", rng.choice(self.words["fonts"])),
                        ("line-height", f"{rng.choice((1.45, 1.5, 1.55, 1.6, 1.65, 1.7))}"),
                    ],
                ),
            ),
            ("a", [("color", v("accent"))]),
            (
                f"{header}, {main}, {footer}",
                [
                    ("max-width", width),
                    ("margin", "0 auto"),
                    ("padding", f"{pad} {rng.choice(('1rem', '1.25rem', '5%'))}"),
                ],
            ),
            (
                f"{header}",
                _shuffled(
                    rng,
                    [
                        ("border-bottom", f"{rng.choice((1, 1, 2, 3))}px solid {v('rule')}"),
                        *(
                            [
                                ("display", "flex"),
                                ("flex-wrap", "wrap"),
                                ("align-items", "baseline"),
                                ("justify-content", "space-between"),
                            ]
                            if rng.random() < 0.6
                            else []
                        ),
                    ],
                ),
            ),
            (
                f".{c['brand']}",
                [
                    ("color", v("ink")),
                    ("font-size", f"{rng.choice((1.2, 1.3, 1.4, 1.5))}rem"),
                    ("text-decoration", "none"),
                    *([("font-weight", "bold")] if rng.random() < 0.5 else []),
                    *(
                        [("letter-spacing", f"{rng.choice((0.01, 0.02, 0.04))}em")]
                        if rng.random() < 0.4
                        else []
                    ),
                ],
            ),
            (f".{c['tagline']}", [("margin", "0.25rem 0 0"), ("color", v("muted"))]),
            (
                "nav a" if not self.look.nav_list else "nav li",
                [
                    ("margin-right", f"{rng.choice((0.75, 1, 1.25, 1.5))}rem"),
                    *([("display", "inline-block")] if self.look.nav_list else []),
                ],
            ),
            *(
                [("nav ul", [("list-style", "none"), ("margin", "0"), ("padding", "0")])]
                if self.look.nav_list
                else []
            ),
            (
                f"nav .{c['current']}",
                [("font-weight", "bold")]
                if rng.random() < 0.5
                else [("color", v("ink")), ("text-decoration", "none")],
            ),
            (
                "h1",
                [
                    ("font-size", f"{rng.choice((1.6, 1.8, 2, 2.2))}rem"),
                    ("line-height", "1.25"),
                    *([("font-weight", "normal")] if rng.random() < 0.5 else []),
                ],
            ),
            (
                self.look.heading,
                [
                    ("font-size", f"{rng.choice((1.1, 1.2, 1.25, 1.3))}rem"),
                    ("margin-top", f"{rng.choice((1.5, 2))}rem"),
                ],
            ),
            (
                f".{c['cards']}",
                [
                    ("display", "grid"),
                    (
                        "grid-template-columns",
                        f"repeat(auto-fit, minmax({rng.choice((14, 15, 16, 18))}rem, 1fr))",
                    ),
                    ("gap", f"{rng.choice((1, 1.25, 1.5, 2))}rem"),
                ],
            ),
            (
                f".{c['cards']} > *",
                [
                    (
                        "padding",
                        f"{rng.choice((0.75, 1, 1.25))}rem {rng.choice((1, 1.25, 1.5))}rem",
                    ),
                    ("border", f"1px solid {v('rule')}"),
                    *(
                        [("border-radius", f"{rng.choice((2, 3, 4, 6, 8))}px")]
                        if rng.random() < 0.7
                        else []
                    ),
                ],
            ),
            (
                f".{c['small']}",
                [("color", v("muted")), ("font-size", f"{rng.choice((0.8, 0.85, 0.9))}rem")],
            ),
            (
                f".{c['post']} + .{c['post']}",
                [
                    ("border-top", f"1px solid {v('rule')}"),
                    ("margin-top", f"{rng.choice((1.5, 2))}rem"),
                ],
            ),
            ("dt", [("font-weight", "bold"), ("margin-top", "1rem")]),
            ("dd", [("margin-left", f"{rng.choice((0, 1, 1.5))}rem")]),
            (
                footer,
                [
                    ("color", v("muted")),
                    ("font-size", f"{rng.choice((0.8, 0.85, 0.9))}rem"),
                    ("border-top", f"1px solid {v('rule')}"),
                ],
            ),
        ]
        if rng.random() < 0.7:
            rules.append(
                (
                    f"@media (max-width: {rng.choice((36, 40, 42, 48))}rem)",
                    [("h1", f"font-size: {rng.choice((1.4, 1.5, 1.6))}rem")],
                )
            )
        return _css_text(rng, rules).encode()

    def _robots(self, mtime: int) -> bytes:
        rng, words = self.rng, self.words
        lines: list[str] = []
        if rng.random() < 0.5:
            comment = rng.choice(("robots.txt for {name}", "{name}", "last updated {date}"))
            date = time.strftime("%Y-%m-%d", time.gmtime(mtime))
            lines += [f"# {comment.format(name=self.ctx['name'], date=date)}", ""]
        bots = rng.sample(words["bots"], rng.randint(0, 7))
        paths = rng.sample(words["disallow"], rng.randint(max(0, 2 - len(bots)), 4))
        if bots and rng.random() < 0.5:
            lines += [f"User-agent: {b}" for b in bots] + ["Disallow: /", ""]
        else:
            for b in bots:
                lines += [f"User-agent: {b}", "Disallow: /", ""]
        lines.append("User-agent: *")
        lines += [f"Disallow: {p}" for p in paths] or ["Disallow:"]
        if rng.random() < 0.2:
            lines.append(f"Crawl-delay: {rng.choice((1, 2, 5, 10))}")
        return ("\n".join(lines) + "\n").encode()


def _selector(element: tuple[str, str]) -> str:
    tag, attrs = element
    return tag if not attrs else "#" + attrs.split('"')[1]


def _shuffled(rng: random.Random, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    head, rest = items[:1], items[1:]
    rng.shuffle(rest)
    return head + rest


def _css_text(rng: random.Random, rules: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    indent = rng.choice(("  ", "  ", "    ", "\t"))
    compact = rng.random() < 0.25
    out: list[str] = []
    for selector, declarations in rules:
        if selector.startswith("@media"):
            inner = "".join(f"{indent}{sel} {{ {decl}; }}\n" for sel, decl in declarations)
            out.append(f"{selector} {{\n{inner}}}\n")
        elif compact:
            out.append(f"{selector} {{ " + " ".join(f"{k}: {x};" for k, x in declarations) + " }\n")
        else:
            out.append(
                f"{selector} {{\n"
                + "".join(f"{indent}{k}: {x};\n" for k, x in declarations)
                + "}\n"
            )
    return ("" if compact else "\n").join(out)


# the favicon: one to three sizes of a small mark in the site's colours, as BMP or PNG frames


def _favicon(rng: random.Random) -> bytes:
    sizes = rng.choice(((16,), (32,), (16, 32), (16, 32, 48)))
    fg = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    bg = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    shape = _SHAPES[rng.randrange(len(_SHAPES))]
    png = rng.random() < 0.4
    frames = []
    for size in sizes:
        pixels = _draw(size, shape, fg, bg)
        frames.append(_png(size, pixels) if png and size >= 32 else _bmp(size, pixels))
    header = struct.pack("<HHH", 0, 1, len(frames))
    offset = len(header) + 16 * len(frames)
    entries, blobs = b"", b""
    for size, frame in zip(sizes, frames, strict=True):
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(frame), offset)
        blobs += frame
        offset += len(frame)
    return header + entries + blobs


Pixel = tuple[int, int, int, int]  # RGBA


def _circle(x: float, y: float) -> bool:
    return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.21


def _rounded(x: float, y: float) -> bool:
    dx, dy = max(0.0, abs(x - 0.5) - 0.3), max(0.0, abs(y - 0.5) - 0.3)
    return dx * dx + dy * dy <= 0.025


def _diamond(x: float, y: float) -> bool:
    return abs(x - 0.5) + abs(y - 0.5) <= 0.48


def _ring(x: float, y: float) -> bool:
    return 0.09 <= (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.22


def _leaf(x: float, y: float) -> bool:
    return (x - 0.35) ** 2 + (y - 0.35) ** 2 <= 0.2 and (x - 0.65) ** 2 + (y - 0.65) ** 2 <= 0.2


_SHAPES: tuple[Callable[[float, float], bool], ...] = (_circle, _rounded, _diamond, _ring, _leaf)


def _draw(
    size: int,
    shape: Callable[[float, float], bool],
    fg: tuple[int, int, int],
    bg: tuple[int, int, int],
) -> list[list[Pixel]]:
    """Rows top to bottom; the shape in `fg` on a `bg` square of the same shape, edges
    antialiased by 4x4 supersampling."""
    rows = []
    for j in range(size):
        row = []
        for i in range(size):
            hits = sum(
                shape((i + (a + 0.5) / 4) / size, (j + (b + 0.5) / 4) / size)
                for a in range(4)
                for b in range(4)
            )
            alpha = round(255 * hits / 16)
            inner = _circle((i + 0.5) / size * 1.35 - 0.175, (j + 0.5) / size * 1.35 - 0.175)
            r, g, b = bg if inner and shape is not _ring else fg
            row.append((r, g, b, alpha))
        rows.append(row)
    return rows


def _bmp(size: int, rows: list[list[Pixel]]) -> bytes:
    mask_row = math.ceil(size / 32) * 4
    pixels = b"".join(
        bytes((b, g, r, a)) for row in reversed(rows) for r, g, b, a in row
    )  # BMP rows go bottom up, BGRA
    mask = bytes(mask_row * size)  # the alpha channel decides; the AND mask is all opaque
    header = struct.pack(
        "<IiiHHIIiiII", 40, size, 2 * size, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0
    )
    return header + pixels + mask


def _png(size: int, rows: list[list[Pixel]]) -> bytes:
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CHOICE = re.compile(r"\[((?:(?!<<|>>)[^\[\]])*)\]|<<((?:(?!<<|>>)[^\[\]])*)>>")
_SLOT = re.compile(r"(\{[^{}]*\})")
_SENTENCE = re.compile(r"(?:^|[.?!] )[a-z]")
_LOOSE = re.compile(r" ([,.;:])")  # left by an empty option before punctuation
_SPACES = re.compile(r"  +")
_ARTICLE = re.compile(r"\b([Aa]n?) (\w+)")
_VOWEL_SOUND = ("hour", "honest")
_CONSONANT_SOUND = ("uni", "use", "usu", "one", "euro")


def _article(match: re.Match[str]) -> str:
    article, word = match[1], match[2]
    lower = word.lower()
    vowel = (lower[0] in "aeiou" or lower.startswith(_VOWEL_SOUND)) and not lower.startswith(
        _CONSONANT_SOUND
    )
    if vowel and not word[0].isdigit():
        return f"{article[0]}n {word}"
    return f"{article[0]} {word}"


@functools.lru_cache(maxsize=1)
def _thesaurus() -> tuple[dict[str, list[str]], re.Pattern[str]]:
    """Phrase -> the phrases it may become (its group), and a pattern finding any of them,
    longest first, as whole words."""
    swap: dict[str, list[str]] = {}
    for group in _data()[0]["swap"]:
        for phrase in group:
            swap[phrase.lower()] = group
    phrases = sorted(swap, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w'-])(?:" + "|".join(map(re.escape, phrases)) + r")(?![\w'-])", re.I
    )
    return swap, pattern


@functools.lru_cache(maxsize=1)
def _data() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    root = resources.files("elsewhere") / "data" / "site"
    return (
        json.loads((root / "words.json").read_text("utf-8")),
        json.loads((root / "kinds.json").read_text("utf-8")),
    )
