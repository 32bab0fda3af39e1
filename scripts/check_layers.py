#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a cycle (`crate::x` references between the
files of one `src/`). Prints each crate's module graph, bottom first. Run by `make check` and
`make test`; `--graph` prints the graph only."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def graph(src: Path) -> dict[str, set[str]]:
    mods = {p.stem: p for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    g = {}
    for name, path in mods.items():
        text = path.read_text()
        # Unit tests may reach anywhere; only the module's own code counts.
        text = text.split("#[cfg(test)]")[0]
        deps = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"\buse crate::\{([^}]*)\}", text):
            deps |= {d.split("::")[0].strip() for d in group.split(",") if d.strip()}
        g[name] = {d for d in deps if d in mods and d != name}
    return g


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def layers(g: dict[str, set[str]]) -> list[list[str]]:
    done: set[str] = set()
    out = []
    while len(done) < len(g):
        layer = sorted(n for n in g if n not in done and g[n] <= done)
        if not layer:
            break
        out.append(layer)
        done |= set(layer)
    return out


failed = False
for src in sorted(ROOT.glob("crates/*/src")):
    g = graph(src)
    c = cycle(g)
    crate = src.parent.name
    if c:
        failed = True
        print(f"not ok - {crate}: import cycle {' -> '.join(c)}")
    else:
        print(f"ok - {crate}: no import cycle; layers bottom-up: " + " | ".join(" ".join(l) for l in layers(g)))
sys.exit(1 if failed else 0)
