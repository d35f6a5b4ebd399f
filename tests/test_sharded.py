"""``initialize_sharded``: with real gloo process groups (torch.multiprocessing, CPU), each rank initializes only
its FSDP2 / DTensor shard, and the gathered weights are bit-identical for world sizes 1, 2 and 4 and to the
same call on the unsharded model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from initlab import initialize
from initlab.models.external import library_lm
from initlab.schemes.sharded import initialize_sharded, philox4x32, uniforms

SEED = 11
RULES = {  # every kind of op: uniform, normal, trunc_normal (inverse CDF), blocks, a bias policy, a whole-matrix scheme
    "he": "he",
    "mixed": {"Linear": "xavier_normal", "Embedding": "normal(std=0.02)", "MultiheadAttention": "lecun",
              "head.weight": "orthogonal", "head.bias": "uniform(a=0.1)"},
    "trunc": "trunc_normal(std=0.02)",
    "default": "pytorch_default",
}


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2)
        self.fc = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(3 * d, d)


class Tiny(nn.Module):
    """Dim-0 sizes 50, 36, 12 and 7: uneven FSDP2 chunks at world size 4."""

    def __init__(self, d: int = 12):
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.head = nn.Linear(d, 7)


def full_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {n: (p.full_tensor() if isinstance(p, DTensor) else p.detach()).clone() for n, p in net.named_parameters()}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        results = {}
        for key, rules in RULES.items():
            with torch.device("meta"):
                net = Tiny()
            for block in net.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(net, mesh=mesh)
            net.to_empty(device="cpu")
            initialize_sharded(net, rules, seed=SEED)
            local = net.blocks[0].fc.weight.to_local()
            results[f"fsdp/{key}"] = full_weights(net)
            results[f"fsdp/{key}/local_rows"] = torch.tensor(local.shape[0])
        # plain DTensors sharded by columns (Shard(1)), not by FSDP's rows
        net = Tiny()
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight = nn.Parameter(distribute_tensor(m.weight.detach(), mesh, [Shard(1)]))
        initialize_sharded(net, RULES["mixed"], seed=SEED)
        results["dtensor/mixed"] = full_weights(net)
        if rank == 0:
            torch.save(results, out)
        dist.barrier()  # every rank done with its collectives before any tears gloo down (a rank leaving
        # early has aborted a slower one with "terminate called without an active exception" under load)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    found = {}
    for world in (1, 2, 4):
        d = tmp_path_factory.mktemp(f"ws{world}")
        out = str(d / "weights.pt")
        mp.spawn(_worker, args=(world, str(d / "init"), out), nprocs=world, join=True)
        found[world] = torch.load(out)
    return found


def reference(rules) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return full_weights(initialize_sharded(Tiny(), rules, seed=SEED))


@pytest.mark.parametrize("key", list(RULES))
def test_fsdp2_weights_are_identical_at_every_world_size(gathered, key):
    ref = reference(RULES[key])
    for world, results in gathered.items():
        got = results[f"fsdp/{key}"]
        assert got.keys() == ref.keys()
        bad = [n for n in ref if not torch.equal(ref[n], got[n])]
        assert bad == [], f"world size {world}: {bad}"
        assert int(results[f"fsdp/{key}/local_rows"]) == -(-36 // world)  # each rank held only its rows


def test_column_sharded_dtensors_match_too(gathered):
    ref = reference(RULES["mixed"])
    for world, results in gathered.items():
        got = results["dtensor/mixed"]
        assert [n for n in ref if not torch.equal(ref[n], got[n])] == [], world


def test_statistics_match_initialize():
    # same distributions as initialize (another random stream): std within sampling error on 256×512
    for scheme in ("he", "xavier_normal", "trunc_normal(std=0.02)", "lecun", "orthogonal"):
        a, b = nn.Linear(512, 256), nn.Linear(512, 256)
        initialize_sharded(a, scheme, seed=0)
        initialize(b, scheme, generator=torch.Generator().manual_seed(0))
        wa, wb = a.weight.detach(), b.weight.detach()
        assert float(wa.std()) == pytest.approx(float(wb.std()), rel=0.02), scheme
        assert float(wa.abs().max()) <= float(wb.abs().max()) * 1.3 + 1e-3
    net = nn.Embedding(10, 4, padding_idx=2)
    initialize_sharded(net, "normal(std=1)", seed=0)
    assert torch.equal(net.weight[2], torch.zeros(4))


def test_philox_known_answers_and_uniforms():
    assert [int(x) for x in philox4x32((0, 0, 0, 0), (0, 0))] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = (0xFFFFFFFF,) * 4
    assert [int(x) for x in philox4x32(ones, (0xFFFFFFFF, 0xFFFFFFFF))] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    u = uniforms(0, "w", 0, np.arange(100_000))
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert np.array_equal(uniforms(0, "w", 0, np.arange(10, 20)), u[10:20])  # element i depends on i alone


def test_refusals():
    with pytest.raises(ValueError, match="auto, lsuv"):
        initialize_sharded(nn.Linear(3, 3), "auto", seed=0)
    with torch.device("meta"):
        net = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="meta device.*to_empty"):
        initialize_sharded(net, "he", seed=0)
    with pytest.raises(ValueError, match="'weight' is computed from others"):
        initialize_sharded(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), "he", seed=0)



def test_transformers_gpt2_is_covered_like_initialize():
    pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = dict(n_layer=1, n_embd=64, n_head=2, vocab_size=512, n_positions=64)
        a, b = library_lm("gpt2", **sizes), library_lm("gpt2", **sizes)
        initialize_sharded(a, "he", seed=0)
        initialize(b, "he", generator=torch.Generator().manual_seed(0))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):  # Conv1D weights are (in, out): same fans
        sa, sb = float(pa.detach().std()), float(pb.detach().std())
        assert sa == pytest.approx(sb, rel=0.1, abs=1e-6), name
    assert a.lm_head.weight is a.transformer.wte.weight
