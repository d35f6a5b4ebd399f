"""Property-based tests of the CLI contract (issue 7, "CLI and API hygiene").

For every command, any value of any option gives exit status 0 (it ran) or 2 (one line on stderr
that starts with "error:"), never a traceback or another status, and within a time bound. User
text is never read as rich markup or emoji: an error that echoes it shows it verbatim.

Runs are kept tiny when the generated values are valid (digits, 1 epoch, 8 units). Integer
options whose valid values would make a run long (epochs, seeds, widths, depths) are drawn from
invalid values, small valid ones, or values so large that the memory estimate must refuse them
on any machine (petabytes), never from the range in between.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlab.cli import main

MAX_INT = (1 << 63) - 1
MAX_WIDTH = 1 << 20
MAX_DEPTH = 10_000
PER_EXAMPLE_S = 20.0  # wall-clock bound for one invocation (tiny valid runs take about a second)
BYTE_UNIT = re.compile(r"\d(\.\d+)?(e\+\d+)? (B|KiB|MiB|GiB|TiB|PiB|EiB)\b")

# derandomize: CI runs the same examples every time (set INITLAB_HYPOTHESIS_EXPLORE=1 to search anew)
SETTINGS = dict(deadline=None, database=None, derandomize=not os.environ.get("INITLAB_HYPOTHESIS_EXPLORE"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- running the CLI


@dataclass
class Result:
    argv: list
    rc: object
    out: str
    err: str
    seconds: float


@contextlib.contextmanager
def cwd(path: Path):
    """Run with ``path`` as the working directory (relative --out / --data-dir land there)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def invoke(argv: list, capsys) -> Result:
    """``initlab ARGV`` in-process. Any exception other than SystemExit propagates (test fails)."""
    argv = [str(a) for a in argv]
    capsys.readouterr()
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    seconds = time.monotonic() - t0
    cap = capsys.readouterr()
    return Result(argv, exc.value.code, cap.out, cap.err, seconds)


def assert_one_line_error(r: Result) -> str:
    err = r.err.strip()
    assert r.rc == 2, f"{r.argv}: exit {r.rc}\nstdout: {r.out[-2000:]}\nstderr: {r.err[-2000:]}"
    assert "\n" not in err, f"{r.argv}: error is more than one line:\n{r.err}"
    assert err.startswith("error:"), f"{r.argv}: stderr does not start with 'error:':\n{r.err}"
    return err


def assert_contract(r: Result) -> None:
    """Exit 0 or 2; 2 means a one-line 'error: ...'; no traceback; within the time bound."""
    assert "Traceback (most recent call last)" not in r.out + r.err, f"{r.argv}:\n{r.err}"
    assert r.rc in (0, 2), f"{r.argv}: exit status {r.rc!r}\nstderr: {r.err[-3000:]}"
    if r.rc == 2:
        assert_one_line_error(r)
    assert r.seconds < PER_EXAMPLE_S, f"{r.argv}: took {r.seconds:.1f} s"


def run_case(argv: list, capsys, tmp_path_factory, *, out: bool = True) -> Result:
    """Run in a fresh empty working directory, with a fresh empty --out unless the case sets one."""
    work = tmp_path_factory.mktemp("cli")
    if out and "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path_factory.mktemp("out"))]
    with cwd(work):
        r = invoke(argv, capsys)
    assert_contract(r)
    return r


# ----------------------------------------------------------------------------- strategies

MARKUP_TOKENS = ["[red]", "[/]", "[/red]", "[bold]", "[bold red]x[/bold red]", "[link=https://x.y]z[/link]",
                 "[i]", ":ok:", ":smile:", ":thumbs_up:", ":red_heart:", "\\[red]", "[", "]", "[[", "]]", "[red"]
SPECIAL_TEXT = ["", " ", "  ", "\t", "\n", "a\nb", ",", ",,", "a,", ",a", "(", ")", "()", "((", "'", '"', "'a", '"a"',
                "\\", "-", "--", "-1", "--help", "0", "1e3", "0x10", "1_0", "nan", "inf", "-inf", "None", "true",
                "é", "ß", "٨", "😀", "汉字", "\u200b", "x" * 300, "%s", "{}", "{0}", "$HOME", "*", "?", ";", "|"]

# argv items can hold neither NUL nor (from a UTF-8 locale) lone surrogates in printable form
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
markup = st.sampled_from(MARKUP_TOKENS)
special = st.sampled_from(SPECIAL_TEXT)


def texts(max_size: int = 24):
    """Arbitrary text, markup, emoji codes, separators, quotes, whitespace and unicode."""
    return st.one_of(
        st.text(_chars, max_size=max_size),
        markup,
        special,
        st.builds(lambda a, m, b: a + m + b, st.text(_chars, max_size=4), markup, st.text(_chars, max_size=4)),
        st.lists(st.one_of(st.text(_chars, max_size=6), markup, special), min_size=2, max_size=4).map(",".join),
    )


def not_exactly(*bad):
    bad = set(bad)
    return lambda s: s.strip().lower() not in bad


FIXED_INTS = [0, -1, 1, -(1 << 63), -(1 << 63) - 1, MAX_INT, MAX_INT + 1, 1 << 64, 10 ** 30, -(10 ** 30), 1 << 31,
              (1 << 31) - 1, (1 << 32)]


