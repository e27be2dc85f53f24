"""Which topic an interaction belongs to: a tenant's ordered rules, first match wins.

Rules arrive as JSON (a dict) from the database or the YAML config. `Rule.parse`
validates and compiles one once; the router caches the result and calls
`choose_topic` for every inbound interaction, so matching costs a few cheap
comparisons and at most one regex search per keyword rule. No I/O here.

Keywords are matched on folded text: Unicode NFKD, accents dropped, casefolded,
whole words only. Scripts written without spaces between words (Chinese,
Japanese, Korean, Thai, Lao, Khmer, Myanmar) have no word boundaries to look
for, so a keyword edge made of such a character matches as a substring.
"""

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from shared.events import Author, InteractionReceived, Kind, Platform

PRIORITIES = ("low", "normal", "high", "urgent")  # ascending

_PLATFORMS = frozenset(p.value for p in Platform)
_KINDS = frozenset(k.value for k in Kind)
_Search = Callable[[str], re.Match[str] | None]
_LANGUAGE_TAG = re.compile(r"[a-z]{2,8}(?:[-_][a-z0-9]{1,8})*", re.IGNORECASE)


class RuleError(ValueError):
    """A rule that cannot be used; the message starts with the offending key."""


# Only the generic diacritic blocks (the accents NFKD splits off Latin, Greek and
# Cyrillic letters) and emoji variation selectors are dropped. Script-specific
# marks stay: a Japanese voicing mark, a Thai tone mark or a Devanagari virama
# changes the word, so dropping them would make different words match.
_DROPPED_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\ufe00-\ufe0f\ufe20-\ufe2f]+")


