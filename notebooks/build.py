"""Build the homework notebooks from one source each: solutions and exercises stay in sync.

Sources are plain Python files ``notebooks/src/NN_name.py`` with cell markers:

    # %% [markdown]          a markdown cell: every line is "# text" (or a bare "#")
    # %%                     a code cell

Inside a code cell, a solution region is

    # BEGIN SOLUTION hint for the student
    ...the answer...
    # END SOLUTION

The solution notebook ``notebooks/NN_name.ipynb`` keeps the answer (without the marker lines);
the exercise notebook ``notebooks/exercises/NN_name.ipynb`` replaces each region by
``raise NotImplementedError("Exercise: <hint>")`` at the region's indentation.

    python notebooks/build.py                    regenerate every notebook (keeps outputs of unchanged cells)
    python notebooks/build.py --check            exit 1 if a committed notebook differs from its source
    python notebooks/build.py --execute [--fast] execute the solution notebooks in place (outputs kept)

--fast sets SCRATCHNADE_FAST=1 in the kernel: small data, few epochs (what CI runs).
"""
import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
EXERCISES = HERE / "exercises"
CELL = re.compile(r"^# %%(?:\s*\[(\w+)\])?\s*$")
BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\b\s*(.*)$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
EXERCISE_TAG = "exercise"


