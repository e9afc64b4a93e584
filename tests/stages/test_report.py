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
        "figures/reliability.png",  # the trained fixture's metrics hold the calibration
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
    assert total == 8 and loaded == total
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
    assert len(refs.refs) == len(result["figures"]) == 8
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


# ---- the safe answers section, from metrics built by the evaluate stage's own functions (no model) ----


def _decided(tmp: Path) -> tuple[dict, Path, Path, Path]:
    """metrics.json, predictions.csv and history.csv as the evaluate stage writes them, from made-up
    logits and features: the policy, calibration and decisions come from its own functions."""
    import pandas as pd

    from pneumo.core import ood
    from pneumo.core.config import EvaluateParams, as_dict
    from pneumo.core.constants import LABELS
    from pneumo.core.decision import sigmoid
    from pneumo.core.io import write_json
    from pneumo.stages.evaluate import (
        calibration_summary,
        decisions_summary,
        fit_policy,
        policy_record,
        summarize,
    )

    rng = np.random.default_rng(7)
    params = EvaluateParams(bootstrap=40, refer_coverage=0.9)
    scored = {}
    for split, n in (("val", 240), ("test", 200)):
        y = rng.integers(0, 2, n)
        logits = 4.0 * ((2 * y - 1) * 0.8 + rng.normal(0, 1.0, n))  # over-confident: temperature > 1
        scored[split] = (y, logits, rng.normal(size=(n, 6)))
    policy = fit_policy(scored["val"][1], scored["val"][0], scored["val"][2], rng.normal(size=(400, 6)), params)
    frames = []
    for split, (y, logits, features) in scored.items():
        p = policy.probability(logits)
        score = policy.ood_scores(features, len(y))
        frames.append(
            pd.DataFrame(
                {
                    "path": [f"{split}/{i}.jpeg" for i in range(len(y))],
                    "split": split,
                    "patient": [f"{split}-p{i // 2}" for i in range(len(y))],
                    "label": [LABELS[v] for v in y],
                    "y": y,
                    "logit": logits,
                    "probability": p,
                    "ood_score": score,
                    "decision": policy.decisions(p, score),
                }
            )
        )
    pred = pd.concat(frames, ignore_index=True)
    metrics = {"synthetic": True, "test_source": None, **summarize(pred, params), "params": as_dict(params)}
    val = pred[pred["split"] == "val"]
    metrics["policy"] = policy_record(policy, params, val["probability"].to_numpy(), val["y"].to_numpy())
    metrics["calibration"] = {"bins": params.calibration_bins, "method": params.calibration}
    metrics["decisions"] = {}
    for split, part in pred.groupby("split", sort=False):
        y = part["y"].to_numpy()
        raw = sigmoid(part["logit"].to_numpy())
        metrics["calibration"][split] = calibration_summary(y, raw, part["probability"].to_numpy(), 10)
        metrics["decisions"][split] = decisions_summary(
            part, policy.threshold, params.bootstrap if split == "test" else 0, params.seed
        )
    metrics["ood"] = {
        "false_rejection": {s: metrics["decisions"][s]["answered"]["rejection_rate"] for s in ("val", "test")},
        # evaluate_ood's summary needs the network to score files; its shape, with made-up figures:
        "source": "data/ood",
        "images": 30,
        "rejected": 0.9,
        "errors": 1,
        "auroc_vs_val": 0.987,
        "per_kind": {"ct": {"images": 10, "rejected": 1.0}, "photo": {"images": 20, "rejected": 0.85}},
        "by_gate": {"content": {"images": 25, "rejected": 0.88}, "metadata": {"images": 5, "rejected": 1.0}},
    }
    assert policy.gate is not None and isinstance(policy.gate, ood.OodGate)
    write_json(tmp / "metrics.json", metrics)
    pred.drop(columns=["y"]).to_csv(tmp / "predictions.csv", index=False)
    epochs = np.arange(1, 4)
    pd.DataFrame(
        {"epoch": epochs, "loss": 1 / epochs, "val_loss": 1.1 / epochs, "auc": 0.8 + epochs / 100, "val_auc": 0.8}
    ).to_csv(tmp / "history.csv", index=False)
    return metrics, tmp / "metrics.json", tmp / "predictions.csv", tmp / "history.csv"


