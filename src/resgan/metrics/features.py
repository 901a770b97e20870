"""Feature extractors for FID: ``classifier`` (trained in prepare) or ``inception``.

Every extractor sees 8-bit images: images in [-1, 1] are quantised first (:func:`quantize`,
StyleGAN2-ADA's metric code does the same), so a generator is scored on exactly the pixels
it would save as a PNG, and the FID equals pytorch-fid's CLI on those PNGs.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import tempfile
import urllib.error
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from resgan.errors import ResganError
from resgan.metrics.classifier import load_classifier

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURES = ("classifier", "inception")


class FeatureError(ResganError, RuntimeError):
    """A feature extractor cannot be built (missing weights or files)."""


Extractor = Callable[[torch.Tensor], torch.Tensor]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit pixels (uint8, 0-255), rounded half up as StyleGAN2-ADA
    (``x * 127.5 + 128``, clamped, truncated) and torchvision's ``save_image`` round them."""
    return (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


# What a score depends on in code: a change to any of these changes the scoring protocol's
# ``code`` hash (resgan.metrics.scoring.Protocol), so old scores are not compared with new.
SCORING_CODE = (
    ("resgan.metrics.features", "quantize"),
    ("resgan.metrics.features", "build_extractor"),
    ("resgan.metrics.features", "_inception"),
    ("resgan.metrics.features", "extract_all"),
    ("resgan.metrics.classifier", "Classifier"),
    ("resgan.nets.models", "sample"),
    ("resgan.metrics.fid", "feature_stats"),
    ("resgan.metrics.fid", "fid_from_features"),
)


def scoring_code_hash(parts: tuple[tuple[str, str], ...] = SCORING_CODE) -> str:
    """sha256 (12 hex) of the source of the scoring code path: sampling, quantisation, the
    extractors' forward passes and the statistics. Looked up at call time, so it follows
    the code that would run."""
    h = hashlib.sha256()
    for module, name in parts:
        obj = getattr(importlib.import_module(module), name)
        h.update(f"{module}.{name}\n".encode())
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:12]


def load_inception(weights: str | None, dims: int = 2048, device="cpu"):
    """pytorch-fid's FID InceptionV3 returning the block for ``dims``, in eval mode.

    Weights come from the torch hub cache (where pytorch-fid downloads them when the
    network allows) or from the file ``weights``.
    Raises:
        FeatureError: the weights are not there and cannot be downloaded (one line).
    """
    from pytorch_fid.inception import InceptionV3

    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise FeatureError(f"Inception dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}")
    block = InceptionV3.BLOCK_INDEX_BY_DIM[dims]
    hub_before = torch.hub.get_dir()
    tmp = None
    try:
        if weights:  # pytorch-fid only looks in the hub cache: point a private one at the file
            if not Path(weights).is_file():
                raise FeatureError(f"eval.inception_weights: no such file: {weights}")
            tmp = tempfile.TemporaryDirectory()
            os.makedirs(os.path.join(tmp.name, "checkpoints"))
            os.symlink(Path(weights).resolve(), os.path.join(tmp.name, "checkpoints", INCEPTION_FILE))
            torch.hub.set_dir(tmp.name)
        return InceptionV3([block]).to(device).eval()
    except (urllib.error.URLError, OSError) as exc:
        raise FeatureError(
            f"Inception weights not found and cannot be downloaded ({exc.__class__.__name__}): "
            f"put {INCEPTION_FILE} into {Path(hub_before) / 'checkpoints'} or set "
            "eval.inception_weights to its path (it is published with pytorch-fid's releases)"
        ) from None
    finally:
        torch.hub.set_dir(hub_before)
        if tmp is not None:
            tmp.cleanup()


def save_offline_inception(path: str | Path, images: torch.Tensor) -> Path:
    """Write a stand-in for pytorch-fid's Inception weights file, made without a download.

    The network is built exactly as ``pytorch_fid.inception.fid_inception_v3`` builds it,
    with random weights; its batch-norm statistics are set from ``images`` (N x C x H x W in
    [-1, 1]) so that the features are informative rather than degenerate. FID values with
    it are not comparable with published ones; the code path is the real one. For tests
    and benchmarks on machines that cannot download the published file.
    """
    from pytorch_fid import inception as I

    torch.manual_seed(0)
    net = I._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = I.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = I.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = I.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = I.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = I.FIDInceptionE_1(1280)
    net.Mixed_7c = I.FIDInceptionE_2(2048)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    x = images if images.shape[1] == 3 else images.repeat(1, 3, 1, 1)
    net.train()
    with torch.no_grad():
        for xb in x.split(32):
            net(torch.nn.functional.interpolate((xb + 1) / 2, size=(299, 299), mode="bilinear"))
    net.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def _inception(weights: str | None, dims: int, device) -> Extractor:
    net = load_inception(weights, dims, device)

    def extract(x: torch.Tensor) -> torch.Tensor:
        # pixels / 255, as torchvision's ToTensor gives pytorch-fid the PNGs it reads; the
        # network resizes to 299 and scales to [-1, 1] itself
        x = quantize(x).to(device).float() / 255
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        pred = net(x)[0]
        if pred.shape[2:] != (1, 1):  # blocks below the last: pool as pytorch-fid does
            pred = torch.nn.functional.adaptive_avg_pool2d(pred, (1, 1))
        return pred.squeeze(-1).squeeze(-1)

    return extract


def build_extractor(name: str, *, classifier_path: str | Path | None = None,
                    inception_weights: str | None = None, dims: int = 2048,
                    device: str | torch.device = "cpu") -> Extractor:
    """Return a function mapping images in [-1, 1] (N x C x H x W) to N x D features of
    their 8-bit quantisation."""
    if name == "classifier":
        if classifier_path is None or not Path(classifier_path).is_file():
            raise FeatureError(f"classifier extractor: no such file: {classifier_path} (run prepare)")
        return classifier_extractor(load_classifier(classifier_path, device), device)
    if name == "inception":
        return _inception(inception_weights, dims, device)
    raise FeatureError(f"unknown feature extractor {name!r}; allowed: {', '.join(FEATURES)}")


def classifier_extractor(net, device: str | torch.device = "cpu") -> Extractor:
    """The classifier's features of the 8-bit quantisation of images in [-1, 1]."""
    return lambda x: net.features(quantize(x).to(device).float() / 127.5 - 1)


@torch.no_grad()
def extract_all(extractor: Extractor, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Run the extractor over batches of images; return N x D float64 features."""
    return np.concatenate([extractor(b).double().cpu().numpy() for b in batches])

