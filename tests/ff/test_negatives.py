import pytest
import torch

from ffops import ff


def test_random_wrong_labels_never_the_true_one_and_cover_all_others():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20000,), generator=g)
    wrong = ff.random_wrong_labels(y, 10, generator=g)
    assert not bool((wrong == y).any())
    assert int(wrong.min()) >= 0 and int(wrong.max()) <= 9
    # uniform over the 9 wrong labels: each (true, wrong) pair about 20000 / 90 times
    pairs = torch.bincount(y * 10 + wrong, minlength=100).view(10, 10)
    off = pairs[~torch.eye(10, dtype=torch.bool)].float()
    assert off.min() > 0.7 * 20000 / 90 and off.max() < 1.3 * 20000 / 90


def test_random_wrong_labels_is_deterministic_under_a_generator():
    y = torch.randint(0, 5, (100,))
    a = ff.random_wrong_labels(y, 5, generator=torch.Generator().manual_seed(3))
    b = ff.random_wrong_labels(y, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_hard_wrong_labels_never_the_true_one_even_when_it_dominates():
    y = torch.randint(0, 4, (5000,))
    scores = torch.randn(5000, 4)
    scores[torch.arange(5000), y] = 1e4  # the model is sure of the true label
    wrong = ff.hard_wrong_labels(scores, y, generator=torch.Generator().manual_seed(0))
    assert not bool((wrong == y).any())


def test_hard_wrong_labels_follow_the_softmax_without_the_true_label():
    n = 40000
    scores = torch.tensor([[2.0, 0.0, 1.0, -1.0]]).expand(n, 4)
    y = torch.zeros(n, dtype=torch.long)  # true label 0 (the most likely one) is excluded
    wrong = ff.hard_wrong_labels(scores, y, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(wrong, minlength=4).float() / n
    p = torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0)
    assert freq[0] == 0
    assert torch.allclose(freq[1:], p, atol=0.01)
    # temperature flattens the distribution
    hot = ff.hard_wrong_labels(scores, y, temperature=100.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(torch.bincount(hot, minlength=4).float()[1:] / n, torch.full((3,), 1 / 3), atol=0.02)


def test_gumbel_noise_is_finite_and_sliceable():
    noise = ff.gumbel_noise((1000, 10), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(noise).all()
    assert abs(float(noise.mean()) - 0.5772) < 0.05  # Euler-Mascheroni: the Gumbel mean
    scores, y = torch.randn(1000, 10), torch.randint(0, 10, (1000,))
    full = ff.hard_wrong_labels(scores, y, noise=noise)
    half = ff.hard_wrong_labels(scores[500:], y[500:], noise=noise[500:])
    assert torch.equal(full[500:], half)  # the sample of a row does not depend on the batch split


def test_hybrid_mask_has_large_smooth_regions():
    g = torch.Generator().manual_seed(0)
    mask = ff.hybrid_mask(64, (28, 28), blur_steps=6, generator=g).float()
    bits = ff.hybrid_mask(64, (28, 28), blur_steps=0, generator=g).float()

    def agreement(m):  # how often horizontal neighbours agree
        return float((m[:, :, 1:] == m[:, :, :-1]).float().mean())

    assert agreement(bits) < 0.6  # raw random bits (0 blur steps): about 0.5
    assert agreement(mask) > 0.85
    assert 0.3 < float(mask.mean()) < 0.7  # both images contribute


def test_hybrid_images_mix_two_different_images_pixelwise():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(8)[:, None].float().expand(8, 36) + torch.rand(8, 36) * 0.1
    partner = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    mask = ff.hybrid_mask(8, (6, 6), generator=g)
    hyb = ff.hybrid_images(images, partner=partner, mask=mask)
    m = mask.reshape(8, 36)
    assert torch.equal(hyb[m], images[m])
    assert torch.equal(hyb[~m], images[partner][~m])
    # default partners: a derangement (never the image itself); square shape inferred
    big = torch.arange(8)[:, None].float().expand(8, 784) + torch.rand(8, 784) * 0.1
    for seed in range(5):
        out = ff.hybrid_images(big, generator=torch.Generator().manual_seed(seed))
        src = out.floor()  # which image each pixel came from
        assert out.shape == big.shape
        own = src == torch.arange(8)[:, None].float()
        assert not own.all(1).any()  # part of every hybrid comes from another image
        # each hybrid has exactly one partner, and it is not the image itself
        for i in range(8):
            assert len(set(src[i][~own[i]].tolist())) == 1


def test_negatives_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ff.random_wrong_labels(torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="temperature"):
        ff.hard_wrong_labels(torch.randn(2, 3), torch.tensor([0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match="image_shape"):
        ff.hybrid_images(torch.rand(4, 30))
    with pytest.raises(ValueError, match="partner"):
        ff.hybrid_images(torch.rand(3, 4), (2, 2), partner=torch.tensor([0, 2, 1]))