def _render(metrics_path: Path, predictions_path: Path, history_path: Path, out: Path) -> dict:
    return report(
        metrics_path,
        predictions_path,
        history_path,
        out.parent / "no-prepared",
        None,
        out,
        card_path=None,
        gradcam_per_group=0,
    )


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decided")
    metrics, *files = _decided(tmp)
    result = _render(*files, tmp / "reports")
    return metrics, files, tmp / "reports", result


def _md_row(md: str, section: str, name: str) -> list[str]:
    part = md.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    line = next(row for row in part.splitlines() if row.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def test_the_safe_answers_section_shows_the_metrics_files_figures(decided):
    metrics, _, out, _ = decided
    md = (out / "report.md").read_text()
    assert md.index("## Metrics") < md.index("## Safe answers") < md.index("## Curves")
    section = md.split("## Safe answers", 1)[1].split("## Curves", 1)[0]
    for meaning in ("Refer: the model cannot tell", "Rejected: not something the model can read"):
        assert meaning in section
    assert "never a diagnosis" in section and "adult chest X-rays" in section and "DICOM header is wrong" in section
    for split, name in (("val", "validation"), ("test", "test")):
        d = metrics["decisions"][split]
        cells = _md_row(section, "Decisions", name)
        assert int(cells[0]) == d["images"]
        assert cells[1].split(" (")[0] == _pct(d["answered"]["referral_rate"])
        assert cells[2].split(" (")[0] == _pct(d["answered"]["rejection_rate"])
        assert float(cells[3].split(" (")[0]) == pytest.approx(d["answered"]["accuracy"], abs=5e-4)
        assert float(cells[6]) == pytest.approx(d["all"]["accuracy"], abs=5e-4)
    assert 0 < metrics["decisions"]["test"]["referred"] < metrics["decisions"]["test"]["images"]  # a real band
    lo, hi = metrics["decisions"]["test"]["ci95"]["referral_rate"]
    referred = _md_row(section, "Decisions", "test")[1]
    assert referred.endswith(f" ({100 * lo:.1f}–{100 * hi:.1f}%)")
    ece = _md_row(section, "Calibration", "test")
    assert [float(c) for c in ece] == pytest.approx(
        [metrics["calibration"]["test"][k] for k in ("ece", "brier", "ece_uncalibrated", "brier_uncalibrated")],
        abs=5e-4,
    )
    threshold = _md_row(section, "Policy", "Operating threshold")
    assert float(threshold[0]) == pytest.approx(metrics["policy"]["threshold"], abs=5e-4)
    band = _md_row(section, "Policy", "Refer band")[0].split(" at coverage ")[0]
    assert [float(x) for x in band.split("–")] == pytest.approx(metrics["policy"]["refer"]["band"], abs=5e-4)
    assert _md_row(section, "Out-of-distribution set", "photo") == ["20", "85.0%"]
    assert "AUROC of the gate's distance against validation X-rays: 0.987" in section


def test_a_metrics_file_without_decisions_gives_the_old_report(decided, tmp_path):
    import pandas as pd

    from pneumo.core.io import read_json, write_json

    _, (metrics_path, predictions_path, history_path), _, _ = decided
    old = {k: v for k, v in read_json(metrics_path).items() if k not in ("policy", "calibration", "decisions", "ood")}
    write_json(tmp_path / "metrics.json", old)
    pred = pd.read_csv(predictions_path)[["path", "split", "patient", "label", "probability"]]
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    result = _render(tmp_path / "metrics.json", tmp_path / "predictions.csv", history_path, tmp_path / "reports")
    for name in ("report.md", "index.html"):
        text = (tmp_path / "reports" / name).read_text()
        assert "Safe answers" not in text and "reliability" not in text, name
        assert "Metrics" in text and "Curves" in text, name
    assert "figures/reliability.png" not in result["figures"] and len(result["figures"]) == 6


def test_the_reliability_figure_is_a_png_shown_on_both_pages(decided):
    from PIL import Image

    _, _, out, result = decided
    assert "figures/reliability.png" in result["figures"]
    with Image.open(out / "figures" / "reliability.png") as img:
        assert img.format == "PNG" and img.size[0] > 1.5 * img.size[1] > 300  # two panels side by side
    assert "![reliability](figures/reliability.png)" in (out / "report.md").read_text()
    page = _Page()
    page.feed((out / "index.html").read_text())
    assert "figures/reliability.png" in page.images


class _Shown(HTMLParser):
    """The text of every element carrying data-key (a fraction) or data-pct-key (a percentage)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[str, str, bool]] = []
        self._open: tuple[str, bool] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for attr, percent in (("data-key", False), ("data-pct-key", True)):
            if attr in a:
                self._open = (a[attr], percent)
                self.shown.append((a[attr], "", percent))

    def handle_data(self, data):
        if self._open is not None:
            key, text, percent = self.shown[-1]
            self.shown[-1] = (key, text + data, percent)

    def handle_endtag(self, tag):
        self._open = None


def test_the_html_shows_the_same_decisions_as_the_metrics_file(decided):
    metrics, _, out, _ = decided
    page = _Shown()
    page.feed((out / "index.html").read_text())
    keys = {key for key, _, _ in page.shown}
    for split in ("val", "test"):
        for figure in ("referral_rate", "rejection_rate", "accuracy", "sensitivity", "specificity"):
            assert f"decisions/{split}/answered/{figure}" in keys
    assert {f"decisions/test/ci95/{f}" for f in ("referral_rate", "accuracy")} <= keys
    assert {"policy/threshold", "calibration/test/ece", "ood/per_kind/ct/rejected", "ood/false_rejection/test"} <= keys
    for key, text, percent in page.shown:
        value = lookup(metrics, key, sep="/")
        assert value is not None, f"{key} is shown but not in metrics.json"
        wanted = [v * (100 if percent else 1) for v in (value if isinstance(value, list) else [value])]
        assert _numbers(text) == pytest.approx(wanted, abs=0.05 if percent else 5e-4), (key, text)
    md = (out / "report.md").read_text()
    html_row = [text for key, text, _ in page.shown if key.startswith("decisions/test/")]
    md_row = " ".join(_md_row(md, "Decisions", "test"))
    assert all(text in md_row for text in html_row)  # the two pages show the same figures


def test_the_reliability_bins_are_the_ones_the_ece_is_computed_on():
    from sklearn.calibration import calibration_curve

    from pneumo.core.metrics import expected_calibration_error
    from pneumo.stages.report import reliability_bins

    rng = np.random.default_rng(3)
    p = rng.beta(0.7, 0.7, 500)
    y = (rng.random(500) < p**1.5).astype(int)
    mean, rate, count = reliability_bins(y, p, 10)
    frac, mean_sk = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert count.sum() == 500 and mean == pytest.approx(mean_sk) and rate == pytest.approx(frac)
    assert float(np.sum(count * np.abs(rate - mean)) / 500) == pytest.approx(expected_calibration_error(y, p, 10))


def test_gradcam_cases_follow_the_calibrated_probability_and_threshold(decided):
    import pandas as pd

    from pneumo.core.constants import LABELS
    from pneumo.stages.report import select_cases

    metrics, (_, predictions_path, _), _, _ = decided
    test = pd.read_csv(predictions_path).query("split == 'test'").reset_index(drop=True)
    t = metrics["operating_threshold"]
    assert t == metrics["policy"]["threshold"]
    cases = select_cases(test, t, 3)
    assert all(len(v) == 3 for v in cases.values())
    assert (cases["tp"]["probability"] >= t).all() and (cases["tp"]["label"] == LABELS[1]).all()
    assert (cases["fp"]["probability"] >= t).all() and (cases["fp"]["label"] == LABELS[0]).all()
    assert (cases["fn"]["probability"] < t).all() and (cases["fn"]["label"] == LABELS[1]).all()
    # the most confident first: the calibrated probability orders them, as the heat map titles show
    assert cases["tp"]["probability"].iloc[0] == test.loc[test["label"] == LABELS[1], "probability"].max()


def test_the_no_gate_out_of_distribution_line_gives_the_false_rejections_alone():
    from pneumo.stages.report import safe_answers

    metrics = {"operating_threshold": 0.4, "ood": {"false_rejection": {"val": 0.01, "test": 0.025}}}
    blocks = safe_answers(metrics, {}, "the card's limits")
    assert ("h3", "Out-of-distribution set") in blocks and not any(kind == "table" for kind, _ in blocks)
    line = "".join(piece.text for piece in blocks[-1][1])
    assert line == "X-rays rejected by mistake: validation 1.0%, test 2.5%."
    assert safe_answers({"operating_threshold": 0.4}, {}, None) == []
