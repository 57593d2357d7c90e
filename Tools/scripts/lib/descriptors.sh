# Sourced by the scripts that start daemons: what such a daemon must not keep from its starter.

# Closes every descriptor above 2 this (sub)shell inherited. A daemon started after it does not hold a descriptor its
# starter's caller waits on: a caller that learns of a script's end when such a descriptor closes (Foundation's
# Process does) would otherwise wait for the daemon's end instead. Call it in the subshell that starts the daemon.
close_inherited_descriptors() {
    local fd
    for fd in $(ls "/proc/$BASHPID/fd"); do
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}
