"""`pneumo serve`'s API: answers like `pneumo predict`, refuses bad requests with clear 4xx and keeps serving,
guards every route but the health checks with the API key, and logs no patient data.

In-process tests drive the real ASGI app (FastAPI's TestClient runs its lifespan, so the model loads as in
a worker); the process tests start the real server on a free loopback port (serve_support).
"""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_support import real_xrays, serve

from support import needs_real_data

pytest.importorskip("ai_edge_litert")
from fastapi.testclient import TestClient  # noqa: E402

from pneumo.core.io import sha256_file  # noqa: E402
from pneumo.core.paths import INT8_FILE, MODEL_CARD  # noqa: E402
from pneumo.serving.api import create_app  # noqa: E402
from pneumo.serving.packaged import packaged_dir, packaged_model  # noqa: E402
from pneumo.serving.predict import predict_files  # noqa: E402
from pneumo.serving.service import ServeConfig  # noqa: E402

if not (packaged_dir() / INT8_FILE).is_file():
    pytest.skip("this checkout ships no packaged model (dvc repro writes pneumo/assets/model)", allow_module_level=True)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def chest_like(seed: int = 0) -> bytes:
    """A PNG with an X-ray's layout (dark lungs either side of a bright spine), no patient in it."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 224)
    img = 170 - 90 * np.exp(-(((np.abs(x)[None, :] - 0.45) / 0.22) ** 2)) * np.ones((224, 1))
    return _png(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))


def ready_client(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()  # runs the lifespan: the model loads in the background, as in a worker
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def client():
    app = create_app(ServeConfig(max_upload_bytes=2_000_000, max_files=4, slots=2).check())
    c = ready_client(app)
    yield c
    c.__exit__(None, None, None)


def post(client, *files: tuple[str, bytes], heatmap: bool = False):
    return client.post(
        "/v1/predict" + ("?heatmap=true" if heatmap else ""),
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )


def assert_still_serving(client) -> None:
    r = post(client, ("check.png", chest_like()))
    assert r.status_code == 200 and r.json()["results"][0]["decision"] in {"normal", "pneumonia", "refer", "rejected"}


def test_the_packaged_model_answers_and_says_which_model(client):
    info = client.get("/v1/model").json()
    assert info["file"] == INT8_FILE and info["backend"] == "litert" and info["packaged"] is True
    assert info["sha256"] == sha256_file(packaged_model())
    card = json.loads((packaged_dir() / MODEL_CARD).read_text())
    assert info["card"] == card and client.get("/v1/model/card").json() == card
    assert info["threshold"] == card["decision"]["threshold"] and info["heatmap"] is True and info["slots"] == 2
    assert "not a diagnosis" in info["notice"]
    body = post(client, ("a.png", chest_like(1)), ("b.png", chest_like(2))).json()
    assert [r["path"] for r in body["results"]] == ["a.png", "b.png"]
    assert body["model"] == {"file": INT8_FILE, "sha256": info["sha256"]}
    for r in body["results"]:
        assert set(r) >= {"decision", "probability", "ood_score", "reasons", "threshold", "model", "notice"}
        assert r["threshold"] == info["threshold"] and "not a diagnosis" in r["notice"]


def test_answers_equal_pneumo_predict_on_the_same_file(client, tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"img{seed}.png")
        paths[-1].write_bytes(chest_like(seed))
    expected = list(predict_files(paths, packaged_model()))
    got = post(client, *((p.name, p.read_bytes()) for p in paths)).json()["results"]
    for e, g in zip(expected, got, strict=True):
        assert g["decision"] == e["decision"] and g["reasons"] == e["reasons"]
        assert g["probability"] == pytest.approx(e["probability"], abs=1e-9)
        assert g["ood_score"] == pytest.approx(e["ood_score"], abs=1e-6)


def test_a_heat_map_comes_back_as_a_captioned_png(client):
    (r,) = post(client, ("chest.png", chest_like(4)), heatmap=True).json()["results"]
    assert r["heatmap"].startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(r["heatmap"].split(",", 1)[1])))
    assert png.format == "PNG" and png.width >= 384 and png.height > png.width  # the caption band below
    assert png.text["Notice"].startswith("Assistive") and png.text["Label"] == r["decision"]
    (plain,) = post(client, ("chest.png", chest_like(4))).json()["results"]
    assert "heatmap" not in plain


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("notes.jpeg", b"this is a text file, not an image\n", 415, "notes.jpeg: not a JPEG, PNG or DICOM"),
        ("anim.gif", b"GIF89a" + bytes(64), 415, "anim.gif"),
        ("broken.jpeg", b"\xff\xd8\xff\xe0" + bytes(200), 422, "broken.jpeg"),
        ("cut.png", None, 422, "cut.png"),
    ],
)
def test_bad_files_get_a_clear_4xx_naming_them_and_the_service_keeps_serving(client, name, data, status, words):
    if data is None:
        data = chest_like()[:300]  # a PNG cut short
    r = post(client, (name, data))
    assert r.status_code == status, r.text
    assert r.json()["status"] == status and words in r.json()["detail"]
    assert_still_serving(client)


def test_a_decompression_bomb_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, format="PNG")  # 64 M pixels in a few dozen KB
    assert len(bomb.getvalue()) < 2_000_000
    r = post(client, ("bomb.png", bomb.getvalue()))
    assert r.status_code == 422 and "bomb.png" in r.json()["detail"] and "pixels" in r.json()["detail"]
    assert_still_serving(client)


def test_oversized_bodies_too_many_files_and_no_files_are_4xx(client):
    r = post(client, ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(2_100_000)))
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
    r = post(client, *((f"{i}.png", chest_like(i)) for i in range(5)))
    assert r.status_code == 413 and "at most 4" in r.json()["detail"]
    r = client.post("/v1/predict", data={"other": "x"})
    assert r.status_code == 400 and "files" in r.json()["detail"]
    r = client.post("/v1/predict", content=b"not a form", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500
    assert_still_serving(client)


def test_a_dicom_that_is_not_a_chest_radiograph_is_rejected_before_the_model(client, tmp_path):
    from support import write_dicom

    ct = write_dicom(tmp_path / "ct.dcm", np.zeros((32, 32), np.uint8), Modality="CT")
    (r,) = post(client, ("ct.dcm", ct.read_bytes()), heatmap=True).json()["results"]
    assert r["decision"] == "rejected" and r["probability"] is None and "heatmap" not in r
    assert any("Modality is CT" in reason for reason in r["reasons"])


def test_readiness_says_loading_then_failed_for_a_broken_model(tmp_path):
    loading = TestClient(create_app(ServeConfig().check()))  # no lifespan: the model never starts loading
    assert loading.get("/healthz").json() == {"status": "ok"}
    r = loading.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert post(loading, ("a.png", chest_like())).status_code == 503
    broken = tmp_path / INT8_FILE
    broken.write_bytes(b"not a flatbuffer")
    client = TestClient(create_app(ServeConfig(model=str(broken)).check()))
    with client:
        deadline = time.monotonic() + 30
        while (body := client.get("/readyz").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body["status"] == "failed" and str(broken) in body["detail"]
        assert client.get("/healthz").status_code == 200 and client.get("/v1/model").status_code == 503


def test_cors_is_off_unless_an_origin_is_configured():
    origin = "https://viewer.example"
    off = TestClient(create_app(ServeConfig().check()))
    assert "access-control-allow-origin" not in off.get("/healthz", headers={"Origin": origin}).headers
    on = TestClient(create_app(ServeConfig(cors_origins=(origin,)).check()))
    assert on.get("/healthz", headers={"Origin": origin}).headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in on.get("/healthz", headers={"Origin": "https://evil.example"}).headers


def test_the_api_key_guards_every_route_but_the_health_checks():
    key = "s3cret-key"
    with serve(env={"PNEUMO_API_KEY": key}) as server:
        assert "API key required" in server.output()
        for path in ("/healthz", "/readyz"):
            assert httpx.get(server.url + path).status_code == 200
        for path in ("/", "/v1/model", "/v1/model/card", "/docs", "/openapi.json"):
            r = httpx.get(server.url + path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == 'Basic realm="pneumo"' and "PNEUMO_API_KEY" in r.json()["detail"]
        assert httpx.get(server.url + "/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(server.url + "/v1/model", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(server.url + "/v1/model", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(server.url + "/v1/model", auth=("anyone", key)).status_code == 200
        files = [("files", ("a.png", chest_like(), "image/png"))]
        assert httpx.post(server.url + "/v1/predict", files=files).status_code == 401
        assert httpx.post(server.url + "/v1/predict", files=files, headers={"X-API-Key": key}).status_code == 200


def test_logs_carry_no_file_names_unless_asked(tmp_path):
    name = "Doe_Jane_1987-03-02.png"
    for flag, shown in (((), False), (("--log-filenames",), True)):
        with serve(*flag) as server:
            r = httpx.post(server.url + "/v1/predict", files=[("files", (name, chest_like(), "image/png"))])
            assert r.status_code == 200 and r.json()["results"][0]["path"] == name
            time.sleep(0.3)
            out = server.output()
            assert "predict: 1 file(s)" in out
            assert ("Doe_Jane" in out) is shown, out
        assert server.process.returncode is not None


def test_serve_refuses_a_missing_model_with_a_clear_error(tmp_path):
    with serve("--model", str(tmp_path / "nope.tflite"), ready=False) as server:
        assert server.process.wait(timeout=30) == 2
        assert "nope.tflite: model file missing" in server.output()


@needs_real_data
def test_every_held_out_test_image_gets_the_same_decision_as_pneumo_predict():
    """Issue 15's acceptance: POST /v1/predict and `pneumo predict` agree on every test X-ray (two workers)."""
    images = sorted(real_xrays(10_000))
    expected = {r["path"]: r for r in predict_files(images, packaged_model())}
    with serve("--workers", "2", "--max-files", "16") as server, httpx.Client(timeout=60) as http:
        got = {}
        for start in range(0, len(images), 16):
            batch = images[start : start + 16]
            files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch]
            r = http.post(server.url + "/v1/predict", files=files)
            assert r.status_code == 200, r.text
            got.update({str(p): row for p, row in zip(batch, r.json()["results"], strict=True)})
    assert len(got) == len(images) >= 300
    differ = [p for p in got if got[p]["decision"] != expected[p]["decision"]]
    assert not differ, differ[:5]
    assert max(abs((got[p]["probability"] or 0) - (expected[p]["probability"] or 0)) for p in got) < 1e-6


