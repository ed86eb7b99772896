#!/usr/bin/python3
"""The rooms of the source tree, checked against the table in docs/architecture.md.

Run: check_rooms.py [--root DIR]     check the tree (exit 0, or 1 with one line per finding)
     check_rooms.py --self-test      plant each kind of finding in a scratch tree; every one must be found

The table (the section "## Rooms" of docs/architecture.md) has one row per room:
    | `room` | what it owns | `lower`, `rooms` it may include |
A room is a folder; a file belongs to the deepest room whose folder contains it. Checks:
  1. the table is a DAG (no room reaches itself through "may include");
  2. every C source and header of the tree is in a room, and every room's folder exists;
  3. every #include "x/y.h" of a file names a header of its own room or of a room its row allows
     (generated protobuf headers: gantry/... is api/proto's, grpc/... is server/grpc's);
  4. every gantry_* library a room's CMakeLists.txt links (target_link_libraries) belongs to the
     same room or an allowed one (libraries are assigned to rooms by gantry_room(...) calls);
  5. every room is named in the module diagram (the ``` block under "## Rooms").
The build enforces 3 and 4 as well (cmake/rooms.cmake: a room's headers are on the include path
of the libraries that link it only); this script names the rule that was broken.
"""

import os
import re
import shutil
import sys
import tempfile

SKIP_DIRS = {".git", "build", "docs", "deploy", "node_modules", ".devcluster", ".cache"}
GENERATED = {"gantry": "api/proto", "grpc": "server/grpc"}


def parse_table(doc_text):
    """Rooms, their allowed lower rooms, and the diagram text, from the architecture page."""
    m = re.search(r"^## Rooms\n(.*?)(?=^## |\Z)", doc_text, re.S | re.M)
    if not m:
        raise ValueError('docs/architecture.md has no "## Rooms" section')
    section = m.group(1)
    rooms = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        room = cells[0].strip("`")
        lower = re.findall(r"`([^`]+)`", cells[2])
        rooms[room] = lower
    diagram = "\n".join(re.findall(r"```\n(.*?)```", section, re.S))
    if not rooms:
        raise ValueError('the "## Rooms" table has no rows')
    return rooms, diagram


def cycles(rooms):
    found = []
    state = {}

    def visit(r, path):
        if state.get(r) == 1:
            found.append(" -> ".join(path[path.index(r):] + [r]))
            return
        if state.get(r) == 2:
            return
        state[r] = 1
        for low in rooms.get(r, []):
            visit(low, path + [r])
        state[r] = 2

    for r in sorted(rooms):
        visit(r, [])
    return found


def room_of(rel, rooms):
    best = None
    for r in rooms:
        if rel == r or rel.startswith(r + "/"):
            if best is None or len(r) > len(best):
                best = r
    return best


def sources(root):
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("build"))
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                yield os.path.normpath(os.path.join(rel_d, f))


def include_room(root, rel_file, inc, rooms):
    """The room an include names, or None if it names no header of the tree."""
    here = os.path.normpath(os.path.join(os.path.dirname(rel_file), inc))
    if os.path.isfile(os.path.join(root, here)):
        return room_of(here, rooms)
    if os.path.isfile(os.path.join(root, inc)):
        return room_of(os.path.normpath(inc), rooms)
    first = inc.split("/", 1)[0]
    if first in GENERATED and inc.endswith(".pb-c.h"):
        return GENERATED[first]
    return None


def closure(rooms, r):
    seen = set()
    todo = [r]
    while todo:
        x = todo.pop()
        for low in rooms.get(x, []):
            if low not in seen:
                seen.add(low)
                todo.append(low)
    return seen


def check(root):
    doc = os.path.join(root, "docs", "architecture.md")
    with open(doc, encoding="utf-8") as fh:
        rooms, diagram = parse_table(fh.read())
    findings = []
    for c in cycles(rooms):
        findings.append("table: rooms form a circle: " + c)
    for r, lower in sorted(rooms.items()):
        for low in lower:
            if low not in rooms:
                findings.append(f"table: room {r} may include {low}, which is not a room")
        if not os.path.isdir(os.path.join(root, r)):
            findings.append(f"table: room {r} has no folder")
        if not re.search(r"(?<![\w/])" + re.escape(r) + r"(?![\w/])", diagram):
            findings.append(f"diagram: room {r} is not in the module diagram")
    allowed = {r: closure(rooms, r) | {r} for r in rooms}
    direct = {r: set(rooms[r]) | {r} for r in rooms}
    inc_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    for rel in sources(root):
        r = room_of(rel, rooms)
        if r is None:
            findings.append(f"{rel}: in no room of the table")
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for inc in inc_re.findall(text):
            ir = include_room(root, rel, inc, rooms)
            if ir is None:
                if "/" in inc:
                    findings.append(f'{rel}: #include "{inc}" names no header of the tree')
                continue
            if ir not in direct[r]:
                why = "a room above it" if r in allowed.get(ir, set()) else "a room it may not use"
                findings.append(f'{rel}: #include "{inc}" reaches {ir}, {why} (room {r} may include '
                                f'{", ".join(sorted(rooms[r])) or "nothing"})')
    # Libraries: gantry_room(<room> targets...) assigns targets to rooms.
    lib_room = {}
    links = []
    for rel in list_cmake(root):
        with open(os.path.join(root, rel), encoding="utf-8") as fh:
            text = re.sub(r"#[^\n]*", "", fh.read())
        for room, targets in re.findall(r"gantry_room\(\s*([\w/]+)((?:\s+\w+)*)\s*\)", text):
            if room not in rooms and room != "room":
                findings.append(f"{rel}: gantry_room({room}) names no room of the table")
            for t in targets.split():
                lib_room[t] = room
        for target, args in re.findall(r"target_link_libraries\(\s*([\w-]+)([^)]*)\)", text):
            links.append((rel, target, re.findall(r"\bgantry_\w+", args)))
    for rel, target, libs in links:
        r = lib_room.get(target) or room_of(os.path.dirname(rel), rooms)
        if r is None or r == "tests":
            continue
        for lib in libs:
            lr = lib_room.get(lib)
            if lr is not None and lr not in direct[r]:
                findings.append(f"{rel}: {target} (room {r}) links {lib} of room {lr}, which {r} may not include")
    return findings


