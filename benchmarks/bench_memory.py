"""``python benchmarks/bench_memory.py --help``: see ``ragopt.measure.bench.memory`` (also ``ragopt bench --memory``)."""

import sys

from ragopt.measure.bench.memory import main

if __name__ == "__main__":
    sys.exit(main())
