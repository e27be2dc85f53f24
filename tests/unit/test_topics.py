# Multilingual text is the point of these tests, Cyrillic and Greek letters included.
# ruff: noqa: RUF001
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router.topics import (
    Facts,
    Rule,
    RuleError,
    Topic,
    bump_priority,
    choose_topic,
    is_vip,
)
from shared.events import Author, Direction, InteractionReceived, Kind, Platform
from tests.fuzz import properties

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

FACTS = Facts(
    platform="facebook",
    account_id="acme-fb",
    kind="comment",
    text="Where is my refund?",
    language="en",
    followers=500,
    verified=False,
    vip=False,
)


def facts(**changes: Any) -> Facts:
    return replace(FACTS, **changes)


def topic(name: str, rule: Rule | None = None, *, is_default: bool = False) -> Topic:
    return Topic(
        name=name,
        rule=rule or Rule(),
        team_id=f"team-{name}",
        priority="normal",
        sla_policy_id=None,
        is_default=is_default,
    )


def keyword_matches(keyword: str, text: str) -> bool:
    return Rule(keywords=(keyword,)).matches(facts(text=text))


# Each criterion alone


def test_empty_rule_matches_everything() -> None:
    assert Rule().matches(FACTS)
    assert Rule().matches(facts(text="", language=None, followers=None))


@pytest.mark.parametrize(
    ("rule", "match", "miss"),
    [
        (Rule(platforms=frozenset({"facebook"})), {}, {"platform": "x"}),
        (Rule(accounts=frozenset({"acme-fb"})), {}, {"account_id": "acme-ig"}),
        (Rule(kinds=frozenset({"comment"})), {}, {"kind": "dm"}),
        (Rule(languages=frozenset({"en"})), {}, {"language": "fr"}),
        (Rule(languages=frozenset({"en"})), {}, {"language": None}),
        (Rule(min_followers=500), {}, {"followers": 499}),
        (Rule(min_followers=0), {}, {"followers": None}),
        (Rule(verified=True), {"verified": True}, {}),
        (Rule(verified=False), {}, {"verified": True}),
        (Rule(vip=True), {"vip": True}, {}),
        (Rule(vip=False), {}, {"vip": True}),
        (Rule(keywords=("refund",)), {}, {"text": "Where is my order?"}),
        (Rule(patterns=(r"order #\d+",)), {"text": "ORDER #123 is late"}, {"text": "order #abc"}),
    ],
)
def test_each_criterion_alone(rule: Rule, match: dict[str, Any], miss: dict[str, Any]) -> None:
    assert rule.matches(facts(**match))
    assert not rule.matches(facts(**miss))


def test_all_set_criteria_must_hold() -> None:
    rule = Rule(platforms=frozenset({"facebook"}), kinds=frozenset({"dm"}), keywords=("refund",))
    assert rule.matches(facts(kind="dm"))
    assert not rule.matches(facts(kind="comment"))
    assert not rule.matches(facts(kind="dm", platform="x"))
    assert not rule.matches(facts(kind="dm", text="Where is my order?"))


def test_any_value_within_one_criterion_may_match() -> None:
    rule = Rule(platforms=frozenset({"x", "bluesky"}), keywords=("refund", "money back"))
    assert rule.matches(facts(platform="bluesky", text="I want my money back"))
    assert rule.matches(facts(platform="x", text="refund please"))
    assert not rule.matches(facts(platform="facebook", text="refund please"))
    assert not rule.matches(facts(platform="x", text="thanks!"))
    patterns = Rule(patterns=(r"\bcancel", r"order #\d+"))
    assert patterns.matches(facts(text="re order #42"))
    assert not patterns.matches(facts(text="re order #x"))


def test_language_compares_the_primary_subtag_in_any_case() -> None:
    assert Rule(languages=frozenset({"de"})).matches(facts(language="de-AT"))
    assert Rule(languages=frozenset({"DE"})).matches(facts(language="de_ch"))
    assert Rule(languages=frozenset({"de-AT"})).matches(facts(language="de"))
    assert not Rule(languages=frozenset({"de"})).matches(facts(language="den"))


def test_patterns_search_the_original_text_ignoring_case() -> None:
    # Patterns see accents: they are for people who want exact control.
    assert Rule(patterns=(r"café",)).matches(facts(text="CAFÉ au lait"))
    assert not Rule(patterns=(r"café",)).matches(facts(text="cafe au lait"))
    assert Rule(patterns=(r"^where",)).matches(FACTS)
    assert not Rule(patterns=(r"^refund",)).matches(FACTS)


