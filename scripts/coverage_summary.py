"""Print ``make test``'s line coverage: one total line, then one row per package.

coverage.py reports per file (too long to read at the end of a test run) or as a single
total; the per-package rows show where tests are thin without opening the HTML report.
Run after pytest has combined the data (``pytest --cov`` does):
``python scripts/coverage_summary.py``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path, PurePosixPath

import coverage
from coverage.exceptions import NoDataError

ROOT = Path(__file__).resolve().parents[1]


def package_of(path: str) -> str:
    parts = PurePosixPath(Path(path).resolve().relative_to(ROOT).as_posix()).parts
    return "/".join(parts[:-1]) + "/"


def main() -> int:
    measured = coverage.Coverage(data_file=str(ROOT / ".coverage"))
    measured.load()
    statements: dict[str, int] = defaultdict(int)
    missing: dict[str, int] = defaultdict(int)
    try:
        files = measured.get_data().measured_files()
    except NoDataError:
        files = set()
    if not files:
        print("coverage: no data (were the tests run with --cov?)", file=sys.stderr)
        return 1
    for path in sorted(files):
        analysis = measured.analysis2(path)
        package = package_of(path)
        statements[package] += len(analysis[1])
        missing[package] += len(analysis[3])
    total = sum(statements.values())
    covered = total - sum(missing.values())
    print(f"line coverage: {100 * covered / total:.1f}% ({covered} of {total} lines of exporter/)")
    width = max(len(p) for p in statements)
    for package in sorted(statements):
        lines = statements[package]
        share = 100 * (lines - missing[package]) / lines if lines else 100.0
        print(f"  {package:<{width}}  {share:5.1f}%  {lines:5d} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
