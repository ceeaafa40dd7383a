"""WiSE-FT sweep: the ends are the two models, the start is the zero-shot classifier; classifier accuracy."""

import torch

import mumo
from mumo.data.tokenizer import Tokenizer
from mumo.eval.classify import classifier_accuracy, labelled_tensors
from mumo.eval.wise_ft import wise_ft_sweep
from mumo.models import ImageClassifier
from mumo.run.heads import zero_shot_head, zero_shot_start

NAMES = ("zero", "one")


def _pair():
    clip = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": 300}).eval()
    tokenizer = Tokenizer.train(["a photo of a zero.", "a photo of a one."] * 10, 300)
    tokenizer.context_length = clip.context_length
    tuned = ImageClassifier.from_clip(
        clip, NAMES, zero_shot_head(clip, tokenizer, NAMES, ("a photo of a {}.",))
    )
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return clip, tokenizer, tuned.eval()


def test_the_zero_shot_start_and_the_sweep_ends():
    clip, tokenizer, tuned = _pair()
    start = zero_shot_start(clip, tuned, tokenizer)
    assert start.config == tuned.config
    images = torch.rand(4, 3, 32, 32)
    seen = []

    def evaluate(model):
        with torch.no_grad():
            return {"logit0": float(model.eval()(images)[0, 0])}

    rows = wise_ft_sweep(start, tuned, [0.0, 0.5, 1.0], evaluate, progress=lambda a, s: seen.append(a))
    assert [r["alpha"] for r in rows] == seen == [0.0, 0.5, 1.0]
    with torch.no_grad():
        assert rows[0]["logit0"] == float(start.eval()(images)[0, 0])
        assert rows[2]["logit0"] == float(tuned(images)[0, 0])
    assert rows[1]["logit0"] not in (rows[0]["logit0"], rows[2]["logit0"])


def test_classifier_accuracy_counts_correct_predictions():
    class Fixed(torch.nn.Module):  # predicts class 1 for images whose mean is above 0.5
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            m = images.mean(dim=(1, 2, 3))
            return torch.stack([0.5 - m, m - 0.5], dim=1)

    data = [
        {"image": torch.full((3, 4, 4), v), "label": label} for v, label in [(0.1, 0), (0.9, 1), (0.8, 0)]
    ]
    assert abs(classifier_accuracy(Fixed(), data, batch_size=2) - 2 / 3) < 1e-9
    images, labels = labelled_tensors(data, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert labels.tolist() == [0, 1, 0] and torch.allclose(images[0], torch.full((3, 4, 4), -0.8))
