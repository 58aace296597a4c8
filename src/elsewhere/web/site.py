"""Each server's own decoy web site: a small, plain static site (a bakery, a piano tuner, a
translator, somebody's notes) written once into the data directory and served by the TLS port's
decoy (web/decoy.py, imitating nginx). No two servers show the same page: names, texts, page
set, file names, markup, styling, favicon, sizes and dates are all drawn from os.urandom, so
no page, size, ETag (nginx's is hex(mtime)-hex(size)) or Last-Modified found on one server
finds the others. The texts are package data (data/site/), and so public: each is a template
with a choice every few words, composed anew for each site (site_words.compose), so that no
sentence a censor reads there finds our servers in a full-text index of web pages. The site's
look and stylesheet are web/site_style.py, its favicon web/site_icon.py."""

from __future__ import annotations

import html
import os
import random
import secrets
import shutil
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elsewhere.web.site_icon import favicon
from elsewhere.web.site_style import Look, stylesheet
from elsewhere.web.site_words import compose, data

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
        words, kinds = data()
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
        css = stylesheet(self.rng, self.look, self.words["fonts"])
        out[self.style] = (css, self._when(start + DAY, start + (last - start) * 0.7))
        robots = self._when(start, start + 3 * DAY)
        out["robots.txt"] = (self._robots(robots), robots)
        out["favicon.ico"] = (favicon(rng), self._when(start, start + 5 * DAY))
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
        ctx["tagline"] = compose(self.rng, rng.choice(self.kind["taglines"])).format_map(ctx)
        first_year, last_year = time.gmtime(self.start).tm_year, time.gmtime(self.last).tm_year
        ctx["years"] = (
            f"{first_year}&ndash;{last_year}"
            if last_year > first_year and rng.random() < 0.7
            else str(rng.choice([first_year, last_year]))
        )
        return ctx

    def _text(self, template: str) -> str:
        """A plain-text template composed, filled in and escaped for HTML."""
        return html.escape(compose(self.rng, template).format_map(self.ctx), quote=False)

    def _markup(self, template: str) -> str:
        """An HTML template composed and filled in with escaped values."""
        return compose(self.rng, template).format_map(
            {k: v if k == "years" else html.escape(v) for k, v in self.ctx.items()}
        )
    def _look(self) -> Look:
        rng = self.rng

        def pick(*options: str) -> str:
            return rng.choice(options)

        tag = rng.random() < 0.7  # HTML5 elements rather than divs with ids
        return Look(
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
            compose(self.rng, template)
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


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
