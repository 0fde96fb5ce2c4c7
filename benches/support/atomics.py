#!/usr/bin/env python3
"""Atomic read-modify-write instructions per request, from a callgrind dump.

    atomics.py BINARY CALLGRIND_OUT REQUESTS [TOP]

The dump must come from `valgrind --tool=callgrind --dump-instr=yes` (what
`ATOMICS=1 benches/callgrind.sh` runs). Every `lock`-prefixed instruction of
BINARY, and every `xchg` with memory (locked without the prefix), is found
with objdump; the times callgrind saw each one execute are summed, in total
and by function. Callgrind counts instructions, not their cost: an atomic
costs tens of cycles where most instructions cost one, so this count says
what a plain instruction count hides. Only BINARY's own code is counted
(not libc's).
"""

import collections
import re
import subprocess
import sys


def atomic_sites(binary):
    """Address -> (function, instruction) of every atomic RMW in BINARY."""
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", binary],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sites, function = {}, "?"
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if head:
            function = head.group(2)
            continue
        insn = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", line)
        if insn and re.match(r"lock |xchg\s+%\w+,[-(0-9]", insn.group(2)):
            sites[int(insn.group(1), 16)] = (function, insn.group(2).split()[0:2])
    return sites


def executions(dump, binary, sites):
    """Times each site ran, from the dump's per-instruction self costs."""
    names, obj, addr, call_line = {}, None, 0, False
    counts = collections.Counter()
    with open(dump) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(("ob=", "cob=")):
                key, _, value = line.partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", value)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1)) if m else value
                if key == "ob":
                    obj = name
                continue
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost.
                call_line = True
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            pos = line.split()
            p = pos[0]
            if p.startswith("0x"):
                addr = int(p, 16)
            elif p[0] in "+-":
                step = int(p[1:], 0)
                addr += step if p[0] == "+" else -step
            if call_line:
                call_line = False
                continue
            if obj == binary and addr in sites and len(pos) >= 3:
                counts[addr] += int(pos[2])
    return counts


def main():
    binary, dump, requests = sys.argv[1], sys.argv[2], float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    sites = atomic_sites(binary)
    counts = executions(dump, binary, sites)
    total = sum(counts.values())
    print(f"atomic read-modify-writes per request: {total / requests:.1f}")
    by_function = collections.Counter()
    for addr, n in counts.items():
        by_function[sites[addr][0]] += n
    for function, n in by_function.most_common(top):
        if n / requests >= 0.1:
            print(f"{n / requests:6.2f}  {function[:150]}")


if __name__ == "__main__":
    main()
