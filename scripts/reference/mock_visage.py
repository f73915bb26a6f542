#!/usr/bin/env python3
"""A stand-in for the `visage` binary that speaks the CLI contract golden.py relies on,
built on the reference pipeline. It exists to test golden.py itself (both its passing and
its failing paths) before / independently of the Rust binary:

    .venv/bin/python scripts/reference/golden.py --visage scripts/reference/mock_visage.py --pack open

Subcommands (the subset golden.py and bench scripts use):
    embed IMAGE --pack P --json [--save-crops DIR]
    detect IMAGE... --pack P --json

Environment:
    MOCK_VISAGE_PACK_DIR  pack folder (default $VISAGE_HOME/packs/P, as visage)
    MOCK_VISAGE_RESIZE    letterbox resampler: cv2-linear (default, deliberately not the
                          reference's), cv2-area or triangle
    MOCK_VISAGE_FAULT     inject a fault to see golden.py fail: bbox (shift boxes by 8% of the
                          width), embed (perturb embeddings), crop (shift crops by 3 px),
                          size (report a wrong width), miss (drop the first face)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

try:
    import cv2
    import numpy as np
except ImportError:
    venv = REPO / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(venv / "bin" / "python"), [str(venv / "bin" / "python"), str(Path(__file__).resolve()), *sys.argv[1:]])
    raise

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(HERE))
import reference as R  # noqa: E402


def face_out(f, i):
    b = f["bbox"]
    return {
        "index": i,
        "bbox": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])},
        "landmarks": [[float(x), float(y)] for x, y in f["landmarks"]],
        "score": float(f["score"]),
        "quality": {"face_px": float(b[2] - b[0])},
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("embed", "detect"):
        print("mock_visage: usage: embed IMAGE --pack P --json [--save-crops DIR] | detect IMAGE... --pack P --json", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    images, pack_name, crops_dir = [], None, None
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--pack":
            pack_name = rest[i + 1]
            i += 2
        elif a == "--save-crops":
            crops_dir = Path(rest[i + 1])
            i += 2
        elif a == "--json":
            i += 1
        elif a.startswith("--"):
            print(f"mock_visage: unknown option {a}", file=sys.stderr)
            return 2
        else:
            images.append(a)
            i += 1
    if not pack_name or not images:
        print("mock_visage: need --pack and an image", file=sys.stderr)
        return 2
    pack_dir = os.environ.get("MOCK_VISAGE_PACK_DIR") or str(R.default_pack_dir(pack_name))
    pack = R.load_pack(pack_dir)
    ref = R.Reference(pack, resize_method=os.environ.get("MOCK_VISAGE_RESIZE", "cv2-linear"))
    fault = os.environ.get("MOCK_VISAGE_FAULT", "")

    for path in images if cmd == "detect" else images[:1]:
        try:
            rgb = R.read_rgb(path)
        except ValueError as e:
            print(json.dumps({"path": path, "error": {"code": "decode", "message": str(e)}}))
            continue
        faces = ref.detect(rgb)
        if fault == "miss" and faces:
            faces = faces[1:]
        if fault == "bbox":
            for f in faces:
                f["bbox"] = f["bbox"] + (f["bbox"][2] - f["bbox"][0]) * 0.08 * np.array([1, 0, 1, 0])
        out = {"path": path, "pack": pack.id, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}
        if fault == "size":
            out["width"] += 1
        if cmd == "detect":
            out["faces"] = [face_out(f, k) for k, f in enumerate(faces)]
            print(json.dumps(out))
            continue
        crops = []
        for f in faces:
            c = R.align(rgb, f["landmarks"], pack.recogniser.input_size)
            if fault == "crop":
                c = np.roll(c, 3, axis=1)
            crops.append(c)
        embs = ref.embed_crops(crops) if crops else []
        out_faces = []
        for k, (f, c, e) in enumerate(zip(faces, crops, embs)):
            fo = face_out(f, k)
            if fault == "embed":
                e = R.l2n(e + np.random.default_rng(k).normal(0, 0.05, e.shape))
            fo["embedding"] = [float(np.float32(v)) for v in e]
            if crops_dir is not None:
                crops_dir.mkdir(parents=True, exist_ok=True)
                cp = crops_dir / f"{Path(path).stem}-{k}.png"
                cv2.imwrite(str(cp), c[:, :, ::-1])
                fo["crop"] = str(cp)
            out_faces.append(fo)
        out["faces"] = out_faces
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
