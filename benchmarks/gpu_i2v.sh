#!/usr/bin/env bash
# Fine-tune the tiny image-to-video stage on a lent GPU, as one run within a 15-minute lease;
# with STAGE=t2i, stage 1's UNet instead (e.g. configs/train/t2i_tiny_gpu_lora.yaml).
#
# What has to travel: a trimmed diffusers (gpu_sd15.sh pack) and the MiniLM text encoder rebuilt
# there from 19 MB (minilm_transport.py). With them the tree is over the 64 MiB a call may send, so
# for the call the stage-3 and VFI weights (not used here) leave it and the stage-1 UNet travels xz'd
# (63.0 MiB in all, 2026-11-27):
#   bash benchmarks/gpu_i2v.sh pack       # here: .devwheels/ (ignored by git)
#   [STAGE=t2i] bash benchmarks/gpu_i2v.sh stash   # here: v2v/ and vfi_edsc/ (and for t2i i2v/) out of
#                                                  # the tree, the UNet into .devwheels/
#   STAGE=t2i INIT=runs/x/final bash benchmarks/gpu_i2v.sh stash   # a full fine-tune that starts from
#       another UNet: that one (fp16, xz'd) travels in the shipped one's place and is unpacked there
#       to runs/init_unet, which such a config names as its `init`. Here, run it with the venv's
#       python3 first on PATH (tested 2026-11-27: 45 MB travel, weights back within fp16 rounding)
#   device tool, carry [".devwheels"], timeout 600:  [STAGE=t2i] CONFIGS="a.yaml b.yaml" bash benchmarks/gpu_i2v.sh run
#   then, with minutes left in the lease:  [STAGE=t2i] MINUTES=7.5 LIMIT=150 bash benchmarks/gpu_i2v.sh more
#   bash benchmarks/gpu_i2v.sh unstash    # here: put them back
#   bash benchmarks/gpu_i2v.sh join DIR OUT   # here: the returned parts -> OUT/run1, OUT/run2, ...
#                                             (each: its log, config and final stage less unet/vae/controlnet/appearance)
set -euo pipefail
HOLD=/tmp/magicvideo-stash
STASHED="src/magicvideo/weights/tiny/v2v src/magicvideo/weights/tiny/vfi_edsc"
# stage 1 reads no stage-2 weights, and with them its tree is over (67 MB, 2026-11-27)
[ "${STAGE:-i2v}" = t2i ] && STASHED="$STASHED src/magicvideo/weights/tiny/i2v"
UNET=src/magicvideo/weights/tiny/t2i_unet/diffusion_pytorch_model.safetensors
setup() {  # there: the trimmed diffusers and the stage-1 UNet (or INIT's) unpacked, the repository importable
    mkdir -p /tmp/site && tar -xJf .devwheels/diffusers-trim.tar.xz -C /tmp/site
    if [ -f .devwheels/init_unet.tar.xz ]; then
        mkdir -p runs/init_unet && tar -xJf .devwheels/init_unet.tar.xz -C runs/init_unet
    else
        [ -f "$UNET" ] || xz -dc .devwheels/t2i_unet.safetensors.xz > "$UNET"
    fi
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
}
send_back() {  # the trained modules without the frozen UNet and VAE (nor caches, checkpoints), in
               # parts under the 16 MiB a file may come back in
    rm -rf /tmp/back
    for run in /tmp/run[0-9]*; do
        mkdir -p "/tmp/back/${run##*/}" && cp "$run"/log "$run"/config.* "/tmp/back/${run##*/}/"
        [ -d "$run/final" ] && tar -C "$run/final" --exclude=./unet --exclude=./vae --exclude=./controlnet \
            --exclude=./appearance -cf - . | tar -C "/tmp/back/${run##*/}" -xf -
        echo "== ${run##*/}: $(tr '\r' '\n' < "$run/log" | grep -E 'loss|stopping|exit|Error' | tail -4 | tr '\n' ' ')"
    done
    tar -C /tmp/back -cf - . | split -b 15m - "$OUT/$STAGE.tar.part-"
    ls -la "$OUT"
}
case "${1:-}" in
pack)
    bash benchmarks/gpu_sd15.sh pack
    python benchmarks/minilm_transport.py pack .devwheels/minilm
    du -sh .devwheels
    ;;
