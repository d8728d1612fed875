#!/usr/bin/env bash
# One device run (prepared by scripts/webgpu-carry.sh): WebGPU (Dawn) on the NVIDIA GPU — kernel checks, the backend's
# equality tests, workbench timings, decode speed. Modes: all (run 1 of docs/webgpu.md), run2, tests, sampling, bench;
# gpubench (scripts/gpu-bench.sh: issue 13's comparison with HF transformers), gpuprobe (a short look at bench --synthetic)
# steps (checks, tests, attention variants, the decode rows with the step split), prof (the decode rows under
# node's profiler) and matvec (the weight kernels' variants on the 7B matrices).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
xz -dc .gpu/node.xz > /usr/local/bin/node && chmod +x /usr/local/bin/node
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FASTGEN_SHARED=$PWD/.gpu/shared
cd .gpu/app && xz -dk node_modules/webgpu/dist/linux-x64/dawn.node.xz
O=${OUT:-/tmp/out}; mkdir -p $O
( date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; node --version ) 2>&1 | tee $O/env.txt
step() { local name=$1 limit=$2; shift 2; echo "=== $name"; local t0=$(date +%s); timeout $limit "$@" > $O/$name.txt 2>&1; echo "rc=$? $(( $(date +%s) - t0 ))s"; grep -v '^Warning' $O/$name.txt | tail -n ${TAILN:-40}; }
MODE=${1:-all}
if [ "$MODE" = all ]; then
  step check 120 node dist/dev/kernels/run.js check
  TAILN=25 step tests 300 node --test --test-name-pattern='stories260K|hf-tiny|batched|kernel' dist/test/webgpu-backend.test.js dist/test/webgpu-kernels.test.js
fi
# Every kernel check, then every WebGPU test file (sampling, server batching, fork, chunked prefill, f16 KV, every
# policy, errors), except stories15M's (its 58 MB model does not travel) and the no-adapter one (it runs the CLI, which
# does not travel); CI set: a missing adapter fails instead of skipping.
if [ "$MODE" = tests ]; then
  step check 120 node dist/dev/kernels/run.js check
  CI=true TAILN=60 step tests 420 node --test --test-concurrency=4 --test-name-pattern='stories260K|hf-tiny|batched|kernel|generate|fork|server|chunked|f16 KV|out of memory|dtypes' dist/test/webgpu-*.test.js
fi
if [ "$MODE" = run2 ]; then
  step check 120 node dist/dev/kernels/run.js check
  TAILN=6 step tests 300 node --test --test-name-pattern='stories260K|hf-tiny|batched|kernel' dist/test/webgpu-backend.test.js dist/test/webgpu-kernels.test.js
  step attention 90 bash -c 'for c in 512 4096; do for k in 64 128 256; do node dist/dev/kernels/run.js attention --ctx $c --chunk $k --reps 50 | grep -v adapter; done; done'
  step decode_s15 120 bash -c 'for d in f32 f16; do for s in gpu cpu; do node dist/dev/kernels/decode.js --synthetic stories15M --dtype $d --sample $s --prompt 32 --steps 200; done; done; node dist/dev/kernels/decode.js --synthetic llama2-7b-thin --dtype f16 --prompt 32 --steps 64'
  step decode_7b 330 bash -c 'node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 48; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 24 --sample cpu; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 500 --steps 24; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype q8_0 --prompt 32 --steps 48; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 128 --steps 24 --batch 8'
fi
# The GPU-sampling tests again, and the sampling kernel's time per sequence for each rule (32000 and 128256 logits).
if [ "$MODE" = sampling ]; then
  CI=true TAILN=12 step tests 120 node --test dist/test/webgpu-sampling.test.js
  step sample 60 bash -c 'for v in 32000 128256; do node dist/dev/kernels/run.js sample --vocab $v --reps 50 | grep -v adapter; done'
fi
if [ "$MODE" = all ] || [ "$MODE" = bench ]; then
  step matvec 150 node dist/dev/kernels/run.js matvec --kind f16 --kind q8_0 --variant rows1 --variant rows2 --variant rows4 --variant rows8 --variant rows4-wg128 --variant rows2-wg64 --reps 50
  step matvec_f32 60 node dist/dev/kernels/run.js matvec --kind f32 --shape 4096x4096 --shape 11008x4096 --shape 32000x4096 --variant rows4 --variant rows2 --reps 50
  step prefill 60 node dist/dev/kernels/run.js matmul --kind f16 --shape 4096x4096 --shape 11008x4096 --tokens 128 --reps 10
  step attention 60 bash -c 'for c in 512 4096; do node dist/dev/kernels/run.js attention --ctx $c --reps 50; done'
  step decode_s15 90 bash -c 'for d in f32 f16 q8_0; do node dist/dev/kernels/decode.js --synthetic stories15M --dtype $d --prompt 32 --steps 200; done'
  step decode_7b 240 bash -c 'for d in f16 q8_0; do node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype $d --prompt 32 --steps 48; done; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 24 --batch 8'
