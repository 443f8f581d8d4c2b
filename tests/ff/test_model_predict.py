import pytest
import torch

from ffops import ff
from ffops.nn import FFLinear


def test_ffnet_builds_fflinear_layers_from_sizes():
    net = ff.FFNet([20, 16, 8, 8], num_classes=4)
    assert len(net) == 3 and all(isinstance(layer, FFLinear) for layer in net.layers)
    assert [(l.in_features, l.out_features) for l in net.layers] == [(20, 16), (16, 8), (8, 8)]
    assert [l.threshold for l in net.layers] == [2.0, 2.0, 2.0]
    assert [l.threshold for l in ff.FFNet([20, 16, 8], goodness="sum").layers] == [16.0, 8.0]
    assert [l.threshold for l in ff.FFNet([20, 16, 8], threshold=[1.0, 3.0]).layers] == [1.0, 3.0]
    rebuilt = ff.FFNet.from_config(net.config)
    assert rebuilt.config == net.config


@pytest.mark.parametrize(
    "sizes, match", [([784], "at least one layer"), ([784, 0], "positive ints"), ("784,500", "list of ints")]
)
def test_ffnet_rejects_bad_sizes(sizes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ff.FFNet(sizes)
    with pytest.raises(ValueError, match="goodness"):
        ff.FFNet([10, 5], goodness="max")
    with pytest.raises(ValueError, match="threshold has 1 entries for 2 layers"):
        ff.FFNet([10, 5, 5], threshold=[1.0])


def test_inference_chain_detaches_and_passes_sumsq():
    net = ff.FFNet([12, 10, 6], num_classes=3)
    x = torch.rand(5, 12)
    outs = net(x)
    assert len(outs) == 2 and all(o.loss is None and not o.h.requires_grad for o in outs)
    assert torch.allclose(outs[0].sumsq, outs[0].h.square().sum(1), rtol=1e-5)
    assert torch.allclose(net.layer_goodness(1, outs[1]), outs[1].h.square().mean(1), rtol=1e-5)


@pytest.mark.parametrize("on_value", [1.0, "max"])
@pytest.mark.parametrize("norm", ["l2", "rms"])
def test_goodness_per_label_matches_one_pass_per_label(on_value, norm):
    torch.manual_seed(0)
    net = ff.FFNet([30, 20, 16, 12], num_classes=5, norm=norm)
    x = torch.rand(9, 30)
    fast = ff.goodness_per_label(net, x, on_value=on_value, chunk_size=4)
    plain = ff.goodness_per_label(net, x, on_value=on_value, fast_first_layer=False)
    assert fast.shape == (9, 5)
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
    for c in range(5):  # the definition: sum over layers of sign * (G - theta), label c overlaid
        outs = net(ff.overlay_labels(x, torch.full((9,), c), 5, on_value))
        ref = sum(net.layer_logit(i, net.layer_goodness(i, o).double()) for i, o in enumerate(outs))
        assert torch.allclose(fast[:, c], ref, atol=1e-5, rtol=1e-5)
        skip = sum(net.layer_logit(i, net.layer_goodness(i, o).double()) for i, o in enumerate(outs) if i > 0)
        assert torch.allclose(
            ff.goodness_per_label(net, x, on_value=on_value, skip_first=True)[:, c],
            skip,
            atol=1e-5,
            rtol=1e-5,
        )
        first2 = sum(net.layer_logit(i, net.layer_goodness(i, o).double()) for i, o in enumerate(outs[:2]))
        assert torch.allclose(
            ff.goodness_per_label(net, x, on_value=on_value, num_layers=2)[:, c], first2, atol=1e-5, rtol=1e-5
        )
    assert torch.equal(ff.predict(net, x), fast.argmax(1))


def test_label_scores_are_summed_in_float64():
    """Near-ties are decided as float64 decides them: the per-layer goodness is summed in float64, so a
    label whose terms differ below float32's resolution of the sum still wins."""
    torch.manual_seed(0)
    net = ff.FFNet([30, 20, 16], num_classes=4)
    x = torch.rand(5, 30)
    layer_g = ff.layer_goodness_per_label(net, x)
    assert layer_g.dtype == torch.float64
    expected = sum(net.layer_logit(i, layer_g[i]) for i in range(len(net.layers)))
    scores = ff.goodness_per_label(net, x)
    assert scores.dtype == torch.float64 and torch.equal(scores, expected)
    # two labels whose float32 sums tie: 1e8 + 3 and 1e8 + 2 round to the same float32
    g = torch.tensor([[[1e8, 1e8]], [[3.0, 2.0]]], dtype=torch.float64)
    assert (g[0] + g[1]).argmax(1).item() == 0 and (g[0].float() + g[1].float())[0, 0] == (g[0] + g[1]).float()[0, 1]


def test_ffnet_float64_prediction_is_float64_accurate():
    """A float64 net scores labels in float64 end to end: within 1e-12 of the float64 composition."""
    torch.manual_seed(0)
    net = ff.FFNet([30, 20, 16], num_classes=4).double()
    x = torch.rand(6, 30, dtype=torch.float64)
    scores = ff.goodness_per_label(net, x)
    for c in range(4):
        outs = net(ff.overlay_labels(x, torch.full((6,), c), 4, 1.0))
        assert all(o.h.dtype == torch.float64 and o.sumsq.dtype == torch.float64 for o in outs)
        ref = sum(net.layer_logit(i, net.layer_goodness(i, o)) for i, o in enumerate(outs))
        assert ((scores[:, c] - ref).abs() / ref.abs().clamp(min=1e-300)).max() <= 1e-12


def test_goodness_prediction_memory_is_bounded_by_chunks():
    net = ff.FFNet([30, 20], num_classes=5)
    x = torch.rand(10, 30)
    seen = []
    hook = net.layers[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    ff.goodness_per_label(net, x, chunk_size=3, fast_first_layer=False)
    hook.remove()
    assert seen == [15, 15, 15, 5]  # chunk_size samples x 5 labels per pass


def test_head_features_are_normalized_neutral_label_activities():
    torch.manual_seed(0)
    net = ff.FFNet([30, 20, 16], num_classes=5, norm="rms")
    x = torch.rand(4, 30)
    feats = ff.head_features(net, x, "all")
    assert feats.shape == (4, 36)
    outs = net(ff.neutral_overlay(x, 5))
    h1 = outs[1].h
    assert torch.allclose(feats[:, 20:], h1 / h1.square().mean(1, keepdim=True).sqrt(), atol=1e-5)
    assert torch.allclose(ff.head_features(net, x, "upper"), feats[:, 20:])
    head = ff.LinearHead.for_model(net, "upper")
    assert head.in_features == 16 and head.out_features == 5 and not head.weight.any()
    with pytest.raises(ValueError, match="head_layers"):
        ff.head_features(net, x, [5])
    with pytest.raises(ValueError, match="needs head="):
        ff.predict(net, x, "head")
