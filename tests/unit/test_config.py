"""Bad configuration and usage: exit code 2 and one line that names the culprit.

Every option can come from a flag, an environment variable or the YAML file; each way of
getting it wrong is tried here through the real command line (``serve --check-config``),
and the message must name the flag, variable or dotted key the user has to fix.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from exporter import config
from exporter.cli import main
from tests.support import EXPORTER, free_port

GOOD_URL = "sqlite:///synclog.db"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in config.OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["serve", "--check-config", *argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def assert_rejected(capsys, argv, *named: str) -> str:  # type: ignore[no-untyped-def]
    code, lines = check(capsys, *argv)
    assert code == 2, lines
    assert len(lines) == 1, lines
    for name in named:
        assert name in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    return lines[0]


FLAG_CASES = [
    (["--refresh-interval", "15"], "--refresh-interval"),
    (["--refresh-interval", "0s"], "--refresh-interval"),
    (["--refresh.debounce", "soon"], "--refresh.debounce"),
    (["--database.statement-timeout", "-1s"], "--database.statement-timeout"),
    (["--web.listen-address", "localhost"], "--web.listen-address"),
    (["--web.listen-address", ":99999"], "--web.listen-address"),
    (["--web.telemetry-path", "metrics"], "--web.telemetry-path"),
    (["--web.telemetry-path", "/healthz"], "--web.telemetry-path"),
    (["--web.config.file", "/nonexistent/web.yml"], "--web.config.file"),
    (["--database.password-file", "/nonexistent/pw"], "--database.password-file"),
    (["--refresh.notify", "maybe"], "--refresh.notify"),
    (["--log.level", "verbose"], "--log.level"),
    (["--log.format", "xml"], "--log.format"),
    (["--no-such-flag", "1"], "--no-such-flag"),
    (["--refresh-interval"], "--refresh-interval"),
]


@pytest.mark.parametrize(("argv", "named"), FLAG_CASES, ids=lambda v: " ".join(v))
def test_a_bad_flag_is_named(capsys, argv, named):
    assert_rejected(capsys, ["--database-url", GOOD_URL, *argv], named)


@pytest.mark.parametrize(
    "url", ["mysql://user@db/sync", "", "not a url at all"], ids=["mysql", "empty", "garbage"]
)
def test_a_bad_database_url_flag_is_named(capsys, url):
    assert_rejected(capsys, ["--database-url", url], "--database-url")


def test_a_missing_database_url_names_every_way_to_give_it(capsys):
    line = assert_rejected(capsys, [], "--database-url")
    assert "ACCOUNTING_SYNC_DATABASE_URL" in line and "database.url" in line


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ACCOUNTING_SYNC_REFRESH_INTERVAL", "soon"),
        ("ACCOUNTING_SYNC_DATABASE_STATEMENT_TIMEOUT", "0s"),
        ("ACCOUNTING_SYNC_WEB_LISTEN_ADDRESS", "nowhere"),
        ("ACCOUNTING_SYNC_REFRESH_NOTIFY", "perhaps"),
        ("ACCOUNTING_SYNC_LOG_LEVEL", "loud"),
        ("ACCOUNTING_SYNC_DATABASE_URL", "mysql://user@db/sync"),
    ],
)
def test_a_bad_environment_variable_is_named(capsys, monkeypatch, variable, raw):
    if variable != "ACCOUNTING_SYNC_DATABASE_URL":
        monkeypatch.setenv("ACCOUNTING_SYNC_DATABASE_URL", GOOD_URL)
    monkeypatch.setenv(variable, raw)
    line = assert_rejected(capsys, [], variable)
    assert "--" not in line.split(variable)[0].removeprefix("accounting-sync-exporter:")


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("refresh:\n  intervall: 15s\n", "refresh.intervall"),
        ("refresh:\n  interval: 15\n", "refresh.interval"),
        ("web:\n  listen_address: 9839\n", "web.listen_address"),
        ("database:\n  url: mysql://user@db/sync\n", "database.url"),
        ("database:\n  url: 5\n", "database.url"),
        ("database: postgresql://db/sync\n", "database"),
        ("log:\n  level: [info]\n", "log.level"),
        ("- a list\n", "top level"),
        ("refresh: {interval: 15s\n", "line"),
        ("scrape_interval: 15s\n", "scrape_interval"),
    ],
)
def test_a_bad_file_key_is_named_with_the_file(capsys, tmp_path, content, named):
    path = tmp_path / "exporter.yml"
    path.write_text(content)
    argv = ["--config", str(path)]
    if "database" not in content:
        argv += ["--database-url", GOOD_URL]
    assert_rejected(capsys, argv, named, str(path))


def test_an_unreadable_config_file_is_named(capsys, tmp_path):
    assert_rejected(capsys, ["--config", str(tmp_path / "missing.yml")], "--config")


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty"), (b"\n", "empty"), (b"\xff\xfe secret", "UTF-8")],
    ids=["empty", "newline", "binary"],
)
def test_a_bad_password_file_is_named_without_its_content(capsys, tmp_path, content, problem):
    secret = tmp_path / "password"
    secret.write_bytes(content)
    line = assert_rejected(
        capsys,
        [
            "--database-url",
            "postgresql://exporter@db/sync",
            "--database.password-file",
            str(secret),
        ],
        "--database.password-file",
        problem,
    )
    assert "secret" not in line.replace(str(secret), "")


def test_a_password_in_a_bad_url_is_not_shown(capsys):
    line = assert_rejected(capsys, ["--database-url", "mysql://user:hunter2@db/sync"], "mysql")
    assert "hunter2" not in line


def test_a_good_configuration_passes_the_check(capsys, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    path = tmp_path / "exporter.yml"
    path.write_text(
        "database:\n  url: postgresql://exporter@db/sync\n"
        f"  password_file: {secret}\n  statement_timeout: 2s\n"
        "web:\n  listen_address: ':9839'\n  telemetry_path: /m\n"
        "refresh:\n  interval: 30s\n  notify: false\n  debounce: 500ms\n"
        "log:\n  level: debug\n  format: json\n"
    )
    code, lines = check(capsys, "--config", str(path))
    assert code == 0, lines


def test_sources_override_each_other_defaults_file_environment_flags(tmp_path):
    path = tmp_path / "exporter.yml"
    path.write_text("refresh:\n  interval: 20s\nlog:\n  level: warn\n")
    env = {"ACCOUNTING_SYNC_REFRESH_INTERVAL": "30s", "ACCOUNTING_SYNC_LOG_FORMAT": "json"}
    flags = {"refresh.interval": "40s"}

    both = config.load(flags, str(path), env)
    assert (both.refresh_interval, both.log_level, both.log_format) == (40, "warn", "json")
    assert config.load({}, str(path), env).refresh_interval == 30
    assert config.load({}, str(path), {}).refresh_interval == 20
    nothing = config.load({}, None, {})
    assert (nothing.refresh_interval, nothing.log_level, nothing.log_format) == (
        15,
        "info",
        "logfmt",
    )


def test_a_bad_value_in_a_lower_source_is_ignored_when_a_higher_one_wins(tmp_path):
    """The user fixed it with a flag: the overridden value no longer stops the exporter."""
    path = tmp_path / "exporter.yml"
    path.write_text("refresh:\n  interval: soon\n")
    settings = config.load({"refresh.interval": "5s"}, str(path), {})
    assert settings.refresh_interval == 5


def test_the_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    """The same through a separate process, as an init system would see it."""
    path = tmp_path / "exporter.yml"
    path.write_text("refresh:\n  interval: 15s\n  jitter: 1s\n")
    result = subprocess.run(
        [
            *EXPORTER, "serve", "--config", str(path), "--database-url", GOOD_URL,
            "--web.listen-address", f"127.0.0.1:{free_port()}",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "refresh.jitter" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_success_and_starts_nothing(tmp_path):
    port = free_port()
    result = subprocess.run(
        [
            *EXPORTER, "serve", "--check-config", "--database-url", GOOD_URL,
            "--web.listen-address", f"127.0.0.1:{port}",
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert not Path(tmp_path / "synclog.db").exists()  # it did not even open the database


# --- one configuration story for every command (issue 14)

FLAG_CASES_14 = [
    # A value starting with a dash reaches the option's own check (not argparse's
    # "expected one argument"), which names the flag and shows the value.
    (["--refresh-interval", "-5s"], ("--refresh-interval", "-5s")),
    (["--database.statement-timeout", "-1s"], ("--database.statement-timeout", "-1s")),
    (["--refresh.debounce", "10m"], ("--refresh.debounce", "10m", "at most")),
]


@pytest.mark.parametrize(("argv", "named"), FLAG_CASES_14, ids=lambda v: " ".join(v))
def test_a_bad_value_is_named_with_what_was_typed(capsys, tmp_path, argv, named):
    (tmp_path / "synclog.db").touch()
    url = f"sqlite:///{tmp_path / 'synclog.db'}"
    assert_rejected(capsys, ["--database-url", url, *argv], *named)


def test_a_debounce_within_the_bound_is_accepted(tmp_path):
    settings = config.load({"refresh.debounce": "10s"}, environ={})
    assert settings.refresh_debounce == 10.0


@pytest.mark.parametrize(
    ("url", "shown", "hidden"),
    [
        ("notaurl", "'notaurl'", None),
        ("postgres:/alice:hunter2@db/sync", "postgres:/alice:***@db/sync", "hunter2"),
    ],
)
def test_an_unparseable_database_url_is_shown_as_typed_without_its_password(
    capsys, url, shown, hidden
):
    line = assert_rejected(capsys, ["--database-url", url], "--database-url", shown)
    assert "postgresql://" in line  # says what a URL looks like
    if hidden:
        assert hidden not in line


def test_the_dotted_spellings_are_aliases_of_the_contract_flags(tmp_path):
    args = cli_settings("serve", "--database.url", "sqlite:///a.db", "--refresh.interval", "7s")
    assert args.database_url == "sqlite:///a.db"
    assert args.refresh_interval == 7.0
    contract = cli_settings("serve", "--database-url", "sqlite:///b.db", "--refresh-interval", "8s")
    assert (contract.database_url, contract.refresh_interval) == ("sqlite:///b.db", 8.0)


def cli_settings(*argv: str) -> config.Settings:
    from exporter.cli import commands, serve

    return serve.settings_from(commands.build_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade"],
        ["db", "reader-role", "--role", "r"],
        ["db", "writer-role", "--role", "r"],
        ["db", "tenant-role", "--org", "o", "--role", "r"],
        ["demo"],
        ["alertmanager-config", "--base", "b", "--contacts", "c"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_command_takes_its_options_from_the_config_file(tmp_path, command):
    path = tmp_path / "exporter.yml"
    path.write_text("database:\n  password_file: /nonexistent/pw\nlog:\n  level: debug\n")
    from exporter.cli import commands

    args = commands.build_parser().parse_args([*command, "--config", str(path)])
    with pytest.raises(config.ConfigError) as bad:
        from exporter.cli import serve

        serve.settings_from(args)
    assert f"{path}: database.password_file" in str(bad.value)


def test_db_upgrade_reads_the_database_url_from_the_config_file(tmp_path):
    path = tmp_path / "exporter.yml"
    db = tmp_path / "from-config.db"
    path.write_text(f"database:\n  url: sqlite:///{db}\n")
    result = subprocess.run(
        [*EXPORTER, "db", "upgrade", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert db.is_file()
    # Alembic's dialect chatter is gone; what it migrated is still said.
    assert "Context impl" not in result.stderr and "Will assume" not in result.stderr
    assert "Running upgrade" in result.stderr


def test_a_misspelled_environment_variable_is_named_in_a_warning(tmp_path):
    (tmp_path / "synclog.db").touch()
    result = subprocess.run(
        [*EXPORTER, "db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'synclog.db'}"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "ACCOUNTING_SYNC_REFRESH_INTERVALL": "5s"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "level=warn" in line]
    assert len(warnings) == 1, result.stderr
    assert "ACCOUNTING_SYNC_REFRESH_INTERVALL" in warnings[0]
    assert "ACCOUNTING_SYNC_REFRESH_INTERVAL?" in warnings[0]  # the suggestion


def test_the_bare_command_prints_the_usage_line_and_exits_2():
    result = subprocess.run(EXPORTER, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: accounting-sync-exporter")
    assert "{serve,demo,db," in result.stderr
    assert result.stderr.splitlines()[-1].startswith("accounting-sync-exporter: error:")


def test_help_lists_the_log_choices_and_the_demo_shows_its_own_refresh_default():
    from exporter.cli import commands

    parser = commands.build_parser()
    serve_help = _help(parser, "serve")
    assert "{debug,info,warn,error}" in serve_help
    assert "{logfmt,json}" in serve_help
    assert "--database.url" in serve_help and "--refresh.interval" in serve_help
    demo_help = _help(parser, "demo")
    assert "(default: 2s)" in demo_help and "(default: 15s)" not in demo_help
    assert "never the environment" in demo_help


def _help(parser, command: str) -> str:  # type: ignore[no-untyped-def]
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    return " ".join(out.getvalue().split())


# --- classification.rules (YAML only) ---------------------------------------------------------

GOOD_RULES = (
    "classification:\n  rules:\n"
    "    - {class: auth, code: ERP-TOKEN}\n"
    "    - {class: period_closed, message: 'periode .* er lukket'}\n"
    "    - {class: throttled, code: 429}\n"
)


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        (
            "[{class: auth, code: A}, {class: auth, code: B}, {class: fatal, code: C}]",
            "rules[2].class",
        ),
        ("[{class: auth}]", "rules[0]"),
        ("[{class: auth, code: A, message: b}]", "rules[0]"),
        ("[{class: auth, message: '(unclosed'}]", "rules[0].message"),
        ("[{class: auth, code: ''}]", "rules[0].code"),
        ("[{class: auth, code: 'A*B'}]", "rules[0].code"),
        ("[{class: auth, code: A, severity: page}]", "rules[0].severity"),
        ("[auth]", "rules[0]"),
        ("{class: auth, code: A}", "classification.rules"),
        ("auth", "classification.rules"),
    ],
    ids=[
        "unknown-class",
        "neither",
        "both",
        "bad-regex",
        "empty-code",
        "inner-star",
        "unknown-key",
        "not-a-mapping",
        "a-mapping",
        "a-string",
    ],
)
def test_a_bad_classification_rule_is_named_by_its_dotted_key(capsys, tmp_path, rules, named):
    path = tmp_path / "exporter.yml"
    path.write_text(f"classification:\n  rules: {rules}\n")
    line = assert_rejected(
        capsys, ["--config", str(path), "--database-url", GOOD_URL], named, str(path)
    )
    assert "classification.rules" in line


def test_classification_rules_come_from_the_file_and_go_ahead_of_the_shipped_table(
    tmp_path, monkeypatch
):
    path = tmp_path / "exporter.yml"
    path.write_text(GOOD_RULES)
    # YAML only: a variable of that name is not an option (a list does not fit in one).
    monkeypatch.setenv("ACCOUNTING_SYNC_CLASSIFICATION_RULES", "not: [a rule")
    classifier = config.load({"database.url": GOOD_URL}, str(path)).classifier()
    assert classifier.classify("erp-token", "anything") == "auth"
    assert classifier.classify(None, "Periode 2026-11 er lukket for bokføring") == "period_closed"
    assert classifier.classify("429", "") == "throttled"
    assert classifier.classify("AADSTS7000222", "") == "auth"  # the shipped table still applies


def test_without_rules_the_shipped_table_alone_classifies(tmp_path):
    classifier = config.load({"database.url": GOOD_URL}).classifier()
    assert classifier.classify("ERP-TOKEN", "anything") == "unknown"
    assert classifier.classify("BAD_REQUEST.BURST_RATE_LIMIT_REACHED", None) == "throttled"


def test_classification_rules_have_no_flag(capsys):
    code, lines = check(capsys, "--database-url", GOOD_URL, "--classification.rules", "x")
    assert code == 2 and "--classification.rules" in lines[0], lines
