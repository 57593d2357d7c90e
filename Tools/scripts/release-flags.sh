# Sourced by the scripts that build for release (bench, abuse, install, agent-hot-code): one set of flags, so that
# what is measured is what is installed.
# - The Swift runtime is linked statically: the hosts need no Swift toolchain.
# - Every function in its own section (Swift, C and C++): the linker drops what nothing calls, and packs the device
#   agent's hot code together in the order of Services/DeviceAgent/Executable/hot-code.order (see Package.swift).
# shellcheck disable=SC2034  # used by the scripts that source this file
release_flags=(-c release --static-swift-stdlib
    -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections -Xcxx -ffunction-sections)
