#!/usr/bin/env bash
# A short run of every fuzz target (CI runs it); FUZZ_SECONDS sets the time per target (default 15).
# Each target starts from its corpus and, when there is one, the seeds in fuzz/seeds/<target>.
# A crash fails the run and is saved under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
seconds=${FUZZ_SECONDS:-15}
# No sanitizer: the code under test forbids unsafe, and the build and runs are much faster without ASan.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    dirs=("corpus/$target")
    [[ -d "seeds/$target" ]] && dirs+=("seeds/$target")
    echo "== fuzz $target (${seconds}s)"
    log=$(mktemp)
    if ! cargo fuzz run -s none "$target" "${dirs[@]}" -- -max_total_time="$seconds" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz target $target failed"
        exit 1
    fi
    grep -E "^Done" "$log"
    rm -f "$log"
done
