#!/usr/bin/env bash
# The check to run whenever a machine with a CUDA GPU is available (one H200 or similar; 2 GPUs add the
# nccl runs), in under 8 minutes in all, ending with one table (piece | result | seconds | details) and
# the benchmark tables under it; a piece that fails says FAILED in its row and the rest still run.
#
#   bash bench/gpu_check.sh                  # OUT=DIR: gpu_check.md (the tables) and gpu_check.log there
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh  # print the commands it would run, run nothing
#
# 1. Setup. torch must see a GPU: `python -c "import torch; print(torch.cuda.is_available())"`. Where torch
#    is missing or is a CPU build (the torch==2.13.0 wheel on the development machine is +cpu), it installs
#    the CUDA build from the registry: `pip install --force-reinstall torch` (PyPI's Linux wheels are CUDA
#    builds; TORCH_SPEC overrides, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu130").
#    It never installs torch==2.13.0 from this repository's machine. If the other packages are missing it
#    runs `pip install -e ".[test]"` (torch already satisfies it). With no registry (an offline machine)
#    the installs fail, and the pieces needing what is missing fail in their rows.
# 2. The GPU tests: `pytest -m gpu` (tests marked gpu, skipped elsewhere): fp16 + GradScaler and bf16
#    autocast (tests/training/test_loop.py, test_run.py), nf4 on CUDA (tests/lora_core/test_lora_quantized.py,
#    tests/phi_models/test_phi_quantize.py, test_run.py), and with 2 GPUs nccl DDP and FSDP2 against one
#    process, an FSDP2 resume and a bf16 FSDP2 run (tests/training/test_distributed.py). One row per test.
# 3. The benchmarks at real sizes (32 layers): bench/bench_train.py (phi-2 and Phi-3-mini; bf16, then
#    decode, then nf4 and fp32) and bench/bench_decode.py (batch 1 and 8), in that order of priority:
#    once the time budget is spent the remaining ones say SKIPPED.
#
# Settings: GPU_CHECK_SECONDS (budget, default 465), GPU_CHECK_LAYERS (32), GPU_CHECK_ROUNDS (3), PYTHON.
# BENCH_CHECKPOINTS (a temporary folder, removed at the end) lets bench scripts that use
# harness.checkpoint() write each random checkpoint once and share it.
set -uo pipefail # not -e: a failing piece is reported, the next one runs
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_SECONDS:-465}
LAYERS=${GPU_CHECK_LAYERS:-32}
ROUNDS=${GPU_CHECK_ROUNDS:-3}
PY=${PYTHON:-$(command -v python3 || command -v python)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/philora-gpu-check.XXXXXX")
export BENCH_CHECKPOINTS="$WORK/checkpoints"
trap 'rm -rf "$WORK"' EXIT
ROWS=() # "piece|result|seconds|details"
BENCHES=() # logs holding a benchmark table

say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
cell() { tr '|\n' '/ ' <<<"$1" | sed 's/ *$//' | cut -c1-160; } # one markdown cell
slug() { tr -c 'A-Za-z0-9.-' '_' <<<"$1" | sed 's/_*$//'; }

# piece NAME LIMIT_S COMMAND...: run COMMAND (its output in a log) within LIMIT_S and what is left of the budget.
piece() {
	local name=$1 limit=$2
	shift 2
	if [ "$DRY" = 1 ]; then
		printf '+'
		printf ' %q' "$@"
		printf '\n'
		ROWS+=("$name|DRY|-|not run")
		LAST_LOG=/dev/null
		return 0
	fi
	local left=$((BUDGET - SECONDS)) log start rc result
	if ((left < 30)); then
		ROWS+=("$name|SKIPPED|0|time budget (${BUDGET}s) spent")
		say "$name: SKIPPED (time budget spent)"
		LAST_LOG=/dev/null
		return 0
	fi
	((limit > left)) && limit=$left
	log="$WORK/$(slug "$name").log"
	LAST_LOG=$log
	start=$SECONDS
	{
		printf '$'
		printf ' %q' "$@"
		printf '\n'
	} >"$log"
	timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
	rc=$?
	case $rc in
	0) result=PASSED ;;
	124 | 137) result="FAILED (timeout ${limit}s)" ;;
	*) result="FAILED (exit $rc)" ;;
	esac
	local detail=""
	[ "$rc" != 0 ] && detail=$(grep -v '^\s*$' "$log" | tail -n 1)
	ROWS+=("$name|$result|$((SECONDS - start))|$(cell "$detail")")
	say "$name: $result ($((SECONDS - start))s)"
	return "$rc"
}

