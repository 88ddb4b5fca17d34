"""``make demo`` (``demo --with-users``): generated sign-ins that show the access rules."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support import EXPORTER, free_port, http_get, stop_process, wait_until
from tests.system.status.conftest import basic


def test_the_demo_prints_its_status_url_and_users_and_each_sees_what_it_may(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*EXPORTER, "demo", "--with-users", "--web.listen-address", f"127.0.0.1:{port}"],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    try:
        text = wait_until(
            lambda: "Stop with Ctrl-C" in log.read_text() and log.read_text(),
            timeout=30, what="the demo's banner",
        )  # fmt: skip
        assert f"Status page: http://127.0.0.1:{port}/status" in text
        users = dict(re.findall(r"^ {4}(\S+)\s+(\S+)\s+\(", text, re.MULTILINE))
        assert {"admin", "hlf", "blindeforbundet"} <= set(users)
        assert len(set(users.values())) == len(users)  # a password of its own each
        url = f"http://127.0.0.1:{port}"
        admin = basic("admin", users["admin"])
        wait_until(lambda: http_get(url + "/readyz", admin)[0] == 200, what="the demo ready")
        status, _, body = http_get(url + "/status", admin)
        assert status == 200 and "Norges Blindeforbund" in body.decode()
        assert http_get(url + "/metrics", admin)[0] == 200
        hlf = basic("hlf", users["hlf"])
        status, _, body = http_get(url + "/status", hlf)
        assert status == 200
        assert "Hørselshemmedes Landsforbund" in body.decode()
        assert "Norges Blindeforbund" not in body.decode()
        assert http_get(url + "/status/org/blindeforbundet", hlf)[0] == 404
        assert http_get(url + "/metrics", hlf)[0] == 403
        assert http_get(url + "/status")[0] == 401
        assert http_get(url + "/status", basic("hlf", users["admin"]))[0] == 401
        # The web config holds hashes only: no generated password is written down.
        [config] = tmp_path.glob("accounting-sync-demo-*/web-config.yml")
        assert not any(password in config.read_text() for password in users.values())
    finally:
        stop_process(process)
    assert process.returncode == 0, log.read_text()
