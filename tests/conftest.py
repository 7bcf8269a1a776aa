"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Test tensors are tiny: extra intra-op threads only add synchronisation on a shared 2-core CPU."""
    torch.set_num_threads(1)
    yield
