"""`pneumo serve` under load on loopback: throughput, latency, errors and memory (a script, not a test).

    python benchmarks/serve_load.py                      # int8 and Keras x 1, 2 workers x 1, 8, 32 clients
    python benchmarks/serve_load.py --soak 300           # int8, 2 workers, 8 clients for 5 min: memory, 5xx

For each model file and worker count it starts the real server (`python -m pneumo serve`) on a
free loopback port and waits for /readyz; then, for each client count, C concurrent clients POST
real X-rays (a fixed list, cycled; one per request) to /v1/predict for --seconds after --warmup
seconds. Each row has the 200 answers per second, p50/p95/p99 latency over every request, the
errors by status (5xx apart), the server's memory (RSS of the parent and its workers) before and
after, and the CPU time the server and the load generator each spent. `--soak` runs one
configuration for longer, sampling that memory every --sample seconds.

The load generator shares the CPUs with the server, so it is kept cheap: one process, one asyncio
loop, one httpx client per run, every request body encoded once before the clock starts. Prints the
table and writes benchmarks/results/serve.json (the `load` or the `soak` part, keeping the other),
which `pneumo readme` renders into the README.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "chest_xray" / "test"
SOAK_WORKERS, SOAK_CLIENTS = 2, 8
CONTENT_TYPES = {".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png", ".dcm": "application/dicom"}
READY_TIMEOUT_S = 300.0  # a Keras worker imports TensorFlow and loads the .h5 first


class Body(NamedTuple):
    """One request, encoded once: the multipart bytes and their content type."""

    content: bytes
    content_type: str


class Server(NamedTuple):
    url: str
    process: subprocess.Popen
    info: dict  # GET /v1/model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_images(folder: Path, n: int) -> list[Path]:
    """The first n images of the folder, alternating between its class subfolders (sorted, so fixed)."""
    classes = [
        sorted(p for p in d.iterdir() if p.suffix.lower() in CONTENT_TYPES)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    ]
    mixed = [p for group in itertools.zip_longest(*classes) for p in group if p is not None]
    if not mixed:
        raise SystemExit(f"--images {folder}: no JPEG, PNG or DICOM files in its subfolders")
    return mixed[:n]


def encode(images: list[Path]) -> list[Body]:
    """Each image as the multipart body of a /v1/predict request (field `files`), built once."""
    bodies = []
    for path in images:
        files = {"files": (path.name, path.read_bytes(), CONTENT_TYPES[path.suffix.lower()])}
        request = httpx.Request("POST", "http://127.0.0.1/v1/predict", files=files)
        bodies.append(Body(request.read(), request.headers["content-type"]))
    return bodies


def rss_mib(pid: int) -> float:
    """Resident memory of the server: the process and all its children (the uvicorn workers), in MiB."""
    parent = psutil.Process(pid)
    total = 0
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time (user + system) of the process (and its live children) so far, in seconds."""
    parent = psutil.Process(pid)
    total = 0.0
    for proc in [parent, *(parent.children(recursive=True) if children else [])]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _wait_ready(url: str, process: subprocess.Popen, log: Path, workers: int) -> None:
    """Until /readyz says ready on 2 x workers fresh connections in a row (each may reach another worker)."""
    deadline, streak = time.monotonic() + READY_TIMEOUT_S, 0
    while streak < 2 * workers:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the server was not ready after {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
        try:
            ready = httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ready = False
        streak = streak + 1 if ready else 0
        if not ready:
            time.sleep(0.5)


@contextmanager
def serve(model: Path, workers: int, log_dir: Path) -> Iterator[Server]:
    """`python -m pneumo serve --model M --workers W` on a free loopback port, ready; stopped on exit."""
    from pneumo.core.proc import child_env

    port = free_port()
    cmd = [sys.executable, "-m", "pneumo", "serve", "--model", str(model), "--workers", str(workers)]
    cmd += ["--port", str(port), "--host", "127.0.0.1"]
    env = {k: v for k, v in child_env({"TF_CPP_MIN_LOG_LEVEL": "3"}).items() if k != "PNEUMO_API_KEY"}
    log = log_dir / f"{model.stem}-{workers}w.log"
    with log.open("w") as out:
        # Its own session, so that one signal reaches the parent and every worker it started.
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log, workers)
        yield Server(url, process, httpx.get(f"{url}/v1/model", timeout=10).json())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Run(NamedTuple):
    """What the clients saw: every request's latency (s) and status ("200", "503", or the httpx error)."""

    latencies: list[float]
    statuses: Counter
    seconds: float