def ints(*, forbid: tuple[int, int] | None = None, valid=st.integers(1, 3)):
    """Integers across the whole range, except ``forbid`` (valid values that would make a run long)."""
    s = st.one_of(st.integers(), st.integers(min_value=-(1 << 80), max_value=1 << 80),
                  st.sampled_from(FIXED_INTS), valid, valid)  # valid twice: about 2 in 5 draws run
    if forbid is not None:
        lo, hi = forbid
        s = s.filter(lambda n: not lo <= n <= hi)
    return s


def floats():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 1e6, 1.0, 0.5, 0.999999999,
                                      math.nan, math.inf, -math.inf, 1e-3, 0.1]))


def num_text(values):
    """A numeric option's argument: the number as typed (repr), or arbitrary text."""
    return st.one_of(values.map(lambda v: repr(v) if isinstance(v, float) else str(v)),
                     values.map(lambda v: repr(v) if isinstance(v, float) else str(v)),
                     texts(12))


SCHEME_NAMES = ["he", "xavier", "zero", "normal", "random", "uniform", "constant", "trunc_normal",
                "variance_scaling", "orthogonal", "lecun_normal", "kaiming_normal", "pytorch_default", "bogus",
                "[red]he", "he[/]", ":ok:", "Normal", "hé"]
SCHEME_KEYS = ["std", "mean", "a", "b", "value", "gain", "scale", "mode", "distribution", "nonlinearity", "foo", ""]
scheme_value = st.one_of(floats().map(repr), st.integers().map(str), texts(8),
                         st.sampled_from(["fan_in", "fan_out", "fan_avg", "'fan_in'", '"normal"', "truncated_normal",
                                          "relu", "true", "None", "'[red]'", "':ok:'"]))


@st.composite
def scheme_text(draw):
    """``name``, ``name(key=value,...)`` (valid, invalid, or with markup), or a list of them."""
    def one():
        name = draw(st.sampled_from(SCHEME_NAMES))
        if draw(st.booleans()):
            return name
        args = draw(st.lists(st.tuples(st.sampled_from(SCHEME_KEYS), scheme_value), max_size=3))
        return f"{name}({','.join(f'{k}={v}' for k, v in args)})"

    return ",".join(one() for _ in range(draw(st.integers(1, 3))))


inits_s = st.one_of(texts(), scheme_text(), st.sampled_from(["normal(std=100)", "normal(std=1e308)", "he,he",
                                                              "he,kaiming_uniform", "normal(std=0.05),zero"]))


@st.composite
def int_list(draw, item):
    return ",".join(map(str, draw(st.lists(item, max_size=4))))


# one layer of 2**20 units may fit a large machine (and then train for long); two never do
width_item = st.one_of(st.integers(1, 16), st.integers(max_value=0), st.integers(min_value=MAX_WIDTH + 1),
                       st.sampled_from(FIXED_INTS).filter(lambda n: not 1 <= n <= MAX_WIDTH))
hidden_s = st.one_of(texts(), int_list(width_item),
                     st.sampled_from(["8," * (MAX_DEPTH + 1) + "8", "8, 8", " 8 ", "8 8", "8;8", "8.0", "+8", "-8",
                                      "08", f"{MAX_WIDTH},{MAX_WIDTH}", f"8,{MAX_WIDTH},{MAX_WIDTH},8"]))
depth_item = st.one_of(st.integers(1, 3), st.integers(max_value=0), st.integers(min_value=MAX_DEPTH + 1),
                       st.sampled_from(FIXED_INTS).filter(lambda n: not 4 <= n <= MAX_DEPTH))
safe_width = ints(forbid=(17, 10 ** 6 - 1), valid=st.integers(1, 16))  # 10**6 and up: refused (with depth >= 2)
safe_depth = ints(forbid=(4, MAX_DEPTH))
epochs_s = ints(forbid=(4, 10 ** 9 - 1))  # 10**9 epochs: terabytes of results, refused
seeds_s = ints(forbid=(4, 10 ** 12 - 1))  # 10**12 runs: petabytes of results, refused
threads_s = ints(forbid=(3, (1 << 31) - 1), valid=st.integers(1, 2))  # never spawn thousands of threads
batch_s = ints(forbid=(1, 7), valid=st.sampled_from([8, 64, 500, 10 ** 6]))  # batch 1: many steps, slow-ish


def choice(valid, *, exclude=()):
    return st.one_of(texts().filter(not_exactly(*exclude)), st.sampled_from(valid))


ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "selu", "elu", "gelu", "silu", "linear"]
activation_s = choice(ACTIVATIONS + ["RELU", " relu", "relu,tanh", "[red]relu"])
optimizer_s = choice(["sgd", "adam", "SGD", "rmsprop"])
normalize_s = choice(["seed", "standardize", "none", "zscore"])
device_s = choice(["cpu", "auto", "cuda", "cuda:0", "cuda:99", "mps", "meta", "CPU", "cpu:0", "tpu"])
engine_s = choice(["batched", "single", "gpu"])
lr_s = num_text(floats())
momentum_s = num_text(floats())
diverge_s = num_text(floats())
# datasets that could be found on disk or downloaded are only drawn with an empty --data-dir (below)
dataset_s = choice(["digits", "DIGITS", " digits", "cifar", "[red]digits"], exclude=("mnist", "fashion-mnist"))


@st.composite
def data_dir_case(draw):
    """(dataset, data_dir): data_dir is arbitrary text (relative to an empty cwd) or an empty folder."""
    dataset = draw(st.sampled_from(["digits", "mnist", "fashion-mnist"]))
    where = draw(st.one_of(texts().filter(lambda s: not s.startswith(("/", "~"))),
                           st.sampled_from(["EMPTY", "/nonexistent/x", "/etc/passwd", "/proc/self", "."])))
    return dataset, where


