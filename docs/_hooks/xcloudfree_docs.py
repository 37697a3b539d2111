"""MkDocs hooks of the xcloudfree site: content generated at build time so that it cannot rot.

- ``<!-- xcloudfree:cli -->`` becomes the CLI reference, read from the typer app (every command, its usage, its
  arguments and options with types, defaults and help).
- ``<!-- xcloudfree:examples -->`` becomes one section per ``examples/*.py``: its docstring, its figure and its
  source. The figures come from running the examples: each one's output folder is
  ``$XCLOUDFREE_EXAMPLES_OUT/<name>`` (default ``examples_output/<name>``); an example whose figure is missing or
  older than its script is run first (``--out`` that folder), and a failing example fails the build. The figures
  are added to the site as ``images/examples/<name>.png``; nothing generated is written into ``docs/``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIGURES = "images/examples"
CLI_MARKER = "<!-- xcloudfree:cli -->"
EXAMPLES_MARKER = "<!-- xcloudfree:examples -->"


def examples_out() -> Path:
    """Where the examples' outputs are: ``$XCLOUDFREE_EXAMPLES_OUT`` or ``examples_output/``."""
    return Path(os.environ.get("XCLOUDFREE_EXAMPLES_OUT", ROOT / "examples_output")).resolve()


def example_scripts() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def figure_of(out: Path) -> Path | None:
    """An example's figure: the PNG it wrote at the top of its output folder (the first by name)."""
    pngs = sorted(out.glob("*.png"))
    return pngs[0] if pngs else None


def ensure_figure(script: Path, base: Path) -> Path:
    """Run ``script --out base/<name>`` unless its figure is there and newer than the script; the figure."""
    out = base / script.stem
    figure = figure_of(out)
    if figure is None or figure.stat().st_mtime < script.stat().st_mtime:
        run = subprocess.run(
            [sys.executable, str(script), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if run.returncode != 0:
            raise PluginError(f"example {script.name} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        figure = figure_of(out)
        if figure is None:
            raise PluginError(f"example {script.name} wrote no PNG figure into {out}")
    return figure


#: The examples of this build, fixed in on_files so that the page lists exactly the figures that were added.
_BUILT: list[Path] = []


def on_files(files: Files, config: Any) -> Files:
    base = examples_out()
    _BUILT[:] = example_scripts()
    for script in _BUILT:
        figure = ensure_figure(script, base)
        files.append(File.generated(config, f"{FIGURES}/{script.stem}.png", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if EXAMPLES_MARKER in markdown:
        depth = page.file.src_uri.count("/")
        markdown = markdown.replace(EXAMPLES_MARKER, examples_section("../" * depth))
    return markdown


# --- the CLI reference -----------------------------------------------------------------------------------------
def cli_reference() -> str:
    import typer

    from xcloudfree.cli import app

    # Typer ships its own click; its objects are used through their methods only.
    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="xcloudfree")
    parts = [f"`xcloudfree`: {_plain(root.help)}", "", "```", "xcloudfree [--version] COMMAND [ARGS]...", "```"]
    for name, cmd in root.commands.items():  # registration order, as `--help` lists them
        if cmd.hidden:
            continue
        ctx = cmd.context_class(cmd, info_name=name, parent=root_ctx)
        pieces = [re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), p) for p in cmd.collect_usage_pieces(ctx)]
        parts += ["", f"## `{name}`", "", _plain(cmd.help), "", "```", " ".join(["xcloudfree", name, *pieces]), "```"]
        rows = [_param_row(p.get_help_record(ctx)) for p in cmd.params if not p.hidden]
        rows = [row for row in rows if row]
        if rows:
            parts += ["", "| argument / option | default | description |", "|---|---|---|", *rows]
    return "\n".join(parts) + "\n"


def _plain(text: str | None) -> str:
    return textwrap.dedent(text or "").strip().replace("\b\n", "")


def _param_row(record: tuple[str, str] | None) -> str:
    """One table row from a parameter's help record, ``("--out <path>", "Output COG.  [required]")``."""
    if record is None:
        return ""
    names, text = record
    tags = dict.fromkeys(re.findall(r"\[([^\[\]]+)\]\s*$", text), True)
    text = re.sub(r"\s*\[[^\[\]]+\]\s*$", "", text)
    tag = next(iter(tags), "")
    default = "required" if tag == "required" else f"`{tag.split(': ', 1)[1]}`" if tag.startswith("default: ") else ""
    cell = " ".join(text.split()).replace("|", "\\|")
    return f"| `{names}` | {default} | {cell} |"


# --- the examples page -----------------------------------------------------------------------------------------
def examples_section(prefix: str) -> str:
    parts = []
    for script in _BUILT:
        source = script.read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        title, _, body = doc.partition("\n")
        parts += [
            f"## {title.rstrip('.')}",
            "",
            f"`examples/{script.name}`",
            "",
            _rst_literals(body.strip()),
            "",
            f"![{title.rstrip('.')}: the figure `{script.name}` writes]({prefix}{FIGURES}/{script.stem}.png)",
            "",
            f'??? example "Source of `examples/{script.name}`"',
            "",
            textwrap.indent(f"```python\n{source.rstrip()}\n```", "    "),
            "",
        ]
    return "\n".join(parts)


def _rst_literals(text: str) -> str:
    """Docstring reStructuredText to Markdown: ``x`` → `x`, a ``::`` literal block → a fenced block."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            out += ["", "```bash", *[b for b in block if b.strip()], "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)