def _char_class(codepoints: Iterable[int]) -> str:
    """A regex character class body (without brackets) for the given code points, as ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(codepoints):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


# Python's \w leaves out combining marks, yet the vowel signs of Indic scripts sit
# inside words; a word character is \w or a mark. Above U+1FFFF only the
# variation selectors supplement holds marks, so the scan stops there (a few ms).
_MARKS = _char_class(
    [cp for cp in range(0x20000) if unicodedata.category(chr(cp)).startswith("M")]
    + list(range(0xE0100, 0xE01F0))
)
_WORD_CLASS = rf"[\w{_MARKS}]"
_WORD_CHAR = re.compile(_WORD_CLASS)

_SCRIPTIO_CONTINUA = re.compile(
    "["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u2e80-\u2fdf"  # CJK radicals
    "\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff"  # CJK marks, kana, Hangul compatibility jamo
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK ideographs
    "\ua960-\ua97f\uac00-\ud7ff"  # Hangul
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003ffff"  # CJK ideographs, planes 2 and 3
    "]"
)


def fold(text: str) -> str:
    """Text as keywords see it: NFKD, generic accents dropped, casefolded, recomposed."""
    if text.isascii():
        return text.lower()
    stripped = _DROPPED_MARKS.sub("", unicodedata.normalize("NFKD", text))
    # NFC puts back what NFKD split but we kept: Hangul syllables, kana with voicing marks.
    return unicodedata.normalize("NFC", stripped.casefold())


def _keyword_regex(folded: str) -> str:
    """One keyword as a regex on folded text: a whole word or phrase, any whitespace between words."""
    words = folded.split()
    first, last = re.escape(words[0][0]), words[-1][-1]
    body = first
    if _needs_boundary(words[0][0]):
        # The boundary check comes after the first character, not before it: a pattern
        # that starts with a literal lets `re` skip ahead to candidate positions,
        # which makes the search about twenty times faster on a typical post.
        body += rf"(?<!{_WORD_CLASS}{first})"
    body += re.escape(words[0][1:]) + "".join(r"\s+" + re.escape(word) for word in words[1:])
    if _needs_boundary(last):
        body += rf"(?!{_WORD_CLASS})"
    return body


def _needs_boundary(edge: str) -> bool:
    return bool(_WORD_CHAR.match(edge)) and not _SCRIPTIO_CONTINUA.match(edge)


def _primary_subtag(language: str) -> str:
    return language.replace("_", "-").split("-", 1)[0].lower()


@dataclass(frozen=True)
class Facts:
    """What a rule looks at, taken from one inbound interaction."""

    platform: str
    account_id: str
    kind: str
    text: str
    language: str | None
    followers: int | None
    verified: bool
    vip: bool

    @classmethod
    def of(cls, ix: InteractionReceived, *, vip: bool) -> "Facts":
        return cls(
            platform=ix.platform.value,
            account_id=ix.account_id,
            kind=ix.kind.value,
            text=ix.text,
            language=ix.language,
            followers=ix.author.followers,
            verified=ix.author.verified,
            vip=vip,
        )

    @cached_property
    def folded_text(self) -> str:
        """The text folded for keyword matching, computed once and only if a keyword rule asks."""
        return fold(self.text)


_SET_KEYS = ("platforms", "accounts", "kinds", "languages")
_TUPLE_KEYS = ("keywords", "patterns")
_BOOL_KEYS = ("verified", "vip")
_KEYS = (*_SET_KEYS, *_TUPLE_KEYS, "min_followers", *_BOOL_KEYS)


@dataclass(frozen=True, slots=True)
class Rule:
    """When a topic applies: every criterion that is set must hold; within one, any value may.

    An empty rule matches everything. Construction validates and compiles, so a
    Rule that exists can be matched.
    """

    platforms: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    languages: frozenset[str] = frozenset()
    min_followers: int | None = None
    verified: bool | None = None
    vip: bool | None = None

    _keyword_search: _Search | None = field(init=False, repr=False, compare=False, default=None)
    _pattern_searches: tuple[_Search, ...] = field(init=False, repr=False, compare=False, default=())
    _language_keys: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        _check_members("platforms", self.platforms, _PLATFORMS)
        _check_members("kinds", self.kinds, _KINDS)
        if "" in self.accounts:
            raise RuleError("accounts: an account id must not be empty")
        for language in sorted(self.languages):
            if not _LANGUAGE_TAG.fullmatch(language):
                raise RuleError(f"languages: {language!r} is not a language code such as 'de' or 'de-AT'")
        if self.min_followers is not None and self.min_followers < 0:
            raise RuleError(f"min_followers: must be 0 or more, got {self.min_followers}")

        alternatives = []
        for i, keyword in enumerate(self.keywords):
            folded = fold(keyword)
            if not folded.strip():
                raise RuleError(f"keywords[{i}]: a keyword must not be empty")
            alternatives.append(_keyword_regex(folded))
        searches = []
        for i, pattern in enumerate(self.patterns):
            if not pattern:
                raise RuleError(f"patterns[{i}]: an empty pattern would match every text")
            try:
                searches.append(re.compile(pattern, re.IGNORECASE).search)
            except re.error as error:
                raise RuleError(f"patterns[{i}]: invalid regular expression: {error}") from None

        keyword_search = re.compile("|".join(alternatives)).search if alternatives else None
        object.__setattr__(self, "_keyword_search", keyword_search)
        object.__setattr__(self, "_pattern_searches", tuple(searches))
        object.__setattr__(self, "_language_keys", frozenset(map(_primary_subtag, self.languages)))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "Rule":
        """A rule from its JSON form; RuleError names the first bad key. A null value means unset."""
        if not isinstance(raw, Mapping):
            raise RuleError(f"rule: expected a mapping of criteria, got {type(raw).__name__}")
        for key in raw:
            if key not in _KEYS:
                raise RuleError(f"{key}: unknown key; expected one of {', '.join(_KEYS)}")
        values: dict[str, Any] = {}
        for key in _SET_KEYS:
            if raw.get(key) is not None:
                values[key] = frozenset(_strings(key, raw[key]))
        for key in _TUPLE_KEYS:
            if raw.get(key) is not None:
                values[key] = tuple(_strings(key, raw[key]))
        min_followers = raw.get("min_followers")
        if min_followers is not None:
            if isinstance(min_followers, bool) or not isinstance(min_followers, int):
                raise RuleError(f"min_followers: expected a whole number, got {min_followers!r}")
            values["min_followers"] = min_followers
        for key in _BOOL_KEYS:
            value = raw.get(key)
            if value is not None:
                if not isinstance(value, bool):
                    raise RuleError(f"{key}: expected true or false, got {value!r}")
                values[key] = value
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON form `parse` reads: only the criteria that are set; sets as sorted lists."""
        out: dict[str, Any] = {}
        for key in _SET_KEYS:
            if value := getattr(self, key):
                out[key] = sorted(value)
        for key in _TUPLE_KEYS:
            if value := getattr(self, key):
                out[key] = list(value)
        for key in ("min_followers", *_BOOL_KEYS):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out

    def matches(self, facts: Facts) -> bool:
        """True when every criterion that is set holds for these facts."""
        # Cheapest tests first; the keyword and pattern searches run last and at most once each.
        if self.platforms and facts.platform not in self.platforms:
            return False
        if self.accounts and facts.account_id not in self.accounts:
            return False
        if self.kinds and facts.kind not in self.kinds:
            return False
        if self.verified is not None and facts.verified is not self.verified:
            return False
        if self.vip is not None and facts.vip is not self.vip:
            return False
        if self.min_followers is not None and (
            facts.followers is None or facts.followers < self.min_followers
        ):
            return False
        if self._language_keys and (
            facts.language is None or _primary_subtag(facts.language) not in self._language_keys
        ):
            return False
        if self._keyword_search is not None and self._keyword_search(facts.folded_text) is None:
            return False
        return not self._pattern_searches or any(search(facts.text) for search in self._pattern_searches)


