"""Typed, validated configuration.

Every stage validates the whole parameter document up front, before any Ray, MLflow
or training work starts; an error names the key and what is allowed, in one line.
Nothing in the library reads ``params.yaml`` itself: stages pass the parsed mapping in.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resgan.errors import ResganError

# A value of "tune" marks a key the tune stage searches (see TuneConfig and SEARCHABLE);
# any other value is used as it is, by the search and by training alike.
TUNED = "tune"
Tuned = Literal["tune"]
Loss = Literal["bce", "hinge", "wgan-gp"]


# train.augment, differentiable augmentation of D's inputs (see resgan.augment):
#   none: off; translation: shift by up to 1/8 of the side (1 px at 8x8), zero fill;
#   cutout: zero one square of 1/4 of the side (2x2 at 8x8); translation+cutout: both;
#   ada-...: the same ops, each applied with probability p, tuned from D's overfitting (ADA).
AugmentPolicy = Literal["none", "translation", "cutout", "translation+cutout",
                        "ada-translation", "ada-translation+cutout"]


class ConfigError(ResganError, ValueError):
    """A parameter value is wrong; the message names the key and what is allowed."""


class _Section(BaseModel):
    # strict: a string "0.1" is not silently taken for a float; extra: typos are errors.
    # allow_inf_nan=False: .inf and .nan pass YAML as floats and break training later.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    # digits: embedded in scikit-learn; the others read files under root (see resgan.data)
    dataset: Literal["digits", "mnist-sample", "mnist", "fashion-mnist", "cifar10", "folder"] = "digits"
    root: str = Field("data", min_length=1)  # dataset files; for folder: the image folder
    download: bool = True  # fetch missing mnist/fashion-mnist/cifar10 files when online
    resolution: Literal[8, 16, 32, 64] = 8  # images are resized to resolution x resolution
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)  # held out for the FID floor
    seed: int = Field(0, ge=0)  # seeds the train/test split


class ModelConfig(_Section):
    depth: Annotated[int, Field(ge=1, le=8)] | Tuned = 2  # residual blocks per resolution stage
    residual: bool | Tuned = True  # false removes the identity shortcuts and nothing else
    channels: int = Field(32, ge=4, le=1024)  # width of every block in G and D
    z_dim: int = Field(64, ge=1, le=1024)  # latent size


class TrainConfig(_Section):
    loss: Loss | Tuned = "bce"  # bce: original GAN, non-saturating G
    gp_lambda: float = Field(10.0, ge=0.0)  # wgan-gp: weight of the gradient penalty
    epochs: int = Field(100, ge=1, le=100_000)
    batch_size: int = Field(64, ge=2, le=65_536)  # global: split over the workers
    lr_g: Annotated[float, Field(gt=0.0, le=1.0)] | Tuned = 2.0e-4
    lr_d: Annotated[float, Field(gt=0.0, le=1.0)] | Tuned = 2.0e-4
    beta1: float = Field(0.0, ge=0.0, lt=1.0)  # Adam betas; ResNet-GAN default (0.0, 0.9)
    beta2: float = Field(0.9, ge=0.0, lt=1.0)
    n_dis: int = Field(1, ge=1, le=10)  # D steps per G step
    augment: AugmentPolicy = "none"  # augmentation of real and fake before D (see above)
    ema_halflife_kimg: float = Field(10.0, gt=0.0)  # G_ema half-life, thousands of images
    ema_rampup: float | None = Field(0.05, gt=0.0)  # half-life <= rampup x images seen; null: off
    lr_decay: Literal["none", "linear"] = "none"  # linear: to zero over train.epochs
    # Ray Train workers (DDP ranks); auto: one per GPU when the cluster has GPUs, else one
    # per node, each with all of its node's CPUs (on one machine: a single worker, all cores)
    num_workers: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = "auto"
    use_gpu: Literal["auto", True, False] = "auto"
    # bf16 autocast + channels-last; auto: on CUDA with >= 256 images per worker (below that
    # it is slower: docs/benchmarks.md, GPU); true also on the CPU, for tests
    mixed_precision: Literal["auto", True, False] = "auto"
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(10, ge=1)  # epochs between checkpoints
    max_failures: int = Field(3, ge=-1)  # Ray Train worker-group restarts (-1: no limit)
    sample_every: int = Field(10, ge=1)  # epochs between sample grids logged to MLflow
    fid_samples: int = Field(500, ge=2, le=1_000_000)  # samples for the per-epoch FID


class TuneConfig(_Section):
    """The search over the keys set to "tune" (model.depth, model.residual, train.loss,
    train.lr_g, train.lr_d); each key's choices or range below apply only while it is."""

    num_samples: int = Field(12, ge=1, le=10_000)  # trials
    depth_choices: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    residual_choices: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    loss_choices: list[Loss] = Field(default_factory=lambda: ["bce", "hinge"], min_length=1)
    lr_g_range: list[float] = Field(default_factory=lambda: [5.0e-5, 1.0e-3], min_length=2, max_length=2)  # log-uniform
    lr_d_range: list[float] = Field(default_factory=lambda: [5.0e-5, 1.0e-3], min_length=2, max_length=2)
    # ASHA's max_t: the epochs a trial that is never stopped runs (at most train.epochs); the
    # train stage continues the best of them to train.epochs instead of starting again
    epochs: int = Field(12, ge=1, le=100_000)
    grace_period: int = Field(3, ge=1)  # ASHA: epochs before a trial may be stopped
    reduction_factor: int = Field(2, ge=2)
    workers_per_trial: int = Field(1, ge=1, le=1024)
    max_concurrent: int = Field(2, ge=1, le=1024)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "TuneConfig":
        if any(d < 1 or d > 8 for d in self.depth_choices):
            raise ValueError("depth_choices: each depth must be between 1 and 8")
        for key in ("lr_g_range", "lr_d_range"):
            lo, hi = getattr(self, key)
            if not 0 < lo < hi <= 1:
                raise ValueError(f"{key}: need 0 < low < high <= 1, got [{lo}, {hi}]")
        if self.grace_period > self.epochs:
            raise ValueError("grace_period: must not exceed tune.epochs")
        return self


