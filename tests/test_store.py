"""The output-folder contract and atomic writes (initlab.store)."""
import json
import os
import stat

import pytest

import initlab
from initlab import store


def test_new_and_empty_folders_are_claimed(tmp_path):
    assert store.check_out_dir(tmp_path / "new", "compare") == "new"
    assert store.check_out_dir(tmp_path, "compare") == "empty"
    out = store.claim_out_dir(tmp_path / "a" / "b", "compare")
    assert store.read_marker(out)["kind"] == "compare"


@pytest.mark.parametrize("kind", store.KINDS)
def test_foreign_non_empty_folder_is_refused_and_untouched(tmp_path, kind):
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no initlab result"):
        store.claim_out_dir(tmp_path, kind)
    with pytest.raises(ValueError, match="not empty"):
        store.claim_out_dir(tmp_path, kind, overwrite=True)  # overwrite never touches foreign files
    assert (tmp_path / "config.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize("bad", ["", " ", "\t"])
def test_empty_out_is_an_error(bad):
    with pytest.raises(ValueError, match="--out is empty"):
        store.check_out_dir(bad, "compare")


def test_file_as_out_and_file_as_parent(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        store.claim_out_dir(f, "compare")
    with pytest.raises(ValueError, match="cannot write results"):
        store.claim_out_dir(f / "sub", "compare")  # NotADirectoryError: unwritable location, one line


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o"))

    monkeypatch.setattr(store.tempfile, "mkstemp", deny)
    with pytest.raises(ValueError, match="cannot write results to .*Permission denied"):
        store.claim_out_dir(tmp_path / "o", "compare")


def test_reuse_needs_overwrite_or_resume(tmp_path):
    out = store.claim_out_dir(tmp_path / "o", "compare")
    store.atomic_write_text(out / "metrics.csv", "a\n1\n")
    with pytest.raises(ValueError, match="--overwrite .*--resume"):
        store.check_out_dir(out, "compare")
    assert store.check_out_dir(out, "compare", resume=True) == "result"
    with pytest.raises(ValueError, match="exclude each other"):
        store.check_out_dir(out, "compare", overwrite=True, resume=True)
    with pytest.raises(ValueError, match="holds a compare result, not a depth"):
        store.check_out_dir(out, "depth", resume=True)


def test_overwrite_removes_exactly_what_initlab_wrote(tmp_path):
    out = store.claim_out_dir(tmp_path / "o", "depth")
    store.atomic_write_text(out / "sweep.json", "{}")
    sub = store.claim_out_dir(out / "depth_02", "compare")
    store.atomic_write_text(sub / "metrics.csv", "x")
    (out / "notes.txt").write_text("the user's own")  # added by hand after the run
    assert "depth_02/" in store.read_marker(out)["files"]
    store.claim_out_dir(out, "depth", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [store.MARKER, "notes.txt"]
    assert store.read_marker(out)["files"] == []


def test_resume_of_missing_or_empty_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        store.check_out_dir(tmp_path / "none", "compare", resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        store.check_out_dir(tmp_path, "compare", resume=True)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        store.atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~mask


def test_compare_refuses_foreign_folder_and_records_its_files(tmp_path):
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", probe=False, out=tmp_path)
    assert (tmp_path / "config.json").read_text() == "mine"
    out = tmp_path / "r"
    initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", probe=False, out=out, device="cpu")
    marker = json.loads((out / store.MARKER).read_text())
    on_disk = {p.name for p in out.iterdir()} - {store.MARKER}
    assert on_disk == set(marker["files"])  # every file initlab wrote is listed, nothing else exists
    with pytest.raises(ValueError, match="earlier initlab compare result"):
        initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", probe=False, out=out)
    # overwrite: the old result is removed first (a smaller run leaves no stale probe files behind)
    initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", probe=False, out=out, overwrite=True,
                    device="cpu")
    assert not (out / "probe.csv").exists() and (out / "metrics.csv").exists()


def test_out_with_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """`--out '~/x'` (quoted, so no shell expanded it) writes into $HOME/x, never a folder named '~'."""
    from typer.testing import CliRunner

    from initlab.cli import app

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    args = ["compare", "--dataset", "digits", "--epochs", "1", "--inits", "he", "--no-probe", "--out", "~/x"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (home / "x" / "metrics.csv").is_file()
    assert not (work / "~").exists()
    res = CliRunner().invoke(app, args + ["--resume"])  # resume reads the same expanded folder
    assert res.exit_code == 0, res.output
