"""The benchmarks: each module has ``main(argv)``, prints a table and, last, one JSON line."""
