#!/usr/bin/env bash
# fastgen against llama.cpp on the default model (stories15M), interleaved rounds on this machine (dev/llamacpp/compare.ts).
# Not part of CI or of `npm test`: it installs and builds outside the repository.
#
#   scripts/llamacpp-bench.sh [ROUNDS]          # default 5 rounds; LLAMACPP_DIR (default /work/llamacpp) holds the build
#
# Steps (each skipped when its result exists):
#   1. npm-install node-llama-cpp@3.22.1 into $LLAMACPP_DIR (scripts off): it ships llama.cpp's source (a git bundle)
#      and prebuilt CPU libraries (libllama, libggml, one libggml-cpu per x86 level, loaded at run time).
#   2. Build llama-bench from that source, linked against those prebuilt libraries (its two .cpp files only: about a
#      minute on 2 idle cores; the libraries are the ones node-llama-cpp users run).
#   3. Convert stories15M to GGUF, f32 and q8_0, with our own converter (dev/llamacpp/to-gguf.ts).
#   4. Run the rounds; print the table (docs/bench.md keeps the last one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
DIR=${LLAMACPP_DIR:-/work/llamacpp}
VERSION=3.22.1
mkdir -p "$DIR"

if [[ ! -d "$DIR/node_modules/node-llama-cpp" ]]; then
  echo "llamacpp-bench: installing node-llama-cpp@$VERSION into $DIR" >&2
  (cd "$DIR" && { [[ -f package.json ]] || npm init -y >/dev/null; } && npm install --ignore-scripts --no-audit --no-fund "node-llama-cpp@$VERSION" >&2)
fi
PKG="$DIR/node_modules/node-llama-cpp/llama"
LIBS="$DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
[[ -d "$LIBS" ]] || { echo "llamacpp-bench: no prebuilt linux-x64 libraries in $LIBS (node-llama-cpp ships them for x86-64 Linux only)" >&2; exit 1; }

BIN="$DIR/bin/llama-bench"
if [[ ! -x "$BIN" ]]; then
  echo "llamacpp-bench: building llama-bench ($(cat "$PKG/llama.cpp.info.json" | tr -d '\n ' ))" >&2
  rm -rf "$DIR/src"
  git -c advice.detachedHead=false clone -q "$PKG/gitRelease.bundle" "$DIR/src"
  mkdir -p "$DIR/bin"
  llama=$(basename "$(ls "$LIBS"/libllama.v*.so | head -1)")
  ggml=$(basename "$(ls "$LIBS"/libggml.v*.so | head -1)")
  (cd "$DIR/src" && g++ -std=c++17 -O2 -DNDEBUG -Iinclude -Iggml/include -Icommon -Ivendor -Itools/llama-bench \
    tools/llama-bench/llama-bench.cpp tools/llama-bench/main.cpp -o "$BIN" \
    -L"$LIBS" -l:libllama-common.so -l:$llama -l:$ggml -l:libggml-base.so -Wl,-rpath,"$LIBS" -pthread)
  # ggml looks for its CPU backends (libggml-cpu-<level>.so) next to the executable.
  for f in "$LIBS"/*.so; do ln -sf "$f" "$DIR/bin/"; done
fi

npm run build >/dev/null
mkdir -p "$DIR/models"
for t in f32 q8_0; do
  [[ -f "$DIR/models/stories15M-$t.gguf" ]] || node dist/dev/llamacpp/to-gguf.js "$DIR/models/stories15M-$t.gguf" --type "$t"
done

echo "llamacpp-bench: $ROUNDS rounds; uptime: $(uptime)" >&2
node dist/dev/llamacpp/compare.js --llama-bench "$BIN" --gguf-f32 "$DIR/models/stories15M-f32.gguf" \
  --gguf-q8_0 "$DIR/models/stories15M-q8_0.gguf" --rounds "$ROUNDS" --threads 2 "${@:2}"
