"""Plain text out of the HTML that some platforms (Mastodon) send."""

import html
import re

# `[^<>]`, not `[^>]`: a text of unclosed `<` would make every match scan to its end (quadratic)
_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]+>")


def html_to_text(markup: str) -> str:
    text = _BREAK.sub("\n", markup)
    return html.unescape(_TAG.sub("", text)).strip()
