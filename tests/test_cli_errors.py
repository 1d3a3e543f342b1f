"""Every user error of the command line: exit code 2, one line on stderr naming the option or the file,
no traceback, and nothing written (no run directory made, no file of an existing run changed).

Each case runs in-process through cli.main; tiny synthetic runs, so every case takes well under a second."""
import json

import pytest

from scratchnade import cli
from scratchnade.cli import main

NADE = ["--model", "nade", "--hidden", "4", "--dim", "6", "--n-train", "300", "--batch-size", "50", "--no-plot"]
RNN = ["--model", "rnn", "--hidden", "4", "--order", "5", "--vocab", "5", "--n-train", "1500", "--batch-size", "16",
       "--no-plot"]
AR = ["--model", "gaussian-ar", "--seq-len", "20", "--n-train", "200", "--no-plot"]
MADE = ["--model", "made", "--hidden", "8", "--masks", "3", "--dim", "6", "--n-train", "300", "--batch-size", "50",
        "--no-plot"]
TF = ["--model", "transformer", "--d-model", "8", "--heads", "2", "--context", "6", "--vocab", "5", "--n-train", "1500",
      "--batch-size", "16", "--no-plot"]
OA = ["--model", "orderless-nade", "--hidden", "8", "--dim", "6", "--n-train", "300", "--batch-size", "50", "--no-plot"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-epoch runs of NADE, an RNN, an AR(1), MADE and a transformer, shared by the cases that read a
    checkpoint."""
    root = tmp_path_factory.mktemp("runs")
    for name, args in (("nade", NADE), ("rnn", RNN), ("ar", AR), ("made", MADE), ("transformer", TF)):
        assert main(["train", *args, "--epochs", "1", "--run-dir", str(root / name)]) == 0
    return root


def snapshot(root):
    """Every file under root with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_case(argv, tmp_path, capsys, monkeypatch, runs):
    """main(argv) with RUN (the shared runs) and TMP (this case's folder) filled in; (code, stderr)."""
    monkeypatch.chdir(tmp_path)                               # a default runs/... would land here
    argv = [a.replace("RUN", str(runs)).replace("TMP", str(tmp_path)) for a in argv]
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *names):
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err          # exactly one line
    assert err.startswith("scratchnade ") and ": error: " in err, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)


# ----------------------------------------------------------------------------- fresh train: bad flags

