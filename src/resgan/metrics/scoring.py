"""Scoring a generator under a protocol: the one place that turns G into an FID.

A FID depends on more than the generator: the feature extractor (and its weights: the
classifier is retrained when the data or ``eval.classifier_epochs`` change), the feature
dims, the number of samples (FID is biased by it), the sample seeds, the reference
statistics, and the code that samples, quantises and extracts. A :class:`Protocol` names all
of them; two FIDs are compared only under the same protocol. The evaluate stage, the
registry's gate (which scores the champion and the candidate again on fresh seeds), the
ablation and the quality report all score through a :class:`Scorer` built from prepare's
outputs.

Noise: a protocol scores ``repeats`` sample seeds (``seed``, ``seed + 1``, ...). The FID is
their mean and ``fid_std`` their standard deviation (SD) over the seeds; ``fid_se`` is the
standard error of the mean.

From the same generated features, per seed: KID against all real training features and
against the held-out features, and precision/recall (k = 3) against a fixed random subset of
as many real features as generated ones (they depend on the sample counts). Each is the mean
over the seeds with its SD over the seeds. These only describe; the protocol and the gate
stay FID's. :meth:`Scorer.real_baseline` gives what the held-out real images score.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from resgan.metrics.cache import extractor_key, fingerprint, load_features
from resgan.metrics.extra import kid, precision_recall
from resgan.metrics.features import FeatureError, build_extractor
from resgan.metrics.fid import fid_from_features, fid_of_generator, load_stats


# ---- prepare's outputs: where the extractor and the real statistics are --------------------

def features_dir(prepared: str | Path) -> Path:
    """prepare's extractor and real statistics folder (one DVC out)."""
    return Path(prepared) / "features"


def classifier_path(prepared: str | Path) -> Path:
    return features_dir(prepared) / "classifier.pt"


def stats_path(prepared: str | Path, features: str, split: str = "train") -> str:
    """The real statistics prepare made for an extractor (named in features/index.json)."""
    index_file = features_dir(prepared) / "index.json"
    try:
        index = json.loads(index_file.read_text())
    except FileNotFoundError:
        raise FeatureError(f"{index_file} not found: run `dvc repro prepare` first") from None
    if features not in index:
        raise FeatureError(f"no {features} statistics in {index_file} (prepared: "
                           f"{', '.join(index)}): run `dvc repro prepare` after changing eval.features")
    return str(features_dir(prepared) / index[features][split])


def prepared_extractor(prepared: str | Path, name: str, *, inception_weights: str | None = None,
                       dims: int = 2048):
    """The extractor ``name`` as prepare made it (the classifier file is one of its outs)."""
    return build_extractor(name, classifier_path=classifier_path(prepared),
                           inception_weights=inception_weights, dims=dims)


# ---- the per-epoch monitoring FID of tune trials and training --------------------------------

def fid_name(features: str, num_samples: int) -> str:
    """The name under which a FID is recorded, e.g. ``fid_classifier_n500``."""
    return f"fid_{features}_n{num_samples}"


@dataclass(frozen=True)
class FidRef:
    """What the per-epoch FID is measured against: explicit files (Ray workers run in other
    directories and need no prepare folder layout), one sample seed, FID only."""

    stats_path: str  # pytorch-fid .npz of the real training split
    features: str = "classifier"
    classifier_path: str | None = None
    inception_weights: str | None = None
    dims: int = 2048  # Inception features only

    def resolved(self) -> "FidRef":
        """The same reference with absolute paths (Ray workers run in other directories)."""
        def absolute(p: str | None) -> str | None:
            return None if p is None or "://" in p else str(Path(p).resolve())

        return FidRef(absolute(self.stats_path), self.features, absolute(self.classifier_path),
                      absolute(self.inception_weights), self.dims)

    def monitor(self, num_samples: int, *, seed: int, device: Any = "cpu"):
        """A function G -> FID of ``num_samples`` samples (seed ``seed``) of G in eval mode.

        The extractor is built under its own RNG state, so that a run with monitoring draws
        the same training noise as one without it."""
        import torch

        with torch.random.fork_rng(devices=[]):
            extract = build_extractor(self.features, classifier_path=self.classifier_path,
                                      inception_weights=self.inception_weights, dims=self.dims,
                                      device=device)
        ref = load_stats(self.stats_path)
        return lambda G: fid_of_generator(G, extract, ref, num_samples, seed=seed, device=device)


