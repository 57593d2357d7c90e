# Sourced by the scripts that build for release (bench, abuse, install, agent-hot-code): one set of flags, so that
# what is measured is what is installed.
# - The Swift runtime is linked statically: the hosts need no Swift toolchain.
# - Every function in its own section (Swift, C and C++): the linker drops what nothing calls, and packs the device
#   agent's hot code together (Services/DeviceAgent/Executable/hot-code.ld, see Package.swift).
# shellcheck disable=SC2034  # used by the scripts that source this file
release_flags=(-c release --static-swift-stdlib
    -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections -Xcxx -ffunction-sections)

# SwiftPM does not recompile a Swift module when only the -Xswiftc flags change, so a build directory whose release
# objects were compiled with other flags would link them as they are (measured: an agent without function sections,
# its hot code not packed). Clears the release objects of scratch directory $1 when its stamp names other flags.
prepare_release_scratch() {  # scratch directory
    local stamp="$1/release-flags.stamp"
    if [ -d "$1" ] && [ "$(cat "$stamp" 2>/dev/null)" != "${release_flags[*]}" ]; then
        echo "release flags changed: rebuilding $1's release objects" >&2
        rm -rf "$1"/*-unknown-linux-gnu/release "$1"/*-linux-gnu/release "$1/release"
    fi
    mkdir -p "$1"
    echo "${release_flags[*]}" >"$stamp"
}
