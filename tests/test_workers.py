"""A population split into parts trained side by side by worker threads (initlab.training.workers).

The parts must give what one population gives: each model's computation does not depend on the
other models of its population (every op is per model, bmm's batches are independent), nor, on
these shapes, on the intra-op thread count. The MLP engine is checked bit for bit (step losses,
epoch rows, final parameters), also with models that diverge; the torch.func engine bit for bit
too on a small CNN (grouped convolutions of 2 and 4 groups here), which the engine tests would
only require up to their tolerances. Callbacks run on the calling thread, with its thread count,
in the order one population uses.
"""
import threading

import numpy as np
import pytest
import torch
from torch import nn

from initlab.data import Dataset
from initlab.experiments.compare import CompareSpec, build_model
from initlab.models import mlp
from initlab.schemes import parse_scheme
from initlab.training.func_engine import FuncPopulation, train_func_population
from initlab.training.loop import TrainConfig
from initlab.training.mlp_engine import Population, check_workers, train_population
from initlab.training.workers import part_sizes, train_side_by_side


@pytest.fixture
def small(digits):
    return type(digits)(name="digits", x_train=digits.x_train[:320], y_train=digits.y_train[:320],
                        x_test=digits.x_test, y_test=digits.y_test, num_classes=10, image_shape=digits.image_shape)


def test_part_sizes():
    assert part_sizes(12, 2) == [6, 6]
    assert part_sizes(5, 2) == [3, 2]
    assert part_sizes(1, 2) == [1]
    assert part_sizes(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match="at least one model"):
        part_sizes(0, 2)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="workers must be a positive integer"):
            check_workers(bad)


def record(trainer, **kw):
    """Results, every callback in order (with the thread count it ran with) and the final modules."""
    calls, modules = [], {}
    threads = torch.get_num_threads()

    def on_epoch(k, row, get):
        modules[k] = get()
        calls.append(("epoch", row["epoch"], k, row["diverged"], torch.get_num_threads() == threads,
                      threading.current_thread() is threading.main_thread()))

    res = trainer(on_epoch=on_epoch, after_epoch=lambda e: calls.append(("after", e)),
                  on_steps=lambda k, losses, step0: calls.append(("steps", k, step0, losses.tobytes())), **kw)
    return res, calls, modules


def assert_identical(a, b):
    (ra, ca, ma), (rb, cb, mb) = a, b
    assert ca == cb
    for x, y in zip(ra, rb):
        assert x.step_losses.tobytes() == y.step_losses.tobytes()
        assert repr(x.epochs) == repr(y.epochs)
        assert (x.diverged, x.diverged_epoch, x.diverged_step, x.diverge_reason) == \
               (y.diverged, y.diverged_epoch, y.diverged_step, y.diverge_reason)
    for k in ma:
        sa, sb = ma[k].state_dict(), mb[k].state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sa), k


def test_mlp_engine_split_across_workers_gives_the_same_bits(small):
    """Five models (parts of 3 and 2), two of them diverging at lr 1e4 in different parts."""
    torch.set_num_threads(2)
    spec = CompareSpec(dataset="digits", hidden=(32,))
    runs = [("random", 0), ("he", 1), ("xavier", 2), ("random", 3), ("he", 4)]
    configs = [TrainConfig(epochs=3, lr=lr) for lr in (0.05, 1e4, 0.05, 1e4, 0.1)]

    def trainer(**kw):
        models = [build_model(spec, small, parse_scheme(i), s, "cpu") for i, s in runs]
        return train_population(models, small, configs, [s for _, s in runs], **kw)

    one = record(trainer)
    split = record(trainer, workers=2)
    assert [r.diverged for r in split[0]] == [False, True, False, True, False]
    assert_identical(one, split)
    assert all(c[4] and c[5] for c in split[1] if c[0] == "epoch")  # callbacks: calling thread, its thread count
    assert torch.get_num_threads() == 2
    three = record(trainer, workers=3)  # parts of 2, 2, 1
    assert_identical(one, three)


def test_mlp_engine_split_with_momentum_and_adam(small):
    spec = CompareSpec(dataset="digits", hidden=(16, 16), activation="tanh")
    runs = [("he", 0), ("xavier", 1), ("he", 2), ("xavier", 3)]
    for cfg in (TrainConfig(epochs=2, lr=0.05, momentum=0.9), TrainConfig(epochs=2, optimizer="adam", lr=1e-3)):
        def trainer(cfg=cfg, **kw):
            models = [build_model(spec, small, parse_scheme(i), s, "cpu") for i, s in runs]
            return train_population(models, small, cfg, [s for _, s in runs], **kw)

        assert_identical(record(trainer), record(trainer, workers=2))


