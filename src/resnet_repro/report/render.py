"""Terminal rendering of rebuilt tables with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from resnet_repro.report.tables import DISPLAY_DROP, Table, _cell


def print_table(console: Console, t: Table) -> None:
    """Print ``t`` as a rich table with its title and caption."""
    shown = t.frame.drop(columns=[c for c in DISPLAY_DROP if c in t.frame.columns])
    rt = RichTable(title=f"Table {t.number}. {t.title}", caption=t.caption, caption_justify="left",
                   show_lines=False, header_style="bold")
    for c in shown.columns:
        rt.add_column(str(c), overflow="fold")
    for row in shown.itertuples(index=False):
        rt.add_row(*(_cell(v) for v in row))
    console.print(rt)
