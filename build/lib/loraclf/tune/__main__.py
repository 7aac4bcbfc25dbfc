"""`python -m loraclf.tune`: one worker subprocess, its job in $LORACLF_TUNE_JOB (started by `run._spawn_workers`)."""
import sys

from .worker import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
