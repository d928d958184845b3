import pytest
import torch
import torch.nn.functional as F

from rsb_composer.config import LossConfig
from rsb_composer.losses import build_loss


def test_bce_thresholds_mixed_targets_like_the_paper():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    # A mixup of class 1 (weight 0.7) and class 4 (0.3), and a near-pure sample with a 0.15 second class.
    mixed = torch.zeros(4, 6)
    mixed[0, 1], mixed[0, 4] = 0.7, 0.3
    mixed[1, 2], mixed[1, 5] = 0.85, 0.15
    mixed[2, 0] = 1.0
    mixed[3, 3], mixed[3, 1] = 0.5, 0.5
    expected_targets = torch.zeros(4, 6)
    expected_targets[0, [1, 4]] = 1  # both above 0.2
    expected_targets[1, 2] = 1  # 0.15 is below the threshold: dropped
    expected_targets[2, 0] = 1
    expected_targets[3, [1, 3]] = 1
    # Independent reference: per-element binary cross-entropy, averaged over all elements (timm's default).
    probs = torch.sigmoid(logits)
    reference = -(expected_targets * probs.log() + (1 - expected_targets) * (1 - probs).log()).mean()
    loss = build_loss(LossConfig(name="bce", target_threshold=0.2))(logits, mixed)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_bce_accepts_class_indices_and_sum_classes_scales_like_composer():
    logits = torch.randn(3, 5)
    labels = torch.tensor([0, 4, 2])
    one_hot = F.one_hot(labels, 5).float()
    mean_loss = build_loss(LossConfig(name="bce"))(logits, labels)
    summed = build_loss(LossConfig(name="bce", sum_classes=True))(logits, labels)
    assert mean_loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, one_hot).item(), rel=1e-5)
    assert summed.item() == pytest.approx(mean_loss.item() * 5, rel=1e-5)


def test_cross_entropy_takes_soft_targets():
    logits = torch.randn(2, 3)
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0]])
    expected = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert build_loss(LossConfig())(logits, soft).item() == pytest.approx(expected.item(), rel=1e-5)


# Composer's soft_cross_entropy says so when mixed targets sum to a hair under 1, as float rounding leaves them.
COMPOSERS_WARNING = "Some targets have less than 1 total probability"


def test_cross_entropy_is_composers_without_reading_the_targets():
    """Bit for bit Composer's soft_cross_entropy, including its renormalisation of targets summing under 1."""
    import warnings

    from composer.loss import soft_cross_entropy as composers

    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    a, b = F.one_hot(torch.randint(0, 10, (8,)), 10).float(), F.one_hot(torch.randint(0, 10, (8,)), 10).float()
    mixed = (0.7 * a + 0.3 * b) * 0.999  # a hair under 1 each, as float rounding of mixed targets leaves them
    ours = build_loss(LossConfig())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", COMPOSERS_WARNING, UserWarning, "composer")
        expected = composers(logits, mixed)
    assert torch.equal(ours(logits, mixed), expected)
    labels = torch.randint(0, 10, (8,))
    assert torch.equal(ours(logits, labels), composers(logits, labels))
    # The other arguments algorithms pass (selective backprop scores each image with reduction="none").
    weight = torch.rand(10)
    for kwargs in ({"reduction": "none"}, {"reduction": "sum"}, {"weight": weight}, {"weight": weight,
                                                                                       "reduction": "none"}):
        for targets in (mixed, labels):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", COMPOSERS_WARNING, UserWarning, "composer")
                expected = composers(logits, targets, **kwargs)
            assert torch.equal(ours(logits, targets, **kwargs), expected), kwargs