def relative_out():
    """--out as arbitrary text, relative to the (fresh, empty) working directory."""
    return st.one_of(texts().filter(lambda s: not s.strip().startswith(("/", "~")) and ".." not in s),
                     st.sampled_from(["", " ", ".", "a/b/c", "[red]x", ":ok:", "o" * 200, "d/" * 30]))


# --------------------------------------------------------------------------------- compare

COMPARE_BASE = {"--dataset": "digits", "--epochs": "1", "--hidden": "8", "--inits": "he"}
COMPARE_OPTIONS = {
    "--inits": inits_s,
    "--dataset": dataset_s,
    "--epochs": epochs_s.map(str),
    "--seeds": seeds_s.map(str),
    "--first-seed": num_text(ints()),
    "--hidden": hidden_s,
    "--activation": activation_s,
    "--optimizer": optimizer_s,
    "--lr": lr_s,
    "--momentum": momentum_s,
    "--batch-size": batch_s.map(str),
    "--normalize": normalize_s,
    "--device": device_s,
    "--engine": engine_s,
    "--diverge-loss": diverge_s,
    "--out": relative_out(),
}
# integer options also get text ('1.5', '', 'abc'): the framework's usage error must be one line too
INT_TEXT_OPTIONS = ["--epochs", "--seeds", "--batch-size"]


def build(base: dict, overrides: dict, flags=()) -> list:
    argv = []
    for k, v in {**base, **overrides}.items():
        if v is not None:
            argv += [k, v]
    return [*argv, *flags]


def resolve_data_dir(dataset_dir, tmp_path_factory) -> dict:
    dataset, where = dataset_dir
    if where == "EMPTY":
        where = str(tmp_path_factory.mktemp("data"))
    return {"--dataset": dataset, "--data-dir": where}


@st.composite
def compare_case(draw):
    """Options of a compare run: one or a few options drawn from their strategies, the rest tiny."""
    names = draw(st.lists(st.sampled_from([*COMPARE_OPTIONS, "--data-dir", "--depth/--width", "int-text"]),
                          min_size=1, max_size=2, unique=True))
    over: dict = {}
    for name in names:
        if name == "--data-dir":
            over.update(DATA_DIR=draw(data_dir_case()))
        elif name == "--depth/--width":
            depth, width = draw(st.tuples(st.one_of(st.none(), safe_depth), st.one_of(st.none(), safe_width)))
            if width is not None and width >= 10 ** 6 and (depth is None or 1 <= depth <= 3):
                depth = 2  # one layer of 10**6 units may fit a large machine; two never do
            over.update({"--hidden": None, "--depth": None if depth is None else str(depth),
                         "--width": None if width is None else str(width)})
            if draw(st.booleans()) and (depth, width) != (None, None):
                over["--hidden"] = "8"  # both given: refused
        elif name == "int-text":
            over[draw(st.sampled_from(INT_TEXT_OPTIONS))] = draw(texts(12))
        else:
            over[name] = draw(COMPARE_OPTIONS[name])
    probe = draw(st.booleans())
    return over, probe


@settings(max_examples=40, **SETTINGS)
@given(case=compare_case())
def test_compare_any_options_exit_0_or_2(case, capsys, tmp_path_factory):
    over, probe = case
    over = dict(over)
    if "DATA_DIR" in over:
        over.update(resolve_data_dir(over.pop("DATA_DIR"), tmp_path_factory))
    argv = ["compare", *build(COMPARE_BASE, over, flags=[] if probe else ["--no-probe"])]
    r = run_case(argv, capsys, tmp_path_factory)
    if r.rc == 0 and "--out" in over:
        # the output folder is echoed as typed, never as markup
        assert "".join(over["--out"].split()) in "".join(r.out.split())


# ------------------------------------------------------------------------------------ depth

DEPTH_BASE = {"--depths": "1", "--width": "8", "--epochs": "1", "--inits": "he"}
DEPTH_OPTIONS = {
    "--depths": st.one_of(texts(), int_list(depth_item), st.sampled_from(["2,,3", "1,1", "3,1", "1, 2", "٣"])),
    "--inits": inits_s,
    "--dataset": dataset_s,
    "--width": safe_width.map(str),
    "--activation": activation_s,
    "--epochs": epochs_s.map(str),
    "--seeds": seeds_s.map(str),
    "--lr": lr_s,
    "--optimizer": optimizer_s,
    "--momentum": momentum_s,
    "--batch-size": batch_s.map(str),
    "--threads": threads_s.map(str),
    "--device": device_s,
    "--diverge-loss": diverge_s,
    "--out": relative_out(),
}


@st.composite
def depth_case(draw):
    names = draw(st.lists(st.sampled_from([*DEPTH_OPTIONS, "--data-dir"]), min_size=1, max_size=3, unique=True))
    over: dict = {}
    for name in names:
        if name == "--data-dir":
            over.update(DATA_DIR=draw(data_dir_case()))
        else:
            over[name] = draw(DEPTH_OPTIONS[name])
    width = over.get("--width")
    if width is not None and re.fullmatch(r"\d+", width) and int(width) >= 10 ** 6 and "--depths" not in over:
        over["--depths"] = "2"  # one layer of 10**6 units may fit a large machine; two never do
    return over


