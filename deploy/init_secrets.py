"""Writes the stack's random passwords once, into the `secrets` volume (docker-compose.yml).

Nothing secret is committed or passed on a command line; a second `docker compose up`
keeps the passwords it finds.
"""

import os
import secrets
import sys
from pathlib import Path

directory = Path(sys.argv[1] if len(sys.argv) > 1 else "/run/secrets")
directory.mkdir(parents=True, exist_ok=True)
PASSWORDS = (
    "postgres-password",
    "exporter-password",
    "pipeline-password",
    "grafana-admin-password",
)
for name in PASSWORDS:
    path = directory / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(path, 0o644)  # read by other services' users (postgres, grafana, exporter)
tenants = directory / "tenants"  # tenant roles' passwords, written by grafana-tenants
tenants.mkdir(mode=0o700, exist_ok=True)
os.chown(tenants, 10001, 10001)  # the exporter image's user
admin = (directory / "grafana-admin-password").read_text().strip()
(directory / "grafana-auth").write_text(f"admin:{admin}\n")
print(f"secrets ready in {directory}")
