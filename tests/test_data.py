"""Tests for initlab.data: digits, the IDX reader, local lookup, and downloads from a local server."""
from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from initlab import data
from initlab.data import DataError, Dataset, download, load_dataset, read_idx, write_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_SYSTEM_DIRS = data.SYSTEM_DIRS  # captured before the autouse fixture patches it


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads the real cache or system folders unless it asks to."""
    monkeypatch.setenv("INITLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_idx_set(folder: Path, n_train=20, n_test=10, rows=28, cols=28, gz=True, seed=0) -> dict[str, Path]:
    """Write the four synthetic IDX files of an MNIST-like set into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    suffix = ".gz" if gz else ""
    return {stem + suffix: write_idx(folder / (stem + suffix), a) for stem, a in arrays.items()}


# --------------------------------------------------------------------------- API surface

def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match=r"unknown dataset 'x'; choose from: digits, mnist, fashion-mnist"):
        load_dataset("x")


def test_unknown_normalize_lists_choices():
    with pytest.raises(DataError, match="seed, standardize, none"):
        load_dataset("digits", normalize="minmax")


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- digits

def test_digits_shapes_and_dtypes():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.image_shape == (8, 8) and ds.in_features == 64
    assert ds.name == "digits"


@pytest.mark.parametrize("mode,lo,hi", [("seed", -1.0, 1.0), ("none", 0.0, 1.0)])
def test_digits_ranges(mode, lo, hi):
    ds = load_dataset("digits", normalize=mode)
    for x in (ds.x_train, ds.x_test):
        assert x.min().item() == pytest.approx(lo) and x.max().item() == pytest.approx(hi)


def test_seed_is_affine_of_none():
    raw, seed = load_dataset("digits", normalize="none"), load_dataset("digits", normalize="seed")
    torch.testing.assert_close(seed.x_train, (raw.x_train - 0.5) / 0.5)
    torch.testing.assert_close(seed.x_test, (raw.x_test - 0.5) / 0.5)


def test_standardize_uses_train_stats():
    raw, st = load_dataset("digits", normalize="none"), load_dataset("digits", normalize="standardize")
    mean, std = raw.x_train.mean(), raw.x_train.std()
    assert st.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert st.x_train.std().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(st.x_test, (raw.x_test - mean) / std)  # train stats, not test stats
    assert st.x_test.mean().item() != pytest.approx(0.0, abs=1e-5)


def test_digits_split_is_fixed_and_independent_of_global_seed():
    torch.manual_seed(1)
    np.random.seed(1)
    a = load_dataset("digits")
    torch.manual_seed(2)
    np.random.seed(2)
    b = load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_digits_split_is_stratified():
    ds = load_dataset("digits")
    full = data.class_balance(torch.cat([ds.y_train, ds.y_test]), 10)
    assert torch.allclose(data.class_balance(ds.y_test, 10), full, atol=0.01)
    assert torch.allclose(data.class_balance(ds.y_train, 10), full, atol=0.01)


def test_mutating_a_dataset_does_not_leak_into_the_next_load():
    a = load_dataset("digits")
    a.x_train.zero_()
    a.y_train.zero_()
    b = load_dataset("digits")
    assert b.x_train.abs().sum() > 0 and b.y_train.max() == 9


def test_dataset_is_frozen_and_to_returns_copy():
    ds = load_dataset("digits")
    with pytest.raises(Exception):
        ds.name = "other"  # type: ignore[misc]
    moved = ds.to("cpu")
    assert isinstance(moved, Dataset) and moved is not ds
    assert moved.x_train.device.type == "cpu" and moved.image_shape == ds.image_shape


def test_majority_rate_and_class_balance():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    assert data.majority_rate(y) == pytest.approx(0.5)
    assert data.majority_rate(np.array([3, 3, 3, 3])) == 1.0
    torch.testing.assert_close(data.class_balance(y, 4), torch.tensor([0.5, 1 / 6, 1 / 3, 0.0], dtype=torch.float64))
    with pytest.raises(DataError):
        data.majority_rate(torch.tensor([], dtype=torch.int64))


