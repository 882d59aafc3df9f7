"""Regenerate the contract-derived tables of docs/datasets.md and docs/policies.md.

Run from anywhere with the project's dependencies installed (it reads the contracts with PyYAML and imports
only `arrival_core.errors`):

    python docs/generate.py           rewrite every generated section in place
    python docs/generate.py --check   change nothing; exit 1 if a section is stale, a dataset or policy of the
                                      contracts has no section, or docs/errors.md and arrival_core/errors.py
                                      disagree on the codes (one names a code the other lacks)

Sources: contracts/dataset_dictionary.layer2.5B.yaml (paths, partition keys, keys, writer sort), the schema
packs contracts/schemas.*.yaml (columns, types, rules) and the shipped policy files config/*.yaml (the values
in the "shipped" column). Only the text between a pair of markers

    <!-- BEGIN GENERATED: <name> -->  ...  <!-- END GENERATED: <name> -->

is replaced; everything outside them is written by hand. Names: `datasets-index`, `dataset:<dataset id>`,
`policies-index` and `policy:<policy id>`. Add a marker pair to a page to get a new section.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
CONFIG = ROOT / "config"
DICTIONARY = CONTRACTS / "dataset_dictionary.layer2.5B.yaml"
PAGES = {"datasets": ROOT / "docs" / "datasets.md", "policies": ROOT / "docs" / "policies.md"}
ERRORS_PAGE = ROOT / "docs" / "errors.md"

MARKER = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


# ---- schema packs and $ref resolution ----------------------------------------------------------------------

def load_packs() -> dict[str, dict]:
    packs = sorted(CONTRACTS.glob("schemas.*.yaml"))
    return {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in packs}


PACKS = load_packs()


def pointer(pack: str, ref: str) -> tuple[str, dict]:
    """Resolve `file#/a/b` or `#/a/b` (relative to `pack`) to (pack name, schema node)."""
    file, _, path = ref.partition("#")
    pack = file or pack
    node: Any = PACKS[pack]
    for part in filter(None, path.split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return pack, node


def resolve(node: dict, pack: str) -> tuple[dict, str]:
    """Merge a node with its `$ref` chain (local keywords win) and return it with the pack it now lives in."""
    merged = dict(node)
    while "$ref" in merged:
        ref = merged.pop("$ref")
        pack, target = pointer(pack, ref)
        merged = {**target, **merged}
    return merged, pack


def schema_of(schema_ref: str) -> tuple[dict, str]:
    pack, node = pointer("", schema_ref)
    return resolve(node, pack)


# ---- rendering of one schema node -----------------------------------------------------------------------

def code(text: Any) -> str:
    """A Markdown code span safe inside a table cell."""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return "`" + s.replace("|", "\\|") + "`"


def cell(text: str) -> str:
    return text.replace("\n", " ").strip()


def prose(text: str) -> str:
    """Free text for a table cell: pipes escaped."""
    return cell(text).replace("|", "\\|")


def json_type(node: dict) -> str:
    t = node.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t:
        return t
    if "const" in node:
        v = node["const"]
        return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
                dict: "object"}.get(type(v), "any")
    if "enum" in node:
        return "string" if all(isinstance(v, str) for v in node["enum"]) else "any"
    if "anyOf" in node:
        return "any"
    return "any"


def rule(node: dict, pack: str) -> str:
    """The value rules of a node in words: const, enum, range, pattern, lengths, items, alternatives."""
    parts: list[str] = []
    if "const" in node:
        parts.append("= " + code(node["const"]))
    if "enum" in node:
        parts.append("one of " + ", ".join(code(v) for v in node["enum"]))
    low = [("≥", node["minimum"])] if "minimum" in node else []
    low += [(">", node["exclusiveMinimum"])] if "exclusiveMinimum" in node else []
    high = [("≤", node["maximum"])] if "maximum" in node else []
    high += [("<", node["exclusiveMaximum"])] if "exclusiveMaximum" in node else []
    for op, value in low + high:
        parts.append(f"{op} {number(value)}")
    if "pattern" in node:
        parts.append("matches " + code(node["pattern"]))
    if isinstance(node.get("not"), dict) and "pattern" in node["not"]:
        parts.append("must not match " + code(node["not"]["pattern"]))
    if "minLength" in node or "maxLength" in node:
        parts.append(f"length {node.get('minLength', 0)}..{node.get('maxLength', '∞')}")
    if "minItems" in node or "maxItems" in node:
        lo, hi = node.get("minItems", 0), node.get("maxItems")
        parts.append(f"exactly {lo} items" if lo == hi else f"{lo}..{hi if hi is not None else '∞'} items")
    if node.get("uniqueItems"):
        parts.append("unique items")
    if isinstance(node.get("items"), dict):
        item, item_pack = resolve(node["items"], pack)
        inner = rule(item, item_pack)
        parts.append(f"items: {json_type(item)}" + (f", {inner}" if inner else ""))
    if "anyOf" in node:
        options = []
        for option in node["anyOf"]:
            opt, opt_pack = resolve(option, pack)
            words = rule(opt, opt_pack)
            options.append(json_type(opt) + (f" ({words})" if words else ""))
        parts.append("either " + " or ".join(options))
    return "; ".join(parts)


def number(value: Any) -> str:
    if isinstance(value, int) and abs(value) >= 10**6:
        exact = {2**63 - 1: "2^63 − 1", 2**64 - 1: "2^64 − 1", 2**31 - 1: "2^31 − 1"}
        return exact.get(value, f"{value:,}")
    return str(value)


def description(node: dict) -> str:
    return prose(node.get("description", ""))


# ---- tables and documents -------------------------------------------------------------------------------

def column_table(schema: dict, pack: str) -> list[str]:
    """One row per column of a table schema (`x-table: true`)."""
    lines = ["| column | dtype | null | rule | description |", "|---|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        node, node_pack = resolve(prop, pack)
        types = node.get("type") if isinstance(node.get("type"), list) else []
        nullable = "yes" if "null" in types else "no"
        finite = "; finite" if node.get("x-dtype") == "Float64" and not node.get("x-allow-nonfinite") else ""
        lines.append(f"| `{name}` | `{node.get('x-dtype', json_type(node))}` | {nullable} | "
                     f"{cell(rule(node, node_pack) + finite).lstrip('; ')} | {description(node)} |")
    return lines


Row = tuple[str, str, str, str, str]  # field path, JSON type, required, rule, description


def flatten(node: dict, pack: str, path: str, required: bool, rows: list[Row]) -> None:
    """Depth-first rows (field path, JSON type, required, rule, description) of a document schema."""
    node, pack = resolve(node, pack)
    kind = json_type(node)
    props = node.get("properties")
    if kind == "object" and isinstance(props, dict) and props:
        if path:
            rows.append((path, "object", "yes" if required else "no", closed(node), description(node)))
        need = set(node.get("required", ()))
        for name, sub in props.items():
            flatten(sub, pack, f"{path}.{name}" if path else name, name in need, rows)
        return
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        names = node.get("propertyNames")
        key, key_rule = "<key>", ""
        if isinstance(names, dict):
            key = "<" + names.get("$ref", "key").rsplit("/", 1)[-1] + ">"
            key_node, key_pack = resolve(names, pack)
            key_rule = rule(key_node, key_pack)
        listed = node.get("required")
        rows.append((path, "object", "yes" if required else "no",
                     "map" + (f"; keys {key_rule}" if key_rule else "")
                     + (f"; required keys {', '.join(code(k) for k in listed)}" if listed else ""),
                     description(node)))
        flatten(node["additionalProperties"], pack, f"{path}.{key}", True, rows)
        return
    if kind == "array" and isinstance(node.get("items"), dict):
        item, item_pack = resolve(node["items"], pack)
        if json_type(item) == "object" and item.get("properties"):
            outer = rule({k: v for k, v in node.items() if k != "items"}, pack)
            rows.append((path or "(document)", "array", "yes" if required else "no",
                         cell(outer) + "; items: objects", description(node)))
            flatten(item, item_pack, f"{path}[]", True, rows)
            return
    rows.append((path or "(document)", kind, "yes" if required else "no", rule(node, pack),
                 description(node)))


def closed(node: dict) -> str:
    return "no other keys" if node.get("additionalProperties") is False else ""


def document_table(schema: dict, pack: str) -> list[str]:
    rows: list[Row] = []
    flatten(schema, pack, "", True, rows)
    lines = ["| field | type | required | rule | description |", "|---|---|---|---|---|"]
    lines += [f"| `{p}` | {t} | {r} | {cell(rl)} | {d} |" for p, t, r, rl, d in rows]
    return lines


# ---- the dataset dictionary --------------------------------------------------------------------------------

def dictionary() -> list[dict]:
    return yaml.safe_load(DICTIONARY.read_text(encoding="utf-8"))["datasets"]


def where(entry: dict) -> str:
    return ("config/" if entry["root"] == "config" else "<run root>/") + entry["path"]


def keys(values: Any) -> str:
    return ", ".join(f"`{v}`" for v in values) if values else "—"


def dataset_section(entry: dict) -> list[str]:
    facts = [
        ("path", code(where(entry))),
        ("partition keys", keys(entry.get("partition_keys"))),
        ("format", entry["format"]),
        ("owner / kind", f"{entry['owner_segment']} / {entry['kind']}" + (f" (written by {entry['state']})"
                                                                         if entry.get("state") else "")),
        ("status", entry.get("status", "—")),
    ]
    if "read_scope" in entry:
        facts.append(("read scope", entry["read_scope"]))
    if "sealed" in entry:
        facts.append(("sealed by S0", "yes" + (" (seed-scoped: structural digest)" if entry.get("seed_scoped")
                                               else "") if entry["sealed"] else "no"))
    if "primary_key" in entry:
        facts.append(("primary key", keys(entry["primary_key"])))
    if "writer_sort" in entry:
        facts.append(("writer sort", keys(entry["writer_sort"])))
    if "index_file" in entry:
        facts.append(("index / flag", f"`{entry['index_file']}` / `{entry['flag_file']}`"))
    facts.append(("schema", code(entry["schema_ref"])))
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts]
    if entry["kind"] == "policy":
        lines += ["", f"Fields: [policies.md](policies.md#{entry['id'].lower()})."]
        return lines
    schema, pack = schema_of(entry["schema_ref"])
    lines.append("")
    if schema.get("x-table"):
        lines += column_table(schema, pack)
    else:
        lines += document_table(schema, pack)
    if "flag_schema_ref" in entry:
        flag, flag_pack = schema_of(entry["flag_schema_ref"])
        lines += ["", f"`{entry['flag_file']}` ({entry['flag_schema_ref'].split('/')[-1]}):", ""]
        lines += document_table(flag, flag_pack)
    return lines


def datasets_index() -> list[str]:
    lines = ["| dataset | kind | format | partition keys | primary key |", "|---|---|---|---|---|"]
    for e in dictionary():
        target = f"policies.md#{e['id'].lower()}" if e["kind"] == "policy" else f"#{e['id'].lower()}"
        kind = e["kind"] + (f" ({e['state']})" if e.get("state") else "")
        lines.append(f"| [`{e['id']}`]({target}) | {kind} | {e['format']} | {keys(e.get('partition_keys'))} "
                     f"| {keys(e.get('primary_key'))} |")
    return lines


# ---- policies -------------------------------------------------------------------------------------------

def shipped(policy_id: str) -> dict:
    return yaml.safe_load((CONFIG / f"{policy_id}.yaml").read_text(encoding="utf-8"))


def value_at(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return "(absent)"
        doc = doc[part]
    return doc


def dotted(path: tuple[str, ...]) -> str:
    """A field path as `a.b.c`; a key holding a dot is bracketed: `families[S2.latent_vector.v1].module`."""
    out = ""
    for part in path:
        out += f"[{part}]" if "." in part else (f".{part}" if out else part)
    return out


def uniform_map(node: dict, pack: str) -> str | None:
    """`{a, b, c}: <rule>` when an object is a closed set of keys that all share one simple rule."""
    props = node.get("properties")
    if json_type(node) != "object" or not isinstance(props, dict) or len(props) < 2:
        return None
    rendered = set()
    for sub in props.values():
        sub_node, sub_pack = resolve(sub, pack)
        if json_type(sub_node) in ("object", "array"):
            return None
        rendered.add((json_type(sub_node), rule(sub_node, sub_pack)))
    if len(rendered) != 1:
        return None
    kind, words = rendered.pop()
    every = "all required" if set(node.get("required", ())) == set(props) else "some optional"
    return f"keys {', '.join(code(k) for k in props)} ({every}), each {kind}" + (f" {words}" if words else "")


PolicyRow = tuple[tuple[str, ...], str, str]  # field path, JSON type, allowed values


def policy_rows(node: dict, pack: str, path: tuple[str, ...], rows: list[PolicyRow]) -> None:
    node, pack = resolve(node, pack)
    as_map = uniform_map(node, pack) if path else None
    if as_map:
        rows.append((path, "object", as_map))
        return
    props = node.get("properties")
    if json_type(node) == "object" and isinstance(props, dict):
        for name, sub in props.items():
            policy_rows(sub, pack, (*path, name), rows)
        return
    words, note = rule(node, pack), description(node)
    rows.append((path, json_type(node), words + ("; " if words and note else "") + note))


def render_value(value: Any) -> str:
    if isinstance(value, str):
        return code(value)
    return code(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def all_required(schema: dict, pack: str) -> bool:
    """Whether a policy schema requires every property it declares (at its top level)."""
    props = schema.get("properties", {})
    return set(props) <= set(schema.get("required", ()))


def policy_section(policy_id: str) -> list[str]:
    entry = next(e for e in dictionary() if e["id"] == policy_id)
    schema, pack = schema_of(entry["schema_ref"])
    doc = shipped(policy_id)
    rows: list[PolicyRow] = []
    policy_rows(schema, pack, (), rows)
    required = "Every field is required" if all_required(schema, pack) else \
        "Every field is required unless its shipped value reads (absent), when the parser's default applies"
    intro = f"File `config/{entry['path']}`, schema `{entry['schema_ref']}`. {required}, and no other key is allowed."
    lines = [intro, "", "| field | type | allowed | shipped value |", "|---|---|---|---|"]
    lines += [f"| `{dotted(p)}` | {t} | {cell(a)} | {render_value(value_at(doc, p))} |" for p, t, a in rows]
    return lines


def policies_index() -> list[str]:
    lines = ["| policy | file | read by | shipped version |", "|---|---|---|---|"]
    readers = {
        "time_grid_policy_5B": "S1", "grouping_policy_5B": "S1", "arrival_lgcp_config_5B": "S2 (and checks)",
        "arrival_count_config_5B": "S3 (and checks)", "arrival_rng_policy_5B": "S2, S3, audit, checks",
        "bundle_layout_policy_5B": "nobody in S0–S3 (sealed only)",
    }
    for e in dictionary():
        if e["kind"] == "policy":
            lines.append(f"| [`{e['id']}`](#{e['id'].lower()}) | `config/{e['path']}` | "
                         f"{readers.get(e['id'], '—')} | `{shipped(e['id']).get('version', '—')}` |")
    return lines


# ---- sections, pages and the error-code check -----------------------------------------------------------

def render(name: str) -> list[str]:
    if name == "datasets-index":
        return datasets_index()
    if name == "policies-index":
        return policies_index()
    kind, _, ident = name.partition(":")
    if kind == "dataset":
        return dataset_section(next(e for e in dictionary() if e["id"] == ident))
    if kind == "policy":
        return policy_section(ident)
    raise KeyError(f"unknown generated section {name!r}")


def rewrite(text: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def replace(match: re.Match) -> str:
        names.append(match["name"])
        return match.group(1) + "\n".join(render(match["name"])) + "\n" + match.group(4)

    return MARKER.sub(replace, text), names


def catalogue_codes() -> list[str]:
    """Every canonical code of arrival_core/errors.py (`ALL_CODES`), imported from this checkout."""
    sys.path.insert(0, str(ROOT))
    from arrival_core.errors import ALL_CODES

    return sorted(ALL_CODES)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale: list[str] = []
    seen: set[str] = set()
    for page in PAGES.values():
        text = page.read_text(encoding="utf-8")
        new, names = rewrite(text)
        seen.update(names)
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not check:
                page.write_text(new, encoding="utf-8")
    wanted = {f"dataset:{e['id']}" for e in dictionary()} | {f"policy:{e['id']}" for e in dictionary()
                                                             if e["kind"] == "policy"}
    problems = [f"no generated section for {name}" for name in sorted(wanted - seen)]
    errors_text = ERRORS_PAGE.read_text(encoding="utf-8") if ERRORS_PAGE.exists() else ""
    known = catalogue_codes()
    problems += [f"docs/errors.md does not mention {c}" for c in known if f"`{c}`" not in errors_text]
    named = set(re.findall(r"`(5B\.(?:[A-Z0-9]+\.)?[A-Z][A-Z0-9_]*)`", errors_text))
    problems += [f"docs/errors.md names {c}, which arrival_core/errors.py does not define"
                 for c in sorted(named - set(known)) if not re.fullmatch(r"5B\.(S[0-3]|WORLD)", c)]
    for p in problems:
        print(p, file=sys.stderr)
    if check:
        for page in stale:
            print(f"{page} is out of date; run python docs/generate.py", file=sys.stderr)
        return 1 if stale or problems else 0
    print(f"rewrote {', '.join(stale) or 'nothing (already up to date)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