def test_inference_does_not_block_the_event_loop():
    """While one worker scores a heavy request, it still answers /healthz (inference runs off the loop)."""
    import threading

    files = [("files", (f"{i}.png", chest_like(i), "image/png")) for i in range(16)]
    with serve("--max-files", "16", "--slots", "1") as server, httpx.Client(timeout=60) as http:
        done: dict[str, float] = {}

        def heavy() -> None:
            r = http.post(server.url + "/v1/predict?heatmap=true", files=files)
            assert r.status_code == 200
            done["at"] = time.monotonic()

        worker = threading.Thread(target=heavy)
        start = time.monotonic()
        worker.start()
        answered = []
        while worker.is_alive():
            if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                answered.append(time.monotonic())
            time.sleep(0.01)
        worker.join()
    assert done["at"] - start > 0.2, "the heavy request was too quick to tell"
    assert any(start + 0.05 < t < done["at"] - 0.02 for t in answered), (answered, start, done)


def test_the_printed_url_gives_the_page_and_everything_it_loads():
    import re

    with serve() as server:
        printed = re.search(r"pneumo serve: (http://\S+)", server.output())
        assert printed and printed.group(1) == server.url + "/"
        assert "model_int8.tflite" in server.output() and "not a diagnosis" in server.output()
        page = httpx.get(printed.group(1))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "not a diagnosis" in page.text
        assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
        assert assets and not [a for a in assets if "//" in a]  # nothing from another host: it works offline
        for asset in assets:
            assert httpx.get(printed.group(1) + asset).status_code == 200, asset
        docs = httpx.get(server.url + "/docs")  # the OpenAPI page too: Swagger UI from the package, not a CDN
        docs_assets = re.findall(r"(?:src|href|url)\s*[=:]\s*['\"]([^'\"]+)['\"]", docs.text)
        assert docs.status_code == 200 and len(docs_assets) >= 3 and not [a for a in docs_assets if "//" in a]
        for asset in docs_assets:
            assert httpx.get(server.url + asset).status_code == 200, asset


def test_keep_alive_answers_are_not_held_back_by_nagle_with_two_workers():
    """With --workers 2 uvicorn binds the socket itself; without TCP_NODELAY each response's body waited for the
    client's delayed ACK (40 ms on Linux). Twenty keep-alive requests on one raw connection show the difference."""
    import socket
    import statistics

    with serve("--workers", "2") as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for _ in range(20):
                start = time.perf_counter()
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                reply = b""
                while not reply.endswith(b'{"status":"ok"}'):
                    reply += conn.recv(4096)
                times.append(time.perf_counter() - start)
    assert reply.startswith(b"HTTP/1.1 200")
    assert statistics.median(times) < 0.02, times