@settings(max_examples=25, **SETTINGS)
@given(over=depth_case())
def test_depth_any_options_exit_0_or_2(over, capsys, tmp_path_factory):
    over = dict(over)
    if "DATA_DIR" in over:
        over.update(resolve_data_dir(over.pop("DATA_DIR"), tmp_path_factory))
    deps = over.get("--depths")
    width = over.get("--width", "8")
    if deps is not None and re.fullmatch(r"\d+", width or "") and int(width) > 16:
        # huge widths are only safe when every depth is >= 2 (never one 10**6-unit layer on a big machine)
        items = [s.strip() for s in deps.split(",")]
        if any(re.fullmatch(r"[0-9]+", s) and int(s) == 1 for s in items):
            over["--depths"] = "2"
    run_case(["depth", *build(DEPTH_BASE, over)], capsys, tmp_path_factory)


# ------------------------------------------------------------------------------------ probe

PROBE_BASE = {"--depth": "2", "--width": "8", "--batch": "16", "--activations": "relu", "--inits": "he"}
SAFE_MODELS = ["nonexistent_mod_xyz:f", "os:getcwd", "os:getenv", "json:loads", "torch.nn:Identity", "torch.nn:Linear",
               "", ":", "a:b:c", "os.path", "[red]x:y", ":ok::f", "torch.nn:ReLU", "math:pi"]
# The probe has no memory estimate: widths between 17 and 2**20 could allocate gigabytes for real.
# 2**20 with depth 2 asks for 4 TiB, which the kernel refuses at once under heuristic overcommit.
_HEURISTIC_OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory").exists() and \
    Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "0"
probe_width = ints(forbid=(17, MAX_WIDTH - 1) if _HEURISTIC_OVERCOMMIT else (17, MAX_WIDTH),
                   valid=st.integers(1, 16))
PROBE_OPTIONS = {
    "--activations": st.one_of(activation_s, texts()),
    "--inits": st.one_of(inits_s, st.just("none")),
    "--dataset": dataset_s,
    "--batch": num_text(ints()),
    "--depth": num_text(safe_depth),
    "--width": probe_width.map(str),
    "--seed": num_text(ints()),
    # arbitrary 'module:factory' text would import arbitrary modules; other text is fine
    "--model": st.one_of(st.sampled_from(SAFE_MODELS),
                         texts().filter(lambda s: not re.fullmatch(r"\s*[\w.]+\s*:\s*[\w.]+\s*", s))),
    "--out": relative_out(),
}


@st.composite
def probe_case(draw):
    names = draw(st.lists(st.sampled_from([*PROBE_OPTIONS, "--data-dir"]), min_size=1, max_size=3, unique=True))
    over: dict = {}
    for name in names:
        if name == "--data-dir":
            over.update(DATA_DIR=draw(data_dir_case()))
        else:
            over[name] = draw(PROBE_OPTIONS[name])
    if "--model" in over and "--activations" not in over:
        over["--activations"] = None  # the default; with --model any other value is refused first
    return over


@settings(max_examples=25, **SETTINGS)
@given(over=probe_case())
def test_probe_any_options_exit_0_or_2(over, capsys, tmp_path_factory):
    over = dict(over)
    if "DATA_DIR" in over:
        over.update(resolve_data_dir(over.pop("DATA_DIR"), tmp_path_factory))
    run_case(["probe", *build(PROBE_BASE, over)], capsys, tmp_path_factory)


# ----------------------------------------------------------------------------------- claims

FAST_CLAIM = "he-variance"  # pure arithmetic: milliseconds with --quick


@st.composite
def claims_case(draw):
    over = {"--only": FAST_CLAIM}
    names = draw(st.lists(st.sampled_from(["--only", "--threads", "--out"]), min_size=1, max_size=3, unique=True))
    for name in names:
        if name == "--only":
            over["--only"] = draw(st.one_of(texts(), st.sampled_from(
                ["he-variance", "HE-VARIANCE", "he-variance,", ",he-variance", "he-variance,,xavier-variance",
                 "he-variance,xavier-variance", "he_variance", "[red]he-variance", ":ok:"])))
        elif name == "--threads":
            over["--threads"] = draw(st.one_of(threads_s.map(str), texts(12)))
        else:
            over["--out"] = draw(relative_out())
    return over


@settings(max_examples=30, **SETTINGS)
@given(over=claims_case())
def test_claims_any_options_exit_0_or_2(over, capsys, tmp_path_factory):
    run_case(["claims", *build({}, over), "--quick"], capsys, tmp_path_factory)


@settings(max_examples=15, **SETTINGS)
@given(extra=st.lists(texts(12), max_size=3))
def test_schemes_and_claims_list_with_stray_arguments(extra, capsys, tmp_path_factory):
    for cmd in (["schemes"], ["claims", "--list"]):
        run_case([*cmd, *extra], capsys, tmp_path_factory, out=False)


@settings(max_examples=20, **SETTINGS)
@given(cmd=texts(12).filter(lambda s: s.strip() not in {"compare", "depth", "probe", "claims", "schemes"}))
def test_unknown_command_exit_0_or_2(cmd, capsys, tmp_path_factory):
    run_case([cmd], capsys, tmp_path_factory, out=False)


# ------------------------------------------------------------------- user text is never markup