# ---------------------------------------------------------------------------- setup
cuda_ready() { "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
read -r -a TORCH_SPEC_ARGS <<<"${TORCH_SPEC:-torch}"
if [ "$DRY" = 1 ]; then
	echo "+ $PY -c 'import torch; print(torch.cuda.is_available())'   # if torch is missing or False:"
	echo "+ $PY -m pip install --quiet --force-reinstall ${TORCH_SPEC_ARGS[*]}"
	echo "+ $PY -m pip install --quiet -e '.[test]'   # if the other packages are missing"
else
	if ! cuda_ready; then
		say "torch is missing or has no CUDA: installing the CUDA build (${TORCH_SPEC_ARGS[*]}) from the registry"
		"$PY" -m pip install --quiet --force-reinstall "${TORCH_SPEC_ARGS[@]}" || say "the torch install failed"
	fi
	if ! cuda_ready; then
		say "torch sees no CUDA device: nothing to check here"
		exit 1
	fi
	if ! "$PY" -c "import safetensors, tokenizers, huggingface_hub, bitsandbytes, numpy, pyarrow, yaml, jinja2, \
pytest, transformers, peft" 2>/dev/null; then
		say "installing the project's packages (pip install -e .[test])"
		"$PY" -m pip install --quiet -e ".[test]" || say "pip install -e .[test] failed: the pieces that need it will fail"
	fi
	"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '|', \
torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))" | tee "$WORK/machine.txt"
fi

# ---------------------------------------------------------------------------- the GPU tests
piece "tests: pytest -m gpu" 240 "$PY" -m pytest -q -rA -m gpu -p no:cacheprovider tests
tests_log=$LAST_LOG
# One row per test from pytest's -rA summary ("PASSED tests/x.py::name", "SKIPPED [2] file:line: reason").
while read -r status rest; do
	case $status in
	SKIPPED) # "[2] tests/x.py:12: reason"
		count=${rest%%]*}
		where=${rest#*] }
		ROWS+=("  ${where%%: *} (${count#[} test(s))|SKIPPED||$(cell "${where#*: }")")
		;;
	*)
		detail=""
		[[ $rest == *" - "* ]] && detail=${rest#* - } # "FAILED tests/x.py::name - AssertionError: ..."
		ROWS+=("  ${rest%% - *}|$status||$(cell "$detail")")
		;;
	esac
done < <(grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' "$tests_log")

# ---------------------------------------------------------------------------- the benchmarks
train() { # train SHAPE DTYPE
	piece "train $1 $2" 200 "$PY" bench/bench_train.py --shape "$1" --layers "$LAYERS" --dtype "$2" \
		--device cuda --rounds "$ROUNDS"
	BENCHES+=("$LAST_LOG")
}
decode() { # decode SHAPE BATCH
	piece "decode $1 batch $2" 120 "$PY" bench/bench_decode.py --shape "$1" --layers "$LAYERS" --batch "$2" \
		--device cuda --rounds "$ROUNDS"
	BENCHES+=("$LAST_LOG")
}
train phi-2 bf16
train phi-3-mini bf16
for shape in phi-2 phi-3-mini; do
	decode "$shape" 1
	decode "$shape" 8
done
for dtype in nf4 fp32; do
	train phi-2 "$dtype"
	train phi-3-mini "$dtype"
done

# ---------------------------------------------------------------------------- the table
report() {
	echo "## GPU check ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS}s, $LAYERS layers, $ROUNDS rounds)"
	[ -f "$WORK/machine.txt" ] && cat "$WORK/machine.txt"
	echo
	echo "| piece | result | seconds | details |"
	echo "|---|---|---:|---|"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r name result took detail <<<"$row"
		echo "| $name | $result | $took | $detail |"
	done
	for log in "${BENCHES[@]}"; do
		if [ -s "$log" ] && grep -q '^|' "$log"; then
			echo
			echo "### $(head -n 1 "$log" | cut -c3-)"
			grep -E '^\|' "$log"
		fi
	done
}
report | tee "$WORK/gpu_check.md"
if [ -n "${OUT:-}" ] && [ "$DRY" != 1 ]; then
	mkdir -p "$OUT"
	cp "$WORK/gpu_check.md" "$OUT/gpu_check.md"
	for log in "$WORK"/*.log; do
		[ -f "$log" ] && printf '\n===== %s\n' "$(basename "$log")" && cat "$log"
	done >"$OUT/gpu_check.log"
fi
grep -q '| FAILED' "$WORK/gpu_check.md" && exit 1
exit 0
