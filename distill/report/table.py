"""Plain-text and Markdown tables from a list of row dicts."""
from __future__ import annotations


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Columns in first-seen order; numbers as given (format them before if needed)."""
    if not rows:
        return "(no rows)"
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    if markdown:
        line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(columns), rule] + [line(r) for r in cells])
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule] + [line(r) for r in cells])