stash)
    mkdir -p "$HOLD"
    for d in $STASHED; do
        git rm -r -q --cached "$d" && mkdir -p "$HOLD/$(dirname "$d")" && mv "$d" "$HOLD/$d"
    done
    # the stage-1 UNet travels xz'd (2 MB less), unpacked there: the tree is otherwise just over.
    # With INIT, that UNet travels instead, in fp16 (a run's final UNet is saved in fp32)
    rm -f .devwheels/init_unet.tar.xz .devwheels/t2i_unet.safetensors.xz
    if [ -n "${INIT:-}" ]; then
        python3 -c "import sys, torch; from diffusers import UNet2DConditionModel as U; \
U.from_pretrained(sys.argv[1], torch_dtype=torch.float16).save_pretrained(sys.argv[2])" "$INIT" /tmp/init_unet16
        tar -C /tmp/init_unet16 -cf - . | xz -T2 -6 > .devwheels/init_unet.tar.xz && rm -rf /tmp/init_unet16
    else
        xz -T2 -6 -c "$UNET" > .devwheels/t2i_unet.safetensors.xz
    fi
    git rm -q --cached "$UNET" && mkdir -p "$HOLD/$(dirname "$UNET")" && mv "$UNET" "$HOLD/$UNET"
    echo "tree that travels: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes + $(du -sb .devwheels | cut -f1)"
    ;;
unstash)
    for d in $STASHED src/magicvideo/weights/tiny/i2v; do
        if [ -d "$HOLD/$d" ]; then mv "$HOLD/$d" "$d" && git reset -q -- "$d"; fi
    done
    mv "$HOLD/$UNET" "$UNET" && git reset -q -- "$UNET"
    rm -f .devwheels/t2i_unet.safetensors.xz .devwheels/init_unet.tar.xz
    git status --short
    ;;
run)
    # CONFIGS: one or more configs sharing seed and clip count, trained side by side on the one GPU;
    # the first draws and encodes the clips, the others wait for its caches and link them.
    STAGE=${STAGE:-i2v}
    CONFIGS=${CONFIGS:-configs/train/${STAGE}_tiny_gpu.yaml}
    LAST=clips.pt && [ "$STAGE" = t2i ] && LAST=latents.pt  # the cache a trainer writes last
    setup
    nvidia-smi --query-gpu=name,memory.total --format=csv || true
    python3 -c "import torch, diffusers, transformers, accelerate, peft; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, \
'peft', peft.__version__)"
    python3 benchmarks/minilm_transport.py unpack .devwheels/minilm /tmp/site --check "${CHECK:-24000}"
    k=0 pids=""
    for config in $CONFIGS; do
        k=$((k + 1)) && mkdir -p "/tmp/run$k" && cp "$config" "/tmp/run$k/config.given.yaml"
        if [ $k -gt 1 ]; then  # the first run's caches, once written (atomically)
            while [ ! -f "/tmp/run1/$LAST" ] && kill -0 ${pids%% *} 2>/dev/null; do sleep 2; done
            ln -sf /tmp/run1/prompts.pt "/tmp/run1/$LAST" "/tmp/run$k/"
        fi
        (timeout "${LIMIT:-510}" python3 -m magicvideo.cli train "$STAGE" --config "$config" --out "/tmp/run$k" --quiet \
            > "/tmp/run$k/log" 2>&1; echo "exit $?" >> "/tmp/run$k/log") &
        pids="$pids $!" && pids=${pids# }
    done
    wait
    send_back
    ;;
more)
    # Later in the same lease, on the same (warm) machine: train every /tmp/run* on to MINUTES of
    # training in all; they resume from their checkpoints. Carry .devwheels again: a call without it
    # removes it there, and the tree it re-sends has no stage-1 UNet (setup unpacks it again).
    STAGE=${STAGE:-i2v}
    setup
    for run in /tmp/run[0-9]*; do
        sed "s/^max_minutes: .*/max_minutes: ${MINUTES:?MINUTES=total minutes of training}/" \
            "$run/config.given.yaml" > "$run/config.more.yaml"
        (timeout "${LIMIT:-180}" python3 -m magicvideo.cli train "$STAGE" --config "$run/config.more.yaml" \
            --out "$run" --quiet >> "$run/log" 2>&1; echo "exit $?" >> "$run/log") &
    done
    wait
    send_back
    ;;
join)
    mkdir -p "$3"
    cat "$2"/*.tar.part-* | tar -C "$3" -xf -
    ls -laR "$3" | head -40
    ;;
*)
    echo "usage: bash benchmarks/gpu_i2v.sh pack|stash|run|more|unstash|join DIR OUT" >&2
    exit 2
    ;;
esac
