import os
import socket
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mumo  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function that returns a free TCP port on 127.0.0.1 (for test servers and process groups)."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


# A tiny dual encoder and tokenizer, shared by the tests of evaluation and inference.
CAPTIONS = [
    "a photo of a red circle",
    "a blue square on the left of a green triangle",
    "there is a yellow star",
    "an image of a cat",
    "a dog next to a tree",
] * 4


@pytest.fixture(scope="module")
def tiny_clip() -> mumo.CLIP:
    return mumo.create_model("clip_vit_tiny", seed=0)


@pytest.fixture(scope="module")
def tokenizer() -> mumo.Tokenizer:
    return mumo.Tokenizer.train(CAPTIONS, vocab_size=300, context_length=16)


@pytest.fixture(scope="session")
def tiny_run() -> list[str]:
    """Recipe overrides for a two-step run of a tiny CLIP on a little of the built-in data (seconds)."""
    return [
        "model=clip_vit_tiny",
        "batch_size=8",
        "data.image_size=32",
        "data.train_size=64",
        "data.tokenizer_samples=200",
        "data.tokenizer_vocab_size=300",
        "data.test_size=16",
        "max_steps=2",
        "log_every=1",
        "checkpoint_every=2",
        "tensorboard=false",
    ]


@pytest.fixture(scope="module")
def clip_and_tokenizer() -> tuple[mumo.CLIP, mumo.Tokenizer]:
    """A tiny CLIP (eval mode) and a tokenizer that knows the prompts of three classes: 'red circle',
    'blue square', 'green star'."""
    names = ("red circle", "blue square", "green star")
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300}).eval()
    tokenizer = mumo.Tokenizer.train([f"a photo of a {n}." for n in names] * 10, 300)
    tokenizer.context_length = model.context_length
    return model, tokenizer


@pytest.fixture(scope="session")
def spiece_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SentencePiece model laid out as SigLIP's (pad 0, </s> 1, <unk> 2, no <s>), trained here on
    made-up captions: nothing is downloaded. Returns the path of its ``spiece.model``."""
    spm = pytest.importorskip("sentencepiece")
    import io
    import random

    rng = random.Random(0)
    words = (
        "a an the photo picture drawing of cat cats dog dogs horse red blue green yellow big small tiny ball "
        "park garden street playing sitting running on in under near with two three people man woman"
    ).split()
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=proto,
        vocab_size=150,
        hard_vocab_limit=False,  # a small corpus may not fill it
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spiece") / "spiece.model"
    path.write_bytes(proto.getvalue())
    return path