def parse_cells(text):
    """Split a percent-format source into [(cell_type, lines)] (markdown lines still commented)."""
    cells = []
    for line in text.splitlines():
        m = CELL.match(line)
        if m:
            cells.append(("markdown" if m.group(1) == "markdown" else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first '# %%' marker: {line!r}")
    return cells


def _strip_blank(lines):
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _markdown(lines):
    out = []
    for line in lines:
        if line == "#" or line.startswith("# "):
            out.append(line[2:])
        elif not line.strip():
            out.append("")
        else:
            raise ValueError(f"markdown line must start with '# ': {line!r}")
    return "\n".join(_strip_blank(out))


def split_solutions(lines, name="?"):
    """(solution_lines, exercise_lines, n_regions) of one code cell."""
    sol, ex, n, inside = [], [], 0, None
    for line in lines:
        b, e = BEGIN.match(line), END.match(line)
        if b:
            if inside is not None:
                raise ValueError(f"{name}: nested BEGIN SOLUTION")
            indent, hint = b.group(1), b.group(2).strip() or "fill in this part"
            ex.append(f'{indent}raise NotImplementedError("Exercise: {hint}")')
            inside, n = indent, n + 1
        elif e:
            if inside is None:
                raise ValueError(f"{name}: END SOLUTION without BEGIN")
            inside = None
        else:
            sol.append(line)
            if inside is None:
                ex.append(line)
    if inside is not None:
        raise ValueError(f"{name}: BEGIN SOLUTION without END")
    return sol, ex, n


def build(source):
    """The (solution, exercise) notebooks of one source file, as nbformat objects."""
    stem = Path(source).stem
    nbs = {"solution": nbformat.v4.new_notebook(), "exercise": nbformat.v4.new_notebook()}
    for i, (kind, lines) in enumerate(parse_cells(Path(source).read_text())):
        cid = f"{stem[:2]}-{i:03d}"                           # stable ids: no churn in diffs
        if kind == "markdown":
            for nb in nbs.values():
                nb.cells.append(nbformat.v4.new_markdown_cell(_markdown(lines), id=cid))
            continue
        sol, ex, n = split_solutions(lines, f"{source} cell {i}")
        meta = {"tags": [EXERCISE_TAG]} if n else {}
        for version, body in (("solution", sol), ("exercise", ex)):
            cell = nbformat.v4.new_code_cell("\n".join(_strip_blank(body)), id=cid, metadata=dict(meta))
            nbs[version].cells.append(cell)
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
              "language_info": {"name": "python"}}
    for nb in nbs.values():
        nb.metadata.update(kernel)
    return nbs["solution"], nbs["exercise"]


def targets(source, out_dir=HERE):
    """Paths of the solution and exercise notebooks built from `source`."""
    name = Path(source).stem + ".ipynb"
    return Path(out_dir) / name, Path(out_dir) / "exercises" / name


def sources(src_dir=SRC):
    return sorted(Path(src_dir).glob("[0-9][0-9]_*.py"))


def signature(nb):
    """What the check compares: cell types, sources and tags; never outputs or counts."""
    return [(c.cell_type, c.source, tuple(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def _keep_outputs(new, old_path):
    """Copy what the last execution left in the notebook on disk into `new`, for every cell whose
    source is unchanged: outputs, execution count and the cell's timing (metadata "execution");
    and the notebook's run record (metadata "scratchnade": mode and seconds)."""
    if not Path(old_path).exists():
        return
    old_nb = nbformat.read(old_path, as_version=4)
    old = {c.id: c for c in old_nb.cells if c.cell_type == "code"}
    for c in new.cells:
        o = old.get(c.id)
        if c.cell_type == "code" and o is not None and o.source == c.source:
            c.outputs, c.execution_count = o.outputs, o.execution_count
            if "execution" in o.metadata:
                c.metadata["execution"] = o.metadata["execution"]
    meta = old_nb.metadata.get("scratchnade")
    if meta:
        new.metadata["scratchnade"] = meta


def write_all(src_dir=SRC, out_dir=HERE):
    """Regenerate every notebook from its source; return the written paths."""
    written = []
    for src in sources(src_dir):
        sol, ex = build(src)
        sol_path, ex_path = targets(src, out_dir)
        ex_path.parent.mkdir(parents=True, exist_ok=True)
        _keep_outputs(sol, sol_path)
        nbformat.write(sol, sol_path)
        nbformat.write(ex, ex_path)
        written += [sol_path, ex_path]
    return written


def check(src_dir=SRC, out_dir=HERE):
    """Messages for every notebook missing or out of sync with its source (empty when in sync)."""
    problems = []
    for src in sources(src_dir):
        for built, path in zip(build(src), targets(src, out_dir)):
            if not path.exists():
                problems.append(f"{path}: missing (run python notebooks/build.py)")
            elif signature(nbformat.read(path, as_version=4)) != signature(built):
                problems.append(f"{path}: differs from {src} (run python notebooks/build.py)")
    stems = {src.stem for src in sources(src_dir)}
    for folder in (Path(out_dir), Path(out_dir) / "exercises"):
        for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            if path.stem not in stems:
                problems.append(f"{path}: no source {Path(src_dir) / (path.stem + '.py')} (delete it or restore the source)")
    return problems


def execute(nb, fast=True, timeout=600, data_dir=None):
    """Run notebook `nb` (a path or a notebook, executed in place) in a fresh python3 kernel.

    Returns the executed notebook (never written to disk here).
    The kernel sees SCRATCHNADE_FAST=1 in fast mode and SCRATCHNADE_DATA=data_dir when given;
    it runs in the notebooks folder.  Raises nbclient's CellExecutionError on the first error.
    """
    from nbclient import NotebookClient

    if not isinstance(nb, nbformat.NotebookNode):
        nb = nbformat.read(nb, as_version=4)
    env = dict(os.environ, SCRATCHNADE_FAST="1" if fast else "0", MPLBACKEND="module://matplotlib_inline.backend_inline")
    if data_dir is not None:
        env["SCRATCHNADE_DATA"] = str(data_dir)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)                                   # the kernel inherits this environment
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if any notebook is out of sync")
    ap.add_argument("--execute", action="store_true", help="execute the solution notebooks in place")
    ap.add_argument("--fast", action="store_true", help="with --execute: SCRATCHNADE_FAST=1 (small runs)")
    ap.add_argument("only", nargs="*", help="with --execute: notebook name prefixes, e.g. 01 04")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or f"{len(sources())} notebooks in sync with notebooks/src")
        return 1 if problems else 0
    write_all()
    if args.execute:
        for src in sources():
            if args.only and not any(src.stem.startswith(o) for o in args.only):
                continue
            path = targets(src)[0]
            t0 = time.time()
            nb = execute(path, fast=args.fast)
            nb.metadata["scratchnade"] = {"mode": "fast" if args.fast else "full",
                                          "seconds": round(time.time() - t0, 1)}
            nbformat.write(nb, path)
            print(f"{path.name}: executed ({'fast' if args.fast else 'full'}) in {time.time() - t0:.1f} s")
    else:
        print(f"built {len(sources())} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
