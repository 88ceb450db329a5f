"""``python -m fusedopt``: the package's commands.

    python -m fusedopt bench [--quick] [--sizes 1e5,1e6] [--rules adam,sgd] [--threads N]
    python -m fusedopt demo [...]

Each command has its own ``--help``. The command modules are imported only when run.

Layer: tools (the command line; names its commands' modules, imports them on demand).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "bench": ("fusedopt.benchmarks.cli", "time every fused kernel against the machine's "
              "bandwidth, the NumPy reference and torch.optim (where installed)"),
    "demo": ("fusedopt.demo.cli", "run the demonstrations"),
}

USAGE = "usage: python -m fusedopt {" + ",".join(COMMANDS) + "} [options]\n\ncommands:\n" + \
    "".join(f"  {name:8s}{text}\n" for name, (_, text) in COMMANDS.items()) + \
    "\n'python -m fusedopt COMMAND --help' describes a command's options."


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"python -m fusedopt: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
