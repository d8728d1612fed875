#!/usr/bin/env bash
# Issue 13's comparison in ONE run on one NVIDIA GPU: fastgen's WebGPU backend (full cache and FastGen's policy mix)
# and HF transformers (eager, sdpa, static cache + torch.compile) on random weights of a Llama-2-7B shape, at the
# paper's configurations (batch 1 at depth 32–4096, batch 8 at 512 and 4096, batch 16–32 at 512), step time measured at
# each depth with a short generation; a memory-budget run (admission under a KV budget, full vs FastGen); the kernel
# checks on this adapter; the matrix-product crossover in the workbench. Writes $OUT/*.json, $OUT/table.md, $OUT/plot.svg.
#
# Needs: node + this repository built (dist/, node_modules/webgpu), a Vulkan driver for the GPU (VK_DRIVER_FILES),
# python3 with torch + transformers. On the lent H200: scripts/webgpu-carry.sh, then `bash .gpu/h200.sh gpubench`.
# HF_SECONDS bounds the HF part (configurations past it are skipped and marked so); PARTS picks parts (default all:
# checks crossover b1 batches other hf); HF_PLAN=quick measures only a few HF rows.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}; mkdir -p "$OUT"
HERE=$(dirname "$0")
FG="node bin/fastgen.js bench"
step() { local name=$1 limit=$2; shift 2; echo "=== $name ($(date -u +%T))"; local t0=$(date +%s); timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo "rc=$? $(( $(date +%s) - t0 ))s"; grep -v '^Warning' "$OUT/$name.err" | tail -n 4; }
( date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; node --version; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' ) > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

PARTS=${PARTS:-checks crossover b1 batches other hf}
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
has checks && step checks 90 node dist/dev/kernels/run.js check
has checks && { grep -c 'ok=true' "$OUT/checks.out"; grep 'ok=false' "$OUT/checks.out"; }
# Matrix products at 8–32 rows: matrix × vector (token blocks of 4, 8, 16) against the tiled kernel.
has crossover && step crossover 60 bash -c 'for t in 16 32; do node dist/dev/kernels/run.js matmul --kind f16 --shape 4096x4096 --shape 22016x4096 --shape 4096x11008 --tokens $t --variant rows4 --variant rows4-tb8 --variant tiled --reps 10 | grep -v adapter; done'
has crossover && cat "$OUT/crossover.out"

# fastgen: full cache and FastGen's mix (default: the mix FastGen chose on stories15M at T = 0.95), f16 K/V (HF's cache
# is fp16 too; the full cache of 8 × 4096 tokens then fits the bindings); the memory-budget run offers 64 sequences of
# 2048 + 16 tokens under a 16 GiB KV budget.
has b1 && step fastgen_f16 150 $FG --synthetic llama2-7b --dtype f16 --kv-dtype f16 --cache full --cache fastgen --context 8192 -r 2 --json \
  --tests tg64@d32,tg64@d512,tg64@d2048,tg32@d4096,pp512
has batches && step fastgen_f16b 240 $FG --synthetic llama2-7b --dtype f16 --kv-dtype f16 --cache full --cache fastgen --context 8192 -r 2 --json \
  --tests tg32x8@d512,tg16x8@d4096,tg24x16@d512,tg16x32@d512 --kv-budget 16GiB --budget-tests tg16x64@d2048
has other && step fastgen_q8 60 $FG --synthetic llama2-7b --dtype q8_0 --cache full -r 2 --json --tests tg64@d32,tg32x8@d512
has other && step fastgen_llama3 60 $FG --synthetic llama3-8b --dtype f16 --cache full --cache fastgen -r 1 --json --tests tg64@d512,tg16x8@d512
has other && step decode_variants 60 bash -c 'for f in 0 4; do node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 32 --flush-layers $f; done'
has other && cat "$OUT/decode_variants.out"

has hf && step hf 240 python3 "$HERE/hf_bench.py" "$OUT/hf.json" "${HF_SECONDS:-160}"
has hf && tail -n 30 "$OUT/hf.out"

node "$HERE/gpu-bench-report.mjs" "$OUT" > "$OUT/table.md" && cat "$OUT/table.md"
