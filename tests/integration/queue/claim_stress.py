"""A claimer process for the claim stress test: claims until the queue is empty, marks
each claimed task done at once, and writes the nids it claimed (one per line)."""

from __future__ import annotations

import sys
import time

from sqlalchemy import update

from aegir_ansible.db import make_engine
from aegir_ansible.db import models as m
from aegir_ansible.queue import revisions
from aegir_ansible.queue.manager import JobManager


def main(url: str, out: str) -> None:
    engine = make_engine(url)
    jm = JobManager(engine)
    runner = jm.register_runner(None, 4)
    settings = jm.settings()
    claimed, claims, empty = [], 0, 0
    t0 = time.time()
    while empty < 20:
        runs = jm.claim(runner, 4, settings)
        claims += 1
        if not runs:
            empty += 1
            time.sleep(0.01)
            continue
        empty = 0
        for run in runs:
            for t in run.tasks:
                claimed.append(t.nid)

                def done(conn, t=t):
                    conn.execute(update(m.HostingTask).where(m.HostingTask.vid == t.vid)
                                 .values(task_status=m.TASK_SUCCESS))
                    revisions.release(conn, t.nid)

                jm.tx(done)
    with open(out, "w") as f:
        f.write("".join(f"{n}\n" for n in claimed))
        f.write(f"# {claims} claims in {time.time() - t0:.2f}s\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
