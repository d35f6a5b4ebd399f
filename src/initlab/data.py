"""Datasets as whole tensors: the bundled 8x8 digits, MNIST and Fashion-MNIST from IDX files.

Each dataset is loaded once into float32 tensors of shape (N, D) (images flattened) and int64
labels; there are no per-sample transforms and no DataLoader, because the models here are small
and whole-batch indexing on one device is fastest.

MNIST-style sets are looked up, in order, in ``data_dir`` (flat or ``data_dir/<name>/``), the
system folders in ``SYSTEM_DIRS`` (Debian ships Fashion-MNIST), and the cache
(``$INITLAB_DATA`` or ``~/.cache/initlab``, under ``<cache>/<name>/``); missing files are then
downloaded into the cache from ``MIRRORS`` and checked against ``SHA256``. Downloads are atomic:
a partial file never sits under the final name.

IDX format (http://yann.lecun.com/exdb/mnist/): bytes 0-1 zero, byte 2 the type code
(see ``IDX_TYPES``), byte 3 the number of dimensions, then one big-endian uint32 per dimension,
then the big-endian data in C order. Files may be gzipped (detected by the magic 1f 8b).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASETS", "NORMALIZATIONS", "MIRRORS", "SHA256", "SYSTEM_DIRS", "IDX_TYPES",
    "DataError", "Dataset", "load_dataset", "read_idx", "write_idx", "download",
    "cache_dir", "class_balance", "majority_rate",
]

DATASETS = ("digits", "mnist", "fashion-mnist")
NORMALIZATIONS = ("seed", "standardize", "none")

# IDX type code -> big-endian numpy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# role -> file stem; on disk a stem appears as "<stem>.gz" or raw "<stem>".
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Base URLs tried in order; module-level so tests (and users behind a proxy) can swap them.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}

# Folders where OS packages install datasets (Debian: fashion-mnist package).
SYSTEM_DIRS: dict[str, list[Path]] = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}

_NUM_CLASSES = 10
_OFFLINE_HINT = "put the IDX files in a folder and pass --data-dir DIR, or use --dataset digits (bundled, offline)"


class DataError(ValueError):
    """A dataset problem; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Dataset:
    """A classification dataset held as whole tensors."""

    name: str
    x_train: Tensor  # float32 (N_train, D), images flattened row-major
    y_train: Tensor  # int64 (N_train,), values in 0..num_classes-1
    x_test: Tensor  # float32 (N_test, D)
    y_test: Tensor  # int64 (N_test,)
    num_classes: int
    image_shape: tuple[int, ...]  # (rows, cols) before flattening, e.g. (28, 28)

    @property
    def in_features(self) -> int:
        """D, the flattened input size."""
        return math.prod(self.x_train.shape[1:])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-example shape of ``x_train``: (D,) as loaded, (C, H, W) after :meth:`shaped`."""
        return tuple(self.x_train.shape[1:])

    def shaped(self, input_shape: tuple[int, ...]) -> Dataset:
        """The same data with every example viewed as ``input_shape`` (no copy): ``(1, 28, 28)`` for
        a convolutional model, ``(784,)`` for an MLP. The model says which (``model.input_shape``,
        :func:`initlab.models.input_shape_of`); the sizes must multiply to the example's size."""
        shape = tuple(int(s) for s in input_shape)
        if math.prod(shape) != self.in_features:
            raise DataError(f"the model wants inputs of shape {shape} ({math.prod(shape)} values) but {self.name} "
                            f"examples have {self.in_features} values ({'×'.join(map(str, self.image_shape))})")
        if shape == self.input_shape:
            return self
        return dataclasses.replace(self, x_train=self.x_train.reshape(-1, *shape),
                                   x_test=self.x_test.reshape(-1, *shape))

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with all four tensors on ``device``."""
        return dataclasses.replace(
            self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
            x_test=self.x_test.to(device), y_test=self.y_test.to(device),
        )


# --------------------------------------------------------------------------- IDX files

TRAILING_LOOKAHEAD = 1 << 20  # bytes read past the declared data to report how many trail it


def _memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say): no IDX file may promise more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array of its declared shape.

    The file is read as a stream: the header first, then exactly the bytes it promises into one
    preallocated array, then at most 1 MiB more to prove there is no trailing data. Memory is bounded by
    what the header declares (and that by the machine's memory), so a gzip stream that inflates past
    it (a "gzip bomb") is refused after at most 1 MiB too many, never decompressed whole.

    Raises DataError for a corrupt gzip stream, bad magic, unknown type code, ndim outside 1..4,
    a zero dimension, a declared size beyond this machine's memory, or a data section that is not
    exactly prod(dims) * itemsize bytes.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        stream = gzip.open(path, "rb") if gzipped else open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    try:
        with stream as f:
            return _read_idx_stream(f, path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path} is a corrupt gzip file ({e}); delete it and fetch it again") from e
    except OSError as e:
        if gzipped:
            raise DataError(f"{path} is a corrupt gzip file ({e}); delete it and fetch it again") from e
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from e


def _read_idx_stream(f, path: Path) -> np.ndarray:
    raw = f.read(4)
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes; expected a 4-byte magic header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file: bad magic {raw[:4].hex()}; expected 0000 then type code and ndim")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DataError(f"{path} has unknown IDX type code 0x{code:02X}; valid codes: {valid}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path} declares {ndim} dimensions; supported: 1 to 4")
    header = 4 + 4 * ndim
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path} is truncated: header needs {header} bytes, found {4 + len(raw_dims)}")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    if min(dims) == 0:
        raise DataError(f"{path} has a zero dimension in shape {dims}; every dimension must be positive")
    dtype = np.dtype(IDX_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow, whatever the header says
    limit = _memory_bytes()
    if limit is not None and expected > limit:
        raise DataError(f"{path} declares shape {dims}, {expected:.3g} bytes of data, more than this machine's "
                        f"memory ({limit:.3g} bytes): the header is corrupt or the file is not an IDX data set")
    data = np.empty(dims, dtype=dtype.newbyteorder(">"))
    buf = memoryview(data.reshape(-1).view(np.uint8))
    found = 0
    while found < expected:
        n = f.readinto(buf[found:])
        if not n:
            break
        found += n
    if found < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes of data, found {found}")
    rest = f.read(TRAILING_LOOKAHEAD + 1)  # counted up to a bound: a bomb is refused, never inflated whole
    if rest:
        n = len(rest)
        count = f"{n}" if n <= TRAILING_LOOKAHEAD else f"more than {TRAILING_LOOKAHEAD}"
        raise DataError(f"{path} has {count} trailing bytes: expected {expected} bytes of data, found "
                        f"{expected + n if n <= TRAILING_LOOKAHEAD else 'more'}")
    return data.astype(dtype.newbyteorder("="))  # native-endian (a copy only where the byte order differs)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` (1 to 4 dims, a dtype from IDX_TYPES) as an IDX file.

    ``compress=None`` gzips when the name ends in ".gz". Gzip output uses mtime=0, so equal
    arrays give byte-identical files (stable checksums).
    """
    path, array = Path(path), np.asarray(array)
    codes = {np.dtype(t).newbyteorder("="): c for c, t in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"cannot write dtype {array.dtype} as IDX; use one of: uint8, int8, int16, int32, float32, float64")
    if not 1 <= array.ndim <= 4:
        raise DataError(f"cannot write a {array.ndim}-d array as IDX; supported: 1 to 4 dimensions")
    code = codes[native]
    payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes())
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


