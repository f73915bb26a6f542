#!/usr/bin/env python3
"""Python reference for visage's face pipeline, on ONNX Runtime's Python binding.

Independent of the Rust code: it reads the same installed pack (pack.toml + .onnx files) and
implements preprocessing, the detector decoders, NMS, alignment and embedding in numpy/OpenCV,
so that `golden.py` can check the Rust pipeline against it.

Modes (exactly one):

  --images IMG...   detection reference: letterbox each image into the detector canvas, run
                    the detector, decode with numpy, NMS; boxes/landmarks in image pixels.
                    With --embed, also align every face (Umeyama + cv2.warpAffine) and embed it:
                    the whole pipeline in Python.
  --crops PNG...    embedding reference: run the recogniser on exactly these 112x112 RGB crops
                    (as saved by `visage embed --save-crops`) and L2-normalise.

The JSON written to --out is deterministic (fixed key order, floats rounded: boxes and
landmarks 2 decimals, scores 4, embeddings 5; paths relative to --root; ONNX Runtime on one
thread by default, as the intra-op thread count can move the last digit of an int8 model's
output), and its sha256 is printed, so two runs on the same machine give the same checksum. Float kernels may differ
across CPUs, so a checksum change on another machine is a warning, not an error.

Usage:
  .venv/bin/python scripts/reference/reference.py --pack-dir ~/.local/share/visage/packs/open \
      --images a.jpg b.jpg --root /work/shared/data/e2e --embed --out ref.json
  .venv/bin/python scripts/reference/reference.py --pack-dir DIR --crops crops/*.png --out emb.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

FORMAT_VERSION = 1

# InsightFace `arcface_dst`: where the five landmarks go in a 112x112 crop.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

RESIZE_METHODS = ("triangle", "cv2-linear", "cv2-area")


# --------------------------------------------------------------------------------------------
# Pack


@dataclass
class DetectorSpec:
    kind: str
    file: Path
    input_width: int
    input_height: int
    channel_order: str
    mean: list[float]
    std: list[float]
    score_threshold: float
    nms_iou: float
    strides: list[int]
    anchors_per_cell: int = 1


@dataclass
class RecogniserSpec:
    kind: str
    file: Path
    input_size: int
    channel_order: str
    mean: list[float]
    std: list[float]
    embedding_dim: int
    max_batch: int = 32


@dataclass
class Pack:
    name: str
    version: str
    dir: Path
    detector: DetectorSpec
    recogniser: RecogniserSpec
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


def load_pack(pack_dir: str | os.PathLike) -> Pack:
    d = Path(pack_dir)
    toml_path = d / "pack.toml"
    if not toml_path.is_file():
        raise SystemExit(f"reference: {toml_path} not found (is the pack installed?)")
    with open(toml_path, "rb") as f:
        raw = tomllib.load(f)
    det, rec = raw["detector"], raw["recogniser"]
    detector = DetectorSpec(
        kind=det["kind"],
        file=d / det["file"],
        input_width=int(det["input_width"]),
        input_height=int(det["input_height"]),
        channel_order=det.get("channel_order", "rgb"),
        mean=[float(x) for x in det.get("mean", [0, 0, 0])],
        std=[float(x) for x in det.get("std", [1, 1, 1])],
        score_threshold=float(det["score_threshold"]),
        nms_iou=float(det["nms_iou"]),
        strides=[int(s) for s in det["strides"]],
        anchors_per_cell=int(det.get("anchors_per_cell", 1)),
    )
    recogniser = RecogniserSpec(
        kind=rec["kind"],
        file=d / rec["file"],
        input_size=int(rec["input_size"]),
        channel_order=rec.get("channel_order", "rgb"),
        mean=[float(x) for x in rec.get("mean", [0, 0, 0])],
        std=[float(x) for x in rec.get("std", [1, 1, 1])],
        embedding_dim=int(rec["embedding_dim"]),
        max_batch=int(rec.get("max_batch", 32)),
    )
    if detector.kind not in ("yunet", "scrfd"):
        raise SystemExit(f"reference: unsupported detector kind {detector.kind!r}")
    for p in (detector.file, recogniser.file):
        if not p.is_file():
            raise SystemExit(f"reference: model file {p} not found")
    return Pack(raw["name"], raw["version"], d, detector, recogniser, raw)


def default_pack_dir(name: str) -> Path:
    """Where visage installs pack `name`: $VISAGE_HOME/packs/<name>, VISAGE_HOME defaulting
    to $XDG_DATA_HOME/visage or ~/.local/share/visage."""
    home = os.environ.get("VISAGE_HOME")
    if not home:
        xdg = os.environ.get("XDG_DATA_HOME")
        home = os.path.join(xdg, "visage") if xdg else os.path.expanduser("~/.local/share/visage")
    return Path(home) / "packs" / name


# --------------------------------------------------------------------------------------------
# ONNX Runtime


def make_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with ONNX Runtime's default options (graph optimisation ALL);
    `threads` > 0 sets intra_op_num_threads."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class Model:
    """One session; feeds zeros to graph inputs that no node reads (the uncleaned SFace file
    lists 29 of them) so the raw published file also works."""

    def __init__(self, path: Path, threads: int = 0):
        self.path = path
        self.session = make_session(path, threads)
        inputs = self.session.get_inputs()
        self.input = inputs[0]
        self.extra = {}
        for i in inputs[1:]:
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            self.extra[i.name] = np.zeros(shape, dtype=np.float32)
        if self.extra:
            print(
                f"reference: note: {path.name} has {len(self.extra)} extra graph inputs; feeding zeros "
                "(use the cleaned file from the installed pack for real checks)",
                file=sys.stderr,
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        b = self.input.shape[0] if self.input.shape else 1
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.input.name: x, **self.extra}
        try:
            outs = self.session.run(self.output_names, feeds)
        except Exception as e:  # onnxruntime's Fail/RuntimeException
            hint = ""
            if "block_size must be 0" in str(e):
                hint = (" -- the file has single-block DequantizeLinear nodes that this ONNX Runtime "
                        "rejects; use the installed pack's file (transform fold_dequantize)")
            raise RuntimeError(f"{self.path.name}: ONNX Runtime run failed: {e}{hint}") from e
        return dict(zip(self.output_names, outs))


# --------------------------------------------------------------------------------------------
# Images


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image to upright 8-bit RGB, as visage's decoder does: EXIF orientation
    applied, transparency composited over white, 16-bit samples rounded to 8 bits."""
    p = str(path)
    raw = cv2.imread(p, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot decode {p}")
    maxv = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 3 and raw.shape[2] == 4:
        # Transparency: composite over white. (This path does not apply EXIF orientation;
        # images with both alpha and an EXIF rotation are not expected.)
        px = raw.astype(np.float64)
        a = px[:, :, 3:4] / maxv
        img = px[:, :, :3] * a + maxv * (1.0 - a)
    else:
        # IMREAD_COLOR applies the EXIF orientation; ANYDEPTH keeps 16-bit samples.
        img = cv2.imread(p, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        if img is None:
            raise ValueError(f"cannot decode {p}")
        maxv = 65535.0 if img.dtype == np.uint16 else 255.0
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64) * (255.0 / maxv)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB


def _triangle_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of a bilinear (triangle) convolution resampler, antialiased when
    shrinking: the scheme of Pillow's and fast_image_resize's `Bilinear` convolution."""
    scale = in_size / out_size
    fs = max(scale, 1.0)
    support = fs  # triangle filter support 1.0, widened by the shrink factor
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), in_size)
    k = int((xmax - xmin).max())
    idx = xmin[:, None] + np.arange(k)[None, :]
    valid = idx < xmax[:, None]
    t = (idx - centers[:, None] + 0.5) / fs
    w = np.where(valid, np.maximum(0.0, 1.0 - np.abs(t)), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    return np.minimum(idx, in_size - 1), w


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = img.shape[axis]
    if in_size == out_size:
        return img
    idx, w = _triangle_taps(in_size, out_size)
    acc = np.zeros(img.shape[:axis] + (out_size,) + img.shape[axis + 1 :], dtype=np.float64)
    for j in range(idx.shape[1]):
        g = np.take(img, idx[:, j], axis=axis).astype(np.float64)
        shape = [1] * img.ndim
        shape[axis] = out_size
        acc += g * w[:, j].reshape(shape)
    return np.clip(np.rint(acc), 0, 255).astype(np.uint8)


def resize(img: np.ndarray, w: int, h: int, method: str = "triangle") -> np.ndarray:
    if method == "triangle":
        return _resample_axis(_resample_axis(img, w, axis=1), h, axis=0)
    if method == "cv2-linear":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    if method == "cv2-area":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    raise ValueError(f"unknown resize method {method}")


def to_nchw(rgb: np.ndarray, order: str, mean, std) -> np.ndarray:
    x = rgb if order == "rgb" else rgb[..., ::-1]
    x = (x.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class Letterbox:
    tensor: np.ndarray  # 1x3xHxW float32
    rw: int
    rh: int
    sx: float  # canvas px per image px, per axis
    sy: float


def letterbox(rgb: np.ndarray, spec: DetectorSpec, method: str = "triangle") -> Letterbox:
    """Fits the whole image into the detector canvas keeping aspect ratio, top-left, zero
    (black) padding right and bottom; padding is normalised like any black pixel."""
    h, w = rgb.shape[:2]
    cw, ch = spec.input_width, spec.input_height
    scale = min(cw / w, ch / h)
    rw = min(max(int(math.floor(w * scale + 0.5)), 1), cw)
    rh = min(max(int(math.floor(h * scale + 0.5)), 1), ch)
    canvas = np.zeros((ch, cw, 3), dtype=np.uint8)
    canvas[:rh, :rw] = resize(rgb, rw, rh, method)
    return Letterbox(to_nchw(canvas, spec.channel_order, spec.mean, spec.std), rw, rh, rw / w, rh / h)


# --------------------------------------------------------------------------------------------
# Detector decoders


def _flat(a: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, k)


def decode_yunet(outs: dict, spec: DetectorSpec, thr: float):
    """OpenCV FaceDetectorYN (2023mar heads): per cell one prediction,
    score = sqrt(clip(cls,0,1) * clip(obj,0,1)); centre (col+b0)*s, (row+b1)*s;
    size exp(b2)*s, exp(b3)*s; landmarks (k+col)*s, (k+row)*s."""
    boxes, kps, scores = [], [], []
    for s in spec.strides:
        cols, rows = spec.input_width // s, spec.input_height // s
        n = rows * cols
        cls = _flat(outs[f"cls_{s}"], 1)[:n, 0]
        obj = _flat(outs[f"obj_{s}"], 1)[:n, 0]
        bb = _flat(outs[f"bbox_{s}"], 4)[:n]
        kp = _flat(outs[f"kps_{s}"], 10)[:n]
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.nonzero(score >= thr)[0]
        r = (keep // cols).astype(np.float64)
        c = (keep % cols).astype(np.float64)
        b = bb[keep]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
        k = kp[keep].reshape(-1, 5, 2)
        kps.append(np.stack([(k[:, :, 0] + c[:, None]) * s, (k[:, :, 1] + r[:, None]) * s], axis=2))
        scores.append(score[keep])
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


def decode_scrfd(outs: dict, spec: DetectorSpec, thr: float):
    """InsightFace SCRFD (python-package/insightface/model_zoo/scrfd.py): `a` anchors per cell,
    centres (col*s, row*s) repeated per anchor; distances to the box sides and landmark
    offsets in stride units; scores already sigmoid."""
    a = spec.anchors_per_cell
    boxes, kps, scores = [], [], []
    for s in spec.strides:
        cols, rows = spec.input_width // s, spec.input_height // s
        n = rows * cols * a
        sc = _flat(outs[f"score_{s}"], 1)[:n, 0]
        bb = _flat(outs[f"bbox_{s}"], 4)[:n] * s
        kp = _flat(outs[f"kps_{s}"], 10)[:n] * s
        centres = np.stack(np.mgrid[:rows, :cols][::-1], axis=-1).astype(np.float64) * s
        centres = np.repeat(centres.reshape(-1, 2), a, axis=0)
        keep = np.nonzero(sc >= thr)[0]
        p = centres[keep]
        d = bb[keep]
        boxes.append(np.stack([p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]], axis=1))
        k = kp[keep].reshape(-1, 5, 2)
        kps.append(k + p[:, None, :])
        scores.append(sc[keep])
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


def iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy NMS, highest score first (stable on ties); a box survives if its IoU with every
    kept box is <= thr."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(int(i))
    return keep


# --------------------------------------------------------------------------------------------
# Alignment and embedding


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform src -> dst (Umeyama 1991, as
    skimage.transform.SimilarityTransform.estimate); returns the 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n, dim = src.shape
    sm, dm = src.mean(0), dst.mean(0)
    sd, dd = src - sm, dst - dm
    A = dd.T @ sd / n
    d = np.ones(dim)
    if np.linalg.det(A) < 0:
        d[-1] = -1
    U, S, Vt = np.linalg.svd(A)
    R = U @ np.diag(d) @ Vt
    var = sd.var(axis=0).sum()
    if var <= 0:
        raise ValueError("degenerate landmarks")
    scale = (S @ d) / var
    t = dm - scale * (R @ sm)
    return np.hstack([scale * R, t[:, None]])


def align(rgb: np.ndarray, landmarks, size: int = 112) -> np.ndarray:
    """The 112x112 ArcFace crop: Umeyama onto the template, bilinear warp, black border."""
    m = umeyama(np.asarray(landmarks, np.float64), ARCFACE_112 * (size / 112.0))
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def l2n(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


class Reference:
    """The Python pipeline for one pack."""

    def __init__(self, pack: Pack, threads: int = 0, resize_method: str = "triangle", embed_batch: int = 1):
        self.pack = pack
        self.embed_batch = embed_batch
        self.resize_method = resize_method
        self.threads = threads
        self._det: Model | None = None
        self._rec: Model | None = None

    @property
    def det(self) -> Model:
        if self._det is None:
            self._det = Model(self.pack.detector.file, self.threads)
        return self._det

    @property
    def rec(self) -> Model:
        if self._rec is None:
            self._rec = Model(self.pack.recogniser.file, self.threads)
        return self._rec

    def detect(self, rgb: np.ndarray, score_threshold: float | None = None) -> list[dict]:
        spec = self.pack.detector
        thr = spec.score_threshold if score_threshold is None else score_threshold
        lb = letterbox(rgb, spec, self.resize_method)
        outs = self.det.run(lb.tensor)
        dec = decode_yunet if spec.kind == "yunet" else decode_scrfd
        boxes, kps, scores = dec(outs, spec, thr)
        ok = np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
        boxes, kps, scores = boxes[ok], kps[ok], scores[ok]
        keep = nms(boxes, scores, spec.nms_iou)
        faces = []
        for i in keep:
            b = boxes[i] / np.array([lb.sx, lb.sy, lb.sx, lb.sy])
            k = kps[i] / np.array([lb.sx, lb.sy])
            faces.append({"bbox": b, "landmarks": k, "score": float(scores[i])})
        return faces

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings of 112x112 RGB crops (no flip augmentation)."""
        spec = self.pack.recogniser
        if not crops:
            return np.zeros((0, spec.embedding_dim))
        for c in crops:
            if c.shape != (spec.input_size, spec.input_size, 3):
                raise ValueError(f"crop is {c.shape}, expected {spec.input_size}x{spec.input_size}x3")
        # One crop per run by default: ONNX Runtime's result for a crop can move in the last
        # digits with the batch it is run in, and the reference must not depend on grouping.
        batch = self.rec.fixed_batch or max(1, self.embed_batch)
        out = []
        for i in range(0, len(crops), batch):
            chunk = np.stack(crops[i : i + batch])
            x = to_nchw(chunk, spec.channel_order, spec.mean, spec.std)
            y = next(iter(self.rec.run(x).values()))
            out.append(np.asarray(y, np.float64).reshape(len(chunk), -1))
        emb = np.concatenate(out)
        if emb.shape[1] != spec.embedding_dim:
            raise ValueError(f"embedding dim {emb.shape[1]}, pack says {spec.embedding_dim}")
        return l2n(emb)


# --------------------------------------------------------------------------------------------
# Deterministic JSON


def _r(x: float, nd: int) -> float:
    return round(float(x), nd) + 0.0  # + 0.0 turns -0.0 into 0.0


def face_json(face: dict, embedding=None) -> dict:
    b = face["bbox"]
    out = {
        "bbox": {"x1": _r(b[0], 2), "y1": _r(b[1], 2), "x2": _r(b[2], 2), "y2": _r(b[3], 2)},
        "landmarks": [[_r(p[0], 2), _r(p[1], 2)] for p in face["landmarks"]],
        "score": _r(face["score"], 4),
    }
    if embedding is not None:
        out["embedding"] = [_r(v, 5) for v in embedding]
    return out


def rel(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return Path(os.path.relpath(p.resolve(), Path(root).resolve())).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def run_images(ref: Reference, images: list[str], root=None, embed: bool = False, score_threshold=None) -> dict:
    entries = []
    for path in images:
        entry: dict = {"path": rel(path, root)}
        try:
            rgb = read_rgb(path)
        except ValueError as e:
            entry["error"] = str(e)
            entries.append(entry)
            continue
        entry["width"], entry["height"] = int(rgb.shape[1]), int(rgb.shape[0])
        faces = ref.detect(rgb, score_threshold)
        embs = [None] * len(faces)
        if embed and faces:
            crops = [align(rgb, f["landmarks"], ref.pack.recogniser.input_size) for f in faces]
            embs = list(ref.embed_crops(crops))
        entry["faces"] = [face_json(f, e) for f, e in zip(faces, embs)]
        entries.append(entry)
    spec = ref.pack.detector
    return {
        "format": FORMAT_VERSION,
        "mode": "images+embed" if embed else "images",
        "pack": ref.pack.id,
        "resize": ref.resize_method,
        # Rounded: an installed pack.toml may hold f32-widened values (0.4000000059604645).
        "score_threshold": _r(spec.score_threshold if score_threshold is None else score_threshold, 6),
        "nms_iou": _r(spec.nms_iou, 6),
        "images": entries,
    }


def load_crop(path: str | os.PathLike) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def run_crops(ref: Reference, crops: list[str], root=None) -> dict:
    embs = ref.embed_crops([load_crop(c) for c in crops])
    return {
        "format": FORMAT_VERSION,
        "mode": "crops",
        "pack": ref.pack.id,
        "crops": [{"path": rel(c, root), "embedding": [_r(v, 5) for v in e]} for c, e in zip(crops, embs)],
    }


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def write_json(obj: dict, out: str | os.PathLike) -> str:
    """Writes `obj` deterministically; returns the sha256 of the bytes written."""
    data = dumps(obj).encode()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack-dir", required=True, help="installed pack folder (pack.toml + .onnx)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--images", nargs="+", metavar="IMG", help="detection reference on these images")
    mode.add_argument("--crops", nargs="+", metavar="PNG", help="embedding reference on these 112x112 crops")
    ap.add_argument("--embed", action="store_true", help="with --images: also align and embed every face")
    ap.add_argument("--out", required=True, help="JSON output file")
    ap.add_argument("--root", help="store paths relative to this folder (for reproducible output)")
    ap.add_argument("--score-threshold", type=float, help="override the pack's detector score threshold")
    ap.add_argument("--resize", choices=RESIZE_METHODS, default="triangle",
                    help="letterbox resampler (default: triangle = antialiased bilinear, as visage)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads (default 1: the thread count can change the last "
                         "digit of embeddings, so checksums are defined single-threaded; 0 = ORT default)")
    args = ap.parse_args(argv)

    ref = Reference(load_pack(args.pack_dir), threads=args.threads, resize_method=args.resize)
    if args.images:
        obj = run_images(ref, args.images, args.root, args.embed, args.score_threshold)
        n = sum(len(e.get("faces", [])) for e in obj["images"])
        what = f"{len(obj['images'])} images, {n} faces"
    else:
        obj = run_crops(ref, args.crops, args.root)
        what = f"{len(obj['crops'])} crops"
    digest = write_json(obj, args.out)
    print(f"{digest}  {args.out}  ({ref.pack.id}, {what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
