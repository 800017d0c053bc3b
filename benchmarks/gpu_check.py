"""``python benchmarks/gpu_check.py --help``: see ``ragopt.measure.bench.gpu`` (also ``ragopt bench --gpu``)."""

import sys

from ragopt.measure.bench.gpu import main

if __name__ == "__main__":
    sys.exit(main())
