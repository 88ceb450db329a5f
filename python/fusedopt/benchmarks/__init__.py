"""Benchmarks layer: the timing code behind ``python -m fusedopt bench`` (may use ``_core``)."""
