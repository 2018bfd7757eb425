"""The README's "Use it as a dependency" program and tests/consumer/src/main.rs hold the same
code: the lines between the consumer's `// README: begin` and `// README: end` markers equal the
README block's lines that are not hidden doctest lines (`# ...`). Exits 1 naming the first
difference."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()
heading = "## Use it as a dependency"
if heading not in readme:
    sys.exit(f"README.md has no '{heading}' section")
section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
found = re.search(r"```rust[^\n]*\n(.*?)```", section, re.S)
if not found:
    sys.exit(f"README.md's '{heading}' section has no rust block")
block = found.group(1)
shown = [l for l in block.splitlines() if not l.lstrip().startswith("# ") and l.strip() != "#"]
main = (root / "tests/consumer/src/main.rs").read_text()
if "// README: begin\n" not in main or "    // README: end" not in main:
    sys.exit("tests/consumer/src/main.rs lacks the README: begin/end markers")
body = main.split("// README: begin\n", 1)[1].split("    // README: end", 1)[0]
program = [l[4:] if l.startswith("    ") else l for l in body.splitlines()]
if shown != program:
    for i, (a, b) in enumerate(zip(shown + [""] * 99, program + [""] * 99)):
        if a != b:
            print(f"README vs tests/consumer line {i + 1}:\n  README:   {a!r}\n  consumer: {b!r}")
            break
    sys.exit(1)
print(f"README snippet and tests/consumer agree ({len(program)} lines)")