# Keywords


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("refund", "Refund!"),
        ("refund", "I want a REFUND, now"),
        ("café", "CAFE"),
        ("cafe", "Café"),
        ("CAFÉ", "café"),
        ("money back", "I want my money   back"),
        ("money back", "money\n\tback"),
        ("money back", "Money\u00a0Back!"),
        ("Rückerstattung", "bitte ruckerstattung"),
        ("ruckerstattung", "Ihre RÜCKERSTATTUNG?"),
        ("возврат", "Хочу ВОЗВРАТ!"),
        ("καφές", "ΚΑΦΕΣ τώρα"),
        ("straße", "STRASSE"),
        ("#refund", "x #Refund y"),
        ("c++", "I love C++!"),
    ],
)
def test_keyword_matches_whole_words_ignoring_case_and_accents(keyword: str, text: str) -> None:
    assert keyword_matches(keyword, text)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("refund", "REFUNDS?"),
        ("refund", "nonrefundable"),
        ("refund", "refund_id"),
        ("money back", "moneyback"),
        ("money back", "money-back guarantee"),
        ("Rückerstattung", "Rückerstattungen"),
        ("возврат", "возврата"),
        ("#refund", "#refunds"),
        ("a.b", "axb"),
    ],
)
def test_keyword_does_not_match_inside_other_words(keyword: str, text: str) -> None:
    assert not keyword_matches(keyword, text)


def test_keyword_in_hindi_respects_vowel_signs_as_part_of_the_word() -> None:
    # Python's \w excludes combining marks; the matcher counts them as word characters.
    assert keyword_matches("किताब", "मेरी किताब कहाँ है")
    assert not keyword_matches("क", "किताब")


def test_keyword_in_scripts_without_spaces_matches_as_substring() -> None:
    # Japanese, Chinese, Korean and Thai write words without spaces between them,
    # so a keyword made of their characters cannot wait for a word boundary.
    assert keyword_matches("返金", "返金してください")
    assert keyword_matches("退款", "我要退款谢谢")
    assert keyword_matches("환불", "환불해주세요")
    assert keyword_matches("คืนเงิน", "ขอคืนเงินด้วยครับ")
    assert not keyword_matches("返金", "返品してください")


def test_keyword_boundary_is_decided_per_edge() -> None:
    assert keyword_matches("iphone修理", "iPhone修理をお願いします")
    assert not keyword_matches("iphone修理", "xiphone修理")


def test_japanese_voicing_marks_are_not_accents() -> None:
    # ガス (gas) and カス (dregs) differ only by the voicing mark.
    assert not keyword_matches("ガス", "カスです")
    assert keyword_matches("ｶﾞｽ", "ガスです")  # half-width katakana folds to full width
    assert not keyword_matches("화", "환불")  # a Korean syllable is not split into its letters


def test_emoji_keyword_matches_without_word_boundaries() -> None:
    assert keyword_matches("🔥", "this is🔥🔥🔥")
    assert keyword_matches("❤️", "I ❤ it")  # with and without the emoji variation selector
    assert keyword_matches("❤", "I ❤️ it")
    assert not keyword_matches("🔥", "this is fine")


# Topics


def test_first_matching_topic_wins_in_order() -> None:
    refunds = topic("refunds", Rule(keywords=("refund",)))
    facebook = topic("facebook", Rule(platforms=frozenset({"facebook"})))
    assert choose_topic([refunds, facebook], FACTS) is refunds
    assert choose_topic([facebook, refunds], FACTS) is facebook
    assert choose_topic([refunds, facebook], facts(text="hello")) is facebook


def test_default_topic_is_chosen_last_wherever_it_is_listed() -> None:
    default = topic("general", is_default=True)
    refunds = topic("refunds", Rule(keywords=("refund",)))
    assert choose_topic([default, refunds], FACTS) is refunds
    assert choose_topic([default, refunds], facts(text="hello")) is default


def test_no_match_and_no_default_gives_none() -> None:
    refunds = topic("refunds", Rule(keywords=("refund",)))
    assert choose_topic([refunds], facts(text="hello")) is None
    assert choose_topic([], FACTS) is None


def test_topic_refuses_an_unknown_priority() -> None:
    with pytest.raises(ValueError, match="priority"):
        Topic(name="t", rule=Rule(), team_id=None, priority="critical", sla_policy_id=None)


@pytest.mark.parametrize(
    ("priority", "levels", "expected"),
    [
        ("low", 1, "normal"),
        ("low", 2, "high"),
        ("normal", 0, "normal"),
        ("normal", -3, "normal"),
        ("high", 1, "urgent"),
        ("high", 5, "urgent"),
        ("urgent", 1, "urgent"),
    ],
)
def test_bump_priority_moves_up_and_caps_at_urgent(priority: str, levels: int, expected: str) -> None:
    assert bump_priority(priority, levels) == expected


def test_bump_priority_refuses_an_unknown_priority() -> None:
    with pytest.raises(ValueError, match="critical"):
        bump_priority("critical", 1)


# Facts and VIPs


def test_facts_of_an_interaction() -> None:
    ix = InteractionReceived(
        tenant_id="acme",
        interaction_id="ix-1",
        account_id="acme-x",
        platform=Platform.x,
        external_id="e-1",
        kind=Kind.mention,
        direction=Direction.inbound,
        thread_id="th-1",
        author=Author(id="u-1", handle="maria", followers=1200, verified=True),
        text="Café closed?",
        language="fr-CA",
        created_at=T0,
        received_at=T0,
    )
    assert Facts.of(ix, vip=True) == Facts(
        platform="x",
        account_id="acme-x",
        kind="mention",
        text="Café closed?",
        language="fr-CA",
        followers=1200,
        verified=True,
        vip=True,
    )
    assert Facts.of(ix, vip=True).folded_text == "cafe closed?"


