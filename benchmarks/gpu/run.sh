#!/usr/bin/env bash
# GPU segmentation benchmark in one command of at most 10 minutes, on a machine with Python 3.12 and PyTorch
# but no package index: unpack .gpu_bundle/site.tar.xz (make_bundle.sh), install cdeg from this tree, write
# the two synthetic cohorts, then train and score MRI and radiograph side by side on the one GPU.
#   bash benchmarks/gpu/run.sh            results: $OUT (or benchmarks/results)/segment_cuda_{mri,xray}.json
# DEVICE, PRESET, N_TRAIN, N_TEST and CONFIG override the defaults (cuda, fast, 80, 20, overrides.yaml); with
# DEVICE=cpu PRESET=smoke N_TRAIN=4 N_TEST=2 the same script checks the installation on any machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-benchmarks/results}
device=${DEVICE:-cuda}
preset=${PRESET:-fast}
config=${CONFIG:-benchmarks/gpu/overrides.yaml}
work=${WORK:-/tmp/cdeg_bench_$device}
site=${SITE:-/tmp/cdeg_site}
py=${PYTHON:-python3}
rm -rf "$site"
mkdir -p "$out" "$site/deps" "$site/cdeg"
t0=$(date +%s)
if [ -f .gpu_bundle/site.tar.xz ]; then
    tar -C "$site/deps" -xJf .gpu_bundle/site.tar.xz
fi
"$py" -m pip install -q --no-deps --no-build-isolation --no-compile --target "$site/cdeg" . >/dev/null
export PYTHONPATH="$site/cdeg:$site/deps${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "installed in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
if [ "$device" = cuda ]; then
    # The GPU smoke test first (tests/test_gpu_smoke.py, ~1 min): a broken CUDA set-up shows before the budget runs.
    # -P: the repository root must not shadow the installed cdeg (cdeg.segmentation exists only installed).
    "$py" -P -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_smoke.py
fi
common=(--device "$device" --preset "$preset" --n-train "${N_TRAIN:-80}" --n-test "${N_TEST:-20}" --work "$work")
"$py" benchmarks/bench_segment.py "${common[@]}" --synth-only
pids=()
for m in mri xray; do
    "$py" benchmarks/bench_segment.py "${common[@]}" --modalities "$m" --config "$config" \
        --out "$out/segment_${device}_$m.json" >"$out/bench_segment_${device}_$m.log" 2>&1 &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for m in mri xray; do tail -n 4 "$out/bench_segment_${device}_$m.log"; done
echo "total $(( $(date +%s) - t0 )) s"
exit $status