# a token with no whitespace, quotes, backslashes, commas or parentheses survives repr() verbatim
_token_chars = st.sampled_from(list("abcxyz019_-.:/[]=#@!+*&%$<>|;~^`?") + ["é", "😀"])
markup_token = st.one_of(
    st.sampled_from(["[red]he", "he[/]", ":ok:", "[/]", "[bold]x", "x[/bold]", ":smile:", "[link=x]y", "[[x]]",
                     "he:ok:", "[red]", ":thumbs_up:"]),
    st.builds(lambda a, m, b: a + m + b, st.text(_token_chars, max_size=4), markup, st.text(_token_chars, max_size=4))
    .filter(lambda s: not re.search(r"[\s'\"\\,()]", s)),
)
ECHOING = [("compare", "--inits"), ("compare", "--activation"), ("compare", "--dataset"), ("compare", "--optimizer"),
           ("compare", "--normalize"), ("compare", "--device"), ("compare", "--engine"), ("depth", "--depths"),
           ("depth", "--inits"), ("probe", "--activations"), ("probe", "--inits"), ("claims", "--only")]
BASES = {"compare": COMPARE_BASE, "depth": DEPTH_BASE, "probe": PROBE_BASE, "claims": {}}


@settings(max_examples=40, **SETTINGS)
@given(where=st.sampled_from(ECHOING), token=markup_token)
def test_user_text_is_echoed_verbatim_never_markup(where, token, capsys, tmp_path_factory):
    cmd, option = where
    r = run_case([cmd, *build(BASES[cmd], {option: token})], capsys, tmp_path_factory)
    err = assert_one_line_error(r)
    assert token in err, f"{r.argv}: {token!r} not shown verbatim in: {err}"
    assert "🆗" not in err and "😄" not in err and "👍" not in err, err


# ------------------------------------------------------------- fixed cases from the issue


def run_fixed(argv, capsys, tmp_path_factory, out=True) -> str:
    r = run_case(argv, capsys, tmp_path_factory, out=out)
    return assert_one_line_error(r)


TINY = ["compare", "--dataset", "digits", "--epochs", "1", "--no-probe", "--hidden", "8"]


def test_inits_closing_markup_tag_does_not_crash(capsys, tmp_path_factory):
    assert "he[/]" in run_fixed([*TINY, "--inits", "he[/]"], capsys, tmp_path_factory)


def test_inits_markup_shown_verbatim(capsys, tmp_path_factory):
    assert "[red]he" in run_fixed([*TINY, "--inits", "[red]he"], capsys, tmp_path_factory)


def test_inits_emoji_code_shown_verbatim(capsys, tmp_path_factory):
    err = run_fixed([*TINY, "--inits", ":ok:"], capsys, tmp_path_factory)
    assert ":ok:" in err and "🆗" not in err


@pytest.mark.parametrize("hidden", ["128,,128", ""])
def test_hidden_empty_items(hidden, capsys, tmp_path_factory):
    argv = ["compare", "--dataset", "digits", "--epochs", "1", "--no-probe", "--hidden", hidden]
    run_fixed(argv, capsys, tmp_path_factory)


def test_depths_empty_item(capsys, tmp_path_factory):
    err = run_fixed(["depth", "--depths", "2,,3", "--width", "8", "--epochs", "1", "--inits", "he"],
                    capsys, tmp_path_factory)
    assert "2,,3" in err


@pytest.mark.parametrize("cmd", [TINY, ["depth", "--depths", "1", "--width", "8", "--epochs", "1"],
                                 ["probe", "--depth", "2", "--width", "8", "--batch", "16"]])
def test_data_dir_with_digits(cmd, capsys, tmp_path_factory):
    err = run_fixed([*cmd, "--dataset", "digits", "--data-dir", "/tmp"], capsys, tmp_path_factory)
    assert "--data-dir" in err


@pytest.mark.parametrize("cmd", [TINY, ["depth", "--depths", "1", "--width", "8", "--epochs", "1"]])
def test_momentum_with_adam(cmd, capsys, tmp_path_factory):
    err = run_fixed([*cmd, "--momentum", "0.9", "--optimizer", "adam"], capsys, tmp_path_factory)
    assert "momentum" in err


CMDS_WITH_OUT = [TINY, ["depth", "--depths", "1", "--width", "8", "--epochs", "1", "--inits", "he"],
                 ["probe", "--depth", "2", "--width", "8", "--batch", "16", "--activations", "relu", "--inits", "he"],
                 ["claims", "--only", FAST_CLAIM, "--quick"]]


@pytest.mark.parametrize("cmd", CMDS_WITH_OUT, ids=lambda c: c[0])
def test_out_empty(cmd, capsys, tmp_path_factory):
    run_fixed([*cmd, "--out", ""], capsys, tmp_path_factory)


