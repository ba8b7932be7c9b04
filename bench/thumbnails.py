"""Benchmark of the media thumbnail (issue 8). A script, not a test.

    python bench/thumbnails.py [--megapixels 12] [--runs 10] [--box 320]

Makes one camera-like JPEG of ``--megapixels`` (4:3, with an EXIF orientation and textured content
so that it compresses like a photo), then thumbnails it ``--runs`` times with:

- ``roomee``: ``roomee.media.imaging.make_thumbnail``, what upload-complete runs (draft-mode decode,
  EXIF transpose, fit in the box, saved without metadata);
- ``naive``: the same output done the obvious way in the same run: full decode (``Image.load``),
  EXIF transpose of the full image, one LANCZOS resize (``thumbnail`` with ``reducing_gap=None``);
- ``full-decode``: a stronger baseline, full decode and transpose, then Pillow's default
  ``thumbnail`` (which reduces by integer factors before the final resize).

Each method runs in a child process of its own so that its peak memory (``ru_maxrss``) is its own;
the table prints images/s, the peak resident memory above the child's idle baseline, and the ratio
of ``roomee`` to ``naive``. The target of the issue: at least 5x faster, memory bounded.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))


def camera_jpeg(megapixels: float) -> bytes:
    """A 4:3 JPEG of about ``megapixels`` with textured content and EXIF orientation 6."""
    from PIL import Image, ImageFilter

    width = int((megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    noise = Image.effect_noise((width // 8, height // 8), 64).resize((width, height), Image.Resampling.BILINEAR)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (noise, gradient, noise.filter(ImageFilter.GaussianBlur(3))))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "BenchCam"
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def naive_thumbnail(data: bytes, box: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # the whole 12 MP bitmap
        upright = ImageOps.exif_transpose(image).convert("RGB")
        upright.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=None)
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


def full_decode_thumbnail(data: bytes, box: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
        upright.thumbnail((box, box), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


BASELINES = {"naive": naive_thumbnail, "full-decode": full_decode_thumbnail}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(method: str, path: str, runs: int, box: int, queue) -> None:
    from roomee.media.imaging import make_thumbnail

    data = Path(path).read_bytes()
    idle = _rss_mb()
    if method == "roomee":
        def function():
            return make_thumbnail(data, box).data
    else:
        def function():
            return BASELINES[method](data, box)
    function()  # warm-up (imports, first allocations)
    started = time.perf_counter()
    for _ in range(runs):
        thumbnail = function()
    elapsed = time.perf_counter() - started
    queue.put({"method": method, "per_second": runs / elapsed, "ms": elapsed / runs * 1000,
               "peak_rss_mb": _rss_mb(), "peak_above_idle_mb": _rss_mb() - idle, "thumbnail_bytes": len(thumbnail)})


def measure(method: str, path: str, runs: int, box: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(method, path, runs, box, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=12)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--box", type=int, default=320)
    args = parser.parse_args()

    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "photo.jpg"
        path.write_bytes(camera_jpeg(args.megapixels))
        from PIL import Image

        with Image.open(path) as probe:
            size = probe.size
        print(f"source: {size[0]}x{size[1]} JPEG ({size[0] * size[1] / 1e6:.1f} MP, {path.stat().st_size / 1e6:.1f} MB),"
              f" EXIF orientation 6; box {args.box}px; {args.runs} runs each; {os.cpu_count()} CPUs")
        results = {m: measure(m, str(path), args.runs, args.box) for m in ("naive", "full-decode", "roomee")}
    print(f"{'method':<12} {'images/s':>9} {'ms/image':>9} {'peak RSS MB':>12} {'above idle MB':>14}")
    for method, r in results.items():
        print(f"{method:<12} {r['per_second']:>9.2f} {r['ms']:>9.1f} {r['peak_rss_mb']:>12.1f} {r['peak_above_idle_mb']:>14.1f}")
    ours = results["roomee"]
    for baseline in BASELINES:
        speed = ours["per_second"] / results[baseline]["per_second"]
        print(f"roomee vs {baseline}: {speed:.1f}x images/s (target >= 5x); peak memory above idle "
              f"{ours['peak_above_idle_mb']:.1f} MB vs {results[baseline]['peak_above_idle_mb']:.1f} MB")
    print(json.dumps({m: {k: round(v, 2) for k, v in r.items() if k != "method"} for m, r in results.items()}))


if __name__ == "__main__":
    main()
