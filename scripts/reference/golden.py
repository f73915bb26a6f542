#!/usr/bin/env python3
"""Golden parity check: visage (Rust) against the Python/ONNX Runtime reference.

For a fixed list of real photos from the e2e data set it runs

    visage embed IMAGE --pack NAME --json --save-crops DIR

and the Python reference (reference.py) on the same images and on the crops visage saved,
then checks

  * detection: every reference detection with score >= 0.7 matches one of visage's faces
    (one-to-one) with IoU >= 0.95;
  * embedding: for every face visage embedded, cosine(visage's embedding, the reference
    recogniser run on visage's own crop) >= 0.999, and visage's embedding has unit length;
  * image size: visage's width/height equal the reference decoder's (EXIF orientation).

  * alignment: visage's crop against cv2.warpAffine of the image with visage's own landmarks
    (Umeyama onto the ArcFace template): the reference embeddings of the two crops must have
    cosine >= 0.99 (catches a shifted/rotated/mirrored warp that the check above cannot see).

Reported but not failing (warnings): the mean absolute pixel difference of those two crops
(> 2 levels), the end-to-end cosine (reference detection + alignment + embedding against visage's embedding),
extra faces visage found, and the sha256 of the reference output against checksums.txt.

Exit status: 0 all checks pass (or the data folder is absent: "skipping"), 1 a check failed,
2 a setup problem (no binary, no pack, missing Python packages).

    .venv/bin/python scripts/reference/golden.py --visage target/release/visage --pack open
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHECKSUMS = HERE / "checksums.txt"
DEFAULT_DATA = "/work/shared/data/e2e"

# Real photos with clearly visible faces (smallest about 45 px wide), relative to the data
# folder, sorted. All are at most 1066 px on their longer side, so visage detects them in a
# single whole-image pass (no tiling), exactly what the reference does; both packs find every
# face in them with a score well above 0.7. 15 images, 35 faces.
IMAGES = sorted(
    [
        "deepface/dataset/img11.jpg",  # portrait, 600x800
        "deepface/dataset/img21.jpg",  # portrait, 439x579
        "deepface/dataset/img61.jpg",  # portrait, 800x542
        "dlib/faces/2008_001322.jpg",  # 3 faces, 500x375
        "dlib/faces/2008_002506.jpg",  # 3 faces, 500x375
        "face-api.js/examples_images/bbt2.jpg",  # 3 faces
        "face-api.js/examples_images/bbt3.jpg",  # 5 faces, 45-65 px
        "face-api.js/examples_images/bbt4.jpg",  # 6 faces
        "face-api.js/examples_images/bbt5.jpg",  # 5 faces, 940x464
        "face-api.js/examples_images/happy.jpg",  # portrait, 500x282
        "face_recognition/examples/knn_examples/test/kit_with_rose.jpg",  # 2 faces
        "face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg",
        "face_recognition/examples/lin-manuel-miranda.png",  # RGBA PNG, opaque alpha
        "face_recognition/examples/obama-480p.jpg",  # 853x480
        "face_recognition/examples/obama_small.jpg",  # 320x240: upscaled into the canvas
    ]
)

DET_SCORE = 0.7
MIN_IOU = 0.95
MIN_COS = 0.999
ALIGN_MIN_COS = 0.99  # embeddings of visage's crop and of the cv2 crop (fails below)
# Warning thresholds for the informative checks.
ALIGN_MAX_MAD = 2.0  # mean |visage crop - cv2 crop| in 0..255 levels
E2E_MIN_COS = 0.98


def ensure_deps() -> None:
    """Imports the reference; re-runs this script under <repo>/.venv when the current
    interpreter lacks numpy/onnxruntime/cv2."""
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        venv = REPO / ".venv"
        py = venv / "bin" / "python"
        if py.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])
        print(f"golden: error: {e}; run scripts/setup-python.sh first", file=sys.stderr)
        sys.exit(2)


def read_checksums(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) >= 2:
                out[parts[1]] = parts[0]
    return out


def write_checksum(path: Path, name: str, digest: str) -> None:
    lines = path.read_text().splitlines() if path.is_file() else []
    out, done = [], False
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#") and parts[1] == name:
            out.append(f"{digest}  {name}")
            done = True
        else:
            out.append(line)
    if not done:
        out.append(f"{digest}  {name}")
    path.write_text("\n".join(out) + "\n")


def run_visage(binary: str, image: Path, pack: str, crops: Path, timeout: float) -> tuple[dict | None, str]:
    cmd = [binary, "embed", str(image), "--pack", pack, "--json", "--save-crops", str(crops)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    except OSError as e:
        return None, f"cannot run {binary}: {e}"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return None, f"exit {p.returncode}: {' / '.join(tail)}"
    text = p.stdout.strip()
    try:
        return json.loads(text), ""
    except json.JSONDecodeError:
        # Tolerate log lines around the JSON object: take the last line that parses.
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line), ""
                except json.JSONDecodeError:
                    pass
    return None, "stdout is not one JSON object"


def bbox_tuple(b) -> tuple[float, float, float, float]:
    if isinstance(b, dict):
        return (float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"]))
    return tuple(float(x) for x in b[:4])  # type: ignore[return-value]


def match(ref_boxes, our_boxes, iou_fn) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU, best pairs first: (ref index, our index, IoU);
    our index -1 when nothing is left to match."""
    pairs = sorted(
        ((iou_fn(r, o), i, j) for i, r in enumerate(ref_boxes) for j, o in enumerate(our_boxes)),
        reverse=True,
    )
    used_r, used_o, out = set(), set(), {}
    for v, i, j in pairs:
        if v <= 0 or i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        out[i] = (i, j, v)
    return [out.get(i, (i, -1, 0.0)) for i in range(len(ref_boxes))]