@pytest.mark.parametrize("cmd", CMDS_WITH_OUT, ids=lambda c: c[0])
def test_out_dot_with_user_file_is_refused_and_untouched(cmd, capsys, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("mine")
    monkeypatch.chdir(tmp_path)
    r = invoke([*cmd, "--out", "."], capsys)
    assert_contract(r)
    assert_one_line_error(r)
    assert (tmp_path / "config.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize("cmd", CMDS_WITH_OUT, ids=lambda c: c[0])
def test_out_is_an_existing_file(cmd, capsys, tmp_path_factory):
    f = tmp_path_factory.mktemp("f") / "results"
    f.write_text("mine")
    run_fixed([*cmd, "--out", str(f)], capsys, tmp_path_factory)
    assert f.read_text() == "mine"


@pytest.mark.parametrize("cmd", CMDS_WITH_OUT, ids=lambda c: c[0])
def test_out_parent_is_a_file(cmd, capsys, tmp_path_factory):
    f = tmp_path_factory.mktemp("f") / "afile"
    f.write_text("mine")
    run_fixed([*cmd, "--out", str(f / "sub")], capsys, tmp_path_factory)
    assert f.read_text() == "mine"


@pytest.mark.parametrize("cmd", [TINY, ["depth", "--depths", "1", "--width", "8", "--epochs", "1", "--inits", "he"]],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("value", ["1e6", "1e308"])
def test_huge_lr_runs_and_diverges(cmd, value, capsys, tmp_path_factory):
    r = run_case([*cmd, "--lr", value], capsys, tmp_path_factory)
    assert r.rc == 0, r.err
    assert "diverged" in r.out


def test_huge_init_std_runs_and_diverges(capsys, tmp_path_factory):
    r = run_case([*TINY, "--inits", "normal(std=100)"], capsys, tmp_path_factory)
    assert r.rc == 0, r.err
    assert "diverged" in r.out


def test_markup_in_out_folder_is_printed_verbatim(capsys, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("o") / "[red]x:ok:")
    r = run_case([*TINY, "--inits", "he", "--out", out], capsys, tmp_path_factory)
    assert r.rc == 0, r.err
    assert "".join(out.split()) in "".join(r.out.split())


# ------------------------------------------------- oversized requests: refused before any work


class _WouldTrain(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch):
    """Make starting a comparison an error, so a request that is not refused cannot run for hours."""
    import initlab.experiments.compare

    def refuse(*a, **k):
        raise _WouldTrain("the request was not refused: training would start")

    monkeypatch.setattr(initlab.experiments.compare, "run_compare", refuse)


@pytest.mark.parametrize("extra", [
    ["--seeds", str(10 ** 12)],
    ["--epochs", str(10 ** 9)],
    ["--epochs", str(MAX_INT)],
    ["--seeds", str(MAX_INT)],
    ["--depth", "2", "--width", str(10 ** 6)],
    ["--hidden", f"{MAX_WIDTH},{MAX_WIDTH}"],
], ids=["seeds-1e12", "epochs-1e9", "epochs-max", "seeds-max", "width-1e6", "hidden-max"])
def test_oversized_compare_is_refused_fast_with_estimate(extra, no_training, capsys, tmp_path_factory):
    argv = list(TINY)
    if {"--hidden", "--depth", "--width"} & set(extra):
        i = argv.index("--hidden")
        del argv[i:i + 2]
    r = run_case([*argv, *extra], capsys, tmp_path_factory)
    err = assert_one_line_error(r)
    assert r.seconds < 10, f"refusal took {r.seconds:.1f} s"
    assert "need" in err and BYTE_UNIT.search(err), err


@pytest.mark.parametrize("extra", [["--seeds", str(10 ** 12)], ["--epochs", str(10 ** 9)],
                                   ["--depths", "2", "--width", str(10 ** 6)]],
                         ids=["seeds-1e12", "epochs-1e9", "width-1e6"])
def test_oversized_depth_sweep_is_refused_fast_with_estimate(extra, capsys, tmp_path_factory):
    base = {"--depths": "1", "--width": "8", "--epochs": "1", "--inits": "he"}
    for k, v in zip(extra[::2], extra[1::2]):
        base[k] = v
    r = run_case(["depth", *build(base, {})], capsys, tmp_path_factory)
    err = assert_one_line_error(r)
    assert r.seconds < 10, f"refusal took {r.seconds:.1f} s"
    assert "need" in err and BYTE_UNIT.search(err), err


# --------------------------------------------------------------- found while writing these tests


@pytest.mark.parametrize("cmd", [["claims", "--only", FAST_CLAIM, "--quick"],
                                 ["depth", "--depths", "1", "--width", "8", "--epochs", "1", "--inits", "he"]],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("threads", [str(1 << 31), str(MAX_INT)])
def test_threads_beyond_c_int_is_a_one_line_error(cmd, threads, capsys, tmp_path_factory):
    # torch.set_num_threads overflows before any thread starts, so this is safe to run
    run_case([*cmd, "--threads", threads], capsys, tmp_path_factory)


@pytest.mark.skipif(not _HEURISTIC_OVERCOMMIT, reason="a 4 TiB request is refused at once only under heuristic "
                                                      "overcommit (vm.overcommit_memory=0)")
def test_probe_oversized_width_is_a_one_line_error(capsys, tmp_path_factory):
    run_case(["probe", "--depth", "2", "--width", str(MAX_WIDTH), "--batch", "16", "--activations", "relu",
              "--inits", "he"], capsys, tmp_path_factory)


# ------------------------------------------------------------------------------------ audit

AUDIT_MODEL = "mlp(depth=2,width=8)"
AUDIT_BASE = {"--batch": "16"}
# depth/width of a zoo mlp: tiny (most draws), invalid, or refused at once (depth > MAX_DEPTH; width
# >= 10**6 with depth >= 2 asks for terabytes); a missing one takes the default (depth 20, width 256)
zoo_depth = st.one_of(st.integers(1, 3), st.integers(1, 3), st.none(), safe_depth)
zoo_width = st.one_of(st.integers(1, 16), st.integers(1, 16), st.none(), safe_width)
zoo_activation = st.one_of(st.sampled_from(ACTIVATIONS), st.sampled_from(["RELU", "'tanh'", "None", "3", "[red]relu",
                                                                          ":ok:", "'relu,tanh'"]))


@st.composite
def zoo_spec(draw):
    """``mlp(depth=..,width=..,activation=..)`` or ``mlp(hidden=..)``, mostly tiny and valid."""
    if draw(st.integers(0, 4)) == 0:
        hidden = draw(st.one_of(hidden_s.filter(lambda s: "'" not in s), st.sampled_from(["8;8", "'8,8'", "8", "0"])))
        return f"mlp(hidden={hidden})"
    depth, width = draw(st.tuples(zoo_depth, zoo_width))
    if width is not None and width >= 10 ** 6 and (depth is None or 1 <= depth <= 3):
        depth = 2  # one layer of 10**6 units may fit a large machine; two never do
    if depth is None and width is None:
        width = 8
    args = [f"{k}={v}" for k, v in (("depth", depth), ("width", width)) if v is not None]
    if draw(st.booleans()):
        args.append(f"activation={draw(zoo_activation)}")
    return f"mlp({','.join(draw(st.permutations(args)))})"


MALFORMED_MODELS = ["mlp(", "mlp(depth=2,width=8", "mlp)", "mlp(depth=2,,width=8)", "mlp(depth=2,width=8,)",
                    "mlp(depth=2.5,width=8)", "mlp(depth='2',width=8)", "mlp(depth=true,width=8)",
                    "mlp(depth=None,width=8)", "mlp(depth=2,depth=3)", "mlp(foo=1)", "mlp(hidden=8,depth=2)",
                    "mlp(depth=0,width=8)", "mlp(width=-8,depth=2)", "mlp(depth=1e3,width=8)", "mlp(hidden=())",
                    "mlp(hidden='')", "mlp(hidden=None)", "mlp(hidden=true)", "mlp(hidden='8,,8')",
                    "mlp(activation=':ok:',depth=2,width=8)", "mlp(depth=2,width=8)(x=1)", "mlp(=2)",
                    "mlp(depth=100000,width=8)", "mlp(width=10000000)", f"mlp(depth=2,width={MAX_WIDTH})",
                    f"mlp(hidden='{MAX_WIDTH},{MAX_WIDTH}')"]
UNKNOWN_MODELS = ["MLP", "resnet", "resnet18(depth=2)", "transformer()", "[red]mlp", "mlp[/]", ":ok:", "cnn(width=8)"]
audit_model_s = st.one_of(
    zoo_spec(), zoo_spec(),  # twice: most of these are valid and tiny
    st.sampled_from(MALFORMED_MODELS), st.sampled_from(UNKNOWN_MODELS),
    st.sampled_from(SAFE_MODELS + ["nonexistent_mod_xyz:factory", "os:no_such_factory_xyz", "initlab:no_such_xyz"]),
    # arbitrary text: never 'module:factory' (that would import arbitrary modules), never a bare mlp
    # spec (the strategies above draw those with safe sizes)
    texts().filter(lambda s: not re.fullmatch(r"\s*[\w.]+\s*:\s*[\w.]+\s*", s) and "mlp" not in s),
)
# an input shape is refused when batch × size > 2**28, so sizes above that are refused at any batch
shape_item = st.one_of(st.integers(1, 16), st.integers(max_value=0), st.integers(min_value=(1 << 28) + 1),
                       st.sampled_from(FIXED_INTS).filter(lambda n: not 17 <= n <= 1 << 28))
valid_shape = st.sampled_from(["8", "64", "1,8,8", "2,4", "3,4,4", "16", " 8 ", "1"])
input_shape_s = st.one_of(
    valid_shape, valid_shape,  # twice: about half the draws run
    int_list(shape_item),
    st.sampled_from(["0", "8,0", "-1", "8,-8", "8,,8", ",8", "8,", "", " ", "1.5", "8x8", "(8,8)", "1e3", "٨",
                     str(1 << 28 + 1), "65536,65536", str(MAX_INT), str(1 << 64), str(10 ** 30), "1," * 70 + "8"]),
    texts(12),
)
AUDIT_OPTIONS = {
    "--inits": st.one_of(inits_s, st.sampled_from(["auto", "auto,he", "he,auto", "zero,auto", "orthogonal", "auto(x=1)",
                                                   "none", "auto,auto"])),
    "--dataset": dataset_s,  # never mnist/fashion-mnist: audit has no --data-dir and would look them up
    "--input-shape": input_shape_s,
    # classes >= 10**13 need >= 360 TB of logits and weights: refused by the estimate on any machine
    "--classes": num_text(ints(forbid=(17, 10 ** 13 - 1), valid=st.integers(1, 16))),
    # a batch above 2**28 is refused with any --input-shape; digits caps the batch at its 1437 examples
    "--batch": num_text(ints(forbid=(33, 1 << 28), valid=st.integers(1, 32))),
    "--seed": num_text(ints()),
    "--out": relative_out(),
}


@st.composite
def audit_case(draw):
    """MODEL and one or two options drawn from their strategies, the rest tiny and valid."""
    names = draw(st.lists(st.sampled_from(["MODEL", *AUDIT_OPTIONS]), min_size=1, max_size=2, unique=True))
    model = draw(audit_model_s) if "MODEL" in names else AUDIT_MODEL
    return model, {name: draw(AUDIT_OPTIONS[name]) for name in names if name != "MODEL"}


@settings(max_examples=60, **SETTINGS)
@given(case=audit_case())
def test_audit_any_options_exit_0_or_2(case, capsys, tmp_path_factory):
    model, over = case
    r = run_case(["audit", model, *build(AUDIT_BASE, over)], capsys, tmp_path_factory)
    if r.rc == 0 and "--out" in over and model.strip() != "--help":
        # the output folder is echoed as a path ('a//b' is 'a/b'), control characters escaped, never as markup
        shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(Path(over["--out"])))
        assert "".join(shown.split()) in "".join(r.out.split())


@settings(max_examples=20, **SETTINGS)
@given(where=st.sampled_from(["MODEL", "--inits", "--dataset"]), token=markup_token)
def test_audit_user_text_is_echoed_verbatim_never_markup(where, token, capsys, tmp_path_factory):
    argv = ["audit", token, "--batch", "16"] if where == "MODEL" else \
        ["audit", "mlp(depth=2,width=8)", "--batch", "16", where, token]
    err = assert_one_line_error(run_case(argv, capsys, tmp_path_factory))
    assert token in err, f"{argv}: {token!r} not shown verbatim in: {err}"
    assert "🆗" not in err and "😄" not in err and "👍" not in err, err


USER_MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, out="logits"):
        super().__init__()
        self.out = out
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.out == "raise" or (self.out == "raise_later" and self.calls > 1):
            raise RuntimeError("[red]boom:ok:")
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        y = self.fc3(h)
        return {"scalar": y.sum(), "flat": y.flatten(), "argmax": y.argmax(1), "tuple": (y, h)}.get(self.out, y)


def scalar(): return Net("scalar")
def flat(): return Net("flat")
def argmax(): return Net("argmax")
def raises(): return Net("raise")
def raises_later(): return Net("raise_later")
def pair(): return Net("tuple")
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "auditnets.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("factory, says", [
    ("scalar", "output of shape ()"),  # no batch dimension
    ("flat", "output of shape (160,)"),  # batch and classes flattened together
    ("argmax", "torch.int64"),  # no gradient
    ("raises", "RuntimeError: [red]boom:ok:"),  # raises in forward: named verbatim
])
def test_audit_user_model_with_a_bad_output_or_forward_is_a_one_line_error(factory, says, user_models, capsys):
    r = invoke(["audit", f"auditnets:{factory}", "--batch", "16", "--out", str(user_models / "out")], capsys)
    assert_contract(r)
    err = assert_one_line_error(r)
    assert says in err and f"auditnets:{factory}" in err, err
    assert not (user_models / "out").exists()