TRAIN = [  # (id, extra argv, what the message must name)
    ("hidden-0", NADE + ["--hidden", "0"], "--hidden"),
    ("hidden-negative", NADE + ["--hidden", "-3"], "--hidden"),
    ("batch-size-0", NADE + ["--batch-size", "0"], "--batch-size"),
    ("order-0", RNN + ["--order", "0"], "--order"),
    ("dim-0", NADE + ["--dim", "0"], "--dim"),
    ("dim-too-big", NADE + ["--dim", "40"], "--dim"),
    ("vocab-1", RNN + ["--vocab", "1"], "--vocab"),
    ("n-train-0", NADE + ["--n-train", "0"], "--n-train"),
    ("masks-0", MADE + ["--masks", "0"], "--masks"),
    ("masks-on-nade", NADE + ["--masks", "2"], "--masks"),
    ("masks-on-orderless-nade", OA + ["--masks", "2"], "--masks"),
    ("activation-unknown", MADE + ["--activation", "tanh"], "--activation"),
    ("activation-on-nade", NADE + ["--activation", "relu"], "--activation"),
    ("shuffle-order-on-orderless-nade", OA + ["--shuffle-order"], "--shuffle-order"),
    ("direct-on-nade", NADE + ["--direct"], "--direct"),
    ("layers-0-made", MADE + ["--layers", "0"], "--layers"),
    ("layers-0-transformer", TF + ["--layers", "0"], "--layers"),
    ("heads-0", TF + ["--heads", "0"], "--heads"),
    ("heads-negative", TF + ["--heads", "-2"], "--heads"),
    ("d-model-0", TF + ["--d-model", "0"], "--d-model"),
    ("context-0", TF + ["--context", "0"], "--context"),
    ("heads-not-dividing-d-model", TF + ["--heads", "3"], "--heads"),
    ("order-longer-than-context", TF + ["--order", "7"], "--order"),
    ("default-order-longer-than-context", ["--model", "transformer", "--order", "200"], "--context"),
    ("heads-float", TF + ["--heads", "1.5"], "--heads"),
    ("heads-on-rnn", RNN + ["--heads", "2"], "--heads"),
    ("d-model-on-nade", NADE + ["--d-model", "8"], "--d-model"),
    ("context-on-deep-nade", ["--model", "deep-nade", "--context", "8"], "--context"),
    ("stream-for-transformer", TF + ["--eval-mode", "stream"], "--eval-mode"),
    ("transformer-dropout-1", TF + ["--dropout", "1"], "--dropout"),
    ("eval-batch-size-0", NADE + ["--eval-batch-size", "0"], "--eval-batch-size"),
    ("max-batches-0", NADE + ["--max-batches", "0"], "--max-batches"),
    ("epochs-0", NADE + ["--epochs", "0"], "--epochs"),
    ("epochs-negative", NADE + ["--epochs", "-2"], "--epochs"),
    ("lr-0", NADE + ["--lr", "0"], "--lr"),
    ("lr-negative", NADE + ["--lr", "-0.1"], "--lr"),
    ("lr-nan", NADE + ["--lr", "nan"], "--lr"),
    ("lr-inf", NADE + ["--lr", "inf"], "--lr"),
    ("warmup-negative", NADE + ["--warmup", "-1"], "--warmup"),
    ("patience-negative", NADE + ["--patience", "-1"], "--patience"),
    ("beta1-1", NADE + ["--betas", "1.0", "0.999"], "--betas"),
    ("beta2-negative", NADE + ["--betas", "0.9", "-0.1"], "--betas"),
    ("clip-0", NADE + ["--clip", "0"], "--clip"),
    ("clip-negative", NADE + ["--clip", "-1"], "--clip"),
    ("eps-0", NADE + ["--eps", "0"], "--eps"),
    ("weight-decay-negative", NADE + ["--weight-decay", "-1"], "--weight-decay"),
    ("momentum-1.5", NADE + ["--optimizer", "nesterov", "--momentum", "1.5"], "--momentum"),
    ("init-scale-0", NADE + ["--init-scale", "0"], "--init-scale"),
    ("dropout-1", RNN + ["--dropout", "1"], "--dropout"),
    ("lr-decay-0", NADE + ["--lr-decay", "0"], "--lr-decay"),
    ("lr-decay-1.5", NADE + ["--lr-decay", "1.5"], "--lr-decay"),
    ("lr-patience-0", NADE + ["--lr-patience", "0"], "--lr-patience"),
    ("anneal-1", NADE + ["--anneal", "1"], "--anneal"),
    ("seed-negative", NADE + ["--seed", "-1"], "--seed"),
    ("data-seed-negative", NADE + ["--data-seed", "-1"], "--data-seed"),
    ("diverge-factor-1", NADE + ["--diverge-factor", "1"], "--diverge-factor"),
    ("diverge-factor-negative", NADE + ["--diverge-factor", "-5"], "--diverge-factor"),
    ("eval-tokens-0", RNN + ["--eval-tokens", "0"], "--eval-tokens"),
    ("eval-tokens-binary", NADE + ["--eval-tokens", "100"], "--eval-tokens"),
    ("eval-tokens-shorter-than-window", RNN + ["--eval-tokens", "3"], "--eval-tokens"),
    ("stream-for-order-p-nade", ["--model", "sequence-nade", "--hidden", "4", "--order", "4", "--vocab", "5",
                                 "--n-train", "1500", "--eval-mode", "stream"], "--eval-mode"),
    ("sliding-for-binary", NADE + ["--eval-mode", "sliding"], "--eval-mode"),
    ("order-longer-than-corpus", RNN + ["--order", "2000"], "--order"),
    ("ar-order-not-below-T", AR + ["--order", "20"], "--order"),
    ("carry-state-more-streams-than-tokens", RNN + ["--carry-state", "--batch-size", "5000"], "--batch-size"),
    ("stream-more-streams-than-tokens", RNN + ["--eval-mode", "stream", "--eval-batch-size", "1000"],
     "--eval-batch-size"),
    ("ss-exponential-k-2", RNN + ["--scheduled-sampling", "exponential", "--ss-k", "2"], "--ss-k"),
    ("ss-inverse-sigmoid-k-0.5", RNN + ["--scheduled-sampling", "inverse-sigmoid", "--ss-k", "0.5"], "--ss-k"),
    ("ss-min-2", RNN + ["--scheduled-sampling", "linear", "--ss-min", "2"], "--ss-min"),
    ("ss-c-for-exponential", RNN + ["--scheduled-sampling", "exponential", "--ss-c", "0.1"], "--ss-c"),
    ("ss-k-without-schedule", RNN + ["--ss-k", "10"], "--ss-k"),
    ("epochs-not-an-int", NADE + ["--epochs", "ten"], "--epochs"),
    ("batch-size-float", NADE + ["--batch-size", "2.7"], "--batch-size"),
    ("lr-not-a-number", NADE + ["--lr", "fast"], "--lr"),
    ("unknown-model", ["--model", "lstm"], "lstm"),
    ("unknown-data", NADE + ["--data", "imagenet"], "imagenet"),
    ("wrong-kind-of-data", NADE + ["--data", "ptb"], "ptb"),
    ("unknown-device", NADE + ["--device", "tpu"], "tpu"),
    ("option-of-another-model", NADE + ["--layers", "2"], "--layers"),
    ("momentum-without-nesterov", NADE + ["--momentum", "0.5"], "--momentum"),
    ("unknown-flag", NADE + ["--hiden", "4"], "--hiden"),
    ("missing-data", ["--model", "rnn", "--data", "ptb", "--data-dir", "TMP/nowhere"], "ptb"),
    ("zero-threads", NADE + ["--threads", "0"], "--threads"),
    ("threads-not-a-count", NADE + ["--threads", "two"], "--threads"),
]


