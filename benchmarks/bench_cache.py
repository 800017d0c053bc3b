"""``python benchmarks/bench_cache.py --help``: see ``ragopt.measure.bench.cache`` (also ``ragopt bench --cache``)."""

import sys

from ragopt.measure.bench.cache import main

if __name__ == "__main__":
    sys.exit(main())
