#!/usr/bin/env bash
# The engine at real size on a lent GPU machine, as one short prepared script: frames/s at K = 1 and 8 against
# plain SAM2 run K times, peak GPU memory over a 300-frame video, and parity under bf16 autocast, for SAM2.1
# Hiera-B+ (random weights, official checkpoint format) at 1024 px on synthetic 480p videos. Writes one JSON,
# $OUT/gpu_bench.json (results/bench/gpu_bench.json where OUT is unset); about 8 minutes at most on an H100.
#
#   bash benchmarks/gpu/run.sh [--device auto|cuda|cpu] [--quick] [more benchmarks/gpu/bench_gpu.py options]
#   bash benchmarks/gpu/run.sh --device cpu --quick      # the CPU check (tests/test_gpu_bench.py runs it)
#
# Python: $PYTHON, else the repo's .venv, else python3. Where that Python cannot import sam2 and its needs (the
# lent machines have torch, OpenCV, pandas, Pillow, scikit-image, tqdm and PyYAML but none of those, and no
# registry), the wheels of .wheelhouse (benchmarks/gpu/build_wheelhouse.sh, git-ignored, so the device call must
# carry it: carry=[".wheelhouse"]) are installed offline into a folder put on PYTHONPATH.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
out_dir=${OUT:-$repo/results/bench}
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi
needs="import sam2, hydra, omegaconf, iopath"
if ! "$py" -c "$needs" 2>/dev/null; then
  wheelhouse=${WHEELHOUSE:-$repo/.wheelhouse}
  if ! ls "$wheelhouse"/*.whl >/dev/null 2>&1; then
    echo "run.sh: $py cannot import sam2 and $wheelhouse holds no wheels: run bash benchmarks/gpu/build_wheelhouse.sh" \
         "here and carry .wheelhouse" >&2
    exit 1
  fi
  site=${TMPDIR:-/tmp}/masseg-gpu-site
  "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheelhouse"/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  "$py" -c "$needs"
  echo "run.sh: sam2 and its needs from $wheelhouse ($(ls "$wheelhouse"/*.whl | wc -l) wheels) in $site"
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$py" benchmarks/gpu/bench_gpu.py --out "$out_dir/gpu_bench.json" "$@"