# --------------------------------------------------------------------------- downloads

class _LocalWriteError(DataError):
    """Writing the download folder failed: no other mirror can help, so nothing retries it."""


_WAY_OUT = "set INITLAB_DATA to a writable folder, or pass --data-dir DIR holding the four IDX files"


def _write_failure(folder: Path, err: BaseException, doing: str = "write to") -> _LocalWriteError:
    reason = f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    return _LocalWriteError(f"cannot {doing} data folder {folder} ({reason}); {_WAY_OUT}".replace("\n", " "))


def download(url: str, dest: Path, sha256: str, *, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256.

    Streams into a temporary file next to ``dest``, checks Content-Length (when sent) and the
    hash, then ``os.replace``s it into place. On any failure the temporary file is removed, so
    ``dest`` is either complete and verified or absent. Raises DataError, one line: network
    problems name the URL; a folder that cannot be created or written (permissions, a file in the
    way, a full disk) names the folder and the way out (``INITLAB_DATA`` or ``--data-dir``).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_failure(dest.parent, e, "create") from e
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part-")
    except OSError as e:
        raise _write_failure(dest.parent, e) from e
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    resp = urllib.request.urlopen(url, timeout=timeout)
                except urllib.error.HTTPError as e:
                    raise DataError(f"{url}: HTTP {e.code} {e.reason}") from e
                except urllib.error.URLError as e:
                    raise DataError(f"{url}: {e.reason}") from e
                except (OSError, http.client.HTTPException) as e:
                    raise DataError(f"{url}: transfer failed ({type(e).__name__}: {e})") from e
                except ValueError as e:  # a malformed mirror URL ("unknown url type")
                    raise DataError(f"{url}: {e}") from e
                with resp:
                    length = resp.headers.get("Content-Length")
                    while True:
                        try:
                            chunk = resp.read(1 << 20)
                        except (OSError, http.client.HTTPException) as e:  # resets, timeouts, IncompleteRead
                            raise DataError(f"{url}: transfer failed ({type(e).__name__}: {e})") from e
                        if not chunk:
                            break
                        out.write(chunk)  # an OSError here is the disk's, not the network's
                        digest.update(chunk)
                        size += len(chunk)
        except OSError as e:  # writing or closing the temporary file
            raise _write_failure(dest.parent, e) from e
        if length is not None and str(size) != length.strip():
            raise DataError(f"{url}: connection closed after {size} of {length} bytes")
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise DataError(f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}, got {actual}")
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise _write_failure(dest.parent, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return dest


def cache_dir() -> Path:
    """The download cache: ``$INITLAB_DATA`` if set, else ``~/.cache/initlab``.

    Raises DataError when neither names a usable path (no home folder, ``~user`` unknown).
    """
    env = os.environ.get("INITLAB_DATA")
    try:
        return Path(env).expanduser() if env else Path.home() / ".cache" / "initlab"
    except (RuntimeError, KeyError, OSError) as e:  # no $HOME and no passwd entry, or unknown ~user
        where = f"INITLAB_DATA={env!r}" if env else "the home folder"
        raise DataError(f"cannot resolve the data cache from {where} ({e}); {_WAY_OUT}") from e


def _fetch(name: str, filename: str, folder: Path) -> Path:
    """Download one file of ``name`` into ``folder``, trying each mirror in turn.

    A folder that cannot be written fails at once (another mirror would not help).
    """
    errors = []
    for base in MIRRORS[name]:
        url = base.rstrip("/") + "/" + filename
        try:
            return download(url, folder / filename, SHA256[name][filename])
        except _LocalWriteError:
            raise
        except DataError as e:
            errors.append(str(e))
    reasons = "; ".join(errors).replace("\n", " ") or "no mirrors configured"
    raise DataError(f"could not download {name} ({reasons}); {_OFFLINE_HINT}")


# --------------------------------------------------------------------------- loading

def _locate(folder: Path) -> dict[str, Path | None]:
    """Map each IDX role to its file in ``folder`` (gzipped preferred over raw), or None.

    Raises OSError (e.g. PermissionError) when ``folder`` cannot be searched; a missing folder,
    or a file in its place, just has no IDX files.
    """
    found = {}
    for role, stem in IDX_FILES.items():
        found[role] = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)
    return found


def _cannot_search(folder: Path, err: BaseException, way_out: str) -> DataError:
    reason = f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    return DataError(f"cannot search data folder {folder} ({reason}); {way_out}".replace("\n", " "))


def _idx_paths(name: str, data_dir: str | Path | None, allow_download: bool) -> dict[str, Path]:
    """Find (or download) the four IDX files of ``name``, following the module's lookup order."""
    if data_dir is not None:
        try:
            base = Path(data_dir).expanduser()
        except (RuntimeError, KeyError, TypeError) as e:  # unknown ~user, not a path
            raise DataError(f"cannot use data_dir {data_dir!r} ({e}); pass --data-dir DIR holding the four IDX files") from e
        roots = [base / name, base]
        try:
            found = [_locate(r) for r in roots]
        except (OSError, ValueError) as e:
            raise _cannot_search(base, e, "pass a readable --data-dir DIR holding the four IDX files") from e
        for f in found:
            if all(f.values()):
                return f
        # Report against the folder that holds the most files: that is the one the user meant.
        best = max(range(2), key=lambda i: (sum(p is not None for p in found[i].values()), i))
        missing = next(IDX_FILES[r] for r, p in found[best].items() if p is None)
        raise DataError(f"{name} file {missing}.gz (or raw {missing}) not found in {roots[best]}"
                        f" (also looked in {roots[1 - best]}); put all four IDX files there")
    for folder in SYSTEM_DIRS.get(name, []):
        try:
            f = _locate(folder)
        except (OSError, ValueError):
            continue  # an unreadable system folder is as good as absent
        if all(f.values()):
            return f
    folder = cache_dir() / name
    try:
        f = _locate(folder)
    except (OSError, ValueError) as e:
        raise _cannot_search(folder, e, _WAY_OUT) from e
    if all(f.values()):
        return f
    if not allow_download:
        searched = ", ".join(str(d) for d in [*SYSTEM_DIRS.get(name, []), folder])
        raise DataError(f"{name} not found in {searched} and downloads are off; {_OFFLINE_HINT}")
    # A file where a folder should be: say so before trying any mirror.
    blocker = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), None)
    if blocker is not None and not blocker.is_dir():
        raise _write_failure(folder, NotADirectoryError(errno.ENOTDIR, f"{blocker} exists and is not a folder"), "create")
    for role, path in f.items():
        if path is None:
            f[role] = _fetch(name, IDX_FILES[role] + ".gz", folder)
    return f