# --------------------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("name", ["a.idx.gz", "a.idx"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable


def test_gzip_detected_by_magic_not_extension(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.raw", arr, compress=True)  # gzipped but no .gz
    write_idx(tmp_path / "labels.gz", arr, compress=False)  # raw but named .gz
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.raw"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), arr)


def raw_idx(code: int, dims: tuple[int, ...], payload: bytes, magic01=b"\x00\x00") -> bytes:
    return magic01 + bytes([code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes() + payload


@pytest.mark.parametrize("content,match", [
    (raw_idx(0x08, (3,), b"abc", magic01=b"\x01\x00"), "bad magic"),
    (raw_idx(0x07, (3,), b"abc"), "unknown IDX type code 0x07"),
    (raw_idx(0x08, (1, 1, 1, 1, 1), b"a"), "5 dimensions"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (raw_idx(0x08, (2, 0), b""), "zero dimension"),
    (raw_idx(0x08, (2, 3), b"abcd"), "truncated: expected 6 bytes of data, found 4"),
    (raw_idx(0x0C, (2,), b"\x00" * 7), "truncated: expected 8 bytes of data, found 7"),
    (raw_idx(0x08, (2, 3), b"abcdefXY"), "2 trailing bytes"),
    (b"\x00\x00", "only 2 bytes"),
    (b"\x00\x00\x08\x02\x00\x00", "header needs 12 bytes"),
])
def test_idx_rejects_malformed(tmp_path, content, match):
    for gz in (False, True):
        p = tmp_path / f"bad{int(gz)}"
        p.write_bytes(gzip.compress(content) if gz else content)
        with pytest.raises(DataError, match=match):
            read_idx(p)


def test_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(raw_idx(0x08, (100,), bytes(range(100))))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])  # truncated stream -> EOFError
    (tmp_path / "flip.gz").write_bytes(good[:10] + bytes(b ^ 0xFF for b in good[10:20]) + good[20:])
    for name in ("cut.gz", "flip.gz"):
        with pytest.raises(DataError, match="corrupt gzip"):
            read_idx(tmp_path / name)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "x").write_bytes(raw_idx(0x08, (2, 3), b"ab"))
    with pytest.raises(DataError) as info:
        read_idx(tmp_path / "x")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- local lookup

@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_data_dir(tmp_path, layout, gz):
    root = tmp_path / "d"
    make_idx_set(root if layout == "flat" else root / "mnist", gz=gz)
    ds = load_dataset("mnist", data_dir=root, download=False, normalize="none")
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    assert ds.image_shape == (28, 28) and ds.num_classes == 10 and ds.name == "mnist"
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    expected = read_idx(next(root.rglob("train-images*"))).reshape(20, -1) / 255.0
    np.testing.assert_allclose(ds.x_train.numpy(), expected, rtol=1e-6)
    assert ds.y_train.tolist() == [i % 10 for i in range(20)]


def test_data_dir_missing_file_named(tmp_path):
    files = make_idx_set(tmp_path / "d")
    files["t10k-labels-idx1-ubyte.gz"].unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz .*not found in .*d"):
        load_dataset("mnist", data_dir=tmp_path / "d")


def test_data_dir_given_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "mnist", ["http://127.0.0.1:1/"])
    with pytest.raises(DataError, match="not found in"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


def test_mismatched_counts(tmp_path):
    make_idx_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range(tmp_path):
    make_idx_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels in 10\.\.10; expected 0\.\.9"):
        load_dataset("mnist", data_dir=tmp_path)


def test_images_wrong_rank(tmp_path):
    make_idx_set(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((20, 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 images \(N, rows, cols\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_found_in_system_dirs(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "sys", n_train=30, n_test=5)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "nothing", tmp_path / "sys"]})
    monkeypatch.setitem(data.MIRRORS, "fashion-mnist", [])  # any download attempt would fail
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (30, 784) and ds.x_test.shape == (5, 784) and ds.name == "fashion-mnist"


def test_not_found_and_download_off(tmp_path):
    with pytest.raises(DataError, match="downloads are off.*--data-dir.*digits"):
        load_dataset("mnist", download=False)


# --------------------------------------------------------------------------- downloads

class Server:
    """A local HTTP server with canned routes: path -> (status, body, declared_length or None)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                status, body, declared = routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if declared is None else declared))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True  # a short body is then a dropped connection

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.closed = False

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_good_file(server, tmp_path):
    body = os.urandom(300_000)
    server.routes["/f.gz"] = (200, body, None)
    dest = download(server.url + "/f.gz", tmp_path / "out" / "f.gz", hashlib.sha256(body).hexdigest())
    assert dest == tmp_path / "out" / "f.gz" and dest.read_bytes() == body
    assert os.listdir(tmp_path / "out") == ["f.gz"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.routes["/f.gz"] = (200, b"hello", None)
    with pytest.raises(DataError, match=r"checksum mismatch for f\.gz .*expected sha256 0{64}, got [0-9a-f]{64}"):
        download(server.url + "/f.gz", tmp_path / "f.gz", "0" * 64)
    assert os.listdir(tmp_path) == []


def test_download_dropped_connection_leaves_nothing(server, tmp_path):
    body = os.urandom(50_000)
    server.routes["/f.gz"] = (200, body, len(body) + 10_000)
    with pytest.raises(DataError, match="f.gz"):
        download(server.url + "/f.gz", tmp_path / "f.gz", hashlib.sha256(body).hexdigest())
    assert os.listdir(tmp_path) == []


def test_download_404(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url + "/missing", tmp_path / "f.gz", "0" * 64)
    assert os.listdir(tmp_path) == []


def serve_set(server: Server, folder: Path, prefix: str) -> dict[str, str]:
    """Serve the gz files of ``folder`` under ``prefix``; return their SHA-256 table."""
    for p in folder.iterdir():
        server.routes[f"{prefix}/{p.name}"] = (200, p.read_bytes(), None)
    return {p.name: sha(p) for p in folder.iterdir()}


def test_load_downloads_into_cache_then_reuses_it(server, tmp_path, monkeypatch):
    make_idx_set(tmp_path / "src")
    hashes = serve_set(server, tmp_path / "src", "/second")
    # First mirror 404s for every file; the second has them.
    monkeypatch.setitem(data.MIRRORS, "mnist", [server.url + "/first/", server.url + "/second"])
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(hashes)
    assert {p.name: sha(p) for p in cache.iterdir()} == hashes
    assert any(h.startswith("/first/") for h in server.hits)

    server.close()  # the second load must not need the network
    monkeypatch.setitem(data.MIRRORS, "mnist", [closed_port_url()])
    again = load_dataset("mnist")
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)


def test_load_downloads_only_missing_files(server, tmp_path, monkeypatch):
    files = make_idx_set(tmp_path / "cache" / "mnist")
    hashes = {name: sha(p) for name, p in files.items()}
    server.routes["/t10k-labels-idx1-ubyte.gz"] = (200, files["t10k-labels-idx1-ubyte.gz"].read_bytes(), None)
    files["t10k-labels-idx1-ubyte.gz"].unlink()
    monkeypatch.setitem(data.MIRRORS, "mnist", [server.url + "/"])
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    assert load_dataset("mnist").y_test.shape == (10,)
    assert server.hits == ["/t10k-labels-idx1-ubyte.gz"]


def test_load_bad_checksum_from_all_mirrors(server, tmp_path, monkeypatch):
    folder = tmp_path / "src"
    make_idx_set(folder)
    serve_set(server, folder, "")
    monkeypatch.setitem(data.MIRRORS, "mnist", [server.url + "/"])
    monkeypatch.setitem(data.SHA256, "mnist", {p.name: "f" * 64 for p in folder.iterdir()})
    with pytest.raises(DataError, match="could not download mnist .*checksum mismatch"):
        load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or os.listdir(cache) == []


def test_offline_message_points_to_data_dir_and_digits(monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "mnist", [closed_port_url()])
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert msg.startswith("could not download mnist (") and "--data-dir" in msg and "digits" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- real Fashion-MNIST (Debian package)

def real_fashion_dir() -> Path:
    """The Debian Fashion-MNIST folder; skipped when absent, except in CI where it must exist."""
    if not FASHION_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{FASHION_DIR} is missing in CI; install the Debian package fashion-mnist")
        pytest.skip(f"{FASHION_DIR} not installed")
    return FASHION_DIR


def test_real_fashion_mnist_checksums_match_table():
    folder = real_fashion_dir()
    assert {name: sha(folder / name) for name in data.SHA256["fashion-mnist"]} == data.SHA256["fashion-mnist"]


def test_real_fashion_mnist_loads(monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": [real_fashion_dir()]})
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.image_shape == (28, 28) and ds.num_classes == 10
    assert sorted(ds.y_train.unique().tolist()) == list(range(10))
    assert data.majority_rate(ds.y_train) == pytest.approx(0.1)  # Fashion-MNIST is balanced
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0


def test_default_system_dirs_include_debian_location():
    assert FASHION_DIR in DEFAULT_SYSTEM_DIRS["fashion-mnist"]


# --------------------------------------------------------------------------- unwritable or unusable cache folders
# Tests run as root, so chmod cannot make a folder unwritable: failures are simulated with a file
# where a folder should be, and with monkeypatched OS calls raising the errors a user would see.

class _FullDisk:
    """A file object whose writes fail like a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _break_cache(how: str, tmp_path: Path, monkeypatch) -> Path:
    """Make writing the cache fail in one way; return the folder the error must name."""
    cache = tmp_path / "cache"
    if how == "env_is_a_file":
        cache.write_text("not a folder")
        return cache
    if how == "parent_is_a_file":
        (tmp_path / "blocker").write_text("not a folder")
        monkeypatch.setenv("INITLAB_DATA", str(tmp_path / "blocker" / "cache"))
        return tmp_path / "blocker"
    if how == "mkdir_denied":
        def mkdir(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        monkeypatch.setattr(Path, "mkdir", mkdir)
    elif how == "mkstemp_denied":
        def mkstemp(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(data.tempfile, "mkstemp", mkstemp)
    elif how == "disk_full":
        real = os.fdopen
        monkeypatch.setattr(data.os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))
    elif how == "replace_denied":
        def replace(src, dst):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        monkeypatch.setattr(data.os, "replace", replace)
    elif how == "read_only_fs":
        def mkstemp(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(data.tempfile, "mkstemp", mkstemp)
    return cache / "mnist"


CACHE_FAILURES = ["env_is_a_file", "parent_is_a_file", "mkdir_denied", "mkstemp_denied", "disk_full",
                  "replace_denied", "read_only_fs"]


@pytest.mark.parametrize("how", CACHE_FAILURES)
def test_unwritable_cache_is_one_line_naming_folder_and_way_out(server, tmp_path, monkeypatch, how):
    make_idx_set(tmp_path / "src")
    hashes = serve_set(server, tmp_path / "src", "")
    monkeypatch.setitem(data.MIRRORS, "mnist", [server.url + "/", server.url + "/second/"])
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    folder = _break_cache(how, tmp_path, monkeypatch)
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg, msg
    assert "INITLAB_DATA" in msg and "--data-dir" in msg, msg
    assert not msg.startswith("could not download"), msg  # not blamed on the network
    assert len(server.hits) <= 1  # a local failure is not retried on the next mirror
    partial = [p for p in tmp_path.rglob("*") if ".part-" in p.name]
    assert partial == []


@pytest.mark.parametrize("how", CACHE_FAILURES)
def test_download_unwritable_destination_raises_data_error(server, tmp_path, monkeypatch, how):
    body = b"payload"
    server.routes["/f.gz"] = (200, body, None)
    folder = _break_cache(how, tmp_path, monkeypatch)
    dest_dir = Path(os.environ["INITLAB_DATA"]) / "mnist"
    with pytest.raises(DataError) as info:
        download(server.url + "/f.gz", dest_dir / "f.gz", hashlib.sha256(body).hexdigest())
    msg = str(info.value)
    assert "\n" not in msg and "INITLAB_DATA" in msg and "--data-dir" in msg, msg
    assert str(folder) in msg or str(dest_dir) in msg, msg
    assert not dest_dir.is_dir() or [p.name for p in dest_dir.iterdir()] == []


def test_file_in_place_of_cache_is_named_before_any_download(server, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("oops")
    monkeypatch.setitem(data.MIRRORS, "mnist", [server.url + "/"])
    with pytest.raises(DataError, match=rf"cannot create data folder {tmp_path / 'cache' / 'mnist'} "
                                        rf"\(NotADirectoryError: {tmp_path / 'cache'} exists and is not a folder\)"):
        load_dataset("mnist")
    assert server.hits == []


def _deny_under(monkeypatch, folder: Path):
    real = Path.is_file

    def is_file(self):
        if str(self).startswith(str(folder)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "is_file", is_file)


def test_unsearchable_cache_folder(tmp_path, monkeypatch):
    _deny_under(monkeypatch, tmp_path / "cache")
    with pytest.raises(DataError, match=r"cannot search data folder .*cache.mnist \(PermissionError: Permission denied\); "
                                        r"set INITLAB_DATA .* --data-dir"):
        load_dataset("mnist")


def test_unsearchable_data_dir(tmp_path, monkeypatch):
    _deny_under(monkeypatch, tmp_path / "mine")
    with pytest.raises(DataError, match=r"cannot search data folder .*mine \(PermissionError.*--data-dir"):
        load_dataset("mnist", data_dir=tmp_path / "mine")


def test_unsearchable_system_dir_is_skipped(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "cache" / "fashion-mnist")
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "sys"]})
    _deny_under(monkeypatch, tmp_path / "sys")
    assert load_dataset("fashion-mnist").x_train.shape == (20, 784)


@pytest.mark.parametrize("how", ["no_home", "unknown_user_in_env", "unknown_user_in_data_dir"])
def test_unresolvable_folders_are_data_errors(monkeypatch, how):
    kwargs = {}
    if how == "no_home":
        monkeypatch.delenv("INITLAB_DATA")

        def home():
            raise RuntimeError("Could not determine home directory.")
        monkeypatch.setattr(Path, "home", staticmethod(home))
    elif how == "unknown_user_in_env":
        monkeypatch.setenv("INITLAB_DATA", "~no_such_user_initlab/data")
    else:
        kwargs["data_dir"] = "~no_such_user_initlab/data"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "--data-dir" in msg, msg


@pytest.mark.parametrize("mirror", ["not a url/", "ftp2://x/", "http://[::1/"])
def test_malformed_mirror_is_a_data_error_and_the_next_mirror_is_tried(server, tmp_path, monkeypatch, mirror):
    make_idx_set(tmp_path / "src")
    hashes = serve_set(server, tmp_path / "src", "")
    monkeypatch.setitem(data.MIRRORS, "mnist", [mirror, server.url + "/"])
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    assert load_dataset("mnist").x_train.shape == (20, 784)


def test_idx_header_whose_size_overflows_is_one_clear_error(tmp_path):
    """Dimensions whose product overflows int64 were "cannot reshape array of size 0 into shape (...)"."""
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(raw_idx(0x08, (4194304, 2097152, 2097152), b"\x00" * 16))
    with pytest.raises(DataError, match=r"declares shape \(4194304, 2097152, 2097152\).*more than this machine's memory"):
        read_idx(path)


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """A small header followed by 256 MiB of zeros, gzipped to ~250 KiB: refused with bounded memory."""
    import gzip
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(raw_idx(0x08, (10, 28, 28), b"\x00" * (10 * 28 * 28)))
        block = b"\x00" * (1 << 20)
        for _ in range(256):
            f.write(block)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="trailing bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB while refusing a bomb (declared data: 7840 bytes)"
