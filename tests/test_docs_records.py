"""docs/records.md names every flat column a Record can have (Record.flat(): `--csv`, `--json`, `effscope export`), and
no column that the code cannot write.

The columns are enumerated from the code, without measuring anything:

- the Record's own fields and the workload's: `Record.flat()` of an empty Record (every Record field that flat()
  does not write must be one this test knows to be spread into other columns, or `details`);
- the metric sections (`counts`, `latency`, ...): every statement in effscope/ that writes a section (`record.latency
  = {...}`, `.update({...})`, `record.latency["k"] = ...`, `Record(..., roofline=...)`) is found in the source; a
  dict literal gives its keys, and the few computed writes are resolved by calling the code that computes them
  (latency_intervals, Counts.summary, roofline_numbers, a calibration's Record). A write this test cannot resolve
  fails it, naming the line, so a new kind of write is noticed. Training mode's names are the inference names
  renamed by measure's own renaming;
- env: the keys the collector writes on this machine (minus the timing environment variables, a family), plus the
  GPU-only keys read from the source of env._gpu_fields;
- `knob.NAME`, `derived.NAME` and the environment variables are families: the page names the family.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import effscope

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "records.md"
PACKAGE = Path(effscope.__file__).resolve().parent

FAMILIES = ("knob.NAME", "derived.NAME")
# Record fields that flat() spreads into other columns (or leaves out: details is in the nested form only)
SPREAD = {"knobs", "derived", "workload", "env", "details"}


# ----------------------------------------------------------------------------------------------- the code's columns


def _flat_of_empty_record() -> set[str]:
    from effscope.profile.record import Record, Workload

    return set(Record(target="t", kind="block", workload=Workload().as_dict()).flat())


class _Unresolved(Exception):
    pass


def _functions(tree: ast.AST) -> dict[ast.AST, ast.FunctionDef]:
    """Every node of a module, mapped to its innermost enclosing function."""
    owner: dict[ast.AST, ast.FunctionDef] = {}

    def visit(node: ast.AST, fn: ast.FunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else fn
            if inner is not None:
                owner[child] = inner
            visit(child, inner)

    visit(tree, None)
    return owner


def _local_tuple(fn: ast.FunctionDef | None, name: str) -> list[str]:
    """The string constants of `name = ("a", "b")` inside `fn`."""
    for node in ast.walk(fn) if fn is not None else ():
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            if isinstance(node.value, ast.Tuple | ast.List):
                return [ast.literal_eval(e) for e in node.value.elts]
    raise _Unresolved(f"{name} is not a tuple of names in its function")


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _resolve(value: ast.AST, section: str, fn: ast.FunctionDef | None, module: str) -> set[str]:
    """The keys that `value`, written into `section` in `module` (its dotted name), can hold."""
    import importlib

    from effscope.profile import measure, roofline

    if isinstance(value, ast.Dict):
        if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys):
            raise _Unresolved("a dict whose keys are not all string literals")
        return {k.value for k in value.keys}
    name = _call_name(value)
    if name == "latency_intervals":  # evaluate its arguments but the samples in the writing module
        names = vars(importlib.import_module(module))

        def evaluate(node: ast.expr) -> object:
            return eval(compile(ast.Expression(node), "<arg>", "eval"), names)

        args = [evaluate(a) for a in value.args[1:]]
        kwargs = {kw.arg: evaluate(kw.value) for kw in value.keywords if kw.arg != "samples_ms"}
        return set(measure.latency_intervals([1.0, 2.0, 3.0], *args, **kwargs))
    if name == "fromkeys" and value.args and isinstance(value.args[0], ast.Name):
        return set(_local_tuple(fn, value.args[0].id))
    if name == "summary" and section == "counts":
        return set(_counts_summary())
    if name == "roofline_numbers" and section == "roofline":
        return set(roofline.roofline_numbers({}, {}, {}, None)[0])
    if isinstance(value, ast.Attribute) and value.attr == section:  # a copy of another Record's same section
        return set()
    if isinstance(value, ast.Name) and fn is not None and fn.name == "to_record":  # Calibration.to_record
        return _calibration_section()
    raise _Unresolved(f"a write of {ast.unparse(value)[:60]!r}")


def _counts_summary() -> dict[str, object]:
    from effscope.profile.counting import Counts

    fields = {f.name: None for f in dataclasses.fields(Counts) if f.default is f.default_factory is dataclasses.MISSING}
    return Counts(**{**fields, "macs": 0}).summary()


def _calibration_section() -> set[str]:
    from effscope.profile.record import DTYPES
    from effscope.profile.roofline import Calibration

    cal = Calibration("cpu", "x", 1, dict.fromkeys(DTYPES, 1.0), 1.0, dict.fromkeys(DTYPES, 1), copy_bytes=1)
    return set(cal.to_record().roofline)


def _writes(tree: ast.AST, sections: set[str]) -> Iterator[tuple[ast.AST, str, str, ast.AST | None]]:
    """Every write into a Record section in a module: (node, section, "key" or "value", the key's or value's node).

    A key: `x.latency["k"] = ...`, `x.latency["k"] += ...`, `x.latency.setdefault("k", ...)`. A value (whose keys
    are resolved later): `x.latency = ...`, `x.latency, y = ..., ...`, `x.latency.update(...)`, `Record(latency=...)`.
    """

    def section_of(node: ast.AST) -> str | None:
        return node.attr if isinstance(node, ast.Attribute) and node.attr in sections else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign):
            value = node.value
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    pairs = list(zip(target.elts, value.elts, strict=False))
                else:
                    pairs = [(t, value) for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
                for t, v in pairs:
                    if (section := section_of(t)) is not None:
                        yield node, section, "value", v
                    elif isinstance(t, ast.Subscript) and (section := section_of(t.value)) is not None:
                        yield node, section, "key", t.slice
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and (section := section_of(f.value)) is not None:
                if f.attr == "setdefault":
                    yield node, section, "key", node.args[0] if node.args else None
                elif f.attr == "update":
                    yield node, section, "value", node.args[0] if node.args and not node.keywords else None
            if _call_name(node) == "Record":
                yield from ((node, kw.arg, "value", kw.value) for kw in node.keywords if kw.arg in sections)


@cache
def section_writes() -> tuple[dict[str, set[str]], list[str]]:
    """(section -> keys written into it anywhere in effscope/, the writes that could not be resolved)."""
    from effscope.profile.record import METRIC_SECTIONS

    keys: dict[str, set[str]] = {s: set() for s in METRIC_SECTIONS}
    unresolved = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owner = _functions(tree)
        where = path.relative_to(PACKAGE.parent)
        module = ".".join(where.with_suffix("").parts).removesuffix(".__init__")
        for node, section, kind, written in _writes(tree, set(keys)):
            try:
                if written is None:
                    raise _Unresolved("a write with keyword arguments")
                if kind == "value":
                    keys[section] |= _resolve(written, section, owner.get(node), module)
                elif isinstance(written, ast.Constant) and isinstance(written.value, str):
                    keys[section].add(written.value)
                else:
                    raise _Unresolved(f"a computed key {ast.unparse(written)[:60]!r}")
            except _Unresolved as e:
                unresolved.append(f"{where}:{node.lineno}: {section}: {e}")
    return keys, unresolved


def training_names(names: set[str]) -> set[str]:
    from effscope.profile.measure import _training_name

    return {_training_name(n) for n in names}


@cache
def env_keys() -> tuple[set[str], tuple[str, ...], tuple[str, ...]]:
    """(env keys, the timing variables' prefixes, their names): what the collector writes here, plus the GPU keys."""
    from effscope.profile import env

    written = set(env.environment("cpu", dtype="fp32")) | set(env.host_environment("cpu"))
    written = {k for k in written if not (k in env.TIMING_ENV_NAMES or k.startswith(env.TIMING_ENV_PREFIXES))}
    tree = ast.parse(Path(env.__file__).read_text(encoding="utf-8"))
    gpu = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_gpu_fields")
    for node in ast.walk(gpu):
        if isinstance(node, ast.Dict):
            written |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    return written, env.TIMING_ENV_PREFIXES, env.TIMING_ENV_NAMES


@cache
def code_columns() -> set[str]:
    """Every flat column name the code can write, but the families."""
    from effscope.profile.record import METRIC_SECTIONS

    sections, _ = section_writes()
    columns = _flat_of_empty_record()
    for section in METRIC_SECTIONS:
        columns |= sections[section]
    columns |= training_names(sections["latency"] | sections["throughput"] | sections["reference"])
    env, prefixes, names = env_keys()
    return columns | {f"env.{k}" for k in env}


def env_variable_columns() -> set[str]:
    _, prefixes, names = env_keys()
    return {f"env.{p}*" for p in prefixes} | {f"env.{n}" for n in names}


# ----------------------------------------------------------------------------------------------- the page's columns

NAME = re.compile(r"`([^`]+)`")


@cache
def page_columns() -> list[str]:
    """The names in the first cell of every table whose header's first cell is `column`."""
    names, in_table, is_columns = [], False, False
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            in_table, is_columns = True, cells[0] == "column"
            continue
        if is_columns and not set(cells[0]) <= set("-: "):
            names += NAME.findall(cells[0])
    return names


# ----------------------------------------------------------------------------------------------- tests


def test_every_section_write_is_understood() -> None:
    _, unresolved = section_writes()
    assert not unresolved, (
        "writes into a Record section that this test cannot enumerate; teach _resolve about them and document "
        "their columns in docs/records.md: " + "; ".join(unresolved)
    )


def test_the_enumeration_finds_what_it_should() -> None:
    """A guard on the enumerator itself: names from every source, CPU-only and GPU-only, inference and training."""
    expected = {
        "uid", "height", "mode", "params", "latency_ms_p50", "latency_ms_p99_hi", "latency_graph_ms_p90_lo",
        "host_bound_ratio", "timed_s", "train_step_ms_p50", "train_step_wall_ms_p50", "train_img_s",
        "train_step_vs_reference", "peak_throughput_batch", "peak_mem_reserved_bytes", "peak_rss_bytes",
        "temp_c_max", "throttled", "reference_cpu_util", "roofline_min_latency_ms", "bytes_amp_scale",
        "peak_flop_s_bf16", "gemm_n_fp16", "copy_bytes", "flags", "missing", "env.cpu_flags", "env.gpu_sm_count",
        "env.nvml_missing_reason", "env.malloc_top_pad_bytes", "protocol", "trial",
    }  # fmt: skip
    assert expected <= code_columns(), sorted(expected - code_columns())


def test_record_fields_all_reach_the_flat_row() -> None:
    from effscope.profile.record import METRIC_SECTIONS, Record

    fields = {f.name for f in dataclasses.fields(Record)}
    unknown = fields - _flat_of_empty_record() - SPREAD - set(METRIC_SECTIONS)
    assert not unknown, (
        f"Record has field(s) {sorted(unknown)} that flat() does not write as a column of that name: decide how "
        "exports show them, then document that in docs/records.md and teach this test"
    )


def test_no_two_sources_write_one_column() -> None:
    """flat() merges the sections into one row: a name in two of them (or one of the Record's own) would overwrite
    the other silently, and the page could not say what the column holds."""
    from effscope.profile.record import METRIC_SECTIONS

    sections, _ = section_writes()
    seen: dict[str, str] = dict.fromkeys(_flat_of_empty_record(), "the Record's own fields")
    clashes = []
    for section in METRIC_SECTIONS:
        names = sections[section] | (
            training_names(sections[section]) if section in ("latency", "throughput", "reference") else set()
        )
        clashes += [f"{n} ({seen[n]} and {section})" for n in sorted(names) if seen.get(n, section) != section]
        seen.update(dict.fromkeys(names, section))
    assert not clashes, f"one flat column written by two sources: {', '.join(clashes)}"


def test_page_documents_every_column() -> None:
    documented = set(page_columns())
    lacking = sorted(code_columns() - documented)
    lacking += [f for f in (*FAMILIES, *sorted(env_variable_columns())) if f not in documented]
    assert not lacking, f"docs/records.md has no table row for these columns: {', '.join(lacking)}"


def test_page_names_no_column_the_code_cannot_write() -> None:
    allowed = code_columns() | set(FAMILIES) | env_variable_columns()
    unknown = sorted(set(page_columns()) - allowed)
    assert not unknown, f"docs/records.md names columns no code writes (renamed or removed?): {', '.join(unknown)}"


def test_page_lists_each_column_once() -> None:
    names = page_columns()
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"docs/records.md lists these columns more than once: {', '.join(twice)}"


def test_page_mentions_every_catalogued_metric_and_flag() -> None:
    """A catalogued number that no Record holds (a search trial's) is still explained on the page, and so is every
    flag a `flags` cell can hold."""
    from effscope.metrics import FLAGS, METRICS

    text = PAGE.read_text(encoding="utf-8")
    unexplained = [name for name in [*METRICS, *FLAGS] if f"`{name}`" not in text]
    assert not unexplained, f"docs/records.md does not mention: {', '.join(unexplained)}"