def _load_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split and check it is (N, rows, cols) uint8 images with N labels in 0..9."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path} holds {images.dtype} shape {images.shape}; expected uint8 images (N, rows, cols)")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds shape {labels.shape}; expected labels of shape (N,)")
    if len(images) != len(labels):
        raise DataError(f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels; the files do not belong together")
    if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise DataError(f"{labels_path} has labels in {labels.min()}..{labels.max()}; expected 0..{_NUM_CLASSES - 1}")
    return images, labels


@functools.lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits in [0, 1], split 1437/360, stratified, random_state=0 (fixed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0  # pixel values are 0..16
    return tuple(train_test_split(x, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target))


def load_dataset(name: str, *, data_dir: str | Path | None = None, normalize: str = "seed",
                 download: bool = True) -> Dataset:
    """Load a dataset from ``DATASETS`` as whole tensors.

    Pixels are first scaled to [0, 1], then ``normalize`` applies:
      - "seed": x' = (x - 0.5) / 0.5, in [-1, 1] (the seed notebook's transform);
      - "standardize": x' = (x - m) / s with the scalar mean m and std s of the TRAIN pixels,
        applied to both splits;
      - "none": x stays in [0, 1].

    Args:
        name: "digits" (bundled, offline, fixed 1437/360 stratified split), "mnist" or
            "fashion-mnist" (60000/10000, IDX files).
        data_dir: folder holding the four IDX files, flat or in ``data_dir/<name>/``; when
            given, nothing else is searched.
        normalize: one of ``NORMALIZATIONS``.
        download: allow downloading missing MNIST-style files into ``cache_dir()``.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"unknown normalize {normalize!r}; choose from: {', '.join(NORMALIZATIONS)}")
    if name == "digits":
        x_tr, x_te, y_tr, y_te = _digits_split()
        image_shape = (8, 8)
    else:
        paths = _idx_paths(name, data_dir, download)
        img_tr, y_tr = _load_split(paths["train_images"], paths["train_labels"])
        img_te, y_te = _load_split(paths["test_images"], paths["test_labels"])
        if img_tr.shape[1:] != img_te.shape[1:]:
            raise DataError(f"{name} train images are {img_tr.shape[1:]} but test images are {img_te.shape[1:]}; the files do not belong together")
        image_shape = tuple(img_tr.shape[1:])
        x_tr, x_te = img_tr.reshape(len(img_tr), -1), img_te.reshape(len(img_te), -1)
    # Fresh float32 tensors (callers may mutate them; the digits arrays are cached), then
    # in-place arithmetic: MNIST's 60000x784 floats are worth not copying again.
    x_train = torch.tensor(x_tr, dtype=torch.float32)
    x_test = torch.tensor(x_te, dtype=torch.float32)
    if name != "digits":  # digits are already in [0, 1]
        for x in (x_train, x_test):
            x.div_(255.0)
    if normalize == "seed":
        for x in (x_train, x_test):
            x.sub_(0.5).div_(0.5)
    elif normalize == "standardize":
        mean, std = x_train.mean(), x_train.std()
        if std == 0:
            raise DataError(f"{name} train pixels are constant, cannot standardize; use normalize='seed' or 'none'")
        for x in (x_train, x_test):
            x.sub_(mean).div_(std)
    return Dataset(
        name=name, x_train=x_train, y_train=torch.tensor(y_tr, dtype=torch.int64),
        x_test=x_test, y_test=torch.tensor(y_te, dtype=torch.int64),
        num_classes=_NUM_CLASSES, image_shape=image_shape,
    )


# --------------------------------------------------------------------------- label statistics

def class_balance(y: Tensor | np.ndarray, num_classes: int | None = None) -> Tensor:
    """Fraction of labels in each class, a float64 tensor of length ``num_classes`` (summing to 1)."""
    y = torch.as_tensor(y, dtype=torch.int64).flatten().cpu()
    if y.numel() == 0:
        raise DataError("class_balance needs at least one label; got an empty tensor")
    counts = torch.bincount(y, minlength=num_classes or 0).double()
    return counts / counts.sum()


def majority_rate(y: Tensor | np.ndarray) -> float:
    """Fraction of the most common class: the accuracy of always predicting it (e.g. a zero-init net)."""
    return float(class_balance(y).max())


# --------------------------------------------------------------------------- validation split

VALIDATION_STREAM = 0x76616C  # "val": the split's own random stream, independent of init and data order


def split_validation(data: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, tuple[Tensor, Tensor]]:
    """Carve a validation split out of the training set, stratified by class and fixed by ``seed``.

    From every class c, round(fraction · n_c) of its training examples (drawn by numpy's
    ``default_rng([seed, VALIDATION_STREAM])``) go to validation; the rest stay, in their original
    order. The test set is untouched, so choices made on validation (a learning rate, an epoch)
    never see it.

    Returns ``(train, (x_val, y_val))``: ``train`` is ``data`` with only the kept training
    examples; ``fraction`` 0 returns ``data`` itself and an empty validation set.

    Example: ``train, (x_val, y_val) = split_validation(load_dataset("digits"), 0.1, seed=0)``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DataError(f"validation fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"validation seed must be a non-negative integer, got {seed!r}")
    if fraction == 0:
        return data, (data.x_train[:0], data.y_train[:0])
    y = data.y_train.cpu().numpy()
    rng = np.random.default_rng([int(seed), VALIDATION_STREAM])
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        picked.append(rng.permutation(members)[:int(round(fraction * len(members)))])
    val_idx = np.sort(np.concatenate(picked))
    if len(val_idx) == 0 or len(val_idx) == len(y):
        raise DataError(f"validation fraction {fraction:g} of {len(y)} training examples leaves "
                        f"{'no validation' if len(val_idx) == 0 else 'no training'} examples; choose another fraction")
    keep = np.ones(len(y), dtype=bool)
    keep[val_idx] = False
    dev = data.x_train.device
    val_t = torch.as_tensor(val_idx, device=dev)
    keep_t = torch.as_tensor(np.flatnonzero(keep), device=dev)
    train = dataclasses.replace(data, x_train=data.x_train.index_select(0, keep_t),
                                y_train=data.y_train.index_select(0, keep_t))
    return train, (data.x_train.index_select(0, val_t), data.y_train.index_select(0, val_t))
