"""Explain: what the engine does for one view, in words and as the code it runs.

`explain(plan)` describes a compiled view (`views.plan.ViewPlan`): for each FROM item how a
change there finds the rows it joins (a get by primary key, or a join index the store keeps),
whether the aggregate is pushed below the join, the group key, each aggregate, the sort indexes
kept, the columns converted; then the generated source of `views.codegen`. `viewstore explain`
prints it.
"""

from __future__ import annotations

from typing import Any

from viewstore.views.codegen import describe
from viewstore.views.plan import RangeLookup
from viewstore.views.resolve import type_sql


def _how(table: Any, lk: Any) -> str:
    """How a lookup finds rows of `table`: a key get, a join index, a range or full scan."""
    if lk.by_key:
        return "get by primary key"
    if isinstance(lk, RangeLookup):
        if lk.everything:
            return "scan of every row (cross join: cost grows with the table)"
        col = table.columns[lk.column].name
        sides = [s for s, b in (("lower", lk.lower), ("upper", lk.upper)) if b]
        return f"range scan of the join index on {col}, in SQL order ({' and '.join(sides)} bound)"
    return f"join index on {table.columns[lk.column].name}"


def explain(plan: Any) -> str:
    """A plain-text account of `plan`, followed by its generated code."""
    out = [f"view {plan.name}"]
    out.append("  columns: " + ", ".join(f"{c.name} {type_sql(c.type_oid)}" for c in plan.columns))
    names = [c.name for c in plan.columns]
    if plan.key_columns:
        out.append("  key: " + ", ".join(names[i] for i in plan.key_columns))
    elif not plan.aggregate:
        out.append("  key: the primary keys of the joined rows")
    pd = plan.pushdown
    for p in plan.positions:
        read = sorted(plan.used.get(p.table.table_id, ()))
        cols = ", ".join(p.table.columns[i].name for i in read)
        where = f"{p.table.qualified} {p.alias}"
        if p.kind == "base":
            out.append(f"  FROM {where}  (converts {cols})")
            continue
        kind = {"left": "LEFT JOIN", "full": "FULL JOIN"}.get(p.kind, "JOIN")
        if not p.on and not p.ranges:
            kind = "CROSS JOIN"
        out.append(f"  {kind} {where}  (converts {cols})")
        if pd is not None:
            child, base = plan.positions[pd.child_pos], plan.positions[pd.base_pos]
            fk = child.table.columns[pd.fk].name
            out.append(
                f"    aggregate pushed below the join: state per {child.alias}.{fk} value, the "
                f"{base.alias} row joined by primary key once per changed group; no join "
                "index, no scan"
            )
            continue
        for lk, direction in ((p.forward, "from the rows before"), (p.backward, None)):
            if lk is None:
                continue
            if direction is None:
                j, lk = lk
                target = plan.positions[j]
                how = _how(target.table, lk)
                out.append(f"    a change here finds its {target.alias} rows: {how}")
            else:
                out.append(f"    rows before find their {p.alias} rows: {_how(p.table, lk)}")
        if p.kind == "full":
            out.append(
                "    a row of either side with no match shows null-extended; a change on one side "
                "looks up its matches on the other to flip them"
            )
    if plan.where_expr is not None:
        out.append(f"  WHERE {describe(plan.where_expr)}")
    if plan.aggregate:
        groups = ", ".join(describe(g) for g in plan.group_exprs) or "(one row, no GROUP BY)"
        out.append(f"  GROUP BY {groups}")
        for agg in plan.aggs:
            state = type(agg.new_state()).__name__
            out.append(f"    {describe(agg.expr)}: state {state}")
        if plan.having_expr is not None:
            out.append(f"  HAVING {describe(plan.having_expr)}")
    wp = plan.window
    if wp is not None:
        exprs = [e for _, e in plan.output_exprs]
        part = ", ".join(describe(exprs[i]) for i in wp.partition) or "(one partition)"
        order = ", ".join(
            describe(exprs[i]) + (" DESC" if d else "") + (" NULLS FIRST" if nf else " NULLS LAST")
            for i, d, nf in zip(wp.order, wp.desc, wp.nulls_first, strict=True)
        )
        out.append(
            f"  {', '.join(f.upper() + '()' for f in wp.funcs)} OVER (PARTITION BY {part} "
            f"ORDER BY {order}; ties by the row key): an order index per partition "
            "(store.ranking)"
        )
        if wp.top is None:
            out.append(
                "    a change renumbers its partition from its first changed position while the "
                "numbers differ from the stored ones"
            )
        else:
            out.append(
                f"    Top-K: only rows whose {wp.funcs[wp.top[0]].upper()}() <= {wp.top[1]} are "
                "output; a change renumbers its partition's top (none after its first row "
                "left out)"
            )
    sorted_by = ", ".join(names[i] for i in plan.sort_columns) or "none"
    out.append(f"  sort indexes: {sorted_by}")
    out.append("")
    out.append("generated code (views.codegen):")
    out.append("")
    out.append(plan.code.source.rstrip())
    return "\n".join(out) + "\n"
