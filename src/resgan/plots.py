"""The pipeline's plots as PNG files and one HTML page that needs no network.

`dvc plots show` renders the same data with Vega, which its page loads from the internet;
offline that page stays blank. This page holds only <img> tags of PNGs drawn here with
matplotlib: GAN losses per epoch, the monitoring FID per epoch (log scale), every tune
trial's FID against depth (log scale), and the evaluate stage's sample grid.
"""

from __future__ import annotations

import csv
import html
import shutil
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows]


def write_page(out: str | Path, *, history: str | Path, trials: str | Path | None = None,
               samples: str | Path | None = None) -> Path:
    """Write ``out``/index.html and its PNGs; inputs that are missing are left out.

    Args:
        history: the train stage's history.csv (epoch, loss_d, loss_g, fid).
        trials: the tune stage's trials.csv (depth, fid, status); may be header-only.
        samples: a sample grid PNG (the evaluate stage's samples.png).
    Returns:
        The page's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []  # (file, title)

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figures.append((name, title))

    if Path(history).is_file() and (rows := _rows(Path(history))):
        epochs = _floats(rows, "epoch")
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot(epochs, _floats(rows, "loss_d"), label="loss_d")
        ax.plot(epochs, _floats(rows, "loss_g"), label="loss_g")
        ax.set(xlabel="epoch", ylabel="loss", title="GAN losses per epoch (train stage)")
        ax.legend()
        save(fig, "losses.png", "GAN losses per epoch")
        if "fid" in rows[0] and all(r["fid"] for r in rows):
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            ax.plot(epochs, _floats(rows, "fid"), color="tab:red")
            ax.set_yscale("log")
            ax.set(xlabel="epoch", ylabel="FID (log scale)",
                   title="Monitoring FID of G_ema per epoch (train stage)")
            ax.grid(True, which="both", alpha=0.3)
            save(fig, "fid_per_epoch.png", "Monitoring FID per epoch")
    if trials is not None and Path(trials).is_file():
        done = [r for r in _rows(Path(trials)) if r.get("fid") and r.get("depth")]
        if done:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            for status, marker in (("finished", "o"), ("stopped", "x")):
                pts = [r for r in done if (r.get("status") == "finished") == (status == "finished")]
                if pts:
                    ax.scatter(_floats(pts, "depth"), _floats(pts, "fid"), marker=marker,
                               label=f"{status} ({len(pts)})")
            ax.set_yscale("log")
            ax.set_xticks(sorted({int(float(r["depth"])) for r in done}))
            ax.set(xlabel="residual blocks per stage (depth)", ylabel="FID (log scale)",
                   title="Every tune trial's last FID against depth")
            ax.legend()
            save(fig, "fid_vs_depth.png", "Tune trials: FID against depth")
    if samples is not None and Path(samples).is_file():
        shutil.copy(samples, out / "samples.png")
        figures.append(("samples.png", "Samples of the trained G_ema (evaluate stage)"))
    body = "\n".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(title)}">'
                     f"<figcaption>{html.escape(title)}</figcaption></figure>"
                     for name, title in figures) or "<p>No results yet: run <code>make run</code>.</p>"
    page = out / "index.html"
    page.write_text("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>resgan plots</title>"
                    "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;"
                    "margin:1em}img{max-width:640px;image-rendering:pixelated}</style></head>\n"
                    f"<body><h1>resgan: the last run's plots</h1>\n{body}\n</body></html>\n")
    return page
