"""report: an offline page whose numbers are the metrics file's, and whose images all load."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pneumo.core.tables import lookup  # noqa: E402
from pneumo.stages.report import SINGLE_FILE, describe_data, metric_rows, report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.keyed: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.links.append(a.get("src") or a.get("href"))
        if "data-key" in a:
            self._key = a["data-key"]
            self.keyed[self._key] = ""

    def handle_data(self, data):
        if self._key is not None:
            self.keyed[self._key] += data

    def handle_endtag(self, tag):
        self._key = None


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    root = trained["root"]
    out = tmp_path_factory.mktemp("report") / "reports"
    result = report(
        root / "eval" / "metrics.json",
        root / "eval" / "predictions.csv",
        root / "models" / "train" / "history.csv",
        trained["prepared"],
        trained["model"],
        out,
        card_path=None,
        gradcam_per_group=3,
        single_file=True,
    )
    return out, result


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+|-?\d+", text)]


@pytest.mark.slow
def test_the_html_holds_the_metrics_files_numbers(trained, built):
    out, _ = built
    metrics = trained["metrics"]
    page = _Page()
    page.feed((out / "index.html").read_text())
    expected_keys = [k for _, keys in metric_rows(metrics) for k in (keys["val"], keys["test"])]
    expected_keys += [k for _, keys in metric_rows(metrics) if keys["ci"] for k in [keys["ci"]]]
    assert set(expected_keys) <= set(page.keyed)
    checked = 0
    for key, text in page.keyed.items():
        value = lookup(metrics, key, sep="/")
        assert value is not None, f"{key} is shown but not in metrics.json"
        shown = _numbers(text)
        wanted = value if isinstance(value, list) else [value]
        assert len(shown) == len(wanted), (key, text)
        for s, w in zip(shown, wanted):
            assert s == pytest.approx(w, abs=5e-4), key
            checked += 1
    assert checked >= 30
    assert page.keyed["operating_threshold"] == f"{metrics['operating_threshold']:.3f}"


@pytest.mark.slow
def test_the_markdown_table_matches_the_metrics_file(trained, built):
    out, _ = built
    metrics = trained["metrics"]
    md = (out / "report.md").read_text()
    for name, keys in metric_rows(metrics):
        line = next(row for row in md.splitlines() if row.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(lookup(metrics, keys["val"], sep="/"), abs=5e-4), name
        assert float(cells[2]) == pytest.approx(lookup(metrics, keys["test"], sep="/"), abs=5e-4), name
        if keys["ci"] and lookup(metrics, keys["ci"], sep="/"):
            lo, hi = (float(x) for x in cells[3].split("–"))
            assert [lo, hi] == pytest.approx(lookup(metrics, keys["ci"], sep="/"), abs=5e-4), name
    assert "SYNTHETIC" in md


@pytest.mark.slow
def test_figures_are_local_files_and_nothing_is_fetched(built):
    out, result = built
    html = (out / "index.html").read_text()
    page = _Page()
    page.feed(html)
    assert sorted(page.images) == sorted(result["figures"])
    assert {
        "figures/roc.png",
        "figures/pr.png",
        "figures/confusion.png",
        "figures/calibration.png",
        "figures/training.png",
        "figures/metrics.png",
        "figures/gradcam.png",
    } <= set(page.images)
    for src in page.images:
        assert not src.startswith(("http:", "https:", "//", "/")) and (out / src).stat().st_size > 1000
    assert page.links == [] and "http://" not in html and "https://" not in html
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert sorted(md_images) == sorted(page.images)


@pytest.mark.slow
def test_stale_predictions_are_refused(trained, tmp_path):
    import pandas as pd

    root = trained["root"]
    pred = pd.read_csv(root / "eval" / "predictions.csv")
    test = pred["split"] == "test"
    pred.loc[test, "path"] = pred.loc[test, "path"].iloc[::-1].to_numpy()
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="stale"):
        report(
            root / "eval" / "metrics.json",
            tmp_path / "predictions.csv",
            root / "models" / "train" / "history.csv",
            trained["prepared"],
            trained["model"],
            tmp_path / "out",
            card_path=None,
        )
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (apt-get install chromium)")
def test_the_page_renders_offline_in_headless_chromium_with_every_image(built, tmp_path):
    out, _ = built
    probe = out / "_probe.html"
    script = (
        "<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
        "document.body.setAttribute('data-images',i.length+':'+i.filter(function(x){"
        "return x.complete&&x.naturalWidth>0}).length)});</script></body>"
    )
    probe.write_text((out / "index.html").read_text().replace("</body>", script))
    flags = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    try:
        dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90)
        shot = tmp_path / "page.png"
        subprocess.run(
            flags + [f"--screenshot={shot}", "--window-size=1200,3000", (out / "index.html").as_uri()],
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        probe.unlink()
    found = re.search(r'data-images="(\d+):(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    total, loaded = int(found.group(1)), int(found.group(2))
    assert total == 7 and loaded == total
    from PIL import Image, ImageStat

    with Image.open(shot) as img:
        assert img.size == (1200, 3000)
        stat = ImageStat.Stat(img.convert("L"))
        assert stat.stddev[0] > 10  # not a blank page
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


class _Refs(HTMLParser):
    """Every src and href attribute, on any tag."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, value or "") for name, value in attrs if name in ("src", "href", "srcset")]


