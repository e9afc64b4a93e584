"""The page of `pneumo serve` as a person uses it: the real server on loopback, Debian's headless Chromium
driven by Playwright, a real X-ray uploaded through the file input. The page must show what the API
answers, work with no internet, and be usable with a keyboard and on a phone. Screenshots are kept in
tests/artifacts/ (not tracked by git)."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from serve_support import real_xrays, serve

from support import REPO, needs_real_data

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
STATIC = REPO / "pneumo" / "serving" / "static"
ARTIFACTS = REPO / "tests" / "artifacts"
NOTICE = "Assistive only, not a diagnosis: a qualified clinician reads every image."
ANSWER_TIMEOUT_MS = 120_000  # the first heat map of a fresh server may load Keras for Grad-CAM
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}

# WCAG relative luminance and contrast of every visible text node against its first opaque background.
CONTRAST_JS = """() => {
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92
    : ((c + 0.055) / 1.055) ** 2.4; }).reduce((a, c, i) => a + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (node) => { for (; node; node = node.parentElement) {
    const c = rgb(getComputedStyle(node).backgroundColor); if (c.length < 4 || c[3] > 0) return c; }
    return [255, 255, 255]; };
  const worst = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const node = t.parentElement;
    if (!t.textContent.trim() || !node.checkVisibility() || node.closest(".sr-only")) continue;
    const [a, b] = [lum(rgb(getComputedStyle(node).color)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) worst.push(`${ratio.toFixed(2)}: ${t.textContent.trim().slice(0, 40)}`);
  }
  return worst;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None:
        pytest.skip("no chromium executable (Debian's `chromium` package; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server():
    from pneumo.serving.packaged import packaged_model

    try:
        packaged_model()
    except FileNotFoundError as exc:
        pytest.skip(f"no packaged model to serve: {exc}")
    with serve() as running:
        yield running


def open_page(browser, server, viewport: dict[str, int]) -> tuple[Any, list[str]]:
    """A fresh page on the server's `/`, and the list of every URL it requests from then on."""
    page = browser.new_page(viewport=viewport)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{server.url}/")
    return page, requested


def assert_offline(requested: list[str], server) -> None:
    """Every request the page made went to the server it came from (or stayed inside the page)."""
    origin = urlsplit(server.url)
    assert requested, "the page made no request at all"
    for url in requested:
        parts = urlsplit(url)
        assert parts.scheme in ("data", "blob") or (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url
        assert parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1", url


def api_answer(server, path: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/predict", params={"heatmap": "true"}, files={"files": (path, data)}, timeout=120
    )


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000, path
    return path


def ct_dicom() -> bytes:
    """A small CT slice as a DICOM Part 10 file: the header gate rejects it before the model runs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = "CT", "CHEST"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(range(256)) * 16
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_the_static_files_name_nothing_outside_the_server():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[\w.-]+\.\w", text.replace("<!--", "").replace("-->", "")), path
        assert "@import" not in text and "@font-face" not in text, path
    html = (STATIC / "index.html").read_text()
    assert 'accept="image/jpeg,image/png,.dcm,application/dicom"' in html
    assert "capture" not in html, "a forced capture hides the gallery on phones"


@needs_real_data
def test_the_page_shows_what_the_api_answers_for_a_real_xray(browser, server):
    from playwright.sync_api import expect

    model = httpx.get(f"{server.url}/v1/model", timeout=30).json()
    normal, pneumonia = real_xrays(2)
    for xray, viewport, shot in ((normal, WIDE, "serve_page.png"), (pneumonia, PHONE, "serve_page_phone.png")):
        response = api_answer(server, xray.name, xray.read_bytes())
        assert response.status_code == 200, response.text
        (api,) = response.json()["results"]
        page, requested = open_page(browser, server, viewport)
        page.set_input_files("#file", xray)

        expect(page.get_by_test_id("decision")).to_have_text(api["decision"], timeout=ANSWER_TIMEOUT_MS)
        expect(page.get_by_test_id("probability")).to_have_text(f"{api['probability']:.3f}")
        expect(page.get_by_test_id("threshold")).to_have_text(f"{api['threshold']:.3f}")
        reasons = page.get_by_test_id("reasons").locator("li")
        expect(reasons).to_have_text(api["reasons"] or ["No reason given."])
        heatmap = page.get_by_test_id("heatmap")
        expect(heatmap).to_be_visible()
        assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
        assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0"), "the heat map did not decode"
        expect(page.get_by_test_id("notice")).to_have_text(NOTICE)
        expect(page.get_by_test_id("notice")).to_be_visible()
        expect(page.get_by_test_id("status")).to_contain_text(api["decision"])
        expect(page.get_by_test_id("model")).to_contain_text(model["sha256"])
        expect(page.get_by_test_id("error")).to_be_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], "sideways scrolling"
        assert page.evaluate(CONTRAST_JS) == [], "text below 4.5:1 contrast"

        card = httpx.get(urljoin(page.url, page.get_by_test_id("card-link").get_attribute("href")), timeout=30)
        assert card.status_code == 200 and card.headers["content-type"].startswith("application/json")
        assert card.json() == model["card"]
        assert_offline(requested, server)
        screenshot(page, shot)
        page.close()


def test_a_bad_file_shows_the_error_and_the_page_needs_no_internet(browser, server):
    from playwright.sync_api import expect

    page, requested = open_page(browser, server, WIDE)
    expect(page.get_by_test_id("notice")).to_have_text(NOTICE)

    # Keyboard: Tab reaches the drop zone, it shows where focus is, and Enter and Space open the picker.
    picker = page.get_by_test_id("picker")
    for _ in range(10):
        page.keyboard.press("Tab")
        if picker.evaluate("node => node === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the file picker")
    assert picker.evaluate("node => node.matches(':focus-visible')")
    assert picker.evaluate("node => getComputedStyle(node).outlineStyle") != "none"
    # Enter and Space each open the file input's chooser (counted from the input's click; whether headless
    # Chromium then raises a chooser event for a keyboard-opened picker varied from run to run here).
    page.evaluate("window.opened = 0; document.getElementById('file').addEventListener('click', () => window.opened++)")
    for key in ("Enter", " "):
        page.keyboard.press(key)
    assert page.evaluate("window.opened") == 2
    assert not page.evaluate("document.getElementById('file').multiple")
    labelled = page.evaluate("[...document.querySelectorAll('input')].every(i => i.labels.length > 0)")
    assert labelled, "an input without a <label>"

    name, data = "not_an_xray.jpeg", b"plain text, renamed .jpeg\n" * 4
    api = api_answer(server, name, data)
    assert api.status_code == 415, api.text
    page.set_input_files("#file", files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
    error = page.get_by_test_id("error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text(name)
    expect(error).to_contain_text("415")
    expect(error).to_contain_text(api.json()["detail"])
    expect(page.get_by_test_id("decision")).to_be_hidden()
    assert page.evaluate(CONTRAST_JS) == [], "text below 4.5:1 contrast"
    assert_offline(requested, server)
    assert any(url.endswith("/v1/predict?heatmap=true") for url in requested)
    screenshot(page, "serve_page_error.png")
    page.close()


def test_a_rejected_dicom_shows_its_reasons_and_why_there_is_no_heat_map(browser, server):
    from playwright.sync_api import expect

    name, data = "ct_slice.dcm", ct_dicom()
    api = api_answer(server, name, data)
    assert api.status_code == 200, api.text
    (answer,) = api.json()["results"]
    assert answer["decision"] == "rejected" and answer["probability"] is None and "heatmap" not in answer

    page, requested = open_page(browser, server, PHONE)
    page.set_input_files("#file", files=[{"name": name, "mimeType": "application/dicom", "buffer": data}])
    expect(page.get_by_test_id("decision")).to_have_text("rejected", timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_test_id("probability")).to_have_text("not computed")
    expect(page.get_by_test_id("threshold")).to_have_text(f"{answer['threshold']:.3f}")
    expect(page.get_by_test_id("reasons").locator("li")).to_have_text(answer["reasons"])
    expect(page.get_by_test_id("heatmap")).to_be_hidden()
    expect(page.get_by_test_id("figure-note")).to_contain_text("no heat map (the image was rejected before the model")
    expect(page.get_by_test_id("figure-note")).to_contain_text("cannot display this file")
    expect(page.get_by_test_id("status")).to_contain_text(f"{name}: rejected")
    assert_offline(requested, server)
    screenshot(page, "serve_page_rejected.png")
    page.close()
