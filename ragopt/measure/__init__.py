"""Measurement: the Recorder and the Run, experiments, comparisons, workloads and benchmarks."""
