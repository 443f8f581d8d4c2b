import torch

from ffops import ff
from tests.ff.helpers import blobs


def _peak(depth: int, backward: str, width: int = 48, batch: int = 32) -> int:
    torch.manual_seed(0)
    net = ff.FFNet([width] * (depth + 1), num_classes=4)
    trainer = ff.FFTrainer(net, negatives="random", head=False, backward=backward)
    x, y = blobs(batch, features=width)
    return ff.saved_bytes_per_step(trainer, x, y)


def test_saved_for_backward_memory_does_not_grow_with_depth():
    peaks = {d: _peak(d, "per_layer") for d in (2, 4, 8)}
    assert peaks[2] > 0
    assert peaks[2] == peaks[4] == peaks[8], peaks
    # one layer's worth: its input [2B, w] and output [2B, w] in float32 plus O(B) row statistics
    assert 2 * 64 * 48 * 4 <= peaks[2] <= 3 * 64 * 48 * 4
    joint = {d: _peak(d, "joint") for d in (2, 4, 8)}  # one backward for all layers: grows with depth
    assert joint[8] > 3 * joint[2] and joint[2] > peaks[2]


def test_saved_bytes_measurement_leaves_the_trainer_unchanged():
    torch.manual_seed(0)
    trainer = ff.FFTrainer(ff.FFNet([24, 16, 16], num_classes=4))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    x, y = blobs(16)
    assert ff.saved_bytes_per_step(trainer, x, y) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.global_step == 0
