#!/usr/bin/env bash
# `make fuzz`: builds the cargo-fuzz targets in fuzz/ and runs each for
# FUZZ_SECONDS (default 60), then prints one summary line per target.
#
#   FUZZ_SECONDS=300 make fuzz                      # longer runs
#   FUZZ_TARGETS="gradient_push" make fuzz          # some targets only
#   FUZZ_ARGS="-max_len=8192" make fuzz             # extra libFuzzer flags
#   FUZZ_TOOLCHAIN=stable make fuzz                 # a rustup toolchain other than nightly
#
# Needs no libtorch. cargo-fuzz comes from PATH, else from .tools/cargo-fuzz
# (git-ignored), where it is installed from crates.io on first use. It runs
# on the nightly toolchain when rustup has one, else on the default (stable)
# one with RUSTC_BOOTSTRAP=1 for the -Z flags of the sanitizer and of
# coverage instrumentation. New corpus inputs go to fuzz/corpus/TARGET,
# crashing inputs to fuzz/artifacts/TARGET, libFuzzer's output to
# fuzz/logs/TARGET.log (all git-ignored); the seeds are fuzz/seeds/TARGET.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"job_file proto_job_spec gradient_push"}
cargo_fuzz_version=0.13.2
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a whole number of seconds > 0, not '$seconds'" >&2
    exit 2
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    tools=$root/.tools/cargo-fuzz
    if ! [ -x "$tools/bin/cargo-fuzz" ]; then
        echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into .tools/cargo-fuzz (once, a few minutes)" >&2
        cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --root "$tools"
    fi
    export PATH=$tools/bin:$PATH
fi

# FUZZ_TOOLCHAIN names a rustup toolchain to use instead (e.g. stable, to
# check what a machine without nightly does).
chosen=${FUZZ_TOOLCHAIN:-}
if [ -z "$chosen" ] && rustup run nightly rustc --version >/dev/null 2>&1; then
    chosen=nightly
fi
toolchain=()
if [ -n "$chosen" ]; then
    toolchain=(+"$chosen")
    version=$(rustup run "$chosen" rustc --version)
else
    version=$(rustc --version)
fi
if [[ $version == *nightly* ]]; then
    echo "fuzz: toolchain $version" >&2
else
    export RUSTC_BOOTSTRAP=1
    echo "fuzz: toolchain $version with RUSTC_BOOTSTRAP=1 (no nightly)" >&2
fi
# A libtorch-free build: none of the workspace's libtorch settings apply.
unset LIBTORCH LIBTORCH_USE_PYTORCH

mkdir -p logs
: >logs/build.log
echo "fuzz: building $targets (log: fuzz/logs/build.log)" >&2
for target in $targets; do
    cargo "${toolchain[@]}" fuzz build "$target" >>logs/build.log 2>&1 || {
        tail -30 logs/build.log >&2
        echo "fuzz: building $target failed (fuzz/logs/build.log)" >&2
        exit 1
    }
done
failed=()
summaries=()
for target in $targets; do
    mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10)
    if [ -f "dicts/$target.dict" ]; then
        args+=(-dict="dicts/$target.dict")
    fi
    log=logs/$target.log
    echo "fuzz: $target for ${seconds}s (log: fuzz/$log)" >&2
    started=$(date +%s)
    status=0
    # shellcheck disable=SC2086
    cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "seeds/$target" -- "${args[@]}" ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - started))
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    # The last status line: "#N DONE cov: C ft: F corp: U/SIZE ..." (or pulse/NEW/REDUCE).
    status_line=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")
    corpus=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9a-zA-Z]*\).*/\1 inputs, \2/p' <<<"$status_line")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    artifact=${artifact#"$root"/}
    if [ "$status" -eq 0 ]; then
        found="no crashes"
    else
        failed+=("$target")
        found="CRASH (exit $status)${artifact:+: $artifact}"
        # The panic and its message (the line after), or the sanitizer's report.
        sed -n -e '/panicked at/{p;n;p;q}' -e '/ERROR: AddressSanitizer/{p;q}' "$log" | sed 's/^/    /' >&2
    fi
    summaries+=("$(printf '%-15s %4ss  %10s execs (%s/s)  cov %s  features %s  corpus %s  %s' \
        "$target" "$elapsed" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$found")")
done

echo
echo "fuzz summary (FUZZ_SECONDS=$seconds per target):"
printf '  %s\n' "${summaries[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo
    echo "Crashing inputs are in fuzz/artifacts/TARGET/. Reproduce one in fuzz/ with"
    if [ -n "${RUSTC_BOOTSTRAP:-}" ]; then
        echo "  RUSTC_BOOTSTRAP=1 cargo ${toolchain[*]:-} fuzz run TARGET artifacts/TARGET/crash-..."
    else
        echo "  cargo ${toolchain[*]} fuzz run TARGET artifacts/TARGET/crash-..."
    fi
    echo "(cargo-fuzz: $(command -v cargo-fuzz)), fix it, and add it as a regression test (README, \"Fuzzing\")."
    exit 1
fi
