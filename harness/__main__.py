"""`python -m harness` entry point.

SIGINT and SIGTERM are held back from the first instruction on: a job of a run stopped in its first milliseconds
must still have invalidated the results derived from the outputs Snakemake already deleted (`harness.cli._run_job`
releases them once it has; every other command at once).
"""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