@pytest.mark.slow
def test_the_single_file_page_inlines_every_image(built):
    from PIL import Image

    out, result = built
    assert result["single_file"] == str(out / SINGLE_FILE)
    page = (out / SINGLE_FILE).read_text()
    refs = _Refs()
    refs.feed(page)
    assert len(refs.refs) == len(result["figures"]) == 7
    for tag, src in refs.refs:
        assert tag == "img" and src.startswith("data:image/png;base64,"), src[:80]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as img:
            img.load()
            assert img.format == "PNG" and min(img.size) > 100
    assert "://" not in page  # no URL of any scheme (":" is not in the base64 alphabet)
    # The same page otherwise: the numbers and the warning are there.
    shown, inlined = _Page(), _Page()
    shown.feed((out / "index.html").read_text())
    inlined.feed(page)
    assert inlined.keyed == shown.keyed and "SYNTHETIC" in page


@pytest.mark.slow
def test_the_report_says_the_data_was_synthetic_not_the_kermany_split(built):
    out, result = built
    assert result["data"]["synthetic"] is True
    for name in ("index.html", "report.md"):
        text = (out / name).read_text()
        assert "official Kermany" not in text, name
        assert "SYNTHETIC demo images generated by pneumo" in text and "no Kermany split" in text, name


def test_the_data_statement_follows_the_recorded_source():
    real_official = describe_data(
        {"synthetic": False, "test_source": "official"}, None, {"synthetic": False, "test_source": "official"}
    )
    assert not real_official["synthetic"] and real_official["warning"] is None
    assert "official Kermany et al. 2018 test split" in real_official["statement"]
    carved = describe_data({"synthetic": False, "test_source": "carved"}, None, None)
    assert "carved from train" in carved["statement"] and "Kermany" not in carved["statement"]
    # Any one source saying synthetic wins: a demo model never passes for a real one.
    card = {"synthetic_data": True, "warning": "demo card warning"}
    flagged = describe_data({"synthetic": False, "test_source": "official"}, card, None)
    assert flagged["synthetic"] and flagged["warning"] == "demo card warning"
    assert "SYNTHETIC" in flagged["statement"] and "official" not in flagged["statement"]


@pytest.mark.slow
def test_the_gradcam_figure_carries_the_notice_and_the_warning(built):
    from PIL import Image

    out, _ = built
    with Image.open(out / "figures" / "gradcam.png") as img:
        text = dict(img.text)
        rgb = np.asarray(img.convert("RGB")).astype(int)
    assert "not a diagnosis" in text["Description"] and "SYNTHETIC" in text["Warning"]
    bottom = rgb[-60:]
    red = (bottom[..., 0] > 150) & (bottom[..., 1] < 80) & (bottom[..., 2] < 80)
    assert red.sum() > 100  # the warning line is drawn under the panels, in red