# ---- the protocol ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    """Everything an FID depends on besides the generator."""

    features: str  # classifier or inception
    extractor: str  # hash of the extractor's weights
    dims: int  # feature dims
    num_samples: int  # generated samples per seed
    seed: int  # first sample seed
    repeats: int  # sample seeds seed .. seed + repeats - 1
    reference: str  # hash of the reference statistics (mu, sigma)
    code: str  # hash of the scoring code path (features.scoring_code_hash)

    @property
    def id(self) -> str:
        """A short hash of all fields: equal ids, comparable scores."""
        return _hash(asdict(self))

    @property
    def family(self) -> str:
        """A short hash of all fields but the seeds: scores under one family on any seeds
        are draws of the same quantity (the gate keeps a champion's history per family)."""
        return _hash({k: v for k, v in asdict(self).items() if k not in ("seed", "repeats")})

    def describe(self) -> str:
        return (f"{self.features}{self.dims} (weights {self.extractor}), {self.num_samples} "
                f"samples x {self.repeats} seeds from {self.seed}, reference {self.reference}, "
                f"scoring code {self.code}")

    def seeds(self) -> range:
        return range(self.seed, self.seed + self.repeats)

    def differences(self, other: "Protocol | None") -> list[str]:
        """Names of the fields that differ (all of them against None)."""
        if other is None:
            return [f.name for f in fields(self)]
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def tags(self) -> dict[str, str]:
        """As run and version tags: ``protocol.id`` and ``protocol`` (its fields, JSON)."""
        return {"protocol.id": self.id, "protocol": json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Protocol | None":
        """The protocol recorded on a version; None when it has none (an older version)."""
        try:
            return cls.from_dict(json.loads(tags["protocol"]))
        except (KeyError, ValueError, TypeError):
            return None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Protocol":
        types = {"dims": int, "num_samples": int, "seed": int, "repeats": int}
        return cls(**{f.name: types.get(f.name, str)(d[f.name]) for f in fields(cls)})


def _hash(fields_: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Score:
    fid: float  # mean over the protocol's seeds
    fid_std: float  # SD over the seeds (ddof 1; 0 for one seed)
    per_seed: tuple[float, ...]
    protocol: Protocol
    # Means over the seeds and SDs over the seeds; None when scored with fid_only.
    kid: float | None = None  # against the real training features
    kid_std: float | None = None
    kid_heldout: float | None = None  # against the held-out features: 0 for new real images
    kid_heldout_std: float | None = None
    precision: float | None = None
    precision_std: float | None = None
    recall: float | None = None
    recall_std: float | None = None

    @property
    def fid_se(self) -> float:
        """The standard error of ``fid``, the mean over the seeds (sample noise only)."""
        return self.fid_std / len(self.per_seed) ** 0.5

    def as_dict(self) -> dict[str, Any]:
        extra = {k: getattr(self, k) for k in EXTRA}
        return {"fid": self.fid, "fid_std": self.fid_std, "fid_per_seed": list(self.per_seed),
                **extra, "protocol": asdict(self.protocol), "protocol_id": self.protocol.id}


# The per-seed figures beside FID, each with its SD over the seeds as <name>_std.
EXTRA = ("kid", "kid_std", "kid_heldout", "kid_heldout_std", "precision", "precision_std",
         "recall", "recall_std")


class Scorer:
    """An extractor, reference statistics and features from prepare's outputs, scoring generators.

    Args:
        prepared: prepare's output folder.
        features: classifier or inception.
        num_samples, seed, repeats: samples per seed, first seed, number of seeds.
        inception_weights, dims: for the inception extractor.
        batch_size: generation and extraction batch.
    """

    def __init__(self, prepared: str | Path, *, features: str, num_samples: int, seed: int,
                 repeats: int = 1, inception_weights: str | None = None, dims: int = 2048,
                 batch_size: int = 250):
        self.extract = prepared_extractor(prepared, features, inception_weights=inception_weights,
                                          dims=dims)
        self.ref = load_stats(stats_path(prepared, features))
        self.ref_features = load_features(stats_path(prepared, features))  # for KID, P/R
        self.heldout_features = load_features(stats_path(prepared, features, "test"))
        key = extractor_key(features, classifier_path=classifier_path(prepared),
                            inception_weights=inception_weights, dims=dims)
        self.protocol = Protocol(
            features=features, extractor=key["weights"], dims=int(key["dims"]),
            num_samples=num_samples, seed=seed, repeats=repeats,
            reference=fingerprint(np.concatenate([self.ref[0].ravel(), self.ref[1].ravel()])),
            code=key["code"])
        self.batch_size = batch_size

    @classmethod
    def from_eval(cls, prepared: str | Path, e: Any, **override: Any) -> "Scorer":
        """The scorer of the evaluate stage (``e`` is the ``eval`` config section)."""
        kw = dict(features=e.features, num_samples=e.num_samples, seed=e.seed,
                  repeats=e.repeats, inception_weights=e.inception_weights,
                  dims=e.inception_dims, batch_size=e.batch_size)
        return cls(prepared, **{**kw, **override})

    def with_samples(self, num_samples: int) -> "Scorer":
        """The same extractor and reference at another sample count (no reload)."""
        return self._with(num_samples=num_samples)

    def with_seeds(self, seeds: range) -> "Scorer":
        """The same extractor and reference on other sample seeds (consecutive ones)."""
        if seeds.step != 1 or not seeds:
            raise ValueError(f"seeds must be a non-empty range of consecutive seeds, got {seeds}")
        return self._with(seed=seeds.start, repeats=len(seeds))

    def _with(self, **changes: Any) -> "Scorer":
        other = object.__new__(Scorer)
        other.__dict__.update(self.__dict__)
        other.protocol = Protocol(**{**asdict(self.protocol), **changes})
        return other

    def _real_subset(self) -> np.ndarray:
        """The real points precision/recall compare with: as many as generated, fixed by
        the protocol's first seed (the same for every generator and every seed)."""
        p = self.protocol
        n_real = len(self.ref_features)
        pick = np.random.default_rng(p.seed).choice(n_real, min(n_real, p.num_samples),
                                                    replace=False)
        return self.ref_features[np.sort(pick)]

    def real_baseline(self, device: str = "cpu") -> dict[str, float]:
        """What real held-out images score: ``precision_real`` and ``recall_real`` of the
        held-out features against the same real subset a generator is compared with, at the
        held-out count (``real_samples``)."""
        precision, recall = precision_recall(self._real_subset(), self.heldout_features,
                                             device=device)
        return {"precision_real": precision, "recall_real": recall,
                "real_samples": len(self.heldout_features)}

    def score(self, G, device: str = "cpu", *, fid_only: bool = False) -> Score:
        """FID, KID and precision/recall of G (eval mode) over the protocol's seeds.

        Args:
            fid_only: skip KID and precision/recall (left None in the score).
        """
        from resgan.metrics.features import extract_all
        from resgan.nets import sample

        p = self.protocol
        real = None if fid_only else self._real_subset()
        fids, extra = [], []
        for seed in p.seeds():
            imgs = sample(G, p.num_samples, seed=seed, device=device, batch_size=self.batch_size)
            feats = extract_all(self.extract, imgs.split(self.batch_size))
            fids.append(fid_from_features(feats, *self.ref))
            if not fid_only:
                extra.append((kid(self.ref_features, feats, seed=seed, device=device)[0],
                              kid(self.heldout_features, feats, seed=seed, device=device)[0],
                              *precision_recall(real, feats, device=device)))
        summary: dict[str, float] = {}
        for name, col in zip(("kid", "kid_heldout", "precision", "recall"), zip(*extra)):
            summary[name] = statistics.fmean(col)
            summary[f"{name}_std"] = _sd(col)
        return Score(fid=statistics.fmean(fids), fid_std=_sd(fids), per_seed=tuple(fids),
                     protocol=p, **summary)


def _sd(values) -> float:
    """The SD over seeds (ddof 1); 0 for one seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0
