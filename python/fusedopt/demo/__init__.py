"""The textbook optimization experiments, runnable: ``python -m fusedopt demo [--out DIR]``.

Layer: tools (matplotlib, scikit-learn, SciPy and tqdm are imported only inside functions).

1. Learning rate on a quadratic (gradient descent, eigencomponents, preconditioning).
2. GD vs Adam (and Newton, L-BFGS) on Rosenbrock, Rastrigin and Ackley.
3. Eight optimizers training an MLP on scikit-learn's handwritten digits.
4. Learning-rate schedules, and their effect on item 3's SGD.
5. Exponentially weighted averages, with and without bias correction.
6. Multi-start L-BFGS from Latin-hypercube points on Rastrigin and Ackley in 2-D and 10-D.
7. Natural gradient vs GD vs Adam: Rosenbrock with a damped Hessian metric, logistic regression
   with its Fisher (Cholesky and CG) and its empirical Fisher.
8. Escaping saddle points (x^2 - y^2 and the monkey saddle): GD, momentum, Nesterov, Adagrad,
   RMSprop and Adam at one learning rate; steps to escape, and an animated GIF (Pillow).
9. Fewer bytes of optimizer state: the digits MLP (and a torch MLP) with float32, bfloat16 and
   8-bit blockwise state; stochastic rounding of bfloat16 params without master weights.

Each experiment prints its tables (also written to ``DIR/tables.txt``) and writes PNG figures
to ``DIR`` (default ``demo_out/``). Needs the ``demo`` extra: matplotlib (figures; without it
the tables are still printed), scikit-learn (the digits, items 3-4 and 9), SciPy (Latin
hypercube, item 6), ml_dtypes (bfloat16, item 9), tqdm (progress bar; a plain one otherwise);
optional: torch (item 3 also trains with ``torch.optim.Adam``, item 9 a torch MLP), Pillow
(item 8's GIF). ``--quick`` runs everything with small iteration counts in seconds (used by
the tests).

Layout: shared infrastructure in ``config`` (iteration counts, the context an experiment gets),
``figures`` (PNGs, contour and trajectory helpers), ``progress`` (the bar); tables through the
one formatter of ``fusedopt.benchmarks.table``; one module per experiment (``quadratic``,
``testfunctions``, ``mlp``, ``lr_schedules``, ``averages``, ``multistart``,
``natural_gradient``, ``saddle``, ``lowbit``), registered in ``cli.MODULES``. Figures label
both axes, keep legends off the data (``figures.legend_outside``) and mark a diverged run where
it leaves the plot (``figures.trajectory``).
"""
from __future__ import annotations

from ..benchmarks.table import Table
from .averages import ewa
from .cli import EXPERIMENTS, main, run
from .lr_schedules import epoch_schedules
from .mlp import MLP_OPTIMIZERS, mlp_init, mlp_loss_and_grads, mlp_predict
from .quadratic import quadratic_problem

__all__ = ["main", "run", "Table", "EXPERIMENTS", "ewa", "epoch_schedules", "MLP_OPTIMIZERS",
           "mlp_init", "mlp_loss_and_grads", "mlp_predict", "quadratic_problem"]
