"""``python benchmarks/bench_distributed.py --help``: see ``ragopt.measure.bench.distributed`` (also ``ragopt bench --distributed``)."""

import sys

from ragopt.measure.bench.distributed import main

if __name__ == "__main__":
    sys.exit(main())
