"""How a downstream project tests its own kernel with liger_testing alone (no liger_kernel import).

The liger_testing pytest plugin (installed with the package) provides the `device` fixture and turns
Triton's interpreter on when there is no GPU, before this module imports the kernel.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st
from my_kernels import scaled_softmax

from liger_testing import assert_close, assert_close_to_reference
from liger_testing import strategies as lst


@given(data=st.data())
def test_matches_pytorch(device, data):
    dtype = data.draw(lst.dtypes())
    shape = data.draw(lst.shapes(min_dims=1, max_dims=2, max_side=4, last_dim=lst.dims(1, 700)))
    x = data.draw(lst.tensors(shape, dtype, device=device, contiguous=data.draw(st.booleans())))
    golden = torch.softmax(x.double() * 0.5, dim=-1)
    reference = torch.softmax(x.float() * 0.5, dim=-1).to(dtype)
    assert_close_to_reference(scaled_softmax(x, 0.5), reference, golden)


def test_rows_sum_to_one(device):
    x = torch.randn(3, 100, device=device)
    assert_close(scaled_softmax(x).sum(-1), torch.ones(3, device=device))


# Added after `python -m liger_testing.mutate my_kernels.py --tests test_my_kernels.py` showed two
# mutants surviving the tests above (see README.md).


def test_large_logits_do_not_overflow(device):
    """Without subtracting the row max, exp overflows to inf and the result is NaN."""
    x = 100.0 + torch.randn(3, 50, device=device)
    assert_close(scaled_softmax(x), torch.softmax(x, dim=-1))


def test_rows_of_a_wider_buffer(device):
    """A column slice keeps its row stride; the kernel must read rows with it, not with the row length."""
    x = torch.randn(4, 2 * 60, device=device)[:, :60]
    assert x.stride(0) == 120
    assert_close(scaled_softmax(x), torch.softmax(x, dim=-1))
