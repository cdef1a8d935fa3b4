#!/usr/bin/env bash
# Time-boxed fuzzing of every `cargo fuzz` target in fuzz/ (codec requests and responses,
# scenario loading, JWT parsing), starting from the seed corpus in fuzz/corpus/<target>/.
#
# Cheap on a clean 2-core machine: one release build without a sanitizer (`--sanitizer none`:
# the targets are safe Rust, so coverage-guided panics are what we look for) is shared by every
# target, and each target runs FUZZ_SECONDS (default 35). No nightly toolchain is needed: the
# project's own toolchain builds with RUSTC_BOOTSTRAP=1 (for the -Z flags cargo fuzz passes);
# FUZZ_TOOLCHAIN=nightly uses an installed nightly instead.
#
# New inputs go to a scratch corpus, never into the repository; a crash fails the script and
# leaves its input in $FUZZ_OUT/artifacts/ (printed), to be fixed and turned into a regression
# test. Usage: scripts/ci/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-35}
out=${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/fleetsim-fuzz.XXXXXX")}

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain=("+$FUZZ_TOOLCHAIN")
else
  export RUSTC_BOOTSTRAP=1
fi
# The same flags for the build and every run, so the runs reuse the one build.
flags=(--release --sanitizer none)

cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

echo "fuzz: building ${targets[*]} ($(date -u +%H:%M:%S))"
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
mkdir -p "$out/artifacts"
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s ($(date -u +%H:%M:%S))"
  mkdir -p "$out/corpus/$target"
  if ! cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" \
    "$out/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/artifacts/$target-" -print_final_stats=1 \
    >"$out/$target.log" 2>&1; then
    tail -n 60 "$out/$target.log"
    echo "fuzz: $target FAILED; the input is in $out/artifacts/ (log $out/$target.log)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units' "$out/$target.log" | sed "s/^/fuzz: $target /" || true
done
echo "fuzz: every target ran ${seconds}s without a crash ($(date -u +%H:%M:%S))"