def fmt(v, nd=4) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="visage vs Python/ONNX Runtime parity check")
    ap.add_argument("--visage", help="path to the visage binary")
    ap.add_argument("--pack", help="pack name (e.g. open, insightface-s)")
    ap.add_argument("--pack-dir", help="installed pack folder (default: $VISAGE_HOME/packs/NAME)")
    ap.add_argument("--data", default=DEFAULT_DATA, help=f"e2e data folder (default {DEFAULT_DATA})")
    ap.add_argument("--min-images", type=int, default=10, help="fail if fewer images could be checked")
    ap.add_argument("--report", help="write a JSON report here")
    ap.add_argument("--work", help="keep visage crops and reference outputs here (default: temporary)")
    ap.add_argument("--threads", type=int, default=1,
                    help="reference ONNX Runtime intra-op threads (default 1, which checksums.txt assumes)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per visage call")
    ap.add_argument("--update-checksums", action="store_true",
                    help="record this run's reference checksum in checksums.txt")
    ap.add_argument("--list-images", action="store_true", help="print the image list (absolute paths) and exit")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if args.list_images:
        print("\n".join(str(data / p) for p in IMAGES))
        return 0
    if not args.visage or not args.pack:
        ap.error("--visage and --pack are required")
    if not data.is_dir():
        print(f"skipping: data folder {data} not found")
        return 0

    ensure_deps()
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, str(HERE))
    import numpy as np
    import reference as R

    binary = args.visage
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"golden: error: visage binary {binary} not found or not executable (cargo build --release?)", file=sys.stderr)
        return 2
    binary = str(Path(binary).resolve())
    pack_dir = Path(args.pack_dir) if args.pack_dir else R.default_pack_dir(args.pack)
    if not (pack_dir / "pack.toml").is_file():
        print(f"golden: error: pack {args.pack!r} not installed at {pack_dir} (visage pack install {args.pack}?)", file=sys.stderr)
        return 2
    pack = R.load_pack(pack_dir)
    if pack.name != args.pack:
        print(f"golden: error: {pack_dir} holds pack {pack.name!r}, not {args.pack!r}", file=sys.stderr)
        return 2

    warnings: list[str] = []
    images = []
    for rel in IMAGES:
        p = data / rel
        if p.is_file():
            images.append(p)
        else:
            warnings.append(f"missing image {rel}")

    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="visage-golden-")
        work = Path(tmp.name)

    ref = R.Reference(pack, threads=args.threads)

    # 1. The reference on the images: the whole Python pipeline, written and checksummed.
    ref_name = f"{pack.name}.reference.json"
    try:
        ref_obj = R.run_images(ref, [str(p) for p in images], root=data, embed=True)
    except RuntimeError as e:  # the model does not run in this ONNX Runtime
        print(f"golden: error: reference failed: {e}", file=sys.stderr)
        return 2
    ref_digest = R.write_json(ref_obj, work / ref_name)
    ref_by_path = {e["path"]: e for e in ref_obj["images"]}

    # 2. visage on the images.
    rows, crop_refs = [], []
    n_det = n_emb = 0
    all_iou, all_cos, all_align = [], [], []
    for idx, img in enumerate(images):
        rel = R.rel(img, data)
        row: dict = {"image": rel, "problems": [], "warnings": []}
        rows.append(row)
        crops_dir = work / "crops" / f"{idx:02d}-{img.stem}"
        crops_dir.mkdir(parents=True, exist_ok=True)
        ours, err = run_visage(binary, img, pack.name, crops_dir, args.timeout)
        rentry = ref_by_path[rel]
        if ours is None:
            row["problems"].append(f"visage embed failed: {err}")
            continue
        if "error" in ours and not ours.get("faces"):
            row["problems"].append(f"visage error: {ours['error']}")
            continue
        if "error" in rentry:
            row["problems"].append(f"reference cannot decode: {rentry['error']}")
            continue
        if ours.get("pack") not in (pack.id, pack.name):
            row["problems"].append(f"visage used pack {ours.get('pack')!r}, reference {pack.id!r}")
        if (ours.get("width"), ours.get("height")) != (rentry["width"], rentry["height"]):
            row["problems"].append(
                f"size {ours.get('width')}x{ours.get('height')} != reference {rentry['width']}x{rentry['height']}"
            )
        our_faces = ours.get("faces") or []
        ref_faces = rentry["faces"]
        row["ours"] = len(our_faces)
        row["ref"] = len(ref_faces)

        # Detection: strong reference faces must be matched.
        strong = [f for f in ref_faces if f["score"] >= DET_SCORE]
        our_boxes = [bbox_tuple(f["bbox"]) for f in our_faces]
        m = match([bbox_tuple(f["bbox"]) for f in strong], our_boxes, R.iou)
        ious = []
        for i, j, v in m:
            n_det += 1
            ious.append(v)
            if j < 0 or v < MIN_IOU:
                b = strong[i]["bbox"]
                row["problems"].append(
                    f"reference face {i} (score {strong[i]['score']:.3f}, box {b['x1']:.0f},{b['y1']:.0f},"
                    f"{b['x2']:.0f},{b['y2']:.0f}) " + ("unmatched" if j < 0 else f"IoU {v:.4f} < {MIN_IOU}")
                )
        row["min_iou"] = min(ious) if ious else None
        all_iou += ious
        matched_ours = {j for _, j, _ in m if j >= 0}
        extra = [j for j in range(len(our_faces)) if j not in matched_ours]
        if extra:
            # Faces visage found that no strong reference face matches: fine if the reference
            # has them too with a lower score; otherwise worth a look.
            full = match([bbox_tuple(f["bbox"]) for f in ref_faces], our_boxes, R.iou)
            seen = {j for _, j, v in full if j >= 0 and v >= 0.5}
            lone = [j for j in extra if j not in seen]
            if lone:
                row["warnings"].append(f"{len(lone)} visage face(s) with no reference counterpart")

        # Embeddings: the reference recogniser on visage's own crops. Every saved crop is
        # also checked for alignment, embedded or not (quality-gated faces keep their crop).
        rgb = R.read_rgb(img)
        cos_list, align_cos, align_mad, e2e = [], [], [], []
        size = pack.recogniser.input_size
        items = []  # (face index, crop path, crop pixels, our unit embedding or None, landmarks)
        for k, f in enumerate(our_faces):
            cp, emb = f.get("crop"), f.get("embedding")
            if not cp:
                if emb is not None:
                    row["problems"].append(f"face {k}: embedding but no crop saved")
                continue
            cpath = Path(cp)
            if not cpath.is_absolute() and not cpath.exists():
                cpath = crops_dir / cp
            try:
                crop = R.load_crop(cpath)
            except ValueError as e:
                row["problems"].append(f"face {k}: {e}")
                continue
            if crop.shape != (size, size, 3):
                row["problems"].append(f"face {k}: crop of shape {crop.shape}, expected {size}x{size}x3")
                continue
            e = None
            if emb is not None:
                e = np.asarray(emb, np.float64)
                if e.shape != (pack.recogniser.embedding_dim,):
                    row["problems"].append(f"face {k}: embedding has {e.size} values, pack says {pack.recogniser.embedding_dim}")
                    continue
                norm = float(np.linalg.norm(e))
                if abs(norm - 1.0) > 1e-3:
                    row["problems"].append(f"face {k}: embedding norm {norm:.5f}, expected 1")
                e = R.l2n(e)
            items.append((k, cpath, crop, e, f.get("landmarks")))
        r_emb = ref.embed_crops([it[2] for it in items]) if items else []
        for (k, cpath, crop, ours_e, lm), r_e in zip(items, r_emb):
            if ours_e is not None:
                crop_refs.append({"path": R.rel(cpath, work), "image": rel, "face": k,
                                  "embedding": [R._r(v, 5) for v in r_e]})
                n_emb += 1
                c = float(ours_e @ r_e)
                cos_list.append(c)
                if c < MIN_COS:
                    row["problems"].append(f"face {k}: cosine {c:.5f} < {MIN_COS}")
            # Alignment: cv2 warp of the image with visage's own landmarks.
            if lm is not None:
                try:
                    mine = R.align(rgb, lm, size)
                except (ValueError, np.linalg.LinAlgError):
                    row["warnings"].append(f"face {k}: landmarks unusable for alignment")
                    continue
                align_mad.append(float(np.abs(mine.astype(np.float64) - crop).mean()))
                align_cos.append(float(ref.embed_crops([mine])[0] @ r_e))
        # End to end, informative: reference pipeline embedding of the matched face.
        for i, j, v in match([bbox_tuple(f["bbox"]) for f in ref_faces], our_boxes, R.iou):
            if j < 0 or v < 0.5 or "embedding" not in ref_faces[i]:
                continue
            ours_e = our_faces[j].get("embedding")
            if ours_e is None:
                continue
            e2e.append(float(R.l2n(np.asarray(ours_e)) @ R.l2n(np.asarray(ref_faces[i]["embedding"]))))
        row["min_cos"] = min(cos_list) if cos_list else None
        row["align_max_mad"] = max(align_mad) if align_mad else None
        row["align_min_cos"] = min(align_cos) if align_cos else None
        row["e2e_min_cos"] = min(e2e) if e2e else None
        all_cos += cos_list
        all_align += align_cos
        if align_mad and max(align_mad) > ALIGN_MAX_MAD:
            row["warnings"].append(f"alignment: crop differs from cv2.warpAffine by {max(align_mad):.2f} levels on average")
        if align_cos and min(align_cos) < ALIGN_MIN_COS:
            row["problems"].append(f"alignment: cosine(embedding of our crop, of cv2 crop) {min(align_cos):.4f} < {ALIGN_MIN_COS}")
        if e2e and min(e2e) < E2E_MIN_COS:
            row["warnings"].append(f"end to end: cosine {min(e2e):.4f} < {E2E_MIN_COS}")
        if not strong and not items:
            row["warnings"].append("no faces compared in this image")

    # The reference recogniser on visage's crops (not checksummed: the crops are visage's).
    R.write_json({"format": R.FORMAT_VERSION, "mode": "crops", "pack": pack.id, "crops": crop_refs},
                 work / f"{pack.name}.crops-reference.json")

    # 3. Reference output checksum.
    known = read_checksums(CHECKSUMS)
    checksum = {"name": ref_name, "actual": ref_digest, "expected": known.get(ref_name)}
    if args.update_checksums:
        write_checksum(CHECKSUMS, ref_name, ref_digest)
        checksum["expected"] = ref_digest
        print(f"golden: recorded {ref_digest}  {ref_name} in {CHECKSUMS}")
    if checksum["expected"] is None:
        warnings.append(f"no checksum recorded for {ref_name} in {CHECKSUMS.name} (--update-checksums)")
    elif checksum["expected"] != ref_digest:
        warnings.append(
            f"reference output {ref_name} has sha256 {ref_digest[:16]}..., checksums.txt says "
            f"{checksum['expected'][:16]}... (different CPU, onnxruntime build or model file?)"
        )
    checksum["match"] = checksum["expected"] == ref_digest

    # 4. Table and summary.
    checked = [r for r in rows if "ours" in r]
    wi = max([len(r["image"]) for r in rows] + [5])
    header = f"{'image':<{wi}} {'faces':>7} {'min IoU':>8} {'min cos':>8} {'align':>8} {'e2e':>7}  status"
    print(header)
    print("-" * len(header))
    for r in rows:
        faces = f"{r.get('ours', '-')}/{r.get('ref', '-')}"
        status = "FAIL" if r["problems"] else ("warn" if r["warnings"] else "ok")
        print(
            f"{r['image']:<{wi}} {faces:>7} {fmt(r.get('min_iou')):>8} {fmt(r.get('min_cos'), 5):>8} "
            f"{fmt(r.get('align_min_cos')):>8} {fmt(r.get('e2e_min_cos'), 3):>7}  {status}"
        )
        for p in r["problems"]:
            print(f"    FAIL: {p}")
        for w in r["warnings"]:
            print(f"    warn: {w}")
    for w in warnings:
        print(f"warning: {w}")
    problems_total = sum(len(r["problems"]) for r in rows)
    enough = len(checked) >= args.min_images and len(images) >= args.min_images
    if not enough:
        print(f"golden: FAIL: only {len(checked)} images checked, --min-images {args.min_images}")
    passed = problems_total == 0 and enough and n_det > 0 and n_emb > 0
    if n_det == 0 or n_emb == 0:
        print("golden: FAIL: no detections or no embeddings were compared")
    print(
        f"golden: {'PASS' if passed else 'FAIL'}: pack {pack.id}, {len(checked)}/{len(images)} images, "
        f"{n_det} reference faces (score >= {DET_SCORE}) matched with min IoU {fmt(min(all_iou) if all_iou else None)} "
        f"(need {MIN_IOU}), {n_emb} embeddings with min cosine {fmt(min(all_cos) if all_cos else None, 5)} "
        f"(need {MIN_COS}), alignment min cosine {fmt(min(all_align) if all_align else None)} (need {ALIGN_MIN_COS}), "
        f"{problems_total} problems, {len(warnings) + sum(len(r['warnings']) for r in rows)} warnings"
    )
    print(f"golden: reference output sha256 {ref_digest}  {ref_name}" + ("" if checksum["match"] else "  (differs from checksums.txt)"))

    if args.report:
        report = {
            "passed": passed,
            "pack": pack.id,
            "visage": binary,
            "data": str(data),
            "thresholds": {"det_score": DET_SCORE, "min_iou": MIN_IOU, "min_cos": MIN_COS,
                           "align_max_mad": ALIGN_MAX_MAD, "align_min_cos": ALIGN_MIN_COS, "e2e_min_cos": E2E_MIN_COS},
            "images_checked": len(checked),
            "reference_faces": n_det,
            "embeddings": n_emb,
            "min_iou": min(all_iou) if all_iou else None,
            "min_cos": min(all_cos) if all_cos else None,
            "min_align_cos": min(all_align) if all_align else None,
            "checksum": checksum,
            "warnings": warnings,
            "rows": rows,
        }
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        print(f"golden: report written to {args.report}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
