"""`make plots`: PNGs and a page that renders with no network, opened in headless Chromium."""

from __future__ import annotations

import csv
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from resgan.plots import write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture()
def results(tmp_path):
    hist = tmp_path / "history.csv"
    with open(hist, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss_d", "loss_g", "fid", "images_per_s"])
        for e in range(1, 31):
            w.writerow([e, 1 + 0.1 * np.sin(e), 1.2 - 0.01 * e, 500 * 0.85 ** e + 10, 400])
    trials = tmp_path / "trials.csv"
    with open(trials, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "depth", "fid", "status"])
        w.writerows([["a", 1, 80, "finished"], ["b", 2, 40, "finished"], ["c", 3, 300, "stopped"]])
    samples = tmp_path / "samples.png"
    Image.fromarray((np.random.default_rng(0).random((66, 66)) * 255).astype(np.uint8)).save(samples)
    return hist, trials, samples


def _ink(png) -> float:
    """Fraction of pixels that are not (near) white."""
    a = np.asarray(Image.open(png).convert("L"))
    return float((a < 245).mean())


def test_page_holds_every_plot_and_nothing_from_the_network(results, tmp_path):
    hist, trials, samples = results
    page = write_page(tmp_path / "page", history=hist, trials=trials, samples=samples)
    names = sorted(p.name for p in page.parent.glob("*.png"))
    assert names == ["fid_per_epoch.png", "fid_vs_depth.png", "losses.png", "samples.png"]
    text = page.read_text()
    assert "http" not in text.replace("<!doctype html>", "")  # no script, no remote resource
    assert all(f'src="{n}"' in text for n in names)


def test_missing_inputs_are_left_out(tmp_path):
    page = write_page(tmp_path / "page", history=tmp_path / "none.csv", trials=None, samples=None)
    assert "No results yet" in page.read_text()
    assert not list(page.parent.glob("*.png"))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_page_renders_offline_in_headless_chromium(results, tmp_path):
    """The page's images are drawn by a real browser with networking disabled: its screenshot
    has far more ink than the same page whose PNGs are gone (empty boxes and captions)."""
    hist, trials, samples = results
    page = write_page(tmp_path / "page", history=hist, trials=trials, samples=samples)

    def shot(html, out):
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--proxy-server=127.0.0.1:9",  # any network request would fail
                        "--window-size=1400,1800", f"--screenshot={out}", html.as_uri()],
                       check=True, capture_output=True, timeout=120)
        return _ink(out)

    full = shot(page, tmp_path / "full.png")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(page, bare / "index.html")  # the same page without its PNGs
    empty = shot(bare / "index.html", tmp_path / "empty.png")
    assert full > 0.02 and full > 3 * empty, (full, empty)