@pytest.mark.parametrize(
    ("vip_list", "expected"),
    [
        (frozenset({"u-1"}), True),
        (frozenset({"maria"}), True),
        (frozenset({"@Maria"}), True),
        (frozenset({"MARIA"}), True),
        (frozenset({"U-1"}), False),  # ids are exact
        (frozenset({"mario", "u-2"}), False),
        (frozenset(), False),
    ],
)
def test_vip_by_id_or_by_handle(vip_list: frozenset[str], expected: bool) -> None:
    assert is_vip(Author(id="u-1", handle="@maria"), vip_list) is expected


def test_author_without_handle_is_not_vip_by_an_empty_entry() -> None:
    assert not is_vip(Author(id="u-1"), frozenset({"@", ""}))


# Parsing


def test_parse_builds_the_rule() -> None:
    rule = Rule.parse(
        {
            "platforms": ["x", "facebook"],
            "kinds": ["dm"],
            "keywords": ["refund", "money back"],
            "min_followers": 1000,
            "verified": True,
            "vip": None,
        }
    )
    assert rule == Rule(
        platforms=frozenset({"x", "facebook"}),
        kinds=frozenset({"dm"}),
        keywords=("refund", "money back"),
        min_followers=1000,
        verified=True,
    )
    assert rule.matches(facts(kind="dm", followers=1000, verified=True))


def test_to_json_round_trips() -> None:
    raw = {
        "platforms": ["facebook", "x"],
        "accounts": ["acme-fb"],
        "kinds": ["comment", "dm"],
        "keywords": ["refund", "Geld zurück", "🔥"],
        "patterns": [r"order #\d+"],
        "languages": ["de", "en-GB"],
        "min_followers": 0,
        "verified": False,
        "vip": True,
    }
    rule = Rule.parse(raw)
    assert rule.to_json() == raw
    assert Rule.parse(rule.to_json()) == rule
    assert Rule().to_json() == {}
    assert Rule.parse({"kinds": ["dm", "comment"]}).to_json() == {"kinds": ["comment", "dm"]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"keyword": ["refund"]}, r"^keyword: unknown key"),
        ({"patterns": ["ok", "(unclosed"]}, r"^patterns\[1\]: invalid regular expression"),
        ({"patterns": [""]}, r"^patterns\[0\]: "),
        ({"min_followers": "many"}, r"^min_followers: expected a whole number"),
        ({"min_followers": True}, r"^min_followers: "),
        ({"min_followers": -1}, r"^min_followers: must be 0 or more"),
        ({"keywords": ["refund", ""]}, r"^keywords\[1\]: a keyword must not be empty"),
        ({"keywords": ["   "]}, r"^keywords\[0\]: "),
        ({"keywords": "refund"}, r"^keywords: expected a list of strings, got str"),
        ({"accounts": ["a", 7]}, r"^accounts\[1\]: expected a string"),
        ({"platforms": ["facebok"]}, r"^platforms: unknown facebok"),
        ({"kinds": ["post"]}, r"^kinds: unknown post"),
        ({"languages": ["german!"]}, r"^languages: "),
        ({"verified": "yes"}, r"^verified: expected true or false"),
        (["refund"], r"^rule: expected a mapping"),
    ],
)
def test_parse_errors_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        Rule.parse(raw)


# Property


_LETTERS = "abcdefghijklmnopqrstuvwxyzäöüéèçñßåøαβγδεζηθλμπσжзклмнпрст"
_ACCENTS = "\u0300\u0301\u0302\u0308\u030a\u030c\u0327"


@properties(200)
@given(
    words=st.lists(st.text(_LETTERS, min_size=1, max_size=8), min_size=1, max_size=12),
    separators=st.lists(st.sampled_from([" ", ", ", "! ", "\n", " (", ") "]), min_size=12, max_size=12),
    data=st.data(),
)
def test_keyword_from_the_text_matches_after_case_and_accent_changes(
    words: list[str], separators: list[str], data: st.DataObject
) -> None:
    text = "".join(word + sep for word, sep in zip(words, separators, strict=False))
    word = data.draw(st.sampled_from(words), label="word")
    upper = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)), label="upper")
    accents = data.draw(
        st.lists(st.sampled_from(["", *_ACCENTS]), min_size=len(word), max_size=len(word)), label="accents"
    )
    keyword = "".join(
        (char.upper() if up else char) + accent for char, up, accent in zip(word, upper, accents, strict=True)
    )
    keyword = unicodedata.normalize(data.draw(st.sampled_from(["NFC", "NFD"]), label="form"), keyword)
    assert Rule(keywords=(keyword,)).matches(facts(text=text))