def test_audit_user_model_returning_a_tuple_runs(user_models, capsys):
    r = invoke(["audit", "auditnets:pair", "--batch", "16", "--out", str(user_models / "out")], capsys)
    assert_contract(r)
    assert r.rc == 0, r.err
    assert "recommended: " in r.out and (user_models / "out" / "summary.csv").exists()


@pytest.mark.parametrize("shape, model", [("1,8,8", AUDIT_MODEL), ("64", "auditnets:pair")])
def test_audit_with_input_shape_runs(shape, model, user_models, capsys):
    r = invoke(["audit", model, "--input-shape", shape, "--classes", "3", "--batch", "8", "--inits", "auto,he",
                "--out", str(user_models / "out")], capsys)
    assert_contract(r)
    assert r.rc == 0, r.err
    assert "examplebatchof8" in "".join(r.out.split())


def test_audit_user_model_failing_after_its_first_call_reports_it_per_scheme(user_models, capsys):
    # the model runs once for the example, then under each scheme: each failure is that scheme's error
    r = invoke(["audit", "auditnets:raises_later", "--batch", "16", "--inits", "he,xavier",
                "--out", str(user_models / "out")], capsys)
    assert_contract(r)
    assert r.rc == 0, r.err
    summary = (user_models / "out" / "summary.csv").read_text()
    assert summary.count("fails under") == 2 and "[red]boom:ok:" in summary, summary


