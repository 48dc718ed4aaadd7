"""Benchmarks: the comparison harness (``ssrl bench``) and performance measurements.

Each performance benchmark is a module run as ``python -m ssrl.benchmarks.NAME``: it measures
ours and the baseline in the same run, prints a small table with the ratio, and writes the same
figures as JSON with the machine, versions and date.
"""
