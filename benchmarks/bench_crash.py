"""``python benchmarks/bench_crash.py --help``: see ``ragopt.measure.bench.crash`` (also ``ragopt bench --crash``)."""

import sys

from ragopt.measure.bench.crash import main

if __name__ == "__main__":
    sys.exit(main())
