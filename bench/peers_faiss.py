"""FAISS (faiss-cpu) on the exact vectors and queries of a `visage bench index --export DIR` run:
a flat (exact) inner-product index and HNSW (IndexHNSWFlat, inner product) with the same M and
construction ef as ours, then an efSearch sweep. recall@10 is computed against the exported
exact top-10 (`gt.npy`) with the same definition as `visage bench index`:
|approximate top-10 ∩ exact top-10| / 10, averaged over the queries.

Queries are timed as ours are: one at a time, top-10, on one thread, after a warm-up pass
(here each call crosses from Python into FAISS: a few microseconds per query are Python's).
Flat: recall from all queries in one call (FAISS's batched BLAS path, also timed, one thread);
latency from the first --flat-timed queries one at a time (a 1M scan takes tens of ms).

Usage: python bench/peers_faiss.py --data DIR [--m 32] [--ef-construction 256]
           [--ef-search 16,32,64,128,256,512] [--no-hnsw] [--threads 0] --json OUT
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def recall_at_10(ids, gt):
    k = min(10, gt.shape[1])
    hits = 0
    for a, b in zip(ids[:, :k], gt[:, :k]):
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (k * len(gt))


def one_at_a_time(index, queries, k=10):
    """Per-query latencies (ms) and the answers, one query per call."""
    times = np.empty(len(queries))
    ids = np.empty((len(queries), k), dtype=np.int64)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t = time.perf_counter()
        _, idx = index.search(q, k)
        times[i] = (time.perf_counter() - t) * 1e3
        ids[i] = idx[0]
    return times, ids


def point(times, ids, gt, **extra):
    s = np.sort(times)
    mean = float(times.mean())
    return dict(
        extra,
        p50_ms=float(np.percentile(s, 50)),
        p99_ms=float(np.percentile(s, 99)),
        mean_ms=mean,
        qps=1e3 / mean,
        recall_at_10=recall_at_10(ids, gt),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder written by `visage bench index --export`")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=256)
    ap.add_argument("--ef-search", default="16,32,64,128,256,512,1024")
    ap.add_argument("--no-hnsw", action="store_true", help="flat index only")
    ap.add_argument("--flat-timed", type=int, default=200,
                    help="queries timed one at a time on the flat index (recall uses all, batched)")
    ap.add_argument("--threads", type=int, default=0, help="threads for building (0: all cores)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()

    import faiss

    threads = a.threads or os.cpu_count()
    meta = json.load(open(os.path.join(a.data, "meta.json")))
    base = np.load(os.path.join(a.data, "base.npy"))
    queries = np.ascontiguousarray(np.load(os.path.join(a.data, "queries.npy")))
    gt = np.load(os.path.join(a.data, "gt.npy"))
    n, d = base.shape
    log = lambda m: print(f"faiss: {m}", file=sys.stderr, flush=True)  # noqa: E731
    out = {
        "faiss_version": faiss.__version__,
        "n": int(n),
        "dim": int(d),
        "queries": int(len(queries)),
        "meta": meta,
        "threads_build": threads,
        "threads_search": 1,
        "timing": "one query per call, top-10, 1 thread, after a warm-up pass",
    }

    # Flat (exact).
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatIP(d)
    t = time.perf_counter()
    flat.add(base)
    add_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    _, batch_ids = flat.search(queries, 10)
    batch_s = time.perf_counter() - t
    timed = queries[: min(a.flat_timed, len(queries))]
    one_at_a_time(flat, timed[:20])  # warm-up
    times, _ = one_at_a_time(flat, timed)
    out["flat"] = point(
        times,
        batch_ids,
        gt,
        index="IndexFlatIP",
        add_s=add_s,
        bytes_per_face=float(faiss.serialize_index(flat).nbytes / n),
        batch_qps_1_thread=len(queries) / batch_s,
        timed_queries=len(timed),
    )
    log(f"flat: recall@10 {out['flat']['recall_at_10']:.4f}, {out['flat']['qps']:.0f} q/s one at a time, "
        f"{out['flat']['batch_qps_1_thread']:.0f} q/s batched")
    del flat

    if not a.no_hnsw:
        faiss.omp_set_num_threads(threads)
        h = faiss.IndexHNSWFlat(d, a.m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = a.ef_construction
        log(f"building HNSW M={a.m} efConstruction={a.ef_construction} on {threads} threads ({n} vectors)")
        t = time.perf_counter()
        h.add(base)
        build_s = time.perf_counter() - t
        log(f"built in {build_s:.1f} s ({n / build_s:.0f} vectors/s)")
        faiss.omp_set_num_threads(1)
        sweep = []
        for ef in [int(x) for x in a.ef_search.split(",") if x]:
            h.hnsw.efSearch = ef
            one_at_a_time(h, queries[: min(200, len(queries))])  # warm-up
            times, ids = one_at_a_time(h, queries)
            p = point(times, ids, gt, ef_search=ef)
            log(f"efSearch={ef}: p50 {p['p50_ms']:.3f} ms, recall@10 {p['recall_at_10']:.4f}, {p['qps']:.0f} q/s")
            sweep.append(p)
        out["hnsw"] = {
            "index": "IndexHNSWFlat (float32 vectors, inner product)",
            "m": a.m,
            "ef_construction": a.ef_construction,
            "build_s": build_s,
            "insert_per_s": n / build_s,
            "bytes_per_face": float(faiss.serialize_index(h).nbytes / n),
            "sweep": sweep,
        }
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
