import pytest
import torch

from initlab.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    """The bundled 8x8 digits set, seed normalization, on the CPU."""
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Results must not depend on thread count; tests also run faster without oversubscription.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
