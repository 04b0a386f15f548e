#!/usr/bin/env bash
# The GPU part of the distributed check, to be folded into bench/gpu_check.sh: torchrun with nccl on
# 2 GPUs, data parallel (DDP) and sharded (--fsdp, FSDP2), each against one process with the same
# global batch (adapter within TOL), an FSDP2 resume from a mid-run checkpoint (same adapter), and a
# bf16 FSDP2 run that must finish. The CPU/gloo versions are tests/training/test_distributed.py.
# Needs 2 CUDA devices (nccl allows one rank per device); with fewer it says so and exits 0.
#
#   bash bench/gpu_distributed_check.sh            # OUT=DIR keeps the run directories
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 2 ]; then
  echo "distributed GPU check: skipped ($GPUS CUDA device(s); nccl DDP and FSDP2 need 2)"
  exit 0
fi
OUT=${OUT:-$(mktemp -d)}
TOL=${TOL:-1e-5}
ARGS=(--model tiny --data samples/roleplay --limit 64 --max-seq-len 128 --batch-size 2 --device cuda
      --precision fp32 --lora-dropout 0 --sample-tokens 8 --eval-every 3 --eval-batches 3 --max-steps 6
      --save-every 3 --log-every 1 --dist-timeout 120)
LAUNCH=(torchrun --standalone --nproc_per_node 2 train.py)
compare() {  # compare ADAPTER_A ADAPTER_B LABEL
  python - "$1" "$2" "$3" "$TOL" <<'EOF'
import sys
from safetensors.torch import load_file
a, b, label, tol = load_file(sys.argv[1]), load_file(sys.argv[2]), sys.argv[3], float(sys.argv[4])
assert a.keys() == b.keys(), f"{label}: different adapter keys"
diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(f"{label}: max |adapter difference| {diff:.3g} (tolerance {tol:g})")
sys.exit(0 if diff <= tol else 1)
EOF
}
python train.py "${ARGS[@]}" --grad-accum 2 --output-dir "$OUT/single"
"${LAUNCH[@]}" "${ARGS[@]}" --output-dir "$OUT/ddp"
compare "$OUT/ddp/adapter.safetensors" "$OUT/single/adapter.safetensors" "nccl DDP x2 vs 1 process"
"${LAUNCH[@]}" "${ARGS[@]}" --fsdp --output-dir "$OUT/fsdp"
compare "$OUT/fsdp/adapter.safetensors" "$OUT/single/adapter.safetensors" "nccl FSDP2 x2 vs 1 process"
# Resume FSDP2 from its step-3 checkpoint (drop what came after it) and finish: the same adapter.
cp -r "$OUT/fsdp" "$OUT/fsdp-resumed"
rm -rf "$OUT/fsdp-resumed/checkpoints/step-000006" "$OUT/fsdp-resumed/adapter.safetensors"
"${LAUNCH[@]}" "${ARGS[@]}" --fsdp --output-dir "$OUT/fsdp-resumed" --resume latest
compare "$OUT/fsdp-resumed/adapter.safetensors" "$OUT/fsdp/adapter.safetensors" "nccl FSDP2 resumed vs uninterrupted"
"${LAUNCH[@]}" "${ARGS[@]/fp32/bf16}" --fsdp --output-dir "$OUT/fsdp-bf16"
echo "distributed GPU check: passed (run directories in $OUT)"
