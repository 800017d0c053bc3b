"""``python benchmarks/bench_plan.py --help``: see ``ragopt.measure.bench.plan`` (also ``ragopt bench --plan``)."""

import sys

from ragopt.measure.bench.plan import main

if __name__ == "__main__":
    sys.exit(main())
