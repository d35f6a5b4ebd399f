import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import initlab
from initlab.cli import app
from initlab.cli.common import split_top_level

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_compare_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = invoke("compare", "--dataset", "digits", "--epochs", "2", "--seeds", "2", "--hidden", "16",
               "--inits", "zero,he,normal(std=0.05)", "--device", "cpu", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "test acc" in r.output and "normal(std=0.05)" in r.output
    m = pd.read_csv(out / "metrics.csv")
    assert set(m["init"]) == {"zero", "he", "normal(std=0.05)"} and len(m) == 3 * 2 * 2
    assert (out / "test_acc.png").exists()
    assert json.loads((out / "config.json").read_text())["seeds"] == 2


def test_schemes_lists_names():
    r = invoke("schemes")
    assert r.exit_code == 0
    for name in ("xavier_uniform", "kaiming_normal", "variance_scaling", "pytorch_default"):
        assert name in r.output


@pytest.mark.parametrize("args, message", [
    (["--inits", "zero,bogus"], "unknown init scheme 'bogus'"),
    (["--activation", "swish"], "unknown activation 'swish'"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--hidden", "0"], "positive integer"),
    (["--width", "0", "--depth", "2"], "--width must be a positive integer"),
    (["--seeds", "0"], "seeds must be a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--normalize", "zscore"], "unknown normalization 'zscore'"),
    (["--engine", "gpu"], "unknown engine 'gpu'; choose from: batched, single"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    r = invoke("compare", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = invoke("compare", "--dataset", "digits", "--out", str(f))
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output


def test_missing_local_data_dir(tmp_path):
    r = invoke("compare", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_corrupt_idx_file(tmp_path):
    import numpy as np

    from initlab.data import write_idx

    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x01")  # truncated
    r = invoke("compare", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "truncated" in r.output and "Traceback" not in r.output


def test_split_top_level():
    assert split_top_level("he, normal(std=0.1,mean=0),xavier") == ["he", "normal(std=0.1,mean=0)", "xavier"]


@pytest.mark.parametrize("argv, message", [
    (["compare", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["compare", "--bogus"], "No such option: --bogus"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, message):
    from initlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_main_returns_command_exit_codes(capsys, tmp_path):
    from initlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["compare", "--dataset", "digits", "--lr", "0", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "lr must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["schemes"])
    assert exc.value.code == 0


def test_compare_cli_exploding_init_is_a_result_not_a_crash(tmp_path):
    """The issue's case: he next to normal(std=4) at depth 40 (width 64 and std 4 overflow the same way)."""
    out = tmp_path / "o"
    r = invoke("compare", "--dataset", "digits", "--inits", "he,normal(std=4)", "--depth", "40", "--width", "64",
               "--epochs", "1", "--device", "cpu", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "1 diverged" in r.output and "diverged: non-finite activation (fc" in r.output
    runs = pd.read_csv(out / "runs.csv").set_index("init")
    assert runs.loc["normal(std=4)", "status"] == "diverged" and runs.loc["he", "status"] == "done"
    for name in ("summary.json", "probe.csv", "probe.png", "test_acc.png", "steps.png"):
        assert (out / name).exists()
    # the same folder again: refused without --overwrite, replaced with it
    r = invoke("compare", "--dataset", "digits", "--inits", "he", "--epochs", "1", "--hidden", "8", "--out", str(out))
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = invoke("compare", "--dataset", "digits", "--inits", "he", "--epochs", "1", "--hidden", "8", "--no-probe",
               "--overwrite", "--out", str(out))
    assert r.exit_code == 0 and not (out / "probe.csv").exists()


def test_compare_cli_lr_1e6_is_diverged(tmp_path):
    r = invoke("compare", "--dataset", "digits", "--inits", "he", "--lr", "1e6", "--epochs", "2", "--hidden", "16",
               "--no-probe", "--device", "cpu", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert "1 diverged" in r.output and "test loss" in r.output and "0 done" not in r.output


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"initlab {initlab.__version__}"


@pytest.mark.parametrize("command, extra", [("compare", "initlab[tensorboard]"), ("compare", "initlab[mlflow]"),
                                            ("sweep", "initlab[ray]")])
def test_help_keeps_square_brackets(command, extra):
    """Help texts are never read as rich markup: the extra's name in 'pip install' survives."""
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert extra in res.output
