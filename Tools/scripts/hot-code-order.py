#!/usr/bin/env python3
"""Writes the device agent's hot-code linker script: the code an agent ran, packed together at the start of its text.

  hot-code-order.py sections BINARY LINK_MAP [--callgrind FILE] [--perf FILE]
      prints the input sections (object file and section, with their size) that held code BINARY ran: every
      instruction valgrind's callgrind saw run (`--dump-instr=yes --compress-pos=no`; complete for the paths it
      took, but valgrind's CPU lacks some instruction sets, so BoringSSL's and others' native variants never run
      under it), and those that took the page faults `perf record -e page-faults` saw natively (`perf script -F
      ip,sym,symoff,dso`).
      LINK_MAP is lld's map (-Map) of BINARY.
  hot-code-order.py script OUT SECTIONS_FILE...
      writes the linker script: those input sections, first seen first, in an output section placed before .text.

Input sections, not symbols: with function sections each function has its own, and many functions the compiler
emits (value witnesses, outlined copies) have no symbol a symbol-ordering file could name. Sections that hold much
more than what ran (objects compiled without function sections, such as the toolchain's Foundation) come after the
small ones: placed among them, they would spread the hot code over megabytes again.
"""
import bisect
import collections
import re
import subprocess
import sys

SMALL_BYTES = 16384  # sections up to this size are packed first, in the order they ran
SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
MAP_LINE = re.compile(r"^\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+(\d+) (\s*)(\S.*)$")
MAP_INPUT = re.compile(r"^(.*?)(?:\(([^()]*)\))?:\((\.text[^()]*)\)$")
PERF_SAMPLE = re.compile(r"^\s*([0-9a-f]+)\s+(\S+?)(?:\+0x([0-9a-f]+))?\s+\((.*)\)\s*$")


def input_pattern(path, member, section):
    """A linker-script input section description that names this section wherever the build directory is."""
    if member:  # an archive's member: lld matches "archive:member"
        file_pattern = "*/" + path.rsplit("/", 1)[-1] + ":" + member
    elif "/release/" in path:  # one of this build's objects, under .build-*/<triple>/release/
        file_pattern = "*/" + path.split("/release/", 1)[1]
    else:
        return None  # the C runtime's start files
    return f'{file_pattern}("{section}")'


def text_sections(map_path):
    """[(start address, size, pattern)] of the input sections of the output sections .text and .text.hot."""
    sections, inside = [], False
    with open(map_path) as link_map:
        for line in link_map:
            match = MAP_LINE.match(line)
            if not match:
                continue
            depth = len(match.group(5))
            if depth == 0:
                inside = match.group(6) in (".text", ".text.hot")
            elif inside and depth == 8:
                described = MAP_INPUT.match(match.group(6))
                pattern = described and input_pattern(*described.groups())
                sections.append((int(match.group(1), 16), int(match.group(3), 16), pattern))
    sections.sort()
    return sections


def symbol_addresses(binary):
    """The address of every symbol of the binary, by name."""
    listing = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    addresses = {}
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:
            addresses.setdefault(fields[2], int(fields[0], 16))
    return addresses


def callgrind_addresses(path, addresses, section_starts):
    """Link-time addresses of the executable's instructions callgrind saw run (`--dump-instr=yes
    --compress-pos=no`), first seen first: every instruction, so code without a symbol counts too."""
    by_object, order = collections.defaultdict(list), []
    evidence = collections.defaultdict(collections.Counter)  # object -> candidate load bias -> functions agreeing
    current_object, function, first_seen = None, None, set()
    with open(path, errors="replace") as profile:
        for line in profile:
            if line.startswith("ob="):
                current_object = line[3:].strip()
            elif line.startswith("fn="):
                function = re.sub(r"'\d+$", "", line[3:].strip())  # 'N: recursion depth
            elif line.startswith("0x") and not SHARED_LIBRARY.search(current_object or ""):  # ours, or "???"
                address = int(line.split()[0], 16)
                by_object[current_object].append(address)
                order.append((current_object, address))
                if (current_object, function) in first_seen:
                    continue
                first_seen.add((current_object, function))
                if function in addresses:  # entered at (or just after) its symbol
                    evidence[current_object][(address - addresses[function]) & ~0xFFF] += 1
                elif function and function.startswith("0x"):  # code without a symbol: named by its address
                    named = int(function, 16)
                    for bias in (0, 0x108000):  # as linked, or where valgrind loads a position-independent executable
                        if named - bias in section_starts:
                            evidence[current_object][bias] += 1
    # Valgrind reports some code at its link address and some where it loaded it, by the object it attributes the
    # code to: each object's offset is the one most of its functions agree on.
    bias_of = {name: votes.most_common(1)[0][0] for name, votes in evidence.items() if votes}
    return [address - bias_of[name] for name, address in order if name in bias_of]


