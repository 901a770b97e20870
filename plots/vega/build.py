"""Rebuild plots/vega/offline.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

DVC's own page loads these three from a CDN, so `dvc plots show` and `dvc plots diff` draw
nothing offline. `.dvc/config` points DVC at this template instead (plots.html_template);
its scripts are the versions dvc-render's page asks for, fetched once from the npm registry
with `npm pack` and pinned here. Their licences (BSD-3-Clause) are kept beside the page.

    python plots/vega/build.py          # needs npm and the npm registry; writes the page
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# package -> (version, its minified browser build): what dvc_render.vega.VegaRenderer.SCRIPTS loads
PINNED = {"vega": ("5.20.2", "build/vega.min.js"), "vega-lite": ("5.2.0", "build/vega-lite.min.js"),
          "vega-embed": ("6.18.2", "build/vega-embed.min.js")}

PAGE = """<!DOCTYPE html>
<!-- DVC plots page that needs no network: {versions} inlined
     (BSD-3-Clause, see LICENSE.* beside this file); made by plots/vega/build.py. -->
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main() -> None:
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, build) in PINNED.items():
            out = subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", tmp],
                                 capture_output=True, text=True, check=True, timeout=300)
            with tarfile.open(Path(tmp) / out.stdout.strip().splitlines()[-1]) as tar:
                js = tar.extractfile(f"package/{build}").read().decode()
                licence = tar.extractfile("package/LICENSE").read().decode()
            if "</script" in js.lower() or any(p in js for p in ("{plot_divs}", "{scripts}", "{refresh_tag}")):
                raise SystemExit(f"{name}@{version} cannot be inlined: it holds a closing script "
                                 f"tag or one of DVC's placeholders")
            (HERE / f"LICENSE.{name}").write_text(licence)
            scripts.append(f"    <script>/* {name}@{version} */\n{js}\n    </script>")
    versions = ", ".join(f"{n}@{v}" for n, (v, _) in PINNED.items())
    (HERE / "offline.html").write_text(PAGE.format(versions=versions, scripts="\n".join(scripts)))
    print(f"wrote {HERE / 'offline.html'} ({versions})")


if __name__ == "__main__":
    main()
