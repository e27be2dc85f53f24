"""The language of a message, when the platform does not say (py3langid: model in the package)."""

import re

import py3langid

_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_MENTIONS = re.compile(r"[@#]\S+|https?://\S+")


def detect_language(text: str) -> str | None:
    """An ISO 639-1 code, or None when there is too little text to tell."""
    words = _MENTIONS.sub(" ", text)
    if len(_LETTERS.findall(words)) < 8:
        return None
    language, _score = py3langid.classify(words)
    return str(language)


def warm_up() -> None:
    """Load the model at start, not on the first webhook."""
    detect_language("warming up the language model")
