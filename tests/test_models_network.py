"""The 2.5D network: shapes, masks for missing views, shared vs per-family encoders."""

import pytest
import torch

from rsna_lumbar.models.network import create_model

VIEWS = {"spinal": ("sag_t2", "axial"), "foraminal": ("sag_t1",), "subarticular": ("axial",)}


def _inputs(b=4, s=3, size=32):
    mask = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)[:b]
    return {
        "spinal": (torch.randn(b, 2, s, size, size), mask),
        "foraminal": (torch.randn(b, 1, s, size, size), torch.ones(b, 1, dtype=torch.bool)),
    }


@pytest.mark.parametrize("spec,shared", [("tiny", False), ("tiny", True), ("tiny_gru", False)])
def test_forward_backward_with_missing_views(spec, shared):
    torch.manual_seed(0)
    model = create_model(spec, ["spinal", "foraminal"], VIEWS, shared=shared).eval()
    inputs = _inputs()
    logits = model(inputs)
    assert logits["spinal"].shape == (4, 3) and logits["foraminal"].shape == (4, 3)
    assert all(torch.isfinite(v).all() for v in logits.values())
    # The pixels of a masked-out view must not matter.
    x, mask = inputs["spinal"]
    changed = x.clone()
    changed[1, 1] = 100.0  # sample 1 lacks view 1 (axial)
    changed[2, 0] = -100.0  # sample 2 lacks view 0 (sag_t2)
    again = model({"spinal": (changed, mask), "foraminal": inputs["foraminal"]})
    torch.testing.assert_close(again["spinal"], logits["spinal"])
    # … while a present view's pixels do.
    changed[0, 0] += 1.0
    assert not torch.allclose(model({"spinal": (changed, mask)})["spinal"][0], logits["spinal"][0])
    model.train()
    loss = sum(v.sum() for v in model(inputs).values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_separate_models_do_not_share_an_encoder():
    separate = create_model("tiny", ["spinal", "foraminal"], VIEWS, shared=False)
    shared = create_model("tiny", ["spinal", "foraminal"], VIEWS, shared=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) > count(shared) * 1.5
    with pytest.raises(KeyError, match="subarticular"):
        shared({"subarticular": (torch.randn(1, 1, 3, 32, 32), torch.ones(1, 1, dtype=torch.bool))})


def test_sample_without_any_view_gives_finite_logits():
    model = create_model("tiny", ["spinal"], VIEWS).eval()
    x = torch.randn(2, 2, 3, 32, 32)
    mask = torch.tensor([[0, 0], [1, 0]], dtype=torch.bool)
    assert torch.isfinite(model({"spinal": (x, mask)})["spinal"]).all()


def test_ordinal_head_is_a_cumulative_link():
    """log-probabilities that sum to one, equal σ(s−c₁) − σ(s−c₂) for Moderate, stay finite for
    extreme scores, and move mass monotonically towards Severe as the score grows."""
    from rsna_lumbar.models.ordinal import OrdinalClassifier

    torch.manual_seed(0)
    head = OrdinalClassifier(4)
    features = torch.randn(64, 4) * 40  # scores far beyond the cut-points on both sides
    log_p = head(features)
    assert log_p.shape == (64, 3) and torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(64))
    s = head.score(features).squeeze(-1)
    c1 = head.first_cut
    c2 = c1 + torch.nn.functional.softplus(head.gap) + 1e-4
    moderate = torch.sigmoid(s - c1) - torch.sigmoid(s - c2)
    torch.testing.assert_close(log_p[:, 1].exp(), moderate, atol=1e-6, rtol=1e-4)
    order = s.argsort()
    p = log_p.exp()[order]
    assert (p[1:, 0] <= p[:-1, 0] + 1e-6).all() and (p[1:, 2] >= p[:-1, 2] - 1e-6).all()


def test_ordinal_head_from_config_reaches_the_network_and_model_json():
    from rsna_lumbar.models.ordinal import OrdinalClassifier
    from rsna_lumbar.training.config import ConfigError, load_config
    from rsna_lumbar.models.folder import build_network
    from rsna_lumbar.training.loop import model_description

    config = load_config("cpu", ["model.head=ordinal", "data.families=[spinal]"])
    description = model_description(config)
    assert description["spec"]["head"] == "ordinal"
    net = build_network(description)
    assert isinstance(net.heads["spinal"].classifier, OrdinalClassifier)
    x = torch.randn(2, 2, 3, 48, 48)
    out = net({"spinal": (x, torch.ones(2, 2, dtype=torch.bool))})["spinal"]
    torch.testing.assert_close(torch.softmax(out, -1), out.exp())  # log-probs act as logits
    old = {**description, "spec": {k: v for k, v in description["spec"].items() if k != "head"}}
    assert not isinstance(build_network(old).heads["spinal"].classifier, OrdinalClassifier)
    with pytest.raises(ConfigError, match="model.head"):
        load_config("cpu", ["model.head=coral"])
