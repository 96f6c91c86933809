# What a newcomer reads to follow one request: for each file named, its lines and its
# lines of code (neither blank nor a comment), unit-test modules left out, then totals.
#
#   python3 .ci/reading-path.py REV FILE...   (run in the repository; REV is any commit)
import re
import subprocess
import sys


def read(rev, path):
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True,
                          text=True, check=True).stdout
    lines, kept, depth, skipping = text.splitlines(), [], 0, False
    for i, line in enumerate(lines):
        starts_tests = (line.strip() == "#[cfg(test)]" and i + 1 < len(lines)
                        and re.match(r"\s*mod \w+\s*(\{|;)", lines[i + 1]))
        if not skipping and starts_tests:
            skipping, depth = True, 0
            continue
        if skipping:
            depth += line.count("{") - line.count("}")
            if depth <= 0 and ("}" in line or line.strip().endswith(";")):
                skipping = False
            continue
        kept.append(line)
    code = [l for l in kept if l.strip() and not l.strip().startswith("//")]
    return len(kept), len(code)


rev, files = sys.argv[1], sys.argv[2:]
total = total_code = 0
for path in files:
    n, code = read(rev, path)
    total, total_code = total + n, total_code + code
    print(f"{n:6} {code:6} {path}")
print(f"{len(files)} files, {total} lines, {total_code} lines of code")
