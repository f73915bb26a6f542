"""face_recognition (dlib: HOG detector + ResNet 128-D encoder) on the LFW pairs protocol, and
its throughput on the same images, as a peer of `visage bench lfw`.

Per image (the 250x250 deep-funnelled file): `face_locations` (HOG, upsampled once, the
library's default), keep the face nearest the image centre (as `visage bench lfw` does), and
`face_encodings` (default 5-landmark model, 1 jitter). When HOG finds no face, the central
box (65, 185, 185, 65) -- where deep-funnelled LFW puts the face -- is encoded instead and
counted as a fallback, so every pair gets a score (the standard protocol counts every pair).
Score = -euclidean distance between encodings.

Protocol: the chosen folds of pairs.txt (1-based), optionally only the first P/2 same and P/2
different pairs of each. With two or more folds, each fold's threshold is chosen on the other
chosen folds (best accuracy) and accuracy measured on it (the 10-fold protocol restricted to
these folds); the library's fixed tolerance 0.6 is reported as well.

Throughput: the unique images of those pairs, `--workers` processes (default: one per core),
models loaded before the clock starts; CPU% = CPU time the workers spent on the images
(decode, detect, encode) / wall time.

Usage: python bench/peers_face_recognition.py --lfw ../shared/data/lfw --folds 1,2,3,4,5
           [--pairs-per-fold 600] [--workers 0] --json OUT
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import warnings

import numpy as np

CENTRAL_BOX = (65, 185, 185, 65)  # top, right, bottom, left


def parse_pairs(path):
    lines = [ln.split() for ln in open(path).read().splitlines() if ln.strip()]
    folds, n = (int(x) for x in lines[0])
    out = []
    rel = lambda name, i: f"{name}/{name}_{int(i):04d}.jpg"  # noqa: E731
    for f in range(folds):
        for k, t in enumerate(lines[1 + f * 2 * n : 1 + (f + 1) * 2 * n]):
            if len(t) == 3:
                out.append((rel(t[0], t[1]), rel(t[0], t[2]), True, f + 1, k))
            else:
                out.append((rel(t[0], t[1]), rel(t[2], t[3]), False, f + 1, k - n))
    return out, n


_fr = None


def _init():
    global _fr
    warnings.filterwarnings("ignore")
    import face_recognition

    _fr = face_recognition


def _warm(_):
    return os.getpid()


def embed(path):
    c0 = time.process_time()
    img = _fr.load_image_file(path)
    t0 = time.perf_counter()
    locs = _fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
    t1 = time.perf_counter()
    fallback = not locs
    if fallback:
        locs = [CENTRAL_BOX]
    h, w = img.shape[:2]
    cy, cx = h / 2, w / 2
    best = min(locs, key=lambda b: ((b[0] + b[2]) / 2 - cy) ** 2 + ((b[1] + b[3]) / 2 - cx) ** 2)
    enc = _fr.face_encodings(img, known_face_locations=[best], num_jitters=1, model="small")
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    return path, enc[0] if enc else None, fallback, len(locs) if not fallback else 0, t1 - t0, t2 - t1, cpu


def accuracy(scores, labels, t):
    return float(np.mean((scores >= t) == labels))


def best_threshold(scores, labels):
    cands = np.unique(scores)
    mids = np.concatenate([[cands[0] - 1e-6], (cands[:-1] + cands[1:]) / 2, [cands[-1] + 1e-6]])
    accs = [accuracy(scores, labels, t) for t in mids]
    return float(mids[int(np.argmax(accs))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", required=True, help="LFW folder with pairs.txt and lfw-deepfunneled/")
    ap.add_argument("--folds", default="1,2,3,4,5", help="folds of pairs.txt, 1-based")
    ap.add_argument("--pairs-per-fold", type=int, default=0, help="0: all (600)")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()

    folds = [int(x) for x in a.folds.split(",") if x]
    pairs, n = parse_pairs(os.path.join(a.lfw, "pairs.txt"))
    half = (a.pairs_per_fold // 2) if a.pairs_per_fold else n
    sel = [p for p in pairs if p[3] in folds and p[4] < half]
    root = os.path.join(a.lfw, "lfw-deepfunneled")
    images = sorted({p[0] for p in sel} | {p[1] for p in sel})
    workers = a.workers or os.cpu_count()
    log = lambda m: print(f"face_recognition: {m}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"{len(sel)} pairs of folds {folds}, {len(images)} images, {workers} workers")

    with mp.get_context("fork").Pool(workers, initializer=_init) as pool:
        pool.map(_warm, range(workers * 2))  # models loaded in every worker
        t0 = time.perf_counter()
        results = []
        for i, r in enumerate(pool.imap(embed, [os.path.join(root, x) for x in images], chunksize=4)):
            results.append(r)
            if (i + 1) % 250 == 0:
                el = time.perf_counter() - t0
                log(f"{i + 1}/{len(images)} images, {(i + 1) / el:.1f}/s")
        wall = time.perf_counter() - t0
        pool.close()
        pool.join()
    cpu = sum(r[6] for r in results)  # CPU time of the workers on the images (decode included)

    enc = {os.path.relpath(r[0], root): r[1] for r in results}
    fallbacks = sum(r[2] for r in results)
    detect_ms = 1e3 * float(np.mean([r[4] for r in results]))
    encode_ms = 1e3 * float(np.mean([r[5] for r in results]))
    scores, labels, fold_of = [], [], []
    for x, y, same, f, _ in sel:
        ex, ey = enc.get(x), enc.get(y)
        s = -float(np.linalg.norm(ex - ey)) if ex is not None and ey is not None else -10.0
        scores.append(s)
        labels.append(same)
        fold_of.append(f)
    scores, labels, fold_of = np.array(scores), np.array(labels), np.array(fold_of)
    fold_acc = []
    for f in folds:
        test = fold_of == f
        train = ~test if len(folds) > 1 else test
        t = best_threshold(scores[train], labels[train])
        fold_acc.append({"fold": f, "accuracy": accuracy(scores[test], labels[test], t), "distance_threshold": -t})
    accs = np.array([x["accuracy"] for x in fold_acc])
    from importlib.metadata import version

    out = {
        "peer": "face_recognition",
        "versions": {p: version(p) for p in ("face-recognition", "face-recognition-models", "dlib-bin")},
        "protocol": "pairs.txt folds %s%s; threshold per fold chosen on the other chosen folds%s"
        % (
            ",".join(map(str, folds)),
            f", first {half} same + {half} different pairs per fold" if half < n else " (all 600 pairs each)",
            "" if len(folds) > 1 else " (one fold: chosen on itself, optimistic)",
        ),
        "folds": folds,
        "pairs": len(sel),
        "images": len(images),
        "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "fold_accuracies": fold_acc,
        "accuracy_at_tolerance_0_6": accuracy(scores, labels, -0.6),
        "hog_fallbacks": int(fallbacks),
        "workers": workers,
        "wall_s": wall,
        "images_per_s": len(images) / wall,
        "cpu_percent": 100 * cpu / wall,
        "detect_ms_per_image": detect_ms,
        "encode_ms_per_image": encode_ms,
        "ms_per_image_per_worker": 1e3 * wall * workers / len(images),
        "cpu_ms_per_image": 1e3 * cpu / len(images),
    }
    log(f"accuracy {out['accuracy_mean']:.4f} ± {out['accuracy_std']:.4f} on {len(sel)} pairs, "
        f"{out['images_per_s']:.1f} images/s, {fallbacks} HOG fallbacks")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
