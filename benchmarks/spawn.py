"""`python -I -S spawn.py REPORT ARGV...`: run ARGV, then write its wall time and peak RSS to REPORT.

Linux counts the memory a child had before its `exec` (a copy of whoever forked it) in its `ru_maxrss`,
so a child forked by the benchmark itself would report at least the benchmark's own RSS. This launcher
is a bare interpreter (about 8 MB) that forks the measured process instead. Standard library only.
"""

import json
import os
import sys
import time

report, *argv = sys.argv[1:]
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as out:
    json.dump(
        {"exit": os.waitstatus_to_exitcode(status), "seconds": seconds, "maxrss_kb": usage.ru_maxrss}, out
    )
sys.exit(0)
