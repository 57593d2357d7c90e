#!/usr/bin/env bash
# `make agent-hot-code`: profiles the release device agent — started, serving, idle for 40 s, stopped — and rewrites
# Services/DeviceAgent/Executable/hot-code.ld, the linker script with which lld packs the code that ran before the
# rest of the text (Package.swift). First valgrind's callgrind (every instruction on the paths it took), then rounds
# of the native agent under `perf record -e page-faults` (what ran natively: BoringSSL's and others' variants for
# this CPU, which valgrind's emulated CPU never takes, and code a fault-around had hidden), each round linking with
# the script so far. Run it when the agent's start-up or idle path changed much; `make bench` reports how much of the
# script the current build still has (a stale script costs memory, never correctness).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v perf >/dev/null || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
# shellcheck source=Tools/scripts/release-flags.sh
source "$root/Tools/scripts/release-flags.sh"
prepare_release_scratch "${ORRERY_RELEASE_SCRATCH:-.build-release}"
scratch=(--scratch-path "${ORRERY_RELEASE_SCRATCH:-.build-release}" "${release_flags[@]}")
script="$root/Services/DeviceAgent/Executable/hot-code.ld"
order=("$root/Tools/scripts/hot-code-order.py")
rounds=${ORRERY_HOT_CODE_ROUNDS:-4}
work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-hot-code.XXXXXX")
trap 'rm -rf "$work"' EXIT
bin=$(swift build "${scratch[@]}" --show-bin-path)

# Links the agent with the current script, keeping the binary and lld's map (which input section holds which code).
link() {  # name
    swift build "${scratch[@]}" --product device-agent -Xlinker "-Map=$work/$1.map" >"$work/build.log" 2>&1 ||
        { cat "$work/build.log" >&2; exit 1; }
    cp "$bin/device-agent" "$work/$1"
}
# Runs an agent that is not joined, as `make bench` measures it, for `seconds`, then stops it.
idle_agent() {  # seconds command…
    local seconds=$1 status=0
    shift
    rm -rf "$work/state" && mkdir "$work/state" && echo '{}' >"$work/agent.json"
    timeout -s INT "$seconds" "$@" --grpc-port 0 --http-port 0 --state-dir "$work/state" --config "$work/agent.json" \
        --log-level error >"$work/run.log" 2>&1 || status=$?
    if [ "$status" != 0 ] && [ "$status" != 124 ]; then cat "$work/run.log" >&2; exit "$status"; fi
}

[ -f "$script" ] || printf '/* no hot code yet */\n' >"$script"
link agent0
# Valgrind 3.19 (Debian 12) cannot read the DWARF 5 that clang writes; the symbol table is all it needs. Under
# valgrind the agent runs ~50 times slower: its start-up takes most of the 120 s.
strip --strip-debug -o "$work/agent0-profiled" "$work/agent0"
idle_agent 120 valgrind --tool=callgrind --demangle=no --dump-instr=yes --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$work/idle.callgrind" "$work/agent0-profiled"
python3 "${order[@]}" sections "$work/agent0" "$work/agent0.map" --callgrind "$work/idle.callgrind" >"$work/sections0"
python3 "${order[@]}" script "$script" "$work/sections0"
for round in $(seq 1 "$rounds"); do
    link "agent$round"
    idle_agent 45 perf record -q -e page-faults -c 1 -o "$work/faults$round.data" "$work/agent$round"
    perf script -i "$work/faults$round.data" -F ip,sym,symoff,dso >"$work/faults$round.txt" 2>/dev/null
    python3 "${order[@]}" sections "$work/agent$round" "$work/agent$round.map" --perf "$work/faults$round.txt" \
        >"$work/sections$round"
    python3 "${order[@]}" script "$script" "$work"/sections*
done
link final  # the build directory's agent is linked with the new script
