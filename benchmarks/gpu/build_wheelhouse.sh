#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu/run.sh installs on a lent GPU machine: Python 3.12, x86_64, torch,
# OpenCV, pandas, Pillow, scikit-image, tqdm and PyYAML already there, no package registry. It holds sam2 (built
# here as a pure-Python wheel with its CUDA extension off) and the pure-Python or manylinux wheels sam2 and this
# package import that the machine lacks, each at the version this checkout's .venv runs (the tested combination).
#
#   bash benchmarks/gpu/build_wheelhouse.sh [OUT_DIR]     (default: .wheelhouse at the repo root, git-ignored)
#
# PYTHON (default: the repo's .venv/bin/python) must have torch (sam2's setup.py imports it) and the packages
# below installed, so their versions can be read. The device tool carries the folder: carry=[".wheelhouse"].
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/.wheelhouse}
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || { echo "build_wheelhouse: no Python at $py (set PYTHON to one with torch and sam2's needs)" >&2; exit 1; }
# distributions the GPU machine lacks (sam2's and hydra's needs, and pydantic for the package's config)
packages=(hydra-core omegaconf antlr4-python3-runtime iopath portalocker pydantic pydantic-core typing-extensions
          annotated-types typing-inspection)
sam2_version=1.1.0
limit_mib=64

rm -rf "$out"
mkdir -p "$out"
download=(-q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64 -d "$out")
for name in "${packages[@]}"; do
  version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
    echo "build_wheelhouse: $name is not installed in $py" >&2; exit 1; }
  if ! "$py" -m pip download "${download[@]}" "$name==$version" 2>/dev/null; then
    # published as a source archive only: build the (pure-Python) wheel here
    "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" "$name==$version"
  fi
done
SAM2_BUILD_CUDA=0 "$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$out" "sam2==$sam2_version"
for wheel in "$out"/sam2-*.whl; do
  case "$wheel" in
    *-py3-none-any.whl) ;;
    *) # tagged for this interpreter by the build; without the extension it is pure Python, so say so
       if "$py" -m zipfile -l "$wheel" | grep -qE '\.(so|pyd)\b'; then
         echo "build_wheelhouse: $(basename "$wheel") holds a compiled extension; set SAM2_BUILD_CUDA=0" >&2; exit 1
       fi
       "$py" -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag any "$wheel" >/dev/null ;;
  esac
done

# every wheel must install on CPython 3.12 x86_64: pure Python (py3-none-any) or a cp312 manylinux build
status=0
for wheel in "$out"/*.whl; do
  tags=$(basename "$wheel" .whl | awk -F- '{print $(NF-2) "-" $(NF-1) "-" $NF}')
  case "$tags" in
    py3-none-any|py2.py3-none-any|cp312-cp312-manylinux*x86_64*|cp312-abi3-manylinux*x86_64*|cp3*-abi3-manylinux*x86_64*) ;;
    *) echo "build_wheelhouse: $(basename "$wheel") has tags $tags, which Python 3.12 on x86_64 cannot install" >&2
       status=1 ;;
  esac
done
if [ "$(ls "$out"/sam2-*.whl | wc -l)" != 1 ]; then
  echo "build_wheelhouse: expected one sam2 wheel in $out" >&2
  status=1
fi
size_kib=$(du -sk "$out" | cut -f1)
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "build_wheelhouse: $out is $((size_kib / 1024)) MiB, over the $limit_mib MiB a device call carries" >&2
  status=1
fi
ls -1 "$out"
echo "build_wheelhouse: $(ls "$out"/*.whl | wc -l) wheels, $size_kib KiB in $out"
exit $status
