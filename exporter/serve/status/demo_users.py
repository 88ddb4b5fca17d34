"""Demo sign-ins for the status page: one global administrator and one user per
organization, with passwords generated at start-up and never written in clear text.

The demo shows the access rules working instead of describing them: sign in as ``hlf``
and the overview, the pages and the live stream hold Hørselshemmedes Landsforbund only.
The web config (bcrypt hashes) is written where the demo keeps its temporary files, so
an operator can read a real example of the format.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

from exporter.serve.status.access import EVERY_ORG

GLOBAL_USER = "admin"
# Fast enough for a demo's start-up; real web configs choose their own cost.
DEMO_BCRYPT_ROUNDS = 10


@dataclass(frozen=True)
class DemoUsers:
    web_config_file: Path
    passwords: dict[str, str]  # user -> generated password, shown once on stderr
    status_users: dict[str, tuple[str, ...]]

    def banner(self, status_url: str) -> str:
        width = max(len(user) for user in self.passwords)
        lines = [f"  Status page: {status_url}", "  Sign in as (generated for this run):"]
        for user, password in self.passwords.items():
            orgs = self.status_users[user]
            scope = "every organization" if orgs == (EVERY_ORG,) else ", ".join(orgs)
            lines.append(f"    {user:<{width}}  {password}  ({scope})")
        lines.append(f"  Web config:  {self.web_config_file}")
        return "\n".join(lines) + "\n"


def write_demo_users(directory: Path, orgs: Sequence[str]) -> DemoUsers:
    passwords = {GLOBAL_USER: secrets.token_urlsafe(12)}
    status_users: dict[str, tuple[str, ...]] = {GLOBAL_USER: (EVERY_ORG,)}
    for org in orgs:
        passwords[org] = secrets.token_urlsafe(12)
        status_users[org] = (org,)
    hashes = {
        user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(DEMO_BCRYPT_ROUNDS)).decode()
        for user, password in passwords.items()
    }
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": hashes}), encoding="utf-8")
    path.chmod(0o600)
    return DemoUsers(path, passwords, status_users)
