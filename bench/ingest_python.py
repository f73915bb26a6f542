"""Python baseline for `visage ingest` throughput: the same pack's model files and the same
images through onnxruntime's Python binding (decode with OpenCV, letterbox with cv2 resize,
detect, NMS, align, embed one face per run), the way insightface's FaceAnalysis works.
Nothing is stored: it measures the face pipeline only, so it is a lower bound on the work an
ingest does.

Usage: .venv/bin/python bench/ingest_python.py --pack-dir $VISAGE_HOME/packs/open \
           --images ../shared/data/lfw/lfw-deepfunneled [--limit N] [--threads 0]
Prints one JSON line: images, faces, seconds, images_per_s, faces_per_s, cpu_percent.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "reference"))
import reference  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack-dir", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    a = ap.parse_args()
    files = sorted(p for p in Path(a.images).rglob("*") if p.is_file() and not p.name.startswith("."))
    if a.limit:
        files = files[: a.limit]
    ref = reference.Reference(reference.load_pack(a.pack_dir), threads=a.threads, resize_method="cv2-linear")
    t0, c0 = time.perf_counter(), time.process_time()
    faces = 0
    for f in files:
        try:
            rgb = reference.read_rgb(f)
        except Exception as e:  # unreadable image: count and go on, as the ingest does
            print(f"{f}: {e}", file=sys.stderr)
            continue
        dets = ref.detect(rgb)
        crops = [reference.align(rgb, d["landmarks"]) for d in dets]
        if crops:
            ref.embed_crops(crops)
        faces += len(crops)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "images": len(files), "faces": faces, "seconds": round(dt, 2),
        "images_per_s": round(len(files) / dt, 2), "faces_per_s": round(faces / dt, 2),
        "cpu_percent": round(100 * dc / dt, 1), "threads": a.threads or os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
