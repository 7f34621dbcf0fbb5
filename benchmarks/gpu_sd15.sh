#!/usr/bin/env bash
# The full-size benchmark on a lent GPU, prepared as one run within a 15-minute lease.
#
# Why a trimmed diffusers: the device machine has PyTorch, transformers and accelerate but no
# diffusers, and it receives at most 64 MiB of working tree, of which the tracked files (the
# shipped weights) take 61.5 MiB. diffusers' wheel is 6.4 MB; without the pipelines we do not use
# it is 1 MB as .tar.xz.
#
# Here (no GPU needed):     bash benchmarks/gpu_sd15.sh pack      -> .devwheels/diffusers-trim.tar.xz
# Device tool, carry [".devwheels"], timeout 600:
#                           bash benchmarks/gpu_sd15.sh run       -> $OUT/sd15_i2v.md, $OUT/log
set -euo pipefail
case "${1:-}" in
pack)
    grep -qx "/.devwheels/" .git/info/exclude || echo "/.devwheels/" >> .git/info/exclude
    rm -rf /tmp/dtrim && mkdir -p /tmp/dtrim .devwheels
    python3 -m pip download -q --no-deps --only-binary=:all: -d /tmp/dtrim "diffusers==0.42.1"
    (cd /tmp/dtrim && python3 -m zipfile -e diffusers-*.whl . \
        && find diffusers/pipelines -mindepth 1 -maxdepth 1 -type d \
            ! -name animatediff ! -name stable_diffusion ! -name controlnet -exec rm -rf {} + \
        && rm -rf diffusers/modular_pipelines diffusers/commands \
        && tar -cJf diffusers-trim.tar.xz diffusers)
    cp /tmp/dtrim/diffusers-trim.tar.xz .devwheels/
    ls -la .devwheels
    ;;
run)
    mkdir -p /tmp/site && tar -xJf .devwheels/diffusers-trim.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
    {
        nvidia-smi --query-gpu=name,memory.total --format=csv
        python3 -c "from magicvideo.sd15 import write_random; write_random('/tmp/sd15', progress=False)"
        python3 benchmarks/sd15_i2v.py --weights /tmp/sd15 --out "$OUT/sd15_i2v.md"
    } 2>&1 | tee "$OUT/log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_sd15.sh pack|run" >&2
    exit 2
    ;;
esac
