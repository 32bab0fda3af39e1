#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a cycle, between files or between
folders. A module is a file of `src/` (`verify/token.rs` is `verify::token`, a folder's
`mod.rs` is the folder's own module); it imports another when its code names it with
`crate::...` or `super::...`. A folder (or a file at the top of `src/`) imports another when
any of its files does; a folder may not import a folder that imports it.

Prints, for each crate, the folder graph first (bottom first: each line imports only lines
above it), then the files of each folder in layers. Run by `make check` and `make test`.
Unit tests (`#[cfg(test)]` and below) may reach anywhere and are not counted. A folder's
`mod.rs` declaring its children (`mod x;`, `pub use x::*;`) is structure, not an import: a
name re-exported by it counts as an import of the child that defines it."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\buse (crate|super)((?:::[a-z_][a-z0-9_]*)*)::\{([^{}]*)\}")
ITEM = re.compile(r"^\s*pub(?:\([a-z]+\))?\s+(?:async\s+)?(?:fn|struct|enum|type|const|static|trait|mod|use\s+[^;]*::)\s*([A-Za-z_][A-Za-z0-9_]*)", re.M)
GLOB = re.compile(r"^\s*pub use ([a-z_][a-z0-9_]*)::\*;", re.M)
CHILD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod ([a-z_][a-z0-9_]*);", re.M)


def modules(src: Path) -> dict[str, Path]:
    """Module path (`verify::token`, `verify` for `verify/mod.rs`) -> file."""
    out = {}
    for p in src.rglob("*.rs"):
        rel = p.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"] or parts == ["main"] or "bin" in parts[:1]:
            continue
        if parts[-1] == "mod":
            parts = parts[:-1]
        out["::".join(parts)] = p
    return out


def code(path: Path) -> str:
    return path.read_text().split("#[cfg(test)]")[0]


def graph(src: Path) -> dict[str, set[str]]:
    mods = modules(src)
    texts = {m: code(p) for m, p in mods.items()}
    # What each folder module re-exports: item name -> the child module defining it.
    exported: dict[str, dict[str, str]] = {}
    for m, text in texts.items():
        if mods[m].name != "mod.rs":
            continue
        names = {}
        for child in GLOB.findall(text):
            full = f"{m}::{child}"
            for item in ITEM.findall(texts.get(full, "")):
                names.setdefault(item, full)
        exported[m] = names

    def resolve(here: str, root: str, rest: list[str]) -> str | None:
        if root == "crate":
            parts: list[str] = []
        else:  # `super` from a file is its folder; from a folder's mod.rs, the folder's parent
            parts = here.split("::")[:-1] if mods[here].name != "mod.rs" else here.split("::")[:-2]
        best = "::".join(parts) if parts else None
        for seg in rest:
            candidate = "::".join(parts + [seg])
            if candidate in mods:
                parts.append(seg)
                best = candidate
                continue
            if best in exported and seg in exported[best]:
                return exported[best][seg]
            break
        return best

    g = {}
    for m, text in texts.items():
        deps = set()
        for root, rest in PATH.findall(text):
            deps.add(resolve(m, root, rest.strip(":").split("::")))
        for root, prefix, group in GROUP.findall(text):
            for item in group.split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    path = prefix.strip(":").split("::") if prefix else []
                    deps.add(resolve(m, root, [p for p in path if p] + item.split("::")))
        # A folder's own children are structure, not imports.
        children = {f"{m}::{c}" for c in CHILD.findall(text)} if mods[m].name == "mod.rs" else set()
        g[m] = {d for d in deps if d and d in mods and d != m and d not in children}
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


def top(m: str) -> str:
    return m.split("::")[0]


def folders(g: dict[str, set[str]], src: Path) -> dict[str, set[str]]:
    """The top-level graph: each folder (and each file at the top of src/) as one node."""
    out: dict[str, set[str]] = {top(m): set() for m in g}
    for m, deps in g.items():
        out[top(m)] |= {top(d) for d in deps if top(d) != top(m)}
    return out


def label(name: str, src: Path) -> str:
    return f"{name}/" if (src / name).is_dir() else name


failed = False
for src in sorted(ROOT.glob("crates/*/src")):
    crate = src.parent.name
    g = graph(src)
    f = folders(g, src)
    c = cycle(f)
    if c:
        failed = True
        print(f"not ok - {crate}: folders import each other: {' -> '.join(label(n, src) for n in c)}")
    else:
        print(f"ok - {crate}: folder graph, bottom first (each line imports only lines above it):")
        for n in [n for layer in layers(f) for n in layer]:
            deps = ", ".join(label(d, src) for d in sorted(f[n])) or "-"
            print(f"       {label(n, src):<14} <- {deps}")
    c = cycle(g)
    if c:
        failed = True
        print(f"not ok - {crate}: files import each other: {' -> '.join(c)}")
    else:
        print(f"ok - {crate}: no file-level cycle; files in layers bottom-up: "
              + " | ".join(" ".join(l) for l in layers(g)))
sys.exit(1 if failed else 0)
