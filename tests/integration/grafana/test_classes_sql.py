"""The SQL panels classify errors exactly as the exporter does, on a real PostgreSQL.

The dashboards' ``CASE`` is generated from the exporter's table; this runs it over every
example the contract lists (and codes in other spellings, messages with control
characters, and failures nobody recognises) and compares each answer with
``Classifier().classify`` for the same input, so SQL and Python cannot drift apart.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from exporter.classification import BUILTIN_RULES, ERROR_CLASSES, Classifier
from grafana.classes import class_case, classify_join, postgres_regex

pytestmark = pytest.mark.postgres

# The contract's examples (DESIGN.md, "Reconciliation and error classes") and their class.
CONTRACT: list[tuple[str | None, str | None, str]] = [
    ("Authentication_InvalidCredentials", "Invalid credentials", "auth"),
    ("AADSTS7000222", "The provided client secret keys are expired", "auth"),
    ("AADSTS700082", "The refresh token has expired due to inactivity", "auth"),
    ("AADSTS7000215", "Invalid client secret provided", "auth"),
    (None, "Bad format for API token", "auth"),
    ("401", "Unauthorized", "auth"),
    ("Authorization_InsufficientPermissions", "You do not have permission", "permission"),
    ("403", "Forbidden", "permission"),
    (
        None,
        "The Posting Date is not within your range of allowed posting dates.",
        "period_closed",
    ),
    ("Application_FieldValidationException", "Field is required", "validation"),
    ("Application_StringExceededLength", "Too long", "validation"),
    ("BadRequest_RequiredParamNotProvided", "Missing parameter", "validation"),
    ("Internal_InvalidTableRelation", "No such account", "validation"),
    ("INVALID_VALUE", "Invalid value for field Amount", "validation"),
    ("Internal_EntityWithSameKeyExists", "Already exists", "duplicate"),
    (None, "You may not enter numbers manually. Set Manual Nos.", "duplicate"),
    ("429", "Too Many Requests", "throttled"),
    ("BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "Slow down", "throttled"),
    ("BAD_REQUEST.CONCURRENCY_LIMIT_REACHED", "Too many at once", "throttled"),
    ("BAD_REQUEST.INSUFFICIENT_CREDITS", "No credits left", "throttled"),
    ("504", "Gateway Timeout", "timeout"),
    (None, "Your query timed out", "timeout"),
    ("Request_EntityChanged", "Changed since read", "conflict"),
    ("Internal_TenantUnavailable", "Tenant unavailable", "unavailable"),
    ("Internal_ServerError", "Something broke", "unavailable"),
    ("502", "Bad Gateway", "unavailable"),
    ("503", "Service Unavailable", "unavailable"),
]

# Spelling and cleaning the exporter tolerates, and what neither a code nor a message matches.
VARIANTS: list[tuple[str | None, str | None]] = [
    ("aadsts7000222", None),
    ("  Internal_ServerError\t", None),
    ("authorization_whatever", None),
    ("Authorization", "no underscore: not the prefix"),
    ("AuthorizationXRead", "an underscore in the prefix is not a wildcard"),
    ("E_UNHEARD_OF", "Your query timed out after 30 s"),  # unknown code: the message decides
    ("401", "Your query timed out"),  # a known code wins over the message
    (None, "Error AADSTS7000222: secret expired"),
    (None, "xAADSTS7000222: not a word on its own"),
    (None, "bad\tformat\nfor api token"),  # control characters are spaces
    (None, "YOUR QUERY TIMED OUT"),
    ("", ""),
    (None, None),
    ("E42", "Something nobody has seen"),
    ("%", "100% wrong"),
    ("4290", "Four thousand two hundred ninety"),
    ("O'Brien", "it's quoted"),
    (None, "x" * 5000 + " your query timed out"),  # past where the exporter stops looking
]


def sql_classes(engine: Engine, inputs: list[tuple[str | None, str | None]]) -> list[str]:
    values = ", ".join(
        f"(CAST(:c{i} AS text), CAST(:m{i} AS text), {i})" for i in range(len(inputs))
    )
    params = {}
    for i, (code, message) in enumerate(inputs):
        params[f"c{i}"], params[f"m{i}"] = code, message
    sql = (
        "SELECT e.i, c.error_class\n"
        f"FROM (VALUES {values}) AS e(error_code, error_message, i)\n"
        f"{classify_join('e.error_code', 'e.error_message')}\n"
        "ORDER BY e.i"
    )
    with engine.connect() as connection:
        return [row.error_class for row in connection.execute(text(sql), params)]


def test_the_contract_examples_get_their_class_in_sql_and_in_python(pg_admin):
    inputs = [(code, message) for code, message, _ in CONTRACT]
    expected = [error_class for *_, error_class in CONTRACT]
    classifier = Classifier()
    assert [classifier.classify(c, m) for c, m in inputs] == expected
    assert sql_classes(pg_admin, inputs) == expected


def test_sql_and_python_agree_on_every_rule_spelling_and_unknowns(pg_admin):
    classifier = Classifier()
    inputs = list(VARIANTS)
    for rule in BUILTIN_RULES:
        if rule.code is not None:
            code = rule.code.removesuffix("*") + ("Read" if rule.code.endswith("*") else "")
            inputs += [(code, None), (code.upper(), "any message"), (f" {code} ", None)]
    found = sql_classes(pg_admin, inputs)
    expected = [classifier.classify(code, message) for code, message in inputs]
    assert found == expected
    assert set(found) <= set(ERROR_CLASSES)
    assert "unknown" in found


def test_every_message_rule_is_exercised_by_an_example():
    messages = [m for _, m, _ in CONTRACT if m] + [m for _, m in VARIANTS if m]
    for rule in BUILTIN_RULES:
        if rule.message is not None:
            assert any(rule.message.search(m) for m in messages), rule.message.pattern


def test_patterns_without_a_postgresql_equivalent_are_refused_not_mistranslated():
    assert postgres_regex(r"\bAADSTS\d+\b") == r"\yAADSTS\d+\y"
    for pattern in (r"(?P<code>\d+)", r"(a)\1", r"(?<=x)y", r"end$x", r"\Astart"):
        with pytest.raises(ValueError):
            postgres_regex(pattern)


def test_the_case_expression_has_a_branch_per_rule_and_falls_back_to_unknown():
    case = class_case("code", "message", "lower(message)")
    assert case.count("WHEN") == len(BUILTIN_RULES)
    assert "ELSE 'unknown'" in case
