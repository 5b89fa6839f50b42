"""How ``resnet-repro --help`` and ``resnet-repro COMMAND --help`` read: one place for
every command.

Typer renders help with rich panels by default: at 80 columns the option text is
squeezed into a narrow column between the option names and a type column
(``<str>``, ``<bool>``, ``<list[Path]>``), and its plain (``rich_markup_mode=None``)
layout still shows those type tags and breaks words at hyphens (``--data-`` / ``dir``).
The classes here give every command the layout of pip, torchrun or git instead:

    Usage: resnet-repro table [OPTIONS] NUMBER

      Rebuild paper Table N from logged runs, ...

    Options:
      -r, --runs RUNS      Run directories or folders of runs ...  [default: ...]
      -f, --format FORMAT  rich (terminal), markdown, csv or latex.

* a value option shows a metavar made from its name (``--data-dir DATA_DIR``, as
  argparse does), a flag shows none, an argument its name in capitals;
* text is wrapped at spaces only (never inside a word or at a hyphen) to the terminal
  width, at most 78 columns; help that no longer fits beside a long option name starts
  on the next line;
* the command list shows each command's first sentence;
* an example command in a docstring (a paragraph starting with ``resnet-repro`` or
  ``torchrun``) is wrapped with ``\\`` continuations, so it can be pasted as shown;
* the rich-markup escape ``\\[`` in help strings is shown as ``[``.

Use :class:`App` in place of ``typer.Typer``; its commands get :class:`HelpCommand`
and the app :class:`HelpGroup`. The help does not depend on ``TYPER_USE_RICH`` or on
whether rich is installed.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Sequence

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.23 vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer with click installed
    import click

MAX_WIDTH = 78  # help never gets wider than this, whatever the terminal
COMMAND_STARTS = ("resnet-repro ", "torchrun ", "python -m ")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'])\.\s+(?=[A-Z])")


def wrap(text: str, width: int, initial_indent: str = "", subsequent_indent: str = "") -> list[str]:
    """``text`` (one paragraph; runs of whitespace count as one space) wrapped to
    ``width`` columns at spaces only: a word longer than the width stays whole on its
    own line, and hyphenated words are never split."""
    words = " ".join(w for w in re.split(r"[ \t\n\r\f\v]+", text) if w)  # not NBSP
    if not words:
        return [initial_indent.rstrip()]
    return textwrap.wrap(words, width, initial_indent=initial_indent, subsequent_indent=subsequent_indent,
                         break_long_words=False, break_on_hyphens=False) or [initial_indent.rstrip()]


def wrap_command(text: str, width: int, indent: str) -> list[str]:
    """A shell command wrapped to ``width`` with `` \\`` at the end of every line but the
    last and 4 more spaces on the continuation lines (so it pastes as one command)."""
    lines = wrap(text, max(width - 2, 20), initial_indent=indent, subsequent_indent=indent + "    ")
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def unescape(text: str) -> str:
    """Help strings written for rich markup escape ``[`` as ``\\[``; plain help shows ``[``."""
    return text.replace("\\[", "[")


def paragraphs(text: str) -> list[tuple[str, str]]:
    """``(indent, text)`` per blank-line separated paragraph of a (dedented) docstring."""
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if lines:
            indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
            out.append((indent, " ".join(ln.strip() for ln in lines)))
    return out


def first_sentence(text: str) -> str:
    """The first sentence of a command's help (its first paragraph up to a full stop
    followed by a capital letter; ``Sec. 4.2`` or ``e.g. resnet20`` do not end it)."""
    paras = paragraphs(unescape(text or ""))
    if not paras:
        return ""
    head = paras[0][1]
    parts = _SENTENCE_END.split(head, maxsplit=1)
    return parts[0] + ("." if len(parts) > 1 else "")


NBSP = "\xa0"  # textwrap does not break here
_EXTRAS = re.compile(r"\[(?:default|env var|required)[^\]]*\]")


def _keep_together(text: str) -> str:
    """``[default: ...]`` / ``[required]`` made unbreakable (NBSP) for :func:`wrap`."""
    return _EXTRAS.sub(lambda m: m.group(0).replace(" ", NBSP), text)


class HelpFormatter(click.HelpFormatter):
    """Click's help formatter with word-preserving wrapping (see the module docstring)."""

    def __init__(self, indent_increment: int = 2, width: int | None = None, max_width: int | None = None) -> None:
        super().__init__(indent_increment, width, max_width)
        self.width = min(self.width, MAX_WIDTH)

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        prefix = "Usage: " if prefix is None else prefix
        head = f"{'':>{self.current_indent}}{prefix}{prog} "
        text_width = self.width - self.current_indent
        if text_width >= len(head) + 20:
            lines = wrap(args, text_width, initial_indent=head, subsequent_indent=" " * len(head))
        else:
            indent = " " * (max(self.current_indent, len(prefix)) + 4)
            lines = [head.rstrip(), *wrap(args, text_width, initial_indent=indent, subsequent_indent=indent)]
        self.write("\n".join(lines) + "\n")

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        out = []
        for extra, para in paragraphs(unescape(text)):
            if para.startswith(COMMAND_STARTS):
                out.append("\n".join(wrap_command(para, self.width, indent + extra)))
            else:
                out.append("\n".join(wrap(para, self.width, indent + extra, indent + extra)))
        self.write("\n\n".join(out) + "\n")

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        if not rows:
            return
        first_col = min(max(len(r[0]) for r in rows), col_max) + col_spacing
        text_width = max(self.width - first_col - self.current_indent, 20)
        pad = " " * (first_col + self.current_indent)
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + pad)
            lines: list[str] = []
            for _, para in paragraphs(_keep_together(unescape(second))):
                lines += [line.replace(NBSP, " ") for line in wrap(para, text_width)]
            self.write(lines[0] + "\n")
            for line in lines[1:]:
                self.write(pad + line + "\n")


class HelpContext(click.Context):
    """A click context whose help uses :class:`HelpFormatter`."""

    formatter_class = HelpFormatter


def _metavar(param: click.Parameter) -> str:
    """``DATA_DIR`` for ``--data-dir``, ``NUMBER`` for argument ``number``."""
    longs = [o for o in param.opts if o.startswith("--")]
    name = longs[0][2:] if longs else (param.name or "value")
    return name.replace("-", "_").upper()


def _set_metavars(params: list[click.Parameter]) -> None:
    for p in params:
        if p.metavar is not None:
            continue
        if p.param_type_name == "argument":
            p.metavar = _metavar(p)
        elif p.param_type_name == "option" and not getattr(p, "is_flag", False) and not getattr(p, "count", False):
            p.metavar = _metavar(p)


class HelpCommand(TyperCommand):
    """A Typer command with the help layout of this module."""

    context_class = HelpContext

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _set_metavars(self.params)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = (p.metavar or _metavar(p)) + ("..." if p.nargs != 1 else "")
                pieces.append(name if p.required else f"[{name}]")
        return pieces

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        click.Command.format_help(self, ctx, formatter)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        args, opts = [], []
        for p in self.get_params(ctx):
            rec = p.get_help_record(ctx)
            if rec is None:
                continue
            if p.param_type_name == "argument":
                name = (p.metavar or _metavar(p)) + ("..." if p.nargs != 1 else "")
                args.append((name, rec[1]))
            else:
                opts.append(rec)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


class HelpGroup(TyperGroup):
    """A Typer group (the top-level command) with the help layout of this module."""

    context_class = HelpContext

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _set_metavars(self.params)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        click.Command.format_help(self, ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.short_help or first_sentence(cmd.help or "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class App(typer.Typer):
    """``typer.Typer`` whose group and commands use :class:`HelpGroup` /
    :class:`HelpCommand` unless given another ``cls``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("cls", HelpGroup)
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(*args, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or HelpCommand, **kwargs)