@pytest.fixture
def no_model_build(monkeypatch):
    """Make building the zoo MLP an error, so a request that is not refused cannot allocate terabytes."""
    import initlab.models

    def refuse(*a, **k):
        raise _WouldTrain("the request was not refused: the model would be built")

    monkeypatch.setattr(initlab.models, "mlp", refuse)


@pytest.mark.parametrize("argv, says", [
    (["mlp(depth=100000,width=8)"], "depth must be a positive integer up to 10000"),
    (["mlp(width=10000000)"], f"width must be a positive integer up to {MAX_WIDTH}"),
    (["mlp(depth=2.5,width=8)"], "depth must be a positive integer"),  # was a TypeError traceback
    (["mlp(depth='2',width=8)"], "depth must be a positive integer"),  # was a TypeError traceback
    (["mlp(depth=true,width=8)"], "depth must be a positive integer"),  # was read as depth 1
    (["mlp(depth=2,width=8", ], "malformed model"),
], ids=["depth-1e5", "width-1e7", "depth-float", "depth-str", "depth-bool", "malformed"])
def test_audit_bad_zoo_model_is_refused_fast(argv, says, no_model_build, capsys, tmp_path_factory):
    r = run_case(["audit", *argv], capsys, tmp_path_factory)
    err = assert_one_line_error(r)
    assert says in err and r.seconds < 5, (err, r.seconds)


@pytest.mark.parametrize("argv", [
    [f"mlp(depth=2,width={MAX_WIDTH})"],
    [f"mlp(width={MAX_WIDTH})"],  # default depth 20
    [f"mlp(hidden='{MAX_WIDTH},{MAX_WIDTH}')"],
    ["mlp(depth=1,width=256)", "--input-shape", str(1 << 28), "--batch", "1"],
    ["mlp(depth=1,width=8)", "--input-shape", "8", "--classes", str(MAX_INT)],
], ids=["width-max", "width-max-depth-20", "hidden-max", "input-2^28", "classes-max"])
def test_oversized_audit_is_refused_fast_with_estimate(argv, no_model_build, capsys, tmp_path_factory):
    r = run_case(["audit", *argv], capsys, tmp_path_factory)
    err = assert_one_line_error(r)
    assert r.seconds < 5, f"refusal took {r.seconds:.1f} s"
    assert "needs" in err and BYTE_UNIT.search(err), err
