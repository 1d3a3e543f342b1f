"""The notebooks' check cells catch classic wrong answers, in the exercise where they are made.

notebooks/mutants/NN_name.py lists, for every exercise (keyed by the function it defines), at least three wrong
answers of the kind students write, each with the message its check must give. For each notebook, one fast-mode
kernel runs the solution's code cells in order; at every exercise it runs, for each mutant, the exercise cell with
the solution region replaced by the mutant (it must run) and then the exercise's own check cell, which must fail
with an AssertionError whose message matches the mutant's regex. The real solution and its check (which must pass)
run next, and the notebook goes on. Check cells build their probes from fixed seeds, so mutants cannot leak into
each other (the brief's "group a notebook's mutants"). One kernel per notebook: about a minute for all seven.
"""
import importlib.util
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
    reason="executing notebooks needs nbclient and ipykernel (pip install -e '.[test]')")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MUTANTS = NOTEBOOKS / "mutants"
sys.path.insert(0, str(NOTEBOOKS))
import build  # noqa: E402  (notebooks/build.py)

SOURCES = build.sources()
DEF = re.compile(r"^def (\w+)\(", re.M)


def load_mutants(source):
    spec = importlib.util.spec_from_file_location(f"mutants_{source.stem}", MUTANTS / source.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTANTS


def replace_region(lines, code):
    """The code cell `lines` (with markers) with its solution region replaced by `code`, markers dropped."""
    out, inside = [], False
    for line in lines:
        b = build.BEGIN.match(line)
        if b:
            out += [b.group(1) + row if row.strip() else "" for row in textwrap.dedent(code).strip("\n").splitlines()]
            inside = True
        elif build.END.match(line):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(build._strip_blank(out))


def plan(source):
    """[(code, exercise)] for the notebook's code cells up to its last check; exercise = (name, lines) or None."""
    cells = [(kind, lines) for kind, lines in build.parse_cells(source.read_text()) if kind == "code"]
    steps, last_check = [], None
    for i, (_, lines) in enumerate(cells):
        sol, _, n = build.split_solutions(lines)
        if n:
            region = "\n".join(lines)
            name = DEF.findall(region[:region.index("# BEGIN SOLUTION")])[-1]   # the function holding the region
            last_check = i + 1
        steps.append(("\n".join(build._strip_blank(sol)), (name, lines) if n else None))
    return steps[:last_check + 1]


def test_replace_region_keeps_the_cell_around_the_region():
    lines = ["def f(x):", "    y = 1", "    # BEGIN SOLUTION hint", "    return 2 * x", "    # END SOLUTION", "f(1)"]
    assert replace_region(lines, "\nz = x\n\nreturn 3 * z\n") == "def f(x):\n    y = 1\n    z = x\n\n    return 3 * z\nf(1)"


def test_every_exercise_has_three_mutants():
    for source in SOURCES:
        mutants = load_mutants(source)
        names = [step[1][0] for step in plan(source) if step[1]]
        assert sorted(names) == sorted(mutants), f"{source.name}: exercises {names}, mutants for {sorted(mutants)}"
        for name, rows in mutants.items():
            assert len(rows) >= 3, f"{source.name}: {name} has {len(rows)} mutants, at least 3 are needed"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_mutants_are_caught_by_their_own_check(source, monkeypatch, record_property):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from conftest import _default_data_dir

    mutants = load_mutants(source)
    steps = plan(source)
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    monkeypatch.setenv("SCRATCHNADE_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    data = _default_data_dir()
    if data is not None:
        monkeypatch.setenv("SCRATCHNADE_DATA", str(data))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})

    def run(code):
        cell = nbformat.v4.new_code_cell(code)
        nb.cells.append(cell)
        client.execute_cell(cell, len(nb.cells) - 1)

    t0, missed, caught = time.time(), [], 0
    with client.setup_kernel():
        for i, (code, exercise) in enumerate(steps):
            if exercise and i + 1 < len(steps):
                name, lines = exercise
                check = steps[i + 1][0]
                for description, wrong, pattern in mutants[name]:
                    try:
                        run(replace_region(lines, wrong))
                    except CellExecutionError as e:
                        missed.append(f"{name} / {description}: the exercise cell itself failed: {e.ename}: {e.evalue}")
                        continue
                    try:
                        run(check)
                    except CellExecutionError as e:
                        if e.ename != "AssertionError" or not re.search(pattern, e.evalue, re.S):
                            missed.append(f"{name} / {description}: {e.ename}: {e.evalue!r} does not match {pattern!r}")
                        else:
                            caught += 1
                    else:
                        missed.append(f"{name} / {description}: the check passed")
            run(code)                                   # the real cell (for a check cell: it must pass now)
    record_property("mutants", caught)
    print(f"{source.stem}: {caught} mutants caught in {time.time() - t0:.1f} s")
    assert not missed, "\n".join(missed)
