"""The layer rule (DESIGN.md): backend, parallel (the thread pool, no package imports) <- functional <- models <- (train, sampling, data) <- cli.

A model module imports only the shim, `functional`, the small shared-maths modules below the
models (`exact`, `scheduled_sampling`, `compact`) and other model modules -- never the trainer, the data
loaders, the plots, tqdm or matplotlib, not even lazily inside a function.
"""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scratchnade"

# What a module below the models may import from the package (relative names, one dot = its own level).
BELOW_MODELS = {"backend", "parallel", "functional", "exact", "scheduled_sampling", "compact"}


def package_imports(path):
    """Every (level, dotted module) a file imports, with function-level imports included.

    `from ..backend import x` in models/ gives (2, "backend"); `import numpy` gives (0, "numpy").
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
    return found


def test_package_imports_finds_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import numpy\ndef f():\n    from ..train import fit\n    import tqdm\n")
    assert package_imports(source) == [(0, "numpy"), (2, "train"), (0, "tqdm")]


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")), ids=lambda p: p.name)
def test_model_modules_import_only_the_layers_below(path):
    for level, module in package_imports(path):
        top = module.split(".")[0]
        if level == 0:
            assert top not in {"scratchnade", "tqdm", "matplotlib", "cupy"}, f"{path.name} imports {module}"
        elif level == 1:
            assert (PACKAGE / "models" / f"{top}.py").exists(), f"{path.name} imports .{module}"
        else:
            assert level == 2 and top in BELOW_MODELS, f"{path.name} imports {'.' * level}{module}"


@pytest.mark.parametrize("name", sorted(BELOW_MODELS))
def test_shared_maths_modules_import_no_model(name):
    refused = {"scratchnade", "tqdm", "matplotlib"} | (set() if name == "backend" else {"cupy", "cupyx"})  # the shim
    for level, module in package_imports(PACKAGE / f"{name}.py"):
        top = module.split(".")[0]
        if level == 0:
            assert top not in refused, f"{name}.py imports {module}"
        else:
            assert level == 1 and top in {"backend", "parallel", "functional"}, f"{name}.py imports {module}"


def test_plots_import_no_model_module():
    for level, module in package_imports(PACKAGE / "plots.py"):
        assert not module.split(".")[0] == "models", f"plots.py imports {'.' * level}{module}"


ISOLATED = textwrap.dedent("""
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tqdm", "matplotlib"):
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    import numpy as np
    import scratchnade.models as M
    from scratchnade.optim import Adam

    rng = np.random.default_rng(0)
    bits = (rng.random((6, 5)) < 0.5).astype(np.float64)
    ids = rng.integers(0, 7, size=(4, 3))
    cases = {
        "LinearGaussianAR": (M.LinearGaussianAR(p=2), rng.standard_normal((3, 9))),
        "FVSBN vector": (M.FVSBN(5, form="vector"), bits),
        "FVSBN matrix": (M.FVSBN(5, form="matrix"), bits),
        "NADE": (M.NADE(5, H=4), bits),
        "SoftmaxFVSBN onehot": (M.SoftmaxFVSBN(7, p=4), ids),
        "SoftmaxFVSBN embedding": (M.SoftmaxFVSBN(7, p=4, encoding="embedding", embed_dim=3), ids),
        "SequenceNADE": (M.SequenceNADE(7, p=4, H=3, dropout=0.2), ids),
        "SequenceNADE tied": (M.SequenceNADE(7, p=4, H=3, tied=True), ids),
        "DeepNADE": (M.DeepNADE(7, p=4, H=3, layers=2, dropout=0.2), ids),
        "RecurrentNADE": (M.RecurrentNADE(7, H=3, dropout=0.2, scheduled_sampling="linear"), ids),
        "RecurrentNADE tied": (M.RecurrentNADE(7, H=3, tied=True, carry_state=True), ids),
    }
    for name, (model, x) in cases.items():
        before = {k: np.array(v) for k, v in model.params.items()}
        loss, grads = model.loss_and_grads(x)
        Adam(lr=1e-2).step(model.params, grads)
        assert np.isfinite(loss), name
        assert any(not np.array_equal(before[k], model.params[k]) for k in before), name
    assert not {"tqdm", "matplotlib"} & {m.split(".")[0] for m in sys.modules}
    print("trained", len(cases))
""")


def test_models_train_a_step_with_tqdm_and_matplotlib_blocked():
    run = subprocess.run([sys.executable, "-c", ISOLATED], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["trained", "11"]