def perf_addresses(path, binary, addresses):
    """Link-time addresses of the page faults' instructions in binary, in fault order."""
    samples, load_bias = [], None
    with open(path, errors="replace") as script:
        for line in script:
            match = PERF_SAMPLE.match(line)
            if not match or not match.group(4).endswith(binary.rsplit("/", 1)[-1]):
                continue
            ip = int(match.group(1), 16)
            samples.append(ip)
            if load_bias is None and match.group(3) and match.group(2) in addresses:
                load_bias = ip - int(match.group(3), 16) - addresses[match.group(2)]
    if load_bias is None:
        sys.exit(f"no sample of {path} names a symbol of {binary}")
    return [ip - load_bias for ip in samples]


def list_sections(arguments):
    binary, map_path, options = arguments[0], arguments[1], arguments[2:]
    if len(options) % 2 or any(flag not in ("--callgrind", "--perf") for flag in options[::2]):
        sys.exit(__doc__)
    addresses = symbol_addresses(binary)
    sections = text_sections(map_path)
    starts = [start for start, _, _ in sections]
    ran = []
    for flag, path in zip(options[::2], options[1::2]):
        if flag == "--callgrind":
            ran += callgrind_addresses(path, addresses, set(starts))
        else:
            ran += perf_addresses(path, binary, addresses)
    seen = {}
    for address in ran:
        index = bisect.bisect_right(starts, address) - 1
        if index >= 0:
            start, size, pattern = sections[index]
            if pattern and address < start + max(size, 1):
                seen.setdefault(pattern, size)
    for pattern, size in seen.items():
        print(f"{size}\t{pattern}")


def write_script(out, paths):
    seen = {}
    for path in paths:
        with open(path) as listing:
            for line in listing:
                size, _, pattern = line.rstrip("\n").partition("\t")
                if pattern:
                    seen.setdefault(pattern, int(size))
    small = [pattern for pattern, size in seen.items() if size <= SMALL_BYTES]
    large = [pattern for pattern, size in seen.items() if size > SMALL_BYTES]
    with open(out, "w") as script:
        script.write(
            "/* The device agent's hot code (see Package.swift): the input sections that held code a profiled agent\n"
            "   ran, first packed together before the rest of the text, so an agent's code pages are few. Generated\n"
            "   by Tools/scripts/agent-hot-code.sh; a section no longer in the build matches nothing. */\n"
            f"/* hot bytes when written: {sum(seen.values())} */\n"
            "SECTIONS {\n  .text.hot : {\n"
        )
        script.writelines(f"    {pattern}\n" for pattern in small + large)
        script.write("  }\n}\nINSERT BEFORE .text;\n")
    print(f"{len(small)} small sections ({sum(seen[p] for p in small) / 1048576:.2f} MiB) packed, "
          f"{len(large)} larger ones ({sum(seen[p] for p in large) / 1048576:.2f} MiB) after them")


def main():
    arguments = sys.argv[1:]
    if len(arguments) >= 3 and arguments[0] == "sections":
        list_sections(arguments[1:])
    elif len(arguments) >= 3 and arguments[0] == "script":
        write_script(arguments[1], arguments[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
