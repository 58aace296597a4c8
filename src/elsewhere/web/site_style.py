"""How a decoy site looks: its author's habits in HTML and CSS (Look) and its stylesheet, drawn
from the site's random source so that no two servers share a file, size or ETag."""

from __future__ import annotations

import colorsys
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Look:
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


def stylesheet(rng: random.Random, look: Look, fonts: Sequence[str]) -> bytes:
    """The site's one stylesheet: colours, widths and rules in this author's manner."""
    c = look.classes
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
        _selector(look.header),
        _selector(look.main),
        _selector(look.footer),
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
                    ("font-family", rng.choice(fonts)),
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
            "nav a" if not look.nav_list else "nav li",
            [
                ("margin-right", f"{rng.choice((0.75, 1, 1.25, 1.5))}rem"),
                *([("display", "inline-block")] if look.nav_list else []),
            ],
        ),
        *(
            [("nav ul", [("list-style", "none"), ("margin", "0"), ("padding", "0")])]
            if look.nav_list
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
            look.heading,
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
