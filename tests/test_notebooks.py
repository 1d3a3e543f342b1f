"""The homework notebooks: in sync with their sources, solutions run, exercises stop at exercise 1.

Execution tests run each notebook in fast mode (SCRATCHNADE_FAST=1: small data, few epochs) in a
fresh python3 kernel, and skip when nbclient or ipykernel is missing.
"""
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install -e '.[test]')")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import build  # noqa: E402  (notebooks/build.py)

SOURCES = build.sources()
CELL_TIMEOUT = 300                                  # seconds per cell, fast mode needs far less
NEEDS_KERNEL = pytest.mark.skipif(
    importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
    reason="executing notebooks needs nbclient and ipykernel (pip install -e '.[test]')")


def _ids(paths):
    return [p.stem for p in paths]


def test_there_are_notebooks():
    assert len(SOURCES) >= 1, "no notebook sources found in notebooks/src"


def test_committed_notebooks_match_sources():
    problems = build.check()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_every_exercise_has_a_solution_region_and_a_check(source):
    solution, exercise = build.build(source)
    tagged = [i for i, c in enumerate(exercise.cells) if build.EXERCISE_TAG in c.metadata.get("tags", [])]
    assert tagged, f"{source.name} has no exercise (no BEGIN SOLUTION region)"
    for i in tagged:
        assert 'raise NotImplementedError("Exercise:' in exercise.cells[i].source
        assert "NotImplementedError" not in solution.cells[i].source
        assert "BEGIN SOLUTION" not in solution.cells[i].source + exercise.cells[i].source
        after = [c.source for c in solution.cells[i + 1:] if c.cell_type == "code"]
        assert after and "assert" in after[0], f"{source.name}: the code cell after exercise cell {i} must check it"


def test_edited_solution_region_is_detected(tmp_path):
    """Editing a solution in a source (or a notebook) without rebuilding makes --check fail."""
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(NOTEBOOKS / "src", src)
    build.write_all(src, out)
    assert build.check(src, out) == []
    first = SOURCES[0].name
    text = (src / first).read_text()
    begin = text.index("# BEGIN SOLUTION")
    line_end = text.index("\n", begin)
    (src / first).write_text(text[:line_end + 1] + "    pass  # an edit\n" + text[line_end + 1:])
    problems = build.check(src, out)
    assert len(problems) == 1 and first.replace(".py", ".ipynb") in problems[0], problems
    build.write_all(src, out)                        # rebuilt: in sync again
    assert build.check(src, out) == []
    sol_path = build.targets(src / first, out)[0]     # now edit the notebook instead
    nb = nbformat.read(sol_path, as_version=4)
    cell = next(c for c in nb.cells if build.EXERCISE_TAG in c.metadata.get("tags", []))
    cell.source += "\n# edited in the notebook"
    nbformat.write(nb, sol_path)
    assert len(build.check(src, out)) == 1


def test_orphan_notebook_is_detected(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(NOTEBOOKS / "src", src)
    build.write_all(src, out)
    (src / SOURCES[0].name).unlink()                    # a source removed, its notebooks left
    problems = build.check(src, out)
    assert len(problems) == 2 and all("no source" in p for p in problems), problems


def test_outputs_and_counts_are_ignored(tmp_path):
    build.write_all(NOTEBOOKS / "src", tmp_path)
    path = build.targets(SOURCES[0], tmp_path)[0]
    nb = nbformat.read(path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.execution_count = 7
    nbformat.write(nb, path)
    assert build.check(NOTEBOOKS / "src", tmp_path) == []


def test_a_rebuild_keeps_the_last_run_of_unchanged_cells(tmp_path):
    """Rebuilding every notebook (as after an edit to one source) keeps the outputs, counts, cell
    timings and run record of the cells whose source did not change, and drops them where it did."""
    src = tmp_path / "src"
    shutil.copytree(NOTEBOOKS / "src", src)
    build.write_all(src, tmp_path)
    path = build.targets(src / SOURCES[0].name, tmp_path)[0]
    nb = nbformat.read(path, as_version=4)
    first, second = [c for c in nb.cells if c.cell_type == "code"][:2]
    for c in (first, second):
        c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        c.execution_count = 3
        c.metadata["execution"] = {"iopub.execute_input": "2026-12-03T10:00:00Z"}
    nb.metadata["scratchnade"] = {"mode": "fast", "seconds": 12.5}
    nbformat.write(nb, path)
    text = (src / SOURCES[0].name).read_text()
    (src / SOURCES[0].name).write_text(text.replace(second.source.splitlines()[0],
                                                    second.source.splitlines()[0] + "  # edited", 1))
    build.write_all(src, tmp_path)
    rebuilt = nbformat.read(path, as_version=4)
    kept = next(c for c in rebuilt.cells if c.id == first.id)
    redone = next(c for c in rebuilt.cells if c.id == second.id)
    assert kept.outputs[0]["text"] == "ran\n" and kept.execution_count == 3
    assert kept.metadata["execution"] == first.metadata["execution"]
    assert redone.outputs == [] and "execution" not in redone.metadata
    assert rebuilt.metadata["scratchnade"] == {"mode": "fast", "seconds": 12.5}


def test_split_solutions_keeps_indentation():
    lines = ["def f(x):", "    # BEGIN SOLUTION return twice x", "    return 2 * x", "    # END SOLUTION", "f(1)"]
    sol, ex, n = build.split_solutions(lines)
    assert n == 1
    assert sol == ["def f(x):", "    return 2 * x", "f(1)"]
    assert ex == ["def f(x):", '    raise NotImplementedError("Exercise: return twice x")', "f(1)"]
    with pytest.raises(ValueError):
        build.split_solutions(["# BEGIN SOLUTION", "x = 1"])


def _data_dir():
    from conftest import _default_data_dir
    return _default_data_dir()


@NEEDS_KERNEL
@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_solution_notebook_runs_in_fast_mode(source):
    path = build.targets(source)[0]
    nb = build.execute(path, fast=True, timeout=CELL_TIMEOUT, data_dir=_data_dir())
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@NEEDS_KERNEL
@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_exercise_notebook_stops_at_its_first_exercise(source):
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(build.targets(source)[1], as_version=4)
    with pytest.raises(CellExecutionError) as info:
        build.execute(nb, fast=True, timeout=CELL_TIMEOUT, data_dir=_data_dir())   # executes nb in place
    assert info.value.ename == "NotImplementedError", f"stopped on {info.value.ename}: {info.value}"
    assert "Exercise:" in str(info.value)
    first = next(i for i, c in enumerate(nb.cells) if build.EXERCISE_TAG in c.metadata.get("tags", []))
    failing = [i for i, c in enumerate(nb.cells)
               if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert failing == [first], f"the error came from cell(s) {failing}; the first exercise is cell {first}"
