"""``python benchmarks/bench_batch.py --help``: see ``ragopt.measure.bench.batch`` (also ``ragopt bench --batch``)."""

import sys

from ragopt.measure.bench.batch import main

if __name__ == "__main__":
    sys.exit(main())
