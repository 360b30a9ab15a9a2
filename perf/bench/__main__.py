"""python3 -m bench (PYTHONPATH=perf): what perf/run runs."""
import signal
import sys

from bench.main import main


def _term(signum, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _term)
sys.exit(main(sys.argv[1:]))