def toy_images(seed=0, n_train=192, n_test=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, 8, 8, generator=g)
    y = (x.flatten(1) @ torch.randn(64, 4, generator=g)).argmax(1)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4, (8, 8))


def small_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(256, 4))


def test_func_engine_split_across_workers_gives_the_same_bits():
    data = toy_images()
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=32)

    def trainer(**kw):
        models = [small_cnn(k) for k in range(6)]
        return train_func_population(models, data, cfg, list(range(6)), **kw)

    assert_identical(record(trainer), record(trainer, workers=2))


def test_parts_evaluate_in_the_chunks_of_the_whole():
    """A part sizes its evaluation chunks for the whole population (eval_models), so the parts'
    chunks, and the summation order of the test loss, are those of one population."""
    data = toy_images()
    whole = FuncPopulation([small_cnn(k) for k in range(6)], TrainConfig(), list(range(6)), "cpu")
    part = FuncPopulation([small_cnn(k) for k in range(3)], TrainConfig(), list(range(3)), "cpu")
    import initlab.training.func_engine as fe

    old = fe.EVAL_BYTES
    try:
        fe.EVAL_BYTES = 1 << 16  # small enough that the chunk depends on the number of models
        assert part._eval_chunk(data.x_test) > whole._eval_chunk(data.x_test)
        part.eval_models = 6
        assert part._eval_chunk(data.x_test) == whole._eval_chunk(data.x_test)
    finally:
        fe.EVAL_BYTES = old


def test_workers_run_with_one_intra_op_thread_and_side_by_side(small):
    """Each part steps on its own thread with one intra-op thread, at the same time as the other:
    both first steps meet at a barrier (run one after the other, it would time out)."""
    torch.set_num_threads(2)
    seen = []
    meet = threading.Barrier(2, timeout=10)

    class Watched(Population):
        def _step(self, *args):
            if args[3] == 1:  # the first step
                meet.wait()
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            return super()._step(*args)

    models = [mlp(64, (16,), 10) for _ in range(4)]
    pops = [Watched(models[:2], TrainConfig(epochs=1), [0, 1]), Watched(models[2:], TrainConfig(epochs=1), [2, 3])]
    res = train_side_by_side(pops, small)
    assert len(res) == 4 and all(len(r.step_losses) == 5 for r in res)
    names = {name for name, _ in seen}
    assert len(names) == 2 and threading.main_thread().name not in names
    assert {t for _, t in seen} == {1}
    assert torch.get_num_threads() == 2


def test_an_error_in_one_part_stops_the_others_and_is_raised(small):
    steps = {"bad": 0, "good": 0}

    class Failing(Population):
        def _step(self, *args):
            steps["bad"] += 1
            if steps["bad"] == 2:
                raise RuntimeError("boom")
            return super()._step(*args)

    class Counting(Population):
        def _step(self, *args):
            steps["good"] += 1
            return super()._step(*args)

    models = [mlp(64, (16,), 10) for _ in range(2)]
    big = type(small)(name="digits", x_train=small.x_train.repeat(40, 1), y_train=small.y_train.repeat(40),
                      x_test=small.x_test, y_test=small.y_test, num_classes=10, image_shape=small.image_shape)
    cfg = TrainConfig(epochs=1, batch_size=8)  # 1600 steps per epoch
    with pytest.raises(RuntimeError, match="boom"):
        train_side_by_side([Failing(models[:1], cfg, [0]), Counting(models[1:], cfg, [1])], big)
    assert steps["good"] < 1600  # stopped before the end of its epoch
    assert np.isfinite(steps["good"])


def test_an_interrupt_in_a_callback_ends_the_worker_threads(small):
    models = [mlp(64, (16,), 10) for _ in range(4)]
    pops = [Population(models[:2], TrainConfig(epochs=3), [0, 1]), Population(models[2:], TrainConfig(epochs=3), [2, 3])]
    epochs = []

    def on_epoch(k, row, get):
        epochs.append(row["epoch"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_side_by_side(pops, small, on_epoch=on_epoch)
    assert epochs == [1]
    assert not [t for t in threading.enumerate() if t.name.startswith("initlab-worker")]
