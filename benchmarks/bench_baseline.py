"""``python benchmarks/bench_baseline.py --help``: see ``ragopt.measure.bench.baseline`` (also ``ragopt bench --baseline``)."""

import sys

from ragopt.measure.bench.baseline import main

if __name__ == "__main__":
    sys.exit(main())