class AblationConfig(_Section):
    """The depth x shortcut (x augment policy) grid of pipeline/ablation.py: every cell the
    same data, images seen (epochs x batch), learning rates (train.lr_g, train.lr_d) and
    extractor; ``augment`` replaces train.augment per cell."""

    depths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)
    residual: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    augment: list[AugmentPolicy] = Field(default_factory=lambda: ["none"], min_length=1)
    epochs: int = Field(30, ge=1, le=100_000)
    workers_per_trial: int = Field(1, ge=1, le=1024)
    max_concurrent: int = Field(2, ge=1, le=1024)

    @model_validator(mode="after")
    def _check(self) -> "AblationConfig":
        if any(d < 1 or d > 8 for d in self.depths):
            raise ValueError("depths: each depth must be between 1 and 8")
        if any(s < 0 for s in self.seeds):
            raise ValueError("seeds: each seed must be >= 0")
        if len(set(self.augment)) < len(self.augment):
            raise ValueError("augment: each policy at most once")
        return self


class EvalConfig(_Section):
    features: Literal["classifier", "inception"] = "classifier"
    inception_weights: str | None = None  # a pt_inception-2015-12-05 file; None: torch hub cache
    inception_dims: Literal[64, 192, 768, 2048] = 2048  # pytorch-fid's --dims
    num_samples: int = Field(1000, ge=2, le=1_000_000)
    batch_size: int = Field(250, ge=1, le=65_536)
    seed: int = Field(0, ge=0)  # first sample seed
    repeats: int = Field(10, ge=1, le=100)  # sample seeds scored: FID is their mean, fid_std the spread
    classifier_epochs: int = Field(30, ge=1, le=10_000)  # training of the classifier extractor


