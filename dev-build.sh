#!/usr/bin/env bash
# Developer build: compile fusedopt._core into build/dev and link it into python/fusedopt, so
# `PYTHONPATH=python python -m pytest` runs against the working tree without reinstalling.
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build build/dev
ln -sf "$PWD"/build/dev/csrc/_core*.so python/fusedopt/
