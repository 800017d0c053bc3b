"""``python benchmarks/bench_query.py --help``: see ``ragopt.measure.bench.query`` (also ``ragopt bench --query``)."""

import sys

from ragopt.measure.bench.query import main

if __name__ == "__main__":
    sys.exit(main())
