#!/usr/bin/env bash
# Build .gpu_bundle/site.tar.xz: the packages of benchmarks/gpu/requirements.txt installed for CPython 3.12 on
# manylinux x86-64, for a GPU machine that reaches no package index (run.sh unpacks it there).
# Run on any machine with pip and access to PyPI: `bash benchmarks/gpu/make_bundle.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
out=.gpu_bundle
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
reqs=$(grep -v '^\s*#' benchmarks/gpu/requirements.txt | grep -v '^\s*$')
# Some of these ship only as source (pure Python): build those into wheels here; binary ones come as wheels.
for req in $reqs; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$tmp/wheels" "$req" 2>/dev/null \
        || "$PY" -m pip wheel -q --no-deps -w "$tmp/wheels" "$req"
done
"$PY" -m pip install -q --no-deps --no-compile --target "$tmp/site" --python-version 3.12 --implementation cp \
    "${platforms[@]}" --only-binary=:all: "$tmp"/wheels/*.whl
# Tests, headers and caches are not needed to run; the .so files dominate what is left.
find "$tmp/site" -depth \( -name tests -o -name test -o -name __pycache__ \) -type d -exec rm -rf {} +
mkdir -p "$out"
tar -C "$tmp/site" -cf - . | xz -T0 -6 > "$out/site.tar.xz.tmp"
mv "$out/site.tar.xz.tmp" "$out/site.tar.xz"
ls -l "$out/site.tar.xz"
