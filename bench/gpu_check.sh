#!/usr/bin/env bash
# One-call GPU check for a machine with an NVIDIA GPU (e.g. a lent device machine):
#   bash bench/gpu_check.sh
# 1. makes sure CuPy imports (installed already; else from wheels carried in .whl/; else pip),
# 2. builds fusedopt._core (./dev-build.sh),
# 3. runs the CUDA tests (gpu-marked ones included; compact state: a subset, see below) and the
#    gpu-marked fusedopt.torch tests,
# 4. runs bench/bench_cuda.py (its adam-state-n=1e7 group: float32 vs bfloat16 vs 8-bit state),
# and writes under bench/results/ (and $OUT, when set): the test log, the benchmark JSON, its
# table (bench/report.py) and a meta JSON with device name, driver, date, commit, command.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
res=bench/results
mkdir -p "$res"
export PYTHONUNBUFFERED=1

if ! $PY -c "import cupy" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    $PY -m pip install -q "cupy-cuda13x>=14" "nvidia-cuda-nvrtc>=13,<14"
  fi
fi
$PY -c "import cupy; print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())" || exit 1

./dev-build.sh || exit 1
export PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH}

name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
tag=$(echo "$name" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')
log=$res/${stamp}_${tag}_tests.log
json=$res/${stamp}_${tag}_bench_cuda.json
table=$res/${stamp}_${tag}_bench_cuda.txt

# The host emulation and the slow full NVRTC build run on any machine: leave them to CI.
$PY -m pytest tests/test_cuda.py tests/test_cuda_build.py tests/test_cuda_dispatch.py \
  tests/test_cuda_lbfgs.py tests/test_lbfgs_device.py -m "not slow" -k "not host" \
  -q -rs -p no:cacheprovider 2>&1 | tee "$log"
tests_rc=${PIPESTATUS[0]}
# Compact state on CUDA (issue 10, csrc/cuda/compact.cu): five of the twelve rules of the
# registry (every param kind and state kind) and every other test of the file, against the
# reference and the CPU kernels (~20 kernel instances to compile: about a minute).
$PY -m pytest tests/test_cuda_compact.py -q -rs -p no:cacheprovider -k "not host and \
(sgd-momentum or adamw-amsgrad-max or rmsprop-momentum-max or adagrad or adamax-wd-max or \
not equals_reference)" 2>&1 | tee -a "$log"
compact_rc=${PIPESTATUS[0]}
[ "$compact_rc" -ne 0 ] && tests_rc=$compact_rc
# fusedopt.torch on CUDA tensors: the gpu-marked torch tests (they skip where torch has no CUDA;
# rc 5, nothing collected, where torch is absent).
$PY -m pytest tests/test_torch_cuda.py tests/test_torch_optim.py -m gpu \
  -q -rs -p no:cacheprovider 2>&1 | tee -a "$log"
torch_rc=${PIPESTATUS[0]}
[ "$torch_rc" -eq 5 ] && torch_rc=0
[ "$torch_rc" -ne 0 ] && tests_rc=$torch_rc

$PY -m pytest bench/bench_cuda.py -q -p no:cacheprovider --benchmark-json="$json" \
  --benchmark-columns=median,iqr,rounds 2>&1 | tail -40
bench_rc=${PIPESTATUS[0]}
[ -f "$json" ] && $PY bench/report.py "$json" | tee "$table"

$PY - "$res/${stamp}_${tag}_meta.json" <<PYEOF
import json, os, subprocess, sys
commit = os.environ.get("FUSEDOPT_COMMIT", "")  # the tree may travel without .git
try:
    commit = commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
except OSError:  # no git there
    pass
json.dump({"device": "$name", "driver": "$driver", "date_utc": "$stamp", "commit": commit,
           "command": "bash bench/gpu_check.sh", "tests_rc": $tests_rc, "bench_rc": $bench_rc},
          open(sys.argv[1], "w"), indent=1)
PYEOF
if [ -n "${OUT:-}" ]; then cp "$res/${stamp}_${tag}"_* "$OUT"/ 2>/dev/null; fi
echo "tests rc=$tests_rc bench rc=$bench_rc; results in $res/${stamp}_${tag}_*"
exit $(( tests_rc != 0 || bench_rc != 0 ))
