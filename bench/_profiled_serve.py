"""`natsop serve` with a profiler that the benchmark switches on and off by signal.

    python bench/_profiled_serve.py OUT.prof [natsop arguments, default: serve]

Writes its pid to OUT.prof.pid. SIGUSR1 starts cProfile (after the warm-up, so that
start-up and first calls stay out of the figures); SIGUSR2 stops it and writes the
statistics to OUT.prof (atomically: the file appears complete or not at all).
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    profiler = cProfile.Profile()

    def start(_sig: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out + ".tmp")
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    with open(out + ".pid", "w") as f:
        f.write(str(os.getpid()))
    sys.argv = ["natsop", *(sys.argv[2:] or ["serve"])]
    from natsop.faces.cli import main as natsop_main

    natsop_main()


if __name__ == "__main__":
    main()