@pytest.mark.parametrize("argv, name", [c[1:] for c in TRAIN], ids=[c[0] for c in TRAIN])
def test_bad_train_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, runs, argv, name):
    code, err = run_case(["train", *argv, "--epochs", "1", "--run-dir", "TMP/run"] if "--epochs" not in argv
                         else ["train", *argv, "--run-dir", "TMP/run"], tmp_path, capsys, monkeypatch, runs)
    assert_one_line_error(code, err, name)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_temperature_zero_says_how_to_decode_greedily(tmp_path, capsys, monkeypatch, runs):
    code, err = run_case(["sample", "RUN/rnn", "--temperature", "0"], tmp_path, capsys, monkeypatch, runs)
    assert_one_line_error(code, err, "--temperature", "--top-k 1")


# ----------------------------------------------------------------------------- config files

CONFIGS = [  # (id, file name, content, what the message must name besides the file)
    ("tied-no", "c.json", {"model": "rnn", "tied": "no"}, '"tied"'),
    ("lr-fast", "c.json", {"lr": "fast"}, '"lr"'),
    ("batch-size-2.7", "c.json", {"batch_size": 2.7}, '"batch_size"'),
    ("epochs-2.5", "c.json", {"epochs": 2.5}, '"epochs"'),
    ("epochs-true", "c.json", {"epochs": True}, '"epochs"'),
    ("masks-2.5", "c.json", {"model": "made", "masks": 2.5}, '"masks"'),
    ("heads-2.5", "c.json", {"model": "transformer", "heads": 2.5}, '"heads"'),
    ("context-string", "c.json", {"model": "transformer", "context": "128"}, '"context"'),
    ("d-model-0", "c.json", {"model": "transformer", "d_model": 0}, '"d_model"'),
    ("heads-not-dividing-d-model", "c.json", {"model": "transformer", "d_model": 6, "heads": 4}, '"heads"'),
    ("order-longer-than-context", "c.json", {"model": "transformer", "context": 4, "order": 8}, '"order"'),
    ("toml-heads-float", "c.toml", 'model = "transformer"\nheads = 2.0\n', '"heads"'),
    ("direct-yes", "c.json", {"model": "made", "direct": "yes"}, '"direct"'),
    ("activation-unknown", "c.json", {"model": "orderless-nade", "activation": "tanh"}, '"activation"'),
    ("hidden-string", "c.json", {"hidden": "500"}, '"hidden"'),
    ("lr-null", "c.json", {"lr": None}, '"lr"'),
    ("betas-one-number", "c.json", {"betas": [0.9]}, '"betas"'),
    ("plot-yes", "c.json", {"plot": "yes"}, '"plot"'),
    ("model-number", "c.json", {"model": 5}, '"model"'),
    ("optimizer-unknown", "c.json", {"optimizer": "rmsprop"}, '"optimizer"'),
    ("unknown-key", "c.json", {"hiden": 5}, "hiden"),
    ("hidden-0", "c.json", {"hidden": 0}, '"hidden"'),
    ("lr-negative", "c.json", {"lr": -1}, '"lr"'),
    ("seed-negative", "c.json", {"seed": -1}, '"seed"'),
    ("dash-key-out-of-range", "c.json", {"batch-size": 0}, '"batch_size"'),
    ("not-an-object", "c.json", [1, 2], "object"),
    ("not-json", "c.json", "{lr: 0.1", "not valid JSON"),
    ("toml-lr-fast", "c.toml", 'lr = "fast"\n', '"lr"'),
    ("toml-epochs-float", "c.toml", "epochs = 2.5\n", '"epochs"'),
    ("not-toml", "c.toml", "lr = = 3\n", "not valid TOML"),
    ("missing-file", "absent.json", None, "cannot read"),
]


