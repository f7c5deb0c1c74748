"""`docs/contract.md` against the code, so the written contract cannot drift from it.

Each list in the page is compared both ways with its source: the Redis keys and channels with
`core/keys.py` (names and values), the lake tables with `storage/tables.py` (columns, types,
personal columns, date column), the catalog views with `storage/catalog.py`, the HTTP routes
with the routes of the real app, started as every app test starts it. A key, column, view or
route added to the code only (or to the page only) fails here. And every relative link between
the project's Markdown files must reach an existing file and heading.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from core import keys
from storage.catalog import view_sql
from storage.tables import TABLES

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract.md"
#: NiceGUI's own routes: its version is in their paths; not ours to promise.
FRAMEWORK_PREFIX = "/_nicegui"


# --- reading the page ----------------------------------------------------------------------------


def sections(text: str, level: str = "##") -> dict[str, str]:
    """Heading text → the text under it, up to the next heading of the same level."""
    out: dict[str, str] = {}
    head = None
    for line in text.splitlines():
        m = re.match(rf"^{level} (?!#)(.*)$", line)
        if m:
            head = m.group(1).strip()
            out[head] = ""
        elif head is not None:
            out[head] += line + "\n"
    return out


def cells(line: str) -> list[str]:
    """The cells of one Markdown table row (`\\|` inside a cell is not a separator)."""
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def rows(text: str) -> list[list[str]]:
    """The body rows of every table in `text` (header and separator rows left out)."""
    out, header_seen = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            header_seen = False
            continue
        if not header_seen:
            header_seen = True  # the header row
            continue
        if re.fullmatch(r"[|:\- ]+", line.strip()):
            continue
        out.append(cells(line))
    return out


def code(cell: str) -> str | None:
    """The first `code span` of a cell."""
    m = re.search(r"`([^`]+)`", cell)
    return m.group(1) if m else None


def contract() -> dict[str, str]:
    text = CONTRACT.read_text(encoding="utf-8")
    parts = sections(text)
    for name in ("Redis keys and channels", "HTTP routes", "Lake tables", "Catalog views"):
        assert name in parts, f"docs/contract.md has no section '## {name}'"
    return parts


# --- Redis keys and channels ---------------------------------------------------------------------


def key_names_in_code() -> tuple[set[str], set[str]]:
    """(constants, functions) of `core/keys.py` that are key or channel names: a function
    that builds a name with `name(...)` / `prefix_of(...)`, a constant made by `name(...)` or
    by such a function. Read from the source, so a new one is found however it is spelt."""
    tree = ast.parse(inspect.getsource(keys))
    builders = {"name", "prefix_of"}
    functions = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name not in builders
        and any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in builders
            for n in ast.walk(node)
        )
    }
    constants = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id in builders | functions
                and value.func.id != "prefix_of"  # PREFIX: the namespace itself, not a key
            ):
                constants |= {t.id for t in targets if isinstance(t, ast.Name)}
    return constants, functions


def unprefixed(value: str) -> str:
    return value[len(keys.PREFIX) :] if keys.PREFIX and value.startswith(keys.PREFIX) else value


def code_value(name: str, functions: set[str]) -> str | None:
    """What the code makes of a documented name: the constant, or the function called with
    `<param>` placeholders (None when it cannot be called so, e.g. it needs Settings)."""
    obj = getattr(keys, name)
    if name not in functions:
        return unprefixed(obj)
    params = inspect.signature(obj).parameters
    try:
        value = obj(*(f"<{p}>" for p in params))
    except Exception:
        return None
    return unprefixed(value) if isinstance(value, str) else None


def test_every_redis_key_and_channel_is_in_the_contract() -> None:
    constants, functions = key_names_in_code()
    assert {"EVENTS_IN", "LIVE_ALARMS"} <= constants and "verdict_channel" in functions
    documented: dict[str, str] = {}
    for row in rows(contract()["Redis keys and channels"]):
        name = code(row[0])
        assert name, f"a key row without a `code name`: {row}"
        documented[name.split("(")[0]] = code(row[1]) or ""
    in_code = constants | functions
    missing = sorted(in_code - set(documented))
    assert missing == [], f"core/keys.py has these, docs/contract.md does not list them: {missing}"
    unknown = sorted(set(documented) - in_code)
    assert unknown == [], f"docs/contract.md lists these, core/keys.py has no such name: {unknown}"
    wrong = {
        n: (documented[n], v)
        for n in sorted(in_code)
        if (v := code_value(n, functions)) is not None and documented[n] != v
    }
    assert wrong == {}, f"name: (docs/contract.md, core/keys.py) differ: {wrong}"


# --- lake tables and catalog views ---------------------------------------------------------------


def type_name(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        assert t.tz == "UTC", t
        return "timestamp"
    return str(t)  # string, int32, int64, double, bool, binary


def test_every_lake_table_and_column_is_in_the_contract() -> None:
    doc = sections(contract()["Lake tables"], "###")
    documented = {code(h): body for h, body in doc.items()}
    assert None not in documented, f"a table heading without a `name`: {list(doc)}"
    assert sorted(documented) == sorted(TABLES), (
        f"lake tables: docs/contract.md {sorted(documented)} vs storage/tables.py {sorted(TABLES)}"
    )
    for name, table in TABLES.items():
        body = documented[name]
        m = re.search(r"Date column: `([^`]+)`", body)
        assert m and m.group(1) == table.date_column, f"{name}: date column {table.date_column}"
        cols = [(code(r[0]), r[1], r[2] == "personal") for r in rows(body)]
        want = [(f.name, type_name(f.type), f.name in table.personal) for f in table.schema]
        assert cols == want, (
            f"lake table {name}: docs/contract.md lists (column, type, personal) {cols}, "
            f"storage/tables.py has {want}"
        )


def test_every_catalog_view_is_in_the_contract(tmp_path: Path) -> None:
    documented = sorted(code(r[0]) or "" for r in rows(contract()["Catalog views"]))
    assert documented == sorted(view_sql(tmp_path / "lake")), "catalog views differ"


# --- HTTP routes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """`METHOD /path` of every route of the real app (as `/api/auth/routes` lists them)."""
    from tests.ui_fixtures import AuthStack

    stack = AuthStack(tmp_path_factory.mktemp("contract"))
    try:
        c = stack.client("organiser")
        resp = c.get("/api/auth/routes")
        c.close()
        assert resp.status_code == 200, resp.text
        yield {
            f"{r['method']} {r['path']}"
            for r in resp.json()
            if not r["path"].startswith(FRAMEWORK_PREFIX)
        }
    finally:
        stack.close()


def test_every_http_route_is_in_the_contract(app_routes: set[str]) -> None:
    assert {"POST /api/events", "WS /video/ws/{camera_id}", "GET /"} <= app_routes
    documented = [code(r[0]) or "" for r in rows(contract()["HTTP routes"])]
    assert len(documented) == len(set(documented)), "a route is listed twice"
    missing = sorted(app_routes - set(documented))
    assert missing == [], f"the app serves these, docs/contract.md does not list them: {missing}"
    unknown = sorted(set(documented) - app_routes)
    assert unknown == [], f"docs/contract.md lists these, the app has no such route: {unknown}"


# --- links between the docs ----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces → -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6} (.*)$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def prose(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_link_between_the_docs_resolves() -> None:
    broken = []
    checked = 0
    for md in markdown_files():
        for line in prose(md.read_text(encoding="utf-8")):
            line = re.sub(r"`[^`]*`", "", line)  # links are never inside code spans
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+:", target):
                    continue  # http(s), mailto: not ours to check offline
                checked += 1
                file, _, anchor = target.partition("#")
                dest = (md.parent / file).resolve() if file else md
                where = f"{md.relative_to(ROOT)}: ({target})"
                if not dest.exists():
                    broken.append(f"{where} no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{where} no such heading")
    assert checked > 20
    assert broken == [], "\n".join(broken)
