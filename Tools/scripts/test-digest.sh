#!/usr/bin/env bash
# Usage: test-digest.sh LOG
# After a failed `swift test`: repeats, at the end of the output, what a reader of only its last lines needs — the
# tests that failed and the issues they recorded, the crash message and the crashed thread's frames, and the tests
# that were still running when the test process died (CI keeps only the tail of a long log).
set -euo pipefail
log=$1

echo "== digest of the failed test run (the whole output is above)"
awk '
    # The name of a test from its line: after "Test ", before the fixed ending (a name may itself say "passed").
    function name(line, ending) {
        sub(/^[^ ]+ Test /, "", line)
        sub(ending, "", line)
        return line
    }
    /^◇ Test (run started|case )/ { next }
    /^◇ Test .* started\.$/ { running[name($0, " started[.]$")] = NR; next }
    /^✔ Test .* passed after [0-9.]+ seconds/ {
        delete running[name($0, " (with [0-9]+ test cases? )?passed after [0-9.]+ seconds.*$")]
        next
    }
    /^➜ Test .* skipped/ { delete running[name($0, " skipped(:.*|[.])$")]; next }
    /^✘ Test .* failed after [0-9.]+ seconds/ {
        delete running[name($0, " (with [0-9]+ test cases? )?failed after [0-9.]+ seconds.*$")]
        failed[++nfailed] = $0
        next
    }
    /^✘ Test .* recorded an issue/ { if (++nissues <= 40) issues[nissues] = $0; next }
    /Fatal error|Precondition failed|Assertion failed|fatal error:|Program crashed/ { crash[++ncrash] = $0; next }
    /^Thread [0-9]+ .*crashed:/ { frames = 60; crash[++ncrash] = $0; next }
    frames > 0 {
        if ($0 ~ /^(Registers|Images|Backtrace took)/) { frames = 0; next }
        frames--
        if ($0 != "") crash[++ncrash] = $0
        next
    }
    END {
        if (nfailed) { print "-- tests that failed:"; for (i = 1; i <= nfailed; i++) print failed[i] }
        if (nissues) {
            print "-- issues they recorded" (nissues > 40 ? " (the first 40 of " nissues ")" : "") ":"
            for (i = 1; i <= nissues && i <= 40; i++) print issues[i]
        }
        if (ncrash) { print "-- the test process crashed:"; for (i = 1; i <= ncrash; i++) print crash[i] }
        n = 0
        for (test in running) n++
        if (n) {
            print "-- tests still running when the run ended (one of them crashed if the process did):"
            for (test in running) print "   " test
        }
    }
' "$log"
