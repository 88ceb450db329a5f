"""fusedopt's benchmarks: ``python -m fusedopt bench`` and the helpers of ``bench/``.

Layer: tools (the only tools that touch ``_core``: the bandwidth probe and the L-BFGS dots).

* ``registry``: the benchmarked rules and the callables that take one step of each
  implementation (fused, probe, reference, torch);
* ``timing``: the one timer (interleaved repeats, medians, spread);
* ``table``: the one table formatter (also the demo's);
* sections, each ``section(ctx) -> [text block]``: ``elementwise`` (one table per rule),
  ``model``, ``overhead``, ``lbfgs``, ``torch`` (``vs_torch``: against torch.optim fused), and
  ``load`` (named only: 1 and 2 threads while other processes keep the cores busy; also
  ``python -m fusedopt.benchmarks.load``) and ``deepspeed`` (named only: ``vs_deepspeed``);
* ``cli``: the command line, with the registry of sections (``cli.SECTIONS``).

Importing this package imports none of its modules: the demo imports ``table`` alone.
"""