class RegisterConfig(_Section):
    model_name: str = Field("resgan", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # the gate's one-sided t-test on per-seed FIDs: an equal model is promoted about alpha
    # of the time (bench/gate.py); min_improvement (FID points) raises its null hypothesis
    alpha: float = Field(0.05, gt=0.0, le=0.5, allow_inf_nan=False)
    min_improvement: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    lock_timeout_s: float = Field(300.0, gt=0.0)  # wait for another registration's gate


class TrackingConfig(_Section):
    experiment: str = Field("resgan", min_length=1)


class RayConfig(_Section):
    storage_path: str = Field(".ray_results", min_length=1)  # local dir or a URI (s3://, gs://)


with warnings.catch_warnings():
    # "register" is a section name of the params file; BaseModel's ABC-style attribute of
    # the same name is never used on these objects.
    warnings.simplefilter("ignore", UserWarning)

    class Config(_Section):
        data: DataConfig = DataConfig()
        model: ModelConfig = ModelConfig()
        train: TrainConfig = TrainConfig()
        tune: TuneConfig = TuneConfig()
        ablation: AblationConfig = AblationConfig()
        eval: EvalConfig = EvalConfig()
        register: RegisterConfig = RegisterConfig()
        tracking: TrackingConfig = TrackingConfig()
        ray: RayConfig = RayConfig()

        @model_validator(mode="after")
        def _batch_splits(self) -> "Config":
            """train.batch_size is the global batch: every worker count must divide it."""
            for key, n in (("train.num_workers", self.train.num_workers),
                           ("tune.workers_per_trial", self.tune.workers_per_trial),
                           ("ablation.workers_per_trial", self.ablation.workers_per_trial)):
                if isinstance(n, int):
                    check_batch_split(self.train.batch_size, n, key)
            return self

        def searched(self) -> list[str]:
            """The keys of SEARCHABLE set to "tune", e.g. ["depth", "lr_g", "lr_d"]."""
            return [k for k, section in SEARCHABLE.items()
                    if getattr(getattr(self, section), k) == TUNED]

        def with_point(self, point: dict[str, Any]) -> "Config":
            """This config with values for keys of SEARCHABLE (a point of the search)."""
            sections: dict[str, dict[str, Any]] = {}
            for key, value in point.items():
                sections.setdefault(SEARCHABLE[key], {})[key] = value
            return replace(self, **sections) if sections else self

        def with_tuned(self, point: dict[str, Any], source: str = "outputs/tune/best.json",
                       keys: list[str] | None = None) -> "Config":
            """This config with tune's chosen values (``point``: the point of the tune
            stage's choice, read from ``source``) for ``keys`` (default: every key set to
            "tune"); a ConfigError when one of them has none there."""
            keys = self.searched() if keys is None else keys
            if missing := [k for k in keys if k not in point]:
                raise ConfigError(f"{source} has no value for {', '.join(missing)}: run the "
                                  f"tune stage again (dvc repro tune)")
            return self.with_point({k: point[k] for k in keys})

        def require_fixed(self, what: str) -> "Config":
            """This config, or a ConfigError naming the keys still set to "tune"."""
            if left := self.searched():
                keys = ", ".join(f"{SEARCHABLE[k]}.{k}" for k in left)
                raise ConfigError(f"{what} needs values for {keys} (set to 'tune'): run the "
                                  f"tune stage first, or set them in params.yaml")
            return self


def check_batch_split(batch_size: int, workers: int, what: str) -> None:
    """train.batch_size must split evenly over ``workers`` DDP ranks (``what`` names where the
    count comes from); otherwise the global batch would silently shrink."""
    if workers > 0 and batch_size % workers:
        raise ConfigError(f"train.batch_size: {batch_size} does not split evenly over {what} = "
                          f"{workers} workers (the global batch is split over them): use a "
                          f"multiple of {workers}")


# The keys the tune stage can search, and their sections.
SEARCHABLE = {"depth": "model", "residual": "model", "loss": "train", "lr_g": "train",
              "lr_d": "train"}


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        section: Any = model
        for part in err["loc"][:-1]:
            section = section.model_fields[part].annotation
        allowed = ", ".join(sorted(section.model_fields))
        return f"{loc}: unknown key; allowed keys: {allowed}"
    if err["type"] == "value_error":  # from a cross-field check: the message names the key
        return ".".join(filter(None, [loc, err["msg"].removeprefix("Value error, ")]))
    return f"{loc}: {err['msg']} (got {err['input']!r})"


def load_config(raw: dict[str, Any] | None, source: str = "params") -> Config:
    """Validate a parameter mapping into a ``Config``.

    Args:
        raw: the parsed parameter document (sections data, model, train, ...).
        source: where it came from, for the error message.
    Returns:
        The validated, frozen ``Config``.
    Raises:
        ConfigError: one line naming the first wrong key and what is allowed.
    """
    try:
        return Config.model_validate(raw or {})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        field = tuple(first["loc"][:2])
        if len(first["loc"]) == 3 and first["type"] != "extra_forbidden":
            # a value that may also be a word ("tune", "auto"): pydantic reports one error per
            # member of the union; say them in one message
            msgs = [e["msg"] for e in errors if tuple(e["loc"][:2]) == field]
            text = ", or ".join([msgs[0], *(m.removeprefix("Input should be ") for m in msgs[1:])])
            raise ConfigError(f"{source}: {'.'.join(field)}: {text} "
                              f"(got {first['input']!r})") from None
        raise ConfigError(f"{source}: {_describe(first, Config)}") from None



def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return ``cfg`` with some fields of some sections replaced, validated again."""
    data = cfg.model_dump()
    for name, fields in sections.items():
        data[name].update(fields)
    return load_config(data, "override")
