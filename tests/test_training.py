"""lit_gpt/training.py: the chunked head cross-entropy against autograd."""

import pytest
import torch

from lit_gpt import training


@pytest.mark.parametrize("chunk_elements", [1 << 22, 700])
def test_head_cross_entropy_equals_autograd(chunk_elements):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    head = head.double()
    targets = torch.randint(0, 50, (37,))
    targets[::5] = -100
    loss = training.head_cross_entropy(hidden, head, targets, chunk_elements=chunk_elements)
    (3 * loss).backward()
    ref_hidden = hidden.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(head(ref_hidden), targets, ignore_index=-100, reduction="sum")
    (3 * ref).backward()
    torch.testing.assert_close(loss, ref.float())
    torch.testing.assert_close(hidden.grad, ref_hidden.grad)
    # no gradient wanted (validation): the same loss
    with torch.no_grad():
        torch.testing.assert_close(training.head_cross_entropy(hidden, head, targets), ref.float())
    # a trainable head goes through autograd, and gets its gradient
    head.weight.requires_grad_(True)
    training.head_cross_entropy(hidden.detach(), head, targets).backward()
    assert head.weight.grad is not None
