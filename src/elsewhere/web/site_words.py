"""The decoy site's words: its texts are public package data (data/site/words.json, kinds.json),
so each is a template with a choice every few words, composed anew for each site, so that no
sentence a censor reads on one server finds the others in a full-text index of web pages."""

from __future__ import annotations

import functools
import json
import random
import re
from importlib import resources
from typing import Any

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
    for group in data()[0]["swap"]:
        for phrase in group:
            swap[phrase.lower()] = group
    phrases = sorted(swap, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w'-])(?:" + "|".join(map(re.escape, phrases)) + r")(?![\w'-])", re.I
    )
    return swap, pattern


@functools.lru_cache(maxsize=1)
def data() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    root = resources.files("elsewhere") / "data" / "site"
    return (
        json.loads((root / "words.json").read_text("utf-8")),
        json.loads((root / "kinds.json").read_text("utf-8")),
    )


def compose(rng: random.Random, template: str) -> str:
    """One wording of a template: each `[a|b|c]` becomes one of its options (innermost
    first; an empty option makes a clause optional), each `<<a|b|c>>` a list of its items
    in any order ("b, c and a"), then each phrase of the thesaurus
    (data/site/words.json "swap") becomes any phrase of its group. The texts are in our
    public source, so a sentence copied verbatim would let a full-text search of HTTP
    bodies find every server: with a choice every few words, no run of eight words is
    likely to recur on another server. `{slots}` are left for format_map."""
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
