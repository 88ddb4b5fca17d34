"""The error classifier against the contract's table, and its promise to be total.

Every example in DESIGN.md's "Reconciliation and error classes" table is written out here
from the contract (not from the code's table), so a rule dropped or misspelt in the
shipped table fails here. Property tests feed arbitrary codes and messages (NULL, any
language, control characters, megabytes) and require an answer inside the vocabulary,
which is what keeps the ``error_class`` label bounded.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.classification import (
    ERROR_CLASSES,
    HEALS_BY_ITSELF,
    NEEDS_ACTION,
    Classifier,
    parse_rules,
)

CONTRACT_CODES = [
    ("Authentication_InvalidCredentials", "auth"),
    ("AADSTS7000222", "auth"),
    ("AADSTS700082", "auth"),
    ("AADSTS7000215", "auth"),
    ("401", "auth"),
    ("Authorization_PermissionMissing", "permission"),
    ("Authorization_NoReadPermission", "permission"),
    ("403", "permission"),
    ("Application_FieldValidationException", "validation"),
    ("Application_StringExceededLength", "validation"),
    ("BadRequest_RequiredParamNotProvided", "validation"),
    ("Internal_InvalidTableRelation", "validation"),
    ("INVALID_VALUE", "validation"),
    ("Internal_EntityWithSameKeyExists", "duplicate"),
    ("429", "throttled"),
    ("BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "throttled"),
    ("BAD_REQUEST.CONCURRENCY_LIMIT_REACHED", "throttled"),
    ("BAD_REQUEST.INSUFFICIENT_CREDITS", "throttled"),
    ("504", "timeout"),
    ("Request_EntityChanged", "conflict"),
    ("Internal_TenantUnavailable", "unavailable"),
    ("Internal_ServerError", "unavailable"),
    ("502", "unavailable"),
    ("503", "unavailable"),
]
CONTRACT_MESSAGES = [
    ("Error: bad format for api token", "auth"),
    (
        "AADSTS7000222: The provided client secret keys for app '3f1c' are expired.",
        "auth",
    ),
    (
        "The Posting Date is not within your range of allowed posting dates in "
        "General Journal Line Journal Template Name='GENERELT'",
        "period_closed",
    ),
    ("You may not enter numbers manually. Journal line 10000", "duplicate"),
    ("Your query timed out", "timeout"),
]
CLASSIFY = Classifier()


@pytest.mark.parametrize(("code", "expected"), CONTRACT_CODES)
def test_every_code_in_the_contract_classifies_as_its_class(code: str, expected: str) -> None:
    assert CLASSIFY.classify(code, "something went wrong") == expected


@pytest.mark.parametrize(("message", "expected"), CONTRACT_MESSAGES)
def test_every_message_in_the_contract_classifies_without_a_code(
    message: str, expected: str
) -> None:
    assert CLASSIFY.classify(None, message) == expected
    assert CLASSIFY.classify("", message) == expected
    assert CLASSIFY.classify("XL-UNHEARD-OF", message) == expected  # unrecognised: falls through


def test_a_recognised_code_decides_over_the_message() -> None:
    assert CLASSIFY.classify("429", "bad format for api token") == "throttled"
    assert CLASSIFY.classify("Request_EntityChanged", "Your query timed out") == "conflict"


def test_codes_match_whatever_their_case_and_surrounding_space() -> None:
    assert CLASSIFY.classify("aadsts7000222", None) == "auth"
    assert CLASSIFY.classify("  bad_request.burst_rate_limit_reached\n", None) == "throttled"
    assert CLASSIFY.classify(429, None) == "throttled"  # a driver may hand over a number


def test_nothing_recognised_is_unknown() -> None:
    assert CLASSIFY.classify(None, None) == "unknown"
    assert CLASSIFY.classify("XL-422", "Account 6800 does not exist") == "unknown"
    assert CLASSIFY.classify("4290", "") == "unknown"  # exact codes are exact
    assert CLASSIFY.classify("X401", "") == "unknown"


def test_messages_in_any_language_and_case() -> None:
    assert CLASSIFY.classify(None, "YOUR QUERY TIMED OUT") == "timeout"
    assert CLASSIFY.classify(None, "Bokføringsdatoen er ikke tillatt: 北京 ∑") == "unknown"


def test_control_characters_fold_to_spaces_and_never_decide() -> None:
    assert CLASSIFY.classify("429\x00\x1b[31m", None) == "unknown"  # not the code 429
    assert CLASSIFY.classify("\x00429\x07", None) == "throttled"
    # A code of control characters alone is no code; a message broken over lines still reads.
    assert CLASSIFY.classify("\x00\x01\x02", "Your query\r\ntimed out\x00") == "timeout"


def test_a_megabyte_message_is_searched_only_near_its_start() -> None:
    huge = "Your query timed out. " + "x" * 1_000_000
    assert CLASSIFY.classify(None, huge) == "timeout"
    buried = "x" * 1_000_000 + " Your query timed out"
    assert CLASSIFY.classify(None, buried) == "unknown"
    assert CLASSIFY.classify("A" * 1_000_000, None) == "unknown"


def test_a_long_code_never_equals_a_rule_by_being_cut() -> None:
    rules = parse_rules([{"class": "auth", "code": "E" * 100}])
    assert Classifier(rules).classify("E" * 100, None) == "auth"
    assert Classifier(rules).classify("E" * 5000, None) == "unknown"


def test_the_heal_column_of_the_contract() -> None:
    assert {"auth", "permission", "period_closed", "validation", "duplicate"} == NEEDS_ACTION
    assert {"throttled", "timeout", "conflict", "unavailable"} == HEALS_BY_ITSELF
    assert set(ERROR_CLASSES) == NEEDS_ACTION | HEALS_BY_ITSELF | {"unknown"}


def test_operator_rules_go_ahead_of_the_shipped_table() -> None:
    classifier = Classifier(
        parse_rules(
            [
                {"class": "unavailable", "code": 429},
                {"class": "period_closed", "message": r"periode \d{4}-\d{2} er (lukket|sperret)"},
                {"class": "auth", "code": "ERP-*"},
            ]
        )
    )
    assert classifier.classify("429", None) == "unavailable"
    assert classifier.classify(None, "Periode 2026-11 er sperret") == "period_closed"
    assert classifier.classify("erp-token-expired", None) == "auth"
    assert classifier.classify("AADSTS7000222", None) == "auth"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ([{"class": "auth", "code": "A"}, {"class": "Auth", "code": "B"}], "rules[1].class"),
        ([{"code": "A"}], "rules[0].class"),
        ([{"class": "auth", "code": True}], "rules[0].code"),
        ([{"class": "auth", "code": "x" * 101}], "rules[0].code"),
        ([{"class": "auth", "code": "A\x00"}], "rules[0].code"),
        ([{"class": "auth", "message": ""}], "rules[0].message"),
        ([{"class": "auth", "message": "[z-a]"}], "rules[0].message"),
    ],
)
def test_a_bad_rule_names_its_dotted_key(raw: object, named: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_rules(raw)
    assert str(raised.value).startswith(f"classification.{named}"), raised.value


def test_no_rules_is_an_empty_list() -> None:
    assert parse_rules(None) == []
    assert parse_rules([]) == []


ANY_TEXT = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x9F)),  # control characters
    st.integers(),
    st.sampled_from([code for code, _ in CONTRACT_CODES]),
)


@settings(max_examples=300, deadline=None)
@given(code=ANY_TEXT, message=ANY_TEXT)
def test_any_code_and_message_classify_into_the_vocabulary(code: object, message: object) -> None:
    assert CLASSIFY.classify(code, message) in ERROR_CLASSES


@settings(max_examples=50, deadline=None)
@given(
    code=st.text(min_size=1, max_size=40).filter(lambda c: c.strip() and "*" not in c),
    error_class=st.sampled_from(ERROR_CLASSES),
    noise=st.text(max_size=20),
)
def test_an_operator_code_rule_decides_for_that_code(
    code: str, error_class: str, noise: str
) -> None:
    try:
        rules = parse_rules([{"class": error_class, "code": code}])
    except ValueError:
        return  # a code with control characters is refused, as tested above
    assert Classifier(rules).classify(code, noise) == error_class


def test_the_memo_stays_bounded_however_many_different_messages() -> None:
    classifier = Classifier()
    for n in range(Classifier.MEMO_LIMIT * 2 + 5):
        assert classifier.classify(None, f"failure number {n}") == "unknown"
    assert len(classifier._memo) <= Classifier.MEMO_LIMIT
