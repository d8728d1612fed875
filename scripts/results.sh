#!/usr/bin/env bash
# Regenerates docs/results.md (its generated sections) and docs/figures/ by running `fastgen eval` on stories260K and
# stories15M. Hand-written text in docs/results.md outside the <!-- eval:... --> markers is kept.
#
#   scripts/results.sh                      # backend: wasm if built, else cpu-ref
#   BACKEND=cpu-ref scripts/results.sh      # force a backend
#   ARGS_15M="--prompts 8 --max-tokens 64" scripts/results.sh   # a smaller stories15M run
#
# stories15M runs the default evaluation (20 prompts × 96 tokens) with two judge samples per prompt. stories260K is
# ~30× cheaper, so it runs twice the prompts (40), also with two judge samples each, plus a sweep of lower thresholds
# (no markdown section; text and JSON in docs/figures/) showing where its heads start choosing the cheap policies.
# Time on 2 cores: about 7 minutes with wasm (stories15M 5½ of them); cpu-ref is several times slower (~1 hour+).
#
# Needs ../shared (models/stories260K and data/) next to the repository, as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${FASTGEN_SHARED:-../shared}

npx tsc -p tsconfig.json || echo "results.sh: tsc reported errors (work in progress elsewhere?); using what it emitted" >&2

if [[ -z "${BACKEND:-}" ]]; then
  if node -e "import('./dist/src/backend/index.js').then(m => process.exit(m.BACKEND_NAMES.includes('wasm') ? 0 : 1))" 2>/dev/null; then
    BACKEND=wasm
  else
    BACKEND=cpu-ref
  fi
fi
echo "results.sh: backend $BACKEND" >&2
mkdir -p docs/figures
rc=0 # an invariant failure (exit 3) still writes its report (marked ❌); the script exits non-zero at the end

# shellcheck disable=SC2086 # ARGS_* are flag lists
node bin/fastgen.js eval -m "$SHARED/models/stories260K/stories260K.bin" --backend "$BACKEND" --data "$SHARED/data" \
  --out docs/figures/stories260K.json --svg-dir docs/figures --markdown docs/results.md ${ARGS_260K:---prompts 40 --samples 2} || rc=$?
# shellcheck disable=SC2086
node bin/fastgen.js eval -m "$SHARED/models/stories260K/stories260K.bin" --backend "$BACKEND" --data "$SHARED/data" \
  --thresholds 0.5,0.6,0.7,0.8,0.9,1 --no-ablation --out docs/figures/stories260K-low-T.json \
  --svg-dir docs/figures/stories260K-low-T ${ARGS_260K_LOW_T:-} \
  > docs/figures/stories260K-low-T.txt || rc=$?
# shellcheck disable=SC2086
node bin/fastgen.js eval --backend "$BACKEND" --data "$SHARED/data" \
  --out docs/figures/stories15M.json --svg-dir docs/figures --markdown docs/results.md ${ARGS_15M:---samples 2} || rc=$?
exit $rc
