"""Measure the shape of real face embeddings in a visage gallery, to set the synthetic data of
`visage bench index --shape face`.

Reads the vectors of one collection (faces labelled with subjects, e.g. LFW ingested with
`--subject-from-parent`), and prints:
  - between-identity spectrum: eigenvalues of the covariance of identity means,
  - within-identity spectrum: eigenvalues of the covariance of (sample - identity mean),
    over identities with at least 2 faces,
  - a power-law fit lambda_i = lambda_1 * i^-alpha of each (first half of the spectrum),
  - same/other identity cosine statistics and the top-10 neighbour similarity profile.

Usage: .venv/bin/python bench/embedding_spectrum.py DATA_DIR [COLLECTION]
"""
import sqlite3
import sys

import numpy as np


def main():
    data = sys.argv[1]
    coll = sys.argv[2] if len(sys.argv) > 2 else None
    db = sqlite3.connect(f"file:{data}/gallery.sqlite?mode=ro", uri=True)
    q = ("SELECT f.vector, f.subject_id FROM face f JOIN collection c ON c.id = f.collection_id"
         " WHERE f.subject_id IS NOT NULL" + (" AND c.name = ?" if coll else ""))
    rows = db.execute(q, (coll,) if coll else ()).fetchall()
    x = np.stack([np.frombuffer(v, dtype="<f4") for v, _ in rows]).astype(np.float64)
    subj = np.array([s for _, s in rows])
    n, d = x.shape
    ids, inv, counts = np.unique(subj, return_inverse=True, return_counts=True)
    means = np.zeros((len(ids), d))
    np.add.at(means, inv, x)
    means /= counts[:, None]
    multi = counts[inv] >= 2
    within = (x - means[inv])[multi]
    grand = x.mean(axis=0)
    # Between-identity: means of identities with >= 2 faces (single-face means carry noise).
    m2 = means[counts >= 2]
    between = m2 - grand
    eb = np.sort(np.linalg.eigvalsh(np.cov(between.T)))[::-1]
    ew = np.sort(np.linalg.eigvalsh(np.cov(within.T)))[::-1]

    def fit(e):
        k = np.arange(1, d // 2 + 1)
        a, b = np.polyfit(np.log(k), np.log(e[: d // 2]), 1)
        return -a, float(np.exp(b))

    ab, lb = fit(eb)
    aw, lw = fit(ew)
    print(f"faces {n}, dim {d}, identities {len(ids)} ({(counts >= 2).sum()} with >= 2 faces)")
    print(f"|grand mean| = {np.linalg.norm(grand):.3f}")
    print(f"between: total variance {eb.sum():.4f}, power-law alpha {ab:.3f}, lambda1 {lb:.5f}")
    print(f"within:  total variance {ew.sum():.4f}, power-law alpha {aw:.3f}, lambda1 {lw:.5f}")
    print("between eigenvalues (1,2,4,8,16,32,64,128):",
          " ".join(f"{eb[i-1]:.5f}" for i in (1, 2, 4, 8, 16, 32, 64, 128) if i <= d))
    print("within eigenvalues  (1,2,4,8,16,32,64,128):",
          " ".join(f"{ew[i-1]:.5f}" for i in (1, 2, 4, 8, 16, 32, 64, 128) if i <= d))
    pr_b = eb.sum() ** 2 / (eb ** 2).sum()
    pr_w = ew.sum() ** 2 / (ew ** 2).sum()
    print(f"participation ratio (effective dimension): between {pr_b:.1f}, within {pr_w:.1f}")
    rng = np.random.default_rng(0)
    sel = rng.choice(n, size=min(n, 2000), replace=False)
    s = x[sel] @ x.T
    same = []
    other = []
    top10 = []
    for r, i in enumerate(sel):
        row = s[r].copy()
        row[i] = -np.inf
        m = subj == subj[i]
        m[i] = False
        same.extend(row[m].tolist())
        o = row[~m & np.isfinite(row)]
        other.extend(o[:50].tolist())
        top10.append(np.sort(o)[-10:][::-1])
    top10 = np.mean(np.stack(top10), axis=0)
    print(f"same-identity cosine mean {np.mean(same):.3f}, other-identity mean {np.mean(other):.3f}"
          f" sd {np.std(other):.3f}")
    print("mean similarity of the 1st..10th nearest other-identity faces:",
          " ".join(f"{v:.3f}" for v in top10))


if __name__ == "__main__":
    main()
