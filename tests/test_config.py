import math
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from resgan.config import ConfigError, load_config, replace

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_repo_params_validate():
    cfg = load_config(YAML(typ="safe").load((ROOT / "params.yaml").read_text()), "params.yaml")
    assert cfg.register.model_name == "resgan"
    assert cfg.searched() == ["depth", "lr_g", "lr_d"]  # the search of `make run`
    assert load_config({}).model.depth == 2
    assert load_config({}).searched() == []


def test_defaults_are_params_yaml():
    """One source of defaults: every key of params.yaml holds config.py's default, so a
    section left out of a params file (or a test's config) means what params.yaml says. A
    key params.yaml sets to `tune` has a value default inside the search space it names."""
    raw = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    defaults = load_config({}).model_dump(mode="json")
    differ = []
    for section, body in raw.items():
        for key, value in body.items():
            default = defaults[section][key]
            if value == "tune":
                space = raw["tune"].get(f"{key}_choices") or raw["tune"].get(f"{key}_range")
                low, high = (min(space), max(space)) if f"{key}_range" in raw["tune"] else (0, 0)
                inside = default in space if f"{key}_choices" in raw["tune"] else \
                    low <= default <= high
                if not inside:
                    differ.append(f"{section}.{key}: default {default!r} outside {space}")
            elif default != value:
                differ.append(f"{section}.{key}: params.yaml {value!r}, config.py {default!r}")
    assert not differ, "params.yaml and config.py disagree: " + "; ".join(differ)
    assert set(raw) == set(defaults)  # every section in both


def test_tuned_keys_and_points():
    cfg = load_config({"model": {"depth": "tune", "residual": "tune"}, "train": {"lr_d": "tune"}})
    assert cfg.searched() == ["depth", "residual", "lr_d"]
    with pytest.raises(ConfigError, match=r"training needs values for model.depth, "
                                          r"model.residual, train.lr_d \(set to 'tune'\)"):
        cfg.require_fixed("training")
    done = cfg.with_point({"depth": 4, "residual": False, "lr_d": 1e-3}).require_fixed("training")
    assert (done.model.depth, done.model.residual, done.train.lr_d) == (4, False, 1e-3)
    assert done.train.lr_g == pytest.approx(2e-4)  # not searched: the value given
    with pytest.raises(ConfigError, match="model.depth"):
        cfg.with_point({"depth": 9})


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"lr_g": "fast"}}, "train.lr_g: Input should be a valid number"),
    ({"model": {"depth": "2"}}, "model.depth: Input should be a valid integer, or 'tune' (got '2')"),
    ({"model": {"depth": 9}}, "model.depth: Input should be less than or equal to 8, or 'tune'"),
    ({"train": {"num_workers": 0}}, "train.num_workers: Input should be greater than or equal to 1, or 'auto'"),
    ({"train": {"lr_g": -1.0}}, "train.lr_g: Input should be greater than 0"),
    ({"model": {"depth": 0}}, "model.depth: Input should be greater than or equal to 1"),
    ({"train": {"loss": "wasserstein"}}, "train.loss: Input should be 'bce', 'hinge' or 'wgan-gp', or 'tune'"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset: Input should be 'digits'"),
    ({"data": {"resolution": 12}}, "data.resolution: Input should be 8, 16, 32 or 64"),
    ({"train": {"lrg": 0.1}}, "train.lrg: unknown key; allowed keys: augment, batch_size"),
    ({"trian": {}}, "trian: unknown key; allowed keys: ablation, data, eval, model"),
    ({"tune": {"lr_d_range": [1e-3, 1e-4]}}, "tune.lr_d_range: need 0 < low < high"),
    ({"eval": {"features": "clip"}}, "eval.features: Input should be 'classifier' or 'inception'"),
    ({"train": {"num_workers": 3}}, "train.batch_size: 64 does not split evenly over train.num_workers = 3"),
    ({"train": {"batch_size": 30}, "tune": {"workers_per_trial": 4}},
     "train.batch_size: 30 does not split evenly over tune.workers_per_trial = 4"),
    ({"ablation": {"workers_per_trial": 5}}, "over ablation.workers_per_trial = 5 workers"),
])
def test_errors_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(ConfigError) as err:
        load_config(raw, "params.yaml")
    msg = str(err.value)
    assert msg.startswith("params.yaml: ")
    assert expected in msg
    assert "\n" not in msg


