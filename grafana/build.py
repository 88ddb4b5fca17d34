"""Write the dashboards' JSON for provisioning: ``python -m grafana.build [--check]``.

The JSON is generated, committed and reviewed as a diff; ``--check`` (and a test) fails
when the committed files differ from what the code builds, so they never drift apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana import errors, org, overview

OUTPUT = Path(__file__).parent / "dashboards"
BUILDERS: dict[str, Callable[[], Dashboard]] = {
    "accounting-sync-overview.json": overview.build,
    "accounting-sync-org.json": org.build,
    "accounting-sync-errors.json": errors.build,
}


def render(builder: Callable[[], Dashboard]) -> str:
    """Stable text: sorted keys and panel ids in layout order, so diffs show real changes."""
    model: dict[str, Any] = json.loads(json.dumps(builder().build(), cls=JSONEncoder))
    for number, panel in enumerate(model.get("panels", []), start=1):
        panel["id"] = number
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(builder) for name, builder in BUILDERS.items()}


def stale_files(directory: Path = OUTPUT) -> list[str]:
    """Names of dashboards whose committed JSON differs from the code (or is missing)."""
    stale = []
    for name, text in rendered().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run make dashboards)", file=sys.stderr)
        return 1 if stale else 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (OUTPUT / name).write_text(text, encoding="utf-8")
        print(f"wrote grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