def _strings(key: str, value: Any) -> list[str]:
    # A bare string is refused: iterating "refund" would make six one-letter keywords.
    if not isinstance(value, list | tuple):
        raise RuleError(f"{key}: expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RuleError(f"{key}[{i}]: expected a string, got {type(item).__name__}")
    return list(value)


def _check_members(key: str, values: frozenset[str], known: frozenset[str]) -> None:
    if unknown := values - known:
        raise RuleError(
            f"{key}: unknown {', '.join(sorted(unknown))}; expected any of {', '.join(sorted(known))}"
        )


def is_vip(author: Author, vip_list: frozenset[str]) -> bool:
    """Whether the author is on the VIP list, which holds author ids or handles (any case, "@" optional)."""
    if author.id in vip_list:
        return True
    handle = _handle_key(author.handle)
    return bool(handle) and handle in _handle_keys(vip_list)


def _handle_key(handle: str) -> str:
    return handle.strip().removeprefix("@").casefold()


@lru_cache(maxsize=256)
def _handle_keys(vip_list: frozenset[str]) -> frozenset[str]:
    # One tenant's list is the same frozenset for many interactions; fold it once, not per call.
    return frozenset(key for key in map(_handle_key, vip_list) if key)


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    rule: Rule
    team_id: str | None
    priority: str  # one of PRIORITIES
    sla_policy_id: str | None
    no_sla: bool = False
    skills: frozenset[str] = frozenset()
    is_default: bool = False

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(
                f"topic {self.name}: priority {self.priority!r} is not one of {', '.join(PRIORITIES)}"
            )


def choose_topic(topics: Sequence[Topic], facts: Facts) -> Topic | None:
    """The first non-default topic whose rule matches, else the default topic, else None.

    The default topic is the fallback wherever it sits in the list; its rule is not consulted.
    """
    default = None
    for topic in topics:
        if topic.is_default:
            if default is None:
                default = topic
        elif topic.rule.matches(facts):
            return topic
    return default


def bump_priority(priority: str, levels: int) -> str:
    """`priority` moved up `levels` steps, capped at "urgent"; zero or fewer leaves it."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
    index = PRIORITIES.index(priority)
    return PRIORITIES[min(index + max(levels, 0), len(PRIORITIES) - 1)]
