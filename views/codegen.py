"""Code generation: each view's per-row work as a few specialised Python functions.

The engine (`store/engine.py`) walks joins and keeps group state; what it does with one joined
row of one view (filter it, take its group key, feed its aggregates) and how it turns a group
into an output row are generated here, once per view, as Python source: a column is `row[3]`,
a constant is inlined, anything else calls the expression's compiled closure
(`views.expr`). The source is printed by `viewstore explain`, so what runs is what you read.

Generated, per view (the names the engine looks up):

    typed_<table id>(raw)   text values of a mirrored row -> Python values, only the columns
                            some view reads (the engine merges these per table)
    feed(row, sign)         aggregate views: a joined row -> (group key, aggregate inputs,
                            carried columns) or None when WHERE rejects it; SKIP marks an
                            aggregate whose FILTER rejects the row
    child(row)              pushed-down views: a child row -> its aggregate inputs
    project(row)            views without aggregates: a joined row -> its output row, or None
    output(values)          aggregate views: (group key..., aggregates..., carried...) -> the
                            output row, or None when HAVING rejects the group

Nothing here touches RocksDB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from viewstore.codecs.value import FORMAT, encode_value, field_length
from viewstore.views.expr import compile_expr
from viewstore.views.pgvalues import TEXTS
from viewstore.views.tree import INT2, INT4, INT8, NUMERIC, Agg, Col, Const, Expr, Func

INTS = frozenset({INT2, INT4, INT8})

SKIP = object()  # an aggregate's FILTER rejected the row


@dataclass
class Generated:
    """The generated source of one view and the functions it defines."""

    source: str
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.functions[name]


def describe(e: Expr | None) -> str:
    """A short SQL-like rendering of an expression, for comments in the generated code."""
    if e is None:
        return "*"
    if isinstance(e, Col):
        return f"{e.table}.{e.name}" if e.table else e.name
    if isinstance(e, Const):
        return "NULL" if e.value is None else repr(e.value)
    if isinstance(e, Agg):
        inner = ("DISTINCT " if e.distinct else "") + describe(e.arg)
        text = f"{e.name.upper()}({inner})"
        return text + (f" FILTER (WHERE {describe(e.filter)})" if e.filter is not None else "")
    if isinstance(e, Func):
        return f"{e.name}({', '.join(describe(a) for a in e.args)})"
    return f"<{type(e).__name__.lower()}>"


class _Writer:
    """Collects the lines of the generated module and the closures it calls."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"SKIP": SKIP}

    def closure(self, prefix: str, fn: Callable[..., Any]) -> str:
        name = f"{prefix}_{sum(1 for k in self.env if k.startswith(prefix + '_'))}"
        self.env[name] = fn
        return name

    def expr(
        self,
        e: Expr,
        row: str,
        *,
        slots: Mapping[Expr, int] | None = None,
        offset: int = 0,
    ) -> str:
        """Python source that evaluates `e` over `row` (a joined row, or with `offset` a row of
        one FROM item whose first column is at `offset` in the joined row)."""
        if slots and e in slots:
            return f"{row}[{slots[e]}]"
        if isinstance(e, Col) and e.index is not None and not slots:
            return f"{row}[{e.index - offset}]"
        if isinstance(e, Const) and (e.value is None or type(e.value) in (int, bool, str)):
            return repr(e.value)
        assert offset == 0, "expressions over one FROM item are inlined columns only"
        return f"{self.closure('expr', compile_expr(e, slots))}({row})"

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def build(self) -> Generated:
        source = "\n".join(self.lines) + "\n"
        namespace = dict(self.env)
        exec(compile(source, "<generated view code>", "exec"), namespace)
        functions = {k: v for k, v in namespace.items() if callable(v) and k not in self.env}
        return Generated(source, functions)


def typer_source(
    w: _Writer,
    name: str,
    table: Any,
    converters: Sequence[Callable[[bytes], Any]],
    used: set[int],
) -> None:
    """`def name(raw)`: Python values of the `used` columns of a mirrored row of `table`
    (`views.schema.TableInfo`), None for the columns no view reads (never converted)."""
    w.add(f"def {name}(raw):")
    w.add(f'    """A row of {table.qualified} as text values -> the Python values read."""')
    w.add("    return (")
    for i, (column, conv) in enumerate(zip(table.columns, converters, strict=True)):
        if i in used:
            c = w.closure("convert", conv)
            w.add(f"        None if raw[{i}] is None else {c}(raw[{i}]),  # {column.name}")
        else:
            w.add(f"        None,  # {column.name}: not read")
    w.add("    )")
    w.add()


def make_typer(table: Any, converters: Sequence[Callable[[bytes], Any]], used: set[int]) -> Any:
    """The converter of `table`'s rows for every view that reads it (the union of `used`)."""
    w = _Writer()
    typer_source(w, "typed", table, converters, used)
    return w.build()["typed"]


def generate(plan: Any) -> Generated:
    """The generated functions of one view plan (`views.plan.ViewPlan`)."""
    w = _Writer()
    w.add(f"# view {plan.name}")
    for p in plan.positions:
        if p.table.table_id in plan.used:
            used = set(plan.used[p.table.table_id])
            typer_source(w, f"typed_{p.table.table_id}", p.table, p.converters, used)
    pd = plan.pushdown
    if not plan.aggregate:
        _project(w, plan)
    elif pd is not None:
        _child(w, plan)
        _output(w, plan)
        _pushed(w, plan)
    else:
        _feed(w, plan)
        _output(w, plan)
    _pack(w, plan)
    return w.build()