def _float_keys():
    """Every params key that takes a float (or a list of floats), by walking the schema."""
    from resgan.config import Config

    for section, f in Config.model_fields.items():
        for key, field in f.annotation.model_fields.items():
            if "float" in repr(field.annotation):
                yield section, key, "list" in repr(field.annotation).lower()


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_no_inf_or_nan_anywhere(bad):
    """.inf and .nan are floats to YAML: every float key refuses them in one line, before any
    work (gp_lambda, the EMA half-life, min_improvement and lock_timeout_s once took them)."""
    keys = list(_float_keys())
    assert {("train", "gp_lambda"), ("register", "lock_timeout_s"), ("tune", "lr_g_range")} <= {
        (s, k) for s, k, _ in keys}
    for section, key, is_list in keys:
        value = [1e-4, bad] if is_list else bad
        with pytest.raises(ConfigError) as err:
            load_config({section: {key: value}}, "params.yaml")
        msg = str(err.value)
        assert f"{section}.{key}" in msg and "\n" not in msg, msg


def test_inf_in_yaml_text_is_refused(tmp_path):
    from resgan.stage import read_params

    p = tmp_path / "params.yaml"
    p.write_text("train:\n  ema_halflife_kimg: .inf\n  ema_rampup: null\n")
    with pytest.raises(ConfigError, match=r"train.ema_halflife_kimg: Input should be a finite number"):
        read_params(str(p))


def test_batch_that_splits_over_the_workers_is_accepted():
    cfg = load_config({"train": {"batch_size": 96, "num_workers": 3}, "tune": {"workers_per_trial": 2}})
    assert (cfg.train.batch_size, cfg.train.num_workers) == (96, 3)
    assert load_config({"train": {"num_workers": "auto"}}).train.num_workers == "auto"  # checked once resolved


def test_replace_revalidates():
    cfg = load_config({})
    assert replace(cfg, model={"depth": 3}).model.depth == 3
    with pytest.raises(ConfigError, match="model.depth"):
        replace(cfg, model={"depth": 99})


def test_cifar10_params_file_is_complete_and_valid():
    """configs/cifar10.yaml replaces params.yaml as a whole: same keys, valid values."""
    yaml = YAML(typ="safe")
    repo = yaml.load((ROOT / "params.yaml").read_text())
    cifar = yaml.load((ROOT / "configs" / "cifar10.yaml").read_text())
    assert {s: sorted(v) for s, v in cifar.items()} == {s: sorted(v) for s, v in repo.items()}
    cfg = load_config(cifar, "configs/cifar10.yaml")
    assert (cfg.data.dataset, cfg.data.resolution, cfg.train.loss, cfg.train.n_dis) == \
        ("cifar10", 32, "hinge", 5)
    assert cfg.eval.features == "inception" and cfg.eval.num_samples == 50_000


@pytest.mark.parametrize("name, resolution", [("mnist16", 16), ("mnist32", 32)])
def test_mnist_profiles_are_complete_and_valid(name, resolution):
    """configs/mnist16.yaml and mnist32.yaml replace params.yaml as a whole, offline."""
    yaml = YAML(typ="safe")
    repo = yaml.load((ROOT / "params.yaml").read_text())
    prof = yaml.load((ROOT / "configs" / f"{name}.yaml").read_text())
    assert {s: sorted(v) for s, v in prof.items()} == {s: sorted(v) for s, v in repo.items()}
    cfg = load_config(prof, f"configs/{name}.yaml")
    assert (cfg.data.dataset, cfg.data.resolution, cfg.data.download) == ("mnist-sample", resolution, False)
    assert cfg.register.model_name == f"resgan-{name}"  # a champion is compared with its kind


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"dataset": "imagenet"}})
    assert str(err.value) == ("params: data.dataset: Input should be 'digits', 'mnist-sample', "
                              "'mnist', 'fashion-mnist', 'cifar10' or 'folder' (got 'imagenet')")
