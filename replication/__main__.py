import time

STARTED = time.time()  # before any import: a stage's timing includes its start-up

from replication.cli import main  # noqa: E402

raise SystemExit(main(started=STARTED))
