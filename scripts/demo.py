"""The main job, end to end, on the embedded default (SQLite, local connection).

Starts a real nginx + PHP-FPM on a loopback address (the test harness' web stack, so the
demo needs nothing but this checkout), then does what an Aegir user does: registers this
machine as a server, a platform and a site in the embedded SQLite database, which queues
verify and install tasks the way hostmaster does; runs the queue until it is drained; shows
the task table and the install log; fetches the new site's page through nginx.

    scripts/demo            # sets up .venv and system packages first, then runs this
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.db import TestDbServer  # noqa: E402
from tests.harness.platform import make_platform  # noqa: E402
from tests.harness.servers import ServerSet, Slot  # noqa: E402

DEMO_DIR = REPO / ".demo"
SITE = "demo.example.com"


def aegir(*args: str, env: dict) -> str:
    """Run the installed `aegir` command, echo it and its output, fail loudly."""
    print(f"\n$ aegir {shlex.join(args)}", flush=True)
    proc = subprocess.run([str(Path(sys.executable).parent / "aegir"), *args], env=env,
                          capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr, end="", file=sys.stderr)
        raise SystemExit(f"demo: 'aegir {args[0]} {args[1] if len(args) > 1 else ''}' failed")
    return proc.stdout


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (it starts nginx on a loopback address)")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    # The embedded default: no --db, no AEGIR_DB_URL, so `aegir` uses the SQLite file in the
    # user's data directory -- kept inside .demo/ here so the demo never touches yours.
    env = {k: v for k, v in os.environ.items() if k != "AEGIR_DB_URL"}
    env["XDG_DATA_HOME"] = str(DEMO_DIR / "data")

    slot = Slot.acquire()
    servers = ServerSet.start(slot)
    db = TestDbServer()
    db.start()
    try:
        web = servers.servers["nginx"]
        platform_root = make_platform(web, "demo")
        aegir("db", "init", env=env)
        aegir("server", "add", "localhost.localdomain", "--name", "server_master", "--local",
              "--address", web.address, "--listen-address", web.address, "--http", "nginx",
              "--db-service", "mysql", "--db-user", db.admin_user, "--aegir-root", web.aegir_root,
              "--script-user", web.script_user, "--php-fastcgi", web.php_fastcgi,
              "--http-test-cmd", json.dumps(web.http_test_cmd),
              "--http-reload-cmd", json.dumps(web.http_reload_cmd),
              "--db-grant-host", web.db_grant_host, "--db-host", db.host,
              env={**env, "AEGIR_DB_ADMIN_PASSWORD": db.admin_password})
        aegir("platform", "add", "Demo", "--root", platform_root, "--server", "server_master",
              env=env)
        aegir("site", "add", SITE, "--platform", "platform_Demo", "--alias", f"www.{SITE}",
              env=env)
        aegir("task", "list", env=env)
        aegir("queue", "run", "--once", env=env)
        tasks = aegir("task", "list", env=env)
        install = next(line.split()[0] for line in tasks.splitlines() if " install " in line)
        aegir("task", "show", install, env=env)
        aegir("inventory", "--graph", env=env)
        status, body = web.curl(SITE)
        print(f"\n$ curl -H 'Host: {SITE}' http://{web.address}/\nHTTP {status}\n{body}")
        if status != 200 or f"Welcome to {SITE}" not in body:
            raise SystemExit("demo: the site does not serve its page")
        print("demo: the site was installed by the queue and serves its page through nginx.")
        return 0
    finally:
        try:
            subprocess.run(["crontab", "-r", "-u", servers.servers["nginx"].script_user],
                           capture_output=True)
            db.query("DROP DATABASE IF EXISTS `demoexamplecom`")
            db.query("DROP USER IF EXISTS 'demoexamplecom'@'127.0.0.1'")
        finally:
            db.stop()
            servers.stop()
            slot.release()


if __name__ == "__main__":
    sys.exit(main())
