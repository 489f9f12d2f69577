#!/usr/bin/env python3
"""Self cost per function of two callgrind files, and what changed, per request.

    KEEP=/tmp/a BIN_DIR=old bench/instructions.sh; KEEP=/tmp/b BIN_DIR=new bench/instructions.sh
    python3 bench/callgrind_diff.py /tmp/a/omi.callgrind /tmp/b/omi.callgrind [REQUESTS [TOP]]

`callgrind_annotate` on this machine prints inclusive costs only (every function under `clone`
at 100%); this reads the format itself: a cost line belongs to the current `fn=`, except the
line after `calls=`, which is the callee's inclusive cost. Names are grouped by crate (the
first path segment) and listed by the largest change, the TOP (20) largest.
"""
import collections
import re
import sys


def self_costs(path):
    names, costs, current, after_call = {}, collections.Counter(), None, False
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if match and match.group(2):
                names[match.group(1)] = match.group(2)
            if line.startswith("fn="):
                current = names.get(match.group(1)) if match else line[3:].strip()
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if len(fields) >= 2 and not after_call:
                costs[current] += int(fields[1])
            after_call = False
    return costs


def crate(name):
    match = re.match(r"<?([A-Za-z_][A-Za-z_0-9]*)", name or "")
    return match.group(1) if match else str(name)


def main():
    old, new = self_costs(sys.argv[1]), self_costs(sys.argv[2])
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    print(f"instructions per request: {sum(old.values()) / requests:.0f} -> {sum(new.values()) / requests:.0f}")
    for title, (a, b) in {"by crate": (collections.Counter(), collections.Counter()), "by function": (old, new)}.items():
        if title == "by crate":
            for name, cost in old.items():
                a[crate(name)] += cost
            for name, cost in new.items():
                b[crate(name)] += cost
        print(f"== {title} (old, new, change per request)")
        for name in sorted(set(a) | set(b), key=lambda n: -abs(b[n] - a[n]))[:top]:
            print(f"{a[name] / requests:9.0f} {b[name] / requests:9.0f} {(b[name] - a[name]) / requests:+8.0f}  {str(name)[:110]}")


if __name__ == "__main__":
    main()
