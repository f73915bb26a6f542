#!/usr/bin/env python3
"""Speed peer for visage's Rust pipeline: the same model files run by ONNX Runtime's Python
binding, so the two can be compared side by side on one machine.

Measures the median wall time of `session.run` alone (preprocessing excluded):
  * detect_ms                  one detector run on a 640x480 real photo letterboxed into the
                               detector input (top-left, zero padding);
  * embed_ms_batch1            one recogniser run on one aligned 112x112 face;
  * embed_ms_per_face_batch16  one recogniser run on 16 faces, divided by 16.
Each after 10 warm-up runs, over --runs (>= 100) timed runs. Sessions use ONNX Runtime's
default options except intra_op_num_threads = --threads.

    .venv/bin/python bench/speed_python.py --pack-dir ~/.local/share/visage/packs/open \
        --threads 4 --json bench-out/python-open-4.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = str((REPO / ".." / "shared" / "data" / "e2e" / "face-api.js" / "examples_images" / "bbt4.jpg").resolve())

try:
    import cv2
    import numpy as np
    import onnxruntime as ort
except ImportError as e:
    venv = REPO / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(venv / "bin" / "python"), [str(venv / "bin" / "python"), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"speed_python: {e}; run scripts/setup-python.sh first")

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(REPO / "scripts" / "reference"))
import reference as R  # noqa: E402

WARMUP = 10


def photo_640x480(path: str) -> np.ndarray:
    """The photo centre-cropped to 4:3 and resized to exactly 640x480 (RGB)."""
    rgb = R.read_rgb(path)
    h, w = rgb.shape[:2]
    if w * 3 > h * 4:
        cw = h * 4 // 3
        x0 = (w - cw) // 2
        rgb = rgb[:, x0 : x0 + cw]
    else:
        ch = w * 3 // 4
        y0 = (h - ch) // 2
        rgb = rgb[y0 : y0 + ch]
    interp = cv2.INTER_AREA if rgb.shape[1] > 640 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(rgb, (640, 480), interpolation=interp))


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, x: np.ndarray) -> dict:
    ins = sess.get_inputs()
    feeds = {ins[0].name: x}
    for i in ins[1:]:  # dangling inputs of an uncleaned file: zeros, never read
        feeds[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
    return feeds


def median_ms(sess: ort.InferenceSession, feeds: dict, runs: int) -> tuple[float, list[float]]:
    names = [o.name for o in sess.get_outputs()]
    for _ in range(WARMUP):
        sess.run(names, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(names, feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack-dir", required=True, help="installed pack folder (pack.toml + .onnx)")
    ap.add_argument("--threads", type=int, required=True, help="intra_op_num_threads")
    ap.add_argument("--json", required=True, help="write the result here")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help=f"real photo to use (default {DEFAULT_IMAGE})")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per measurement (>= 100)")
    args = ap.parse_args()
    if args.runs < 100:
        ap.error("--runs must be at least 100")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    if not Path(args.image).is_file():
        sys.exit(f"speed_python: photo {args.image} not found (pass --image)")

    pack = R.load_pack(args.pack_dir)
    det_spec, rec_spec = pack.detector, pack.recogniser

    # Inputs, prepared outside the timed region.
    photo = photo_640x480(args.image)
    lb = R.letterbox(photo, det_spec)
    ref = R.Reference(pack, threads=args.threads)
    faces = ref.detect(photo)
    crops = [R.align(photo, f["landmarks"], rec_spec.input_size) for f in faces]
    if not crops:  # no face found: any real pixels will do for timing
        crops = [cv2.resize(photo, (rec_spec.input_size,) * 2, interpolation=cv2.INTER_AREA)]
    batch16 = [crops[i % len(crops)] for i in range(16)]
    x1 = R.to_nchw(np.stack(batch16[:1]), rec_spec.channel_order, rec_spec.mean, rec_spec.std)
    x16 = R.to_nchw(np.stack(batch16), rec_spec.channel_order, rec_spec.mean, rec_spec.std)
    del ref

    det = session(det_spec.file, args.threads)
    detect_ms, _ = median_ms(det, feeds_for(det, lb.tensor), args.runs)
    rec = session(rec_spec.file, args.threads)
    embed1, _ = median_ms(rec, feeds_for(rec, x1), args.runs)
    b = rec.get_inputs()[0].shape[0]
    if isinstance(b, int) and b == 1:
        embed16 = None
        note = f"{rec_spec.file.name} has a fixed batch of 1; batch 16 not measured"
    else:
        ms16, _ = median_ms(rec, feeds_for(rec, x16), args.runs)
        embed16 = ms16 / 16.0
        note = None

    out = {
        "runtime": "python-onnxruntime",
        "pack": pack.id,
        "threads": args.threads,
        "detect_ms": round(detect_ms, 4),
        "embed_ms_batch1": round(embed1, 4),
        "embed_ms_per_face_batch16": None if embed16 is None else round(embed16, 4),
        "runs": args.runs,
        "warmup": WARMUP,
        "image": args.image,
        "faces_in_image": len(faces),
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if note:
        out["note"] = note
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