fi
# The weight kernels (docs/webgpu.md, "Matrix × few vectors"): kernel checks, then every 7B matrix at 1, 2, 4, 8, 16
# and 32 tokens through the default, vec4 variants and the word kernel (rows4), f16 and q8_0, each kind ending with
# the weight ms of one 7B decode step per variant; then the tiled crossover at 16–512 rows (tiled4: the vec4 tiled
# kernel). About two minutes of GPU time with the compiles.
if [ "$MODE" = matvec ]; then
  step checks 120 node dist/dev/kernels/run.js check
  grep -c 'ok=true' $O/checks.txt; grep 'ok=false' $O/checks.txt
  V="--variant default --variant vrows4 --variant vrows8 --variant vrows8-wg128 --variant rows4"
  TAILN=34 step mv_f16 150 node dist/dev/kernels/run.js matvec --kind f16 --shape 7b --tokens 1,2,4,8,16,32 $V --reps 20
  TAILN=34 step mv_q8 150 node dist/dev/kernels/run.js matvec --kind q8_0 --shape 7b --tokens 1,2,4,8,16,32 $V --reps 20
  TAILN=30 step crossover 90 node dist/dev/kernels/run.js matmul --kind f16 --shape 4096x4096 --shape 22016x4096 --tokens 16,32,64,128,512 --variant vrows4 --variant vrows8 --variant tiled --variant tiled4 --reps 10
fi
# The matrix × few-vectors kernel reading x as vec4f (-xv) against the default: workbench weight times, then the decode
# rows with each (the fused RMSNorm/SwiGLU inputs count in the step, not in the workbench), then FastGen's CPU side
# under node's profiler at batch 8 × 4096.
if [ "$MODE" = xv ]; then
  step checks 100 node dist/dev/kernels/run.js check
  grep -c 'ok=true' $O/checks.txt; grep 'ok=false' $O/checks.txt
  V="--variant default --variant default-xv --variant vrows4-xv --variant vrows8-xv --variant vrows8-wg64-xv --variant vrows16-xv"
  TAILN=20 step mv_f16 140 node dist/dev/kernels/run.js matvec --kind f16 --shape 7b --tokens 1,8,16 $V --reps 10
  B="node bin/fastgen.js bench --synthetic llama2-7b --dtype f16 --kv-dtype f16 --context 8192 -r 2"
  TAILN=14 step bench_xv 190 $B --matvec default-xv --cache full --cache fastgen --tests tg32@d32,tg16x8@d512,tg8x16@d512,tg8x8@d4096
  TAILN=8 step bench_default 80 $B --cache full --tests tg32@d32,tg16x8@d512
  TAILN=6 step prof 60 node --cpu-prof --cpu-prof-dir=/tmp/prof bin/fastgen.js bench --synthetic llama2-7b --dtype f16 --kv-dtype f16 --cache fastgen --context 8192 -r 1 --tests tg8x8@d4096
  tar czf $O/prof.tgz -C /tmp/prof .
fi
if [ "$MODE" = gpubench ]; then
  # At most 8 files come back from the device: everything in one archive, the table on stdout.
  OUT=/tmp/gpubench bash scripts/gpu-bench.sh; tar czf $O/gpubench.tgz -C /tmp/gpubench .
fi
# The step as it stands: every kernel check, the backend tests, attention per variant and KV dtype, and the decode rows
# of issue 13 (full vs FastGen's mix, f16 KV so that the full cache fits at 8 × 4096) with the step's split.
if [ "$MODE" = steps ]; then
  step checks 120 node dist/dev/kernels/run.js check
  grep -c 'ok=true' $O/checks.txt; grep 'ok=false' $O/checks.txt
  CI=true TAILN=12 step tests 300 node --test --test-concurrency=4 --test-name-pattern='stories260K|hf-tiny|batched|kernel|fork|chunked|f16 KV|server|generate' dist/test/webgpu-*.test.js
  step attention 90 bash -c 'for c in 512 4096; do for kv in f32 f16; do node dist/dev/kernels/run.js attention --ctx $c --kv-dtype $kv --reps 50 | grep -v adapter; done; done'
  TAILN=30 step bench 360 node bin/fastgen.js bench --synthetic llama2-7b --dtype f16 --kv-dtype ${KV:-f16} --cache full --cache fastgen --context 8192 -r 2 --tests ${TESTS:-tg32@d32,tg32@d2048,tg16x8@d512,tg8x8@d4096,tg8x32@d512}
fi
# Where a step's CPU time goes: the decode rows again under node's sampling profiler (profiles come back in prof.tgz).
if [ "$MODE" = prof ]; then
  TAILN=14 step bench 300 node --cpu-prof --cpu-prof-dir=/tmp/prof bin/fastgen.js bench --synthetic llama2-7b --dtype f16 --kv-dtype f16 --cache ${CACHE:-fastgen} --context 8192 -r 1 --tests ${TESTS:-tg16x8@d512,tg16x8@d4096}
  tar czf $O/prof.tgz -C /tmp/prof .
fi
if [ "$MODE" = gpuprobe ]; then
  step checks 90 node dist/dev/kernels/run.js check
  grep -c 'ok=true' $O/checks.txt; grep 'ok=false' $O/checks.txt
  TAILN=30 step probe 200 node bin/fastgen.js bench --synthetic llama2-7b --dtype f16 --cache full --cache fastgen --context 8192 -r 1 --tests tg32@d32,tg32@d2048,tg16x8@d512,tg16x16@d512,tg8x8@d4096
  TAILN=8 step variants 150 bash -c 'node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 32 --flush-layers 0; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 32 --flush-layers 8; node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 16 --batch 16 --tiled-from 9'
fi