def _pack(w: _Writer, plan: Any) -> None:
    """`def pack(out)`: `codecs.value.pack_fields(list(out))` for this view's output row,
    written out per column: the common Python type of the column's SQL type is tested first
    and encoded inline, anything else (NULL, NaN, another type) goes through `encode_value`,
    so the bytes are pack_fields' whatever the values are."""
    w.env.update(encode_value=encode_value, VERSION=FORMAT, length=field_length, Decimal=Decimal)
    names = [f"v{i}" for i in range(len(plan.columns))]
    w.add("def pack(out):")
    w.add('    """The output row as stored: codecs.value.pack_fields(list(out))."""')
    w.add(f"    {', '.join(names)}{',' if len(names) == 1 else ''} = out")
    for i, c in enumerate(plan.columns):
        v = names[i]
        if c.type_oid in INTS:
            fast = f'b"i" + str({v}).encode() if type({v}) is int'
        elif c.type_oid == NUMERIC:
            fast = f'b"d" + str({v}).encode() if type({v}) is Decimal and {v}.is_finite()'
        elif c.type_oid in TEXTS:
            fast = f'b"s" + {v}.encode("utf-8", "surrogatepass") if type({v}) is str'
        else:
            w.add(f"    b{i} = encode_value({v})  # {c.name}")
            continue
        w.add(f"    b{i} = {fast} else encode_value({v})  # {c.name}")
    parts = ", ".join(f"length(len(b{i})), b{i}" for i in range(len(names)))
    w.add(f'    return b"".join((VERSION, {parts}))')
    w.add()


def _agg_inputs(w: _Writer, plan: Any, row: str, offset: int = 0) -> list[str]:
    out = []
    for agg in plan.aggs:
        arg = "None" if agg.arg_expr is None else w.expr(agg.arg_expr, row, offset=offset)
        if agg.filter_expr is not None:
            cond = w.expr(agg.filter_expr, row, offset=offset)
            arg = f"{arg} if {cond} is True else SKIP"
        out.append(arg)
    return out


def _feed(w: _Writer, plan: Any) -> None:
    w.add("def feed(row, sign):")
    w.add('    """A joined row -> (group key, aggregate inputs, carried columns), or None."""')
    if plan.where_expr is not None:
        w.add(f"    if {w.expr(plan.where_expr, 'row')} is not True:  # WHERE")
        w.add("        return None")
    keys = [w.expr(g, "row") for g in plan.group_exprs]
    grouped = ", ".join(describe(g) for g in plan.group_exprs)
    w.add(f"    key = ({', '.join(keys)}{',' if len(keys) == 1 else ''})  # GROUP BY {grouped}")
    w.add("    values = [")
    for agg, code in zip(plan.aggs, _agg_inputs(w, plan, "row"), strict=True):
        w.add(f"        {code},  # {describe(agg.expr)}")
    w.add("    ]")
    if plan.carried_exprs:
        carried = "".join(w.expr(c, "row") + ", " for c in plan.carried_exprs)
        w.add(f"    carried = ({carried}) if sign > 0 else ()")
    else:
        w.add("    carried = ()")
    w.add("    return key, values, carried")
    w.add()


def _child(w: _Writer, plan: Any) -> None:
    child = plan.positions[plan.pushdown.child_pos]
    inline = all(
        e is None or isinstance(e, Col)
        for agg in plan.aggs
        for e in (agg.arg_expr, agg.filter_expr)
    )
    w.add("def child(row):")
    w.add(f'    """A row of {child.table.qualified} -> the inputs of its group\'s aggregates."""')
    if inline:
        codes = _agg_inputs(w, plan, "row", offset=child.offset)
    else:
        w.add(f"    joined = {(None,) * child.offset!r} + row")
        codes = _agg_inputs(w, plan, "joined")
    w.add("    return [")
    for agg, code in zip(plan.aggs, codes, strict=True):
        w.add(f"        {code},  # {describe(agg.expr)}")
    w.add("    ]")
    w.add()


def _pushed(w: _Writer, plan: Any) -> None:
    # GROUP BY is the base table's primary key and the carried columns are the base table's:
    # both are plain columns, read from the base row alone.
    offset = plan.positions[plan.pushdown.base_pos].offset
    inputs = [w.expr(g, "row", offset=offset) for g in plan.group_exprs]
    inputs += [f"states[{i}].result()" for i in range(len(plan.aggs))]
    inputs += [w.expr(c, "row", offset=offset) for c in plan.carried_exprs]
    w.add("def pushed(row, states):")
    w.add('    """The base row and its group\'s aggregate states -> the output row, or None."""')
    w.add(f"    return output(({', '.join(inputs)},))")
    w.add()


def _output(w: _Writer, plan: Any) -> None:
    w.add("def output(values):")
    w.add('    """(group key..., aggregates..., carried...) -> the output row, or None."""')
    if plan.having_expr is not None:
        having = w.expr(plan.having_expr, "values", slots=plan.slots)
        w.add(f"    if {having} is not True:  # HAVING")
        w.add("        return None")
    w.add("    return (")
    for name, e in plan.output_exprs:
        w.add(f"        {w.expr(e, 'values', slots=plan.slots)},  # {name}")
    w.add("    )")
    w.add()


def _project(w: _Writer, plan: Any) -> None:
    w.add("def project(row):")
    w.add('    """A joined row -> its output row, or None when WHERE rejects it."""')
    if plan.where_expr is not None:
        w.add(f"    if {w.expr(plan.where_expr, 'row')} is not True:  # WHERE")
        w.add("        return None")
    w.add("    return (")
    for name, e in plan.output_exprs:
        w.add(f"        {w.expr(e, 'row')},  # {name}")
    w.add("    )")
    w.add()