async def drive(client: httpx.AsyncClient, bodies: list[Body], clients: int, seconds: float) -> Run:
    """`clients` concurrent clients, each POSTing the next body as soon as its last answer came, until
    `seconds` have passed (requests in flight then are waited for and counted)."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    turn = itertools.count()
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            body = bodies[next(turn) % len(bodies)]
            start = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/predict", content=body.content, headers={"content-type": body.content_type}
                )
                status = str(response.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            latencies.append(time.perf_counter() - start)
            statuses[status] += 1

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return Run(latencies, statuses, time.perf_counter() - start)


def summarize(run: Run) -> dict:
    """Requests, 200 answers per second, latency percentiles (ms, over every request) and errors."""
    ms = np.asarray(run.latencies) * 1e3
    errors = {status: n for status, n in sorted(run.statuses.items()) if status != "200"}
    return {
        "requests": len(run.latencies),
        "seconds": round(run.seconds, 2),
        "req_s": run.statuses["200"] / run.seconds,
        **{f"p{q}_ms": float(np.percentile(ms, q)) if len(ms) else None for q in (50, 95, 99)},
        "errors": sum(errors.values()),
        "errors_5xx": sum(n for status, n in errors.items() if status.startswith("5")),
        "errors_by_status": errors,
    }


def _client(url: str, clients: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=120)


async def measured(client: httpx.AsyncClient, bodies: list[Body], clients: int, seconds: float, pid: int) -> dict:
    """`drive` summarized, with the CPU seconds the server and this load generator spent meanwhile."""
    # This process alone: the server is its child.
    own, server = cpu_seconds(os.getpid(), children=False), cpu_seconds(pid)
    stats = summarize(await drive(client, bodies, clients, seconds))
    stats["server_cpu_s"] = round(cpu_seconds(pid) - server, 2)
    stats["client_cpu_s"] = round(cpu_seconds(os.getpid(), children=False) - own, 2)
    return stats


async def load(url: str, bodies: list[Body], pid: int, clients: int, seconds: float, warmup: float) -> dict:
    """One row: warm up with `clients` clients, then measure for `seconds`."""
    async with _client(url, clients) as client:
        await drive(client, bodies, clients, warmup)
        return await measured(client, bodies, clients, seconds, pid)


async def soak(url: str, bodies: list[Body], pid: int, seconds: float, warmup: float, sample_s: float) -> dict:
    """SOAK_CLIENTS clients for `seconds` after `warmup`, the server's memory sampled every `sample_s`."""
    async with _client(url, SOAK_CLIENTS) as client:
        await drive(client, bodies, SOAK_CLIENTS, warmup)
        rss = [rss_mib(pid)]
        finished = asyncio.Event()

        async def sample() -> None:
            while not finished.is_set():
                try:
                    await asyncio.wait_for(finished.wait(), sample_s)
                except TimeoutError:
                    rss.append(rss_mib(pid))

        sampler = asyncio.create_task(sample())
        stats = await measured(client, bodies, SOAK_CLIENTS, seconds, pid)
        finished.set()
        await sampler
    rss.append(rss_mib(pid))
    return {
        **stats,
        "sample_s": sample_s,
        "rss_mib": [round(m, 1) for m in rss],
        "growth_mib": rss[-1] - rss[0],
    }


def _row(server: Server, workers: int, clients: int, stats: dict, before: float, after: float) -> dict:
    info = server.info
    return {
        "model": info["file"],
        "backend": info["backend"],
        "sha256": info["sha256"],
        "workers": workers,
        "clients": clients,
        **stats,
        "rss_mib_before": round(before, 1),
        "rss_mib_after": round(after, 1),
    }


def default_models() -> list[Path]:
    """The packaged int8 file and the .h5 of the same run beside it."""
    from pneumo.serving.packaged import keras_beside, packaged_model

    int8 = packaged_model()
    return [int8, *([h5] if (h5 := keras_beside(int8)) else [])]


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _write(out: Path, part: str, record: dict) -> None:
    """Replace the `load` or the `soak` part of serve.json, keeping the other."""
    bench = json.loads(out.read_text()) if out.exists() else {}
    bench[part] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench, indent=2) + "\n")
    print(f"wrote {out} ({part})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", help="model files (default: the packaged int8 and .h5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each row")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="a folder of class subfolders")
    parser.add_argument("--n-images", type=int, default=32, help="how many images to cycle through")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help=f"only the soak: int8, {SOAK_WORKERS} workers")
    parser.add_argument("--soak-warmup", type=float, default=30.0, help="seconds of load before the first sample")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples in the soak")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    args = parser.parse_args(argv)

    from pneumo.ops.readme import serving_table, serving_verdict, soak_line

    models = args.models or default_models()
    images = pick_images(args.images, args.n_images)
    bodies = encode(images)
    command = " ".join(["python benchmarks/serve_load.py", *(sys.argv[1:] if argv is None else argv)])
    common = {
        "machine": _machine(),
        "command": command,
        "images": {
            "folder": str(args.images),
            "count": len(images),
            "mean_kb": float(np.mean([len(b.content) for b in bodies])) / 1e3,
        },
    }
    with tempfile.TemporaryDirectory(prefix="serve_load-") as logs:
        if args.soak is not None:
            model = next((m for m in models if m.suffix == ".tflite"), models[0])
            with serve(model, SOAK_WORKERS, Path(logs)) as server:
                stats = asyncio.run(
                    soak(server.url, bodies, server.process.pid, args.soak, args.soak_warmup, args.sample)
                )
            record = {
                **common,
                **_row(server, SOAK_WORKERS, SOAK_CLIENTS, stats, stats["rss_mib"][0], stats["rss_mib"][-1]),
                "seconds": args.soak,
                "warmup_seconds": args.soak_warmup,
            }
            print(soak_line(record))
            _write(args.out, "soak", record)
            return 0

        rows = []
        for model in models:
            for workers in args.workers:
                with serve(model, workers, Path(logs)) as server:
                    for clients in args.concurrency:
                        before = rss_mib(server.process.pid)
                        stats = asyncio.run(
                            load(server.url, bodies, server.process.pid, clients, args.seconds, args.warmup)
                        )
                        rows.append(_row(server, workers, clients, stats, before, rss_mib(server.process.pid)))
                        r = rows[-1]
                        print(
                            f"{r['model']} {workers}w {clients}c: {r['req_s']:.1f} req/s, p99 {r['p99_ms']:.0f} ms, "
                            f"{r['errors']} errors, RSS {before:.0f} -> {r['rss_mib_after']:.0f} MiB, CPU cores used: "
                            f"server {r['server_cpu_s'] / r['seconds']:.2f}, load generator "
                            f"{r['client_cpu_s'] / r['seconds']:.2f}",
                            flush=True,
                        )
    print()
    print(serving_table(rows))
    print()
    print(serving_verdict(rows))
    _write(
        args.out,
        "load",
        {**common, "seconds": args.seconds, "warmup_seconds": args.warmup, "results": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