@pytest.mark.parametrize("fname, content, name", [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_bad_config_files_are_refused_naming_the_key_and_file(tmp_path, capsys, monkeypatch, runs, fname,
                                                             content, name):
    path = tmp_path / fname
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    base = [] if isinstance(content, dict) and "model" in content else ["--dim", "6", "--n-train", "300"]
    code, err = run_case(["train", *base, "--config", str(path), "--run-dir", "TMP/run"], tmp_path, capsys,
                         monkeypatch, runs)
    assert_one_line_error(code, err, name, fname)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- resume

RESUME = [
    ("epochs-at-done", ["--resume", "RUN/nade", "--epochs", "1"], "--epochs"),
    ("epochs-below-done", ["--resume", "RUN/nade", "--epochs", "0"], "--epochs"),
    ("finished-run", ["--resume", "RUN/nade"], "--epochs"),
    ("lr-negative", ["--resume", "RUN/nade", "--epochs", "3", "--lr", "-1"], "--lr"),
    ("model-change", ["--resume", "RUN/nade", "--epochs", "3", "--hidden", "7"], "--hidden"),
    ("no-such-run", ["--resume", "TMP/nowhere", "--epochs", "3"], "TMP/nowhere"),
    ("run-dir-too", ["--resume", "RUN/nade", "--run-dir", "TMP/other"], "--run-dir"),
    ("stream-for-nade", ["--resume", "RUN/nade", "--epochs", "3", "--eval-mode", "stream"], "--eval-mode"),
    ("transformer-context-change", ["--resume", "RUN/transformer", "--epochs", "3", "--context", "8"], "--context"),
    ("transformer-heads-change", ["--resume", "RUN/transformer", "--epochs", "3", "--heads", "4"], "--heads"),
]


@pytest.mark.parametrize("argv, name", [c[1:] for c in RESUME], ids=[c[0] for c in RESUME])
def test_bad_resumes_change_nothing(tmp_path, capsys, monkeypatch, runs, argv, name):
    before = snapshot(runs)
    code, err = run_case(["train", *argv], tmp_path, capsys, monkeypatch, runs)
    assert_one_line_error(code, err, name.replace("TMP", str(tmp_path)))
    assert snapshot(runs) == before                                  # no lock left, nothing rewritten
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the checkpoint commands, gradcheck

COMMANDS = [
    ("evaluate-eval-batch-size-0", ["evaluate", "RUN/rnn", "--eval-batch-size", "0"], "--eval-batch-size"),
    ("evaluate-max-tokens-0", ["evaluate", "RUN/rnn", "--max-tokens", "0"], "--max-tokens"),
    ("evaluate-max-tokens-binary", ["evaluate", "RUN/nade", "--max-tokens", "100"], "--max-tokens"),
    ("evaluate-max-tokens-below-window", ["evaluate", "RUN/rnn", "--max-tokens", "3"], "--max-tokens"),
    ("evaluate-stream-binary", ["evaluate", "RUN/nade", "--mode", "stream"], "--mode"),
    ("evaluate-stream-transformer", ["evaluate", "RUN/transformer", "--mode", "stream"], "--mode"),
    ("sample-top-k-above-vocabulary-transformer", ["sample", "RUN/transformer", "--top-k", "6"], "--top-k"),
    ("evaluate-ensemble-0", ["evaluate", "RUN/made", "--ensemble", "0"], "--ensemble"),
    ("evaluate-ensemble-above-masks", ["evaluate", "RUN/made", "--ensemble", "4"], "--ensemble"),
    ("evaluate-ensemble-nade", ["evaluate", "RUN/nade", "--ensemble", "2"], "--ensemble"),
    ("evaluate-too-many-streams", ["evaluate", "RUN/rnn", "--mode", "stream", "--eval-batch-size", "600"],
     "--eval-batch-size"),
    ("evaluate-no-checkpoint", ["evaluate", "TMP/nothing.npz"], "nothing.npz"),
    ("evaluate-unknown-device", ["evaluate", "RUN/rnn", "--device", "tpu"], "tpu"),
    ("evaluate-missing-data", ["evaluate", "RUN/rnn", "--data", "ptb", "--data-dir", "TMP/nowhere"], "ptb"),
    ("evaluate-bad-split", ["evaluate", "RUN/rnn", "--split", "train"], "--split"),
    ("sample-temperature-negative", ["sample", "RUN/rnn", "--temperature", "-1"], "--temperature"),
    ("sample-temperature-nan", ["sample", "RUN/rnn", "--temperature", "nan"], "--temperature"),
    ("sample-top-k-0", ["sample", "RUN/rnn", "--top-k", "0"], "--top-k"),
    ("sample-top-k-above-vocabulary", ["sample", "RUN/rnn", "--top-k", "6"], "--top-k"),
    ("sample-top-k-binary", ["sample", "RUN/nade", "--top-k", "3"], "--top-k"),
    ("sample-top-k-ar", ["sample", "RUN/ar", "--top-k", "3"], "--top-k"),
    ("sample-n-0", ["sample", "RUN/rnn", "-n", "0"], "-n"),
    ("sample-length-0", ["sample", "RUN/rnn", "--length", "0"], "--length"),
    ("sample-seed-negative", ["sample", "RUN/rnn", "--seed", "-1"], "--seed"),
    ("sample-complete-0", ["sample", "RUN/nade", "--complete", "0"], "--complete"),
    ("sample-complete-more-than-test", ["sample", "RUN/nade", "--complete", "100000"], "--complete"),
    ("sample-complete-text", ["sample", "RUN/rnn", "--complete", "2"], "--complete"),
    ("sample-prompt-out-of-vocabulary", ["sample", "RUN/rnn", "--prompt", "xyz"], "--prompt"),
    ("sample-prompt-binary", ["sample", "RUN/nade", "--prompt", "ab"], "--prompt"),
    ("exposure-prompt-len-not-below-length", ["exposure-bias", "RUN/rnn", "--prompt-len", "10", "--length", "5"],
     "--prompt-len"),
    ("exposure-n-0", ["exposure-bias", "RUN/rnn", "-n", "0"], "-n"),
    ("exposure-ngram-0", ["exposure-bias", "RUN/rnn", "--ngram", "0"], "--ngram"),
    ("exposure-window-0", ["exposure-bias", "RUN/rnn", "--window", "0"], "--window"),
    ("exposure-top-k-above-vocabulary", ["exposure-bias", "RUN/rnn", "--top-k", "99"], "--top-k"),
    ("exposure-temperature-0", ["exposure-bias", "RUN/rnn", "--temperature", "0"], "--temperature"),
    ("gradcheck-tol-0", ["gradcheck", "--tol", "0"], "--tol"),
    ("gradcheck-tol-nan", ["gradcheck", "--tol", "nan"], "--tol"),
    ("gradcheck-unknown-device", ["gradcheck", "--model", "nade", "--device", "tpu"], "tpu"),
    ("gradcheck-unknown-model", ["gradcheck", "--model", "lstm"], "lstm"),
]


@pytest.mark.parametrize("argv, name", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_bad_options_of_the_checkpoint_commands_write_nothing(tmp_path, capsys, monkeypatch, runs, argv, name):
    before = snapshot(runs)
    code, err = run_case(argv, tmp_path, capsys, monkeypatch, runs)
    assert_one_line_error(code, err, name)
    assert snapshot(runs) == before                                  # no samples.png, no exposure-bias/
    assert not list(tmp_path.iterdir())


def test_there_are_at_least_fifty_cases():
    assert len(TRAIN) + len(CONFIGS) + len(RESUME) + len(COMMANDS) + 1 >= 50


def test_a_start_that_fails_after_validation_leaves_no_directory(tmp_path, capsys, monkeypatch):
    """A failure while writing the first checkpoint (disk full) removes what the start made."""
    import scratchnade.cli as cli_module

    def full(*args, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli_module, "save_run", full)
    code = main(["train", *NADE, "--epochs", "1", "--run-dir", str(tmp_path / "a" / "b")])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "No space left on device")
    assert not (tmp_path / "a").exists()


def test_memory_error_while_loading_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(cfg):
        raise MemoryError()
    monkeypatch.setattr(cli, "load_data", no_memory)
    code = main(["train", *NADE, "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert_one_line_error(code, capsys.readouterr().err, "memory", "synthetic-fvsbn")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error, name", [
    ("checksum", "sha256"), ("download", "could not download"), ("corrupt", "cannot load")])
def test_data_failures_are_one_line(tmp_path, capsys, monkeypatch, error, name):
    from scratchnade.data.download import ChecksumError, DownloadError

    def fail(cfg):
        if error == "checksum":
            raise ChecksumError("sha256 mismatch for ptb.train.txt:\n  expected 00\n  actual   11")
        if error == "download":
            raise DownloadError("could not download http://x/ptb.train.txt: no network\n  put it at /d")
        from scratchnade.registry import DataError
        raise DataError("cannot load ptb: ptb.train.txt is not UTF-8")
    monkeypatch.setattr(cli, "load_data", fail)
    code = main(["train", "--model", "rnn", "--data", "ptb", "--run-dir", str(tmp_path / "run")])
    assert_one_line_error(code, capsys.readouterr().err, name)
    assert not (tmp_path / "run").exists()