def list_cmake(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("build"))
        for f in sorted(files):
            if f == "CMakeLists.txt" or f.endswith(".cmake"):
                yield os.path.relpath(os.path.join(d, f), root)


SELF_TEST_DOC = """# Architecture

## Rooms

| room | owns | may include |
|---|---|---|
| `lib` | helpers | |
| `low` | a low room | `lib` |
| `high` | a high room | `low`, `lib` |

```
lib <- low <- high
```

## Next
"""


def self_test():
    """Each planted defect must be reported; the clean mini-tree must pass."""
    def tree(extra_files, doc=SELF_TEST_DOC):
        d = tempfile.mkdtemp(prefix="rooms-")
        files = {
            "docs/architecture.md": doc,
            "lib/a.h": "int a(void);\n",
            "lib/a.c": '#include "lib/a.h"\n',
            "low/b.h": '#include "lib/a.h"\n',
            "low/b.c": '#include "low/b.h"\n#include "gantry/v1/x.pb-c.h"\n',
            "high/c.c": '#include "low/b.h"\n#include "lib/a.h"\n',
            "high/CMakeLists.txt": "add_library(gantry_high c.c)\ntarget_link_libraries(gantry_high PUBLIC gantry_low)\n"
                                   "gantry_room(high gantry_high)\n",
            "low/CMakeLists.txt": "add_library(gantry_low b.c)\ngantry_room(low gantry_low)\n",
            "api/proto/.keep": "",
            "server/grpc/.keep": "",
        }
        files.update(extra_files)
        for rel, text in files.items():
            if text is None:
                continue
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w", encoding="utf-8") as fh:
                fh.write(text)
        return d

    # gantry/ headers belong to api/proto, which the mini table lacks: the clean tree declares it.
    doc_ok = SELF_TEST_DOC.replace("| `high` |", "| `api/proto` | generated | `lib` |\n| `server/grpc` | t | `lib` |\n| `high` |") \
        .replace("| `low` | a low room | `lib` |", "| `low` | a low room | `lib`, `api/proto` |") \
        .replace("lib <- low <- high", "lib <- low <- high; api/proto <- low; server/grpc")
    cases = {
        "clean": ({}, doc_ok, None),
        "upward include": ({"low/b.c": '#include "high/c.h"\n', "high/c.h": ""}, doc_ok, "reaches high, a room above it"),
        "skipping a level is allowed only when listed": ({"high/d.c": '#include "api/proto/services.h"\n',
                                                          "api/proto/services.h": ""}, doc_ok, "a room it may not use"),
        "file outside every room": ({"stray/x.c": "int x;\n"}, doc_ok, "in no room of the table"),
        "circle in the table": ({}, doc_ok.replace("| `lib` | helpers | |", "| `lib` | helpers | `high` |"), "form a circle"),
        "room missing from the diagram": ({}, doc_ok.replace("lib <- low <- high; ", "lib <- low; "), "not in the module diagram"),
        "upward link": ({"low/CMakeLists.txt": "add_library(gantry_low b.c)\ntarget_link_libraries(gantry_low PUBLIC gantry_high)\n"
                                               "gantry_room(low gantry_low)\n"}, doc_ok, "links gantry_high of room high"),
        "missing header": ({"high/e.c": '#include "low/nope.h"\n'}, doc_ok, "names no header of the tree"),
    }
    failed = 0
    for name, (extra, doc, expect) in cases.items():
        d = tree(extra, doc)
        try:
            got = check(d)
        finally:
            shutil.rmtree(d)
        if expect is None:
            ok = not got
        else:
            ok = any(expect in f for f in got)
        print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": expected {expect!r}, got {got}"))
        failed += not ok
    return 1 if failed else 0


def main(argv):
    if "--self-test" in argv:
        return self_test()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if "--root" in argv:
        root = argv[argv.index("--root") + 1]
    findings = check(root)
    for f in findings:
        print(f)
    if findings:
        print(f"check_rooms: {len(findings)} finding(s); the table is the section \"## Rooms\" of docs/architecture.md")
        return 1
    print("check_rooms: every file, include and link follows the rooms table")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
