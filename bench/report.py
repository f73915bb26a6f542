"""The benchmark report: every benchmark of docs/BENCHMARKS.md that the issue asks for, with the
peers side by side in the same run, written as Markdown + JSON + PNG plots.

Run it through bench/report.sh (which builds visage, creates the Python environments with the
pinned peers and then runs this file with the peers' interpreter):

    bench/report.sh                 # the full run (about 50 minutes on the idle 2-core machine)
    bench/report.sh --quick         # reduced sizes, a few minutes: for development only
    bench/report.sh --skip-1m       # everything but the 1,000,000-face index

Stages (names for --skip and --resume):
  lfw-PACK          LFW 10-fold verification per pack (`visage bench lfw --flip`)
  lfw1n-PACK        LFW 1:N identification per pack with its DET curve (`visage bench lfw-1n`)
  face-recognition  peer: face_recognition (dlib) on chosen pairs.txt folds, accuracy and speed
  ingest-compare    ingest throughput and CPU, ours (`visage ingest`) vs the Python onnxruntime
                    pipeline (bench/ingest_python.py), same model files, same images
  ingest-gallery    all of LFW ingested (the gallery for the stages below; full mode only)
  index-N           HNSW at N faces, the gallery's real embeddings mixed into synthetic ones
                    (`visage bench index --real lfw --mix-synthetic --export`), then FAISS flat
                    and HNSW on the exported vectors (bench/peers_faiss.py)
  probe             end-to-end probe latency per stage on the gallery filled to --probe-faces
                    (`visage bench fill-synthetic`, `visage bench probe`)

Every figure of the report is read from the JSON the stages wrote in this run (or, with
--resume, in an earlier run into the same --out folder: those stages are labelled with the time
they were measured). Nothing is copied from docs.
"""
import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")


def now_iso():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def machine_cpu():
    """(busy seconds, total seconds) summed over all CPUs since boot, from /proc/stat."""
    try:
        f = open("/proc/stat").readline().split()[1:]
        v = [int(x) for x in f]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / CLK, sum(v[:8]) / CLK
    except OSError:
        return None


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


class Ctx:
    def __init__(self, a):
        self.a = a
        self.out = Path(a.out).resolve()
        self.work = self.out / "work"
        self.logs = self.out / "logs"
        self.stages_dir = self.out / "stages"
        for d in (self.out, self.work, self.logs, self.stages_dir, self.out / "plots"):
            d.mkdir(parents=True, exist_ok=True)
        # A private copy: other work rebuilding target/release during the run cannot change it.
        self.visage = str(self.work / "visage")
        shutil.copy2(Path(a.visage).resolve(), self.visage)
        self.env = dict(os.environ)
        for k in ("VISAGE_DATA", "VISAGE_PACK", "VISAGE_THREADS"):
            self.env.pop(k, None)
        self.env["VISAGE_HOME"] = a.home
        self.results = {}

    def log(self, msg):
        print(f"[report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def run(self, stage, cmd, stdout_path=None, echo=True):
        """Runs `cmd` (a list), stderr to logs/STAGE.log (and echoed), stdout kept (and written
        to stdout_path). Returns wall and CPU time of the child (wait4), the machine's busy
        time meanwhile, and its stdout. Raises on a non-zero exit."""
        cmd = [str(c) for c in cmd]
        line = " ".join(shlex.quote(c) for c in cmd)
        self.log(f"{stage}: $ {line}")
        logf = open(self.logs / f"{stage}.log", "a")
        logf.write(f"$ {line}\n")
        m0, t0 = machine_cpu(), time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, errors="replace")
        out = []

        def pump_err():
            last = 0.0
            for ln in p.stderr:
                logf.write(ln)
                logf.flush()
                # Echo, at most one progress line every 2 s (warnings always).
                if echo and (time.time() - last > 2 or "warn" in ln.lower() or "error" in ln.lower()):
                    last = time.time()
                    print(f"  {stage}| {ln.rstrip()[:200]}", file=sys.stderr, flush=True)

        th = threading.Thread(target=pump_err, daemon=True)
        th.start()
        for ln in p.stdout:
            out.append(ln)
        th.join()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        m1 = machine_cpu()
        stdout = "".join(out)
        logf.write(stdout if len(stdout) < 20000 else stdout[:20000] + "\n...\n")
        logf.close()
        if stdout_path:
            Path(stdout_path).write_text(stdout)
        cpu = ru.ru_utime + ru.ru_stime
        r = {
            "cmd": line,
            "rc": p.returncode,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "cpu_percent": round(100 * cpu / max(wall, 1e-9), 1),
            "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
        }
        if m0 and m1:
            busy = (m1[0] - m0[0]) / max(wall, 1e-9)
            r["machine_busy_percent"] = round(100 * busy, 1)
            r["others_percent"] = round(max(0.0, 100 * busy - r["cpu_percent"]), 1)
        if p.returncode != 0:
            tail = (self.logs / f"{stage}.log").read_text()[-2000:]
            raise RuntimeError(f"{cmd[0]} exited with {p.returncode}:\n{tail}")
        r["stdout"] = stdout
        return r


def all_runs(x):
    """Every command record (as made by Ctx.run) inside a stage result, in order."""
    if isinstance(x, dict):
        if "cmd" in x and "cpu_percent" in x:
            yield x
            return
        for v in x.values():
            yield from all_runs(v)


def strip(r):
    return {k: v for k, v in r.items() if k != "stdout"}


def stage(ctx, name, fn):
    """Runs one stage (unless skipped or resumed) and records its status and duration."""
    a = ctx.a
    path = ctx.stages_dir / f"{name}.json"
    if any(name == s or (s.endswith("*") and name.startswith(s[:-1])) for s in a.skip):
        ctx.log(f"{name}: skipped (--skip)")
        ctx.results[name] = {"status": "skipped"}
        return None
    if a.resume and path.exists():
        rec = json.loads(path.read_text())
        if rec.get("status") == "ok":
            ctx.log(f"{name}: resumed from {rec['started']}")
            rec["resumed"] = True
            ctx.results[name] = rec
            return rec["result"]
    ctx.log(f"== stage {name}")
    started, load0, t0 = now_iso(), loadavg(), time.perf_counter()
    rec = {"started": started, "load_before": load0}
    try:
        rec["result"] = fn()
        rec["status"] = "ok"
    except Exception as e:  # one failed stage does not stop the others
        rec["status"] = "failed"
        rec["error"] = str(e)[-3000:]
        ctx.log(f"{name}: FAILED: {str(e)[-500:]}")
    rec["duration_s"] = round(time.perf_counter() - t0, 1)
    rec["load_after"] = loadavg()
    path.write_text(json.dumps(rec, indent=1) + "\n")
    ctx.results[name] = rec
    ctx.log(f"{name}: {rec['status']} in {rec['duration_s']:.0f} s")
    return rec.get("result")


# ---------------------------------------------------------------------------------- stages


def quick_pairs(lfw, out, per_fold):
    """The first per_fold/2 same and per_fold/2 different pairs of each fold of pairs.txt."""
    lines = [ln for ln in (Path(lfw) / "pairs.txt").read_text().splitlines() if ln.strip()]
    folds, n = (int(x) for x in lines[0].split())
    h = per_fold // 2
    body = []
    for f in range(folds):
        blk = lines[1 + f * 2 * n : 1 + (f + 1) * 2 * n]
        body += blk[:h] + blk[n : n + h]
    out.write_text(f"{folds}\t{h}\n" + "\n".join(body) + "\n")
    return out


def st_lfw(ctx, pack):
    a = ctx.a
    js = ctx.out / f"lfw-{pack}.json"
    cmd = [ctx.visage, "bench", "lfw", "--pack", pack, "--flip", "--data", a.lfw, "--json", js]
    if a.quick:
        cmd += ["--pairs", quick_pairs(a.lfw, ctx.work / "pairs-quick.txt", a.lfw_pairs_per_fold)]
    r = ctx.run(f"lfw-{pack}", cmd)
    return {"run": strip(r), "report": json.loads(js.read_text()), "json": js.name}


def st_lfw1n(ctx, pack):
    a = ctx.a
    js = ctx.out / f"lfw1n-{pack}.json"
    cmd = [ctx.visage, "bench", "lfw-1n", "--pack", pack, "--data", a.lfw, "--json", js]
    if a.limit_people:
        cmd += ["--limit-people", a.limit_people]
    r = ctx.run(f"lfw1n-{pack}", cmd)
    rep = json.loads(js.read_text())
    # The report keeps the summary (the JSON file has the failures and the full DET curve).
    keep = ["pack", "limit_people", "gallery_size", "gallery_enrolled", "probes", "probes_searched",
            "mated_people", "distractors", "rank1", "rank10", "fnir_at_fpir_0.01", "threshold_at_fpir_0.01",
            "fnir_at_fpir_0.001", "threshold_at_fpir_0.001", "det", "images_per_second", "elapsed_seconds"]
    return {"run": strip(r), "report": {k: rep.get(k) for k in keep}, "json": js.name}


def st_face_recognition(ctx):
    a = ctx.a
    js = ctx.out / "face-recognition.json"
    cmd = [sys.executable, "-W", "ignore", ROOT / "bench/peers_face_recognition.py", "--lfw", a.lfw,
           "--folds", a.fr_folds, "--pairs-per-fold", a.fr_pairs_per_fold, "--json", js]
    r = ctx.run("face-recognition", cmd)
    return {"run": strip(r), "report": json.loads(js.read_text()), "json": js.name}


def lfw_subset(ctx, n):
    """The first n images of lfw-deepfunneled in path order, hard-linked (or copied) into
    work/lfw-first-N/<Person>/ (ingest does not follow symbolic links)."""
    src = Path(ctx.a.lfw) / "lfw-deepfunneled"
    files = sorted(p for p in src.rglob("*.jpg"))[:n]
    dst = ctx.work / f"lfw-first-{n}"
    if dst.exists():
        shutil.rmtree(dst)
    for f in files:
        t = dst / f.parent.name / f.name
        t.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, t)
        except OSError:
            shutil.copy2(f, t)
    return dst, len(files)


def gallery_stats(ctx, data_dir, stage):
    r = ctx.run(stage, [ctx.visage, "--data-dir", data_dir, "stats", "--json"], echo=False)
    return json.loads(r["stdout"])


def ingest(ctx, stage, data_dir, images):
    if Path(data_dir).exists():
        shutil.rmtree(data_dir)
    r = ctx.run(stage, [ctx.visage, "--data-dir", data_dir, "ingest", images, "--collection", "lfw",
                        "--subject-from-parent", "--pack", "open", "--json"])
    rep = json.loads(r["stdout"])
    st = gallery_stats(ctx, data_dir, stage)
    rep.pop("failures", None)
    return {"run": strip(r), "report": rep, "stats": st}


def st_ingest_compare(ctx):
    a = ctx.a
    subset, n = lfw_subset(ctx, a.ingest_images)
    ours = ingest(ctx, "ingest-compare", ctx.work / "gallery-subset", subset)
    py = ctx.run("ingest-compare", [a.ref_python, ROOT / "bench/ingest_python.py", "--pack-dir",
                                    Path(a.home) / "packs/open", "--images", subset])
    pyrep = json.loads(py["stdout"].strip().splitlines()[-1])
    return {"images": n, "subset": f"first {n} images of lfw-deepfunneled in path order",
            "ours": ours, "python": {"run": strip(py), "report": pyrep}}


def st_ingest_gallery(ctx):
    return ingest(ctx, "ingest-gallery", ctx.work / "gallery", Path(ctx.a.lfw) / "lfw-deepfunneled")


def gallery_dir(ctx):
    full = ctx.work / "gallery"
    return full if (not ctx.a.quick and full.exists()) else ctx.work / "gallery-subset"


def st_index(ctx, n):
    a = ctx.a
    g = gallery_dir(ctx)
    vec = ctx.work / f"vectors-{n}"
    js = ctx.out / f"index-{n}.json"
    cmd = [ctx.visage, "--data-dir", g, "bench", "index", "--real", "lfw", "--mix-synthetic", "--n", n,
           "--dim", 128, "--connectivity", 32, "--ef-add", 256, "--storage", "i8", "--ef", 256,
           "--ef-sweep", a.ef_sweep, "--queries", a.queries, "--save-dir", ctx.work, "--export", vec,
           "--json", js]
    r = ctx.run(f"index-{n}", cmd)
    ours = json.loads(js.read_text())
    fjs = ctx.out / f"faiss-{n}.json"
    fcmd = [sys.executable, ROOT / "bench/peers_faiss.py", "--data", vec, "--m", 32, "--ef-construction", 256,
            "--ef-search", a.faiss_ef, "--json", fjs]
    if n > a.faiss_hnsw_max:
        fcmd.append("--no-hnsw")
    fr = ctx.run(f"index-{n}", fcmd)
    if not a.keep_work:
        shutil.rmtree(vec, ignore_errors=True)
    return {"run": strip(r), "report": ours, "json": js.name,
            "faiss": {"run": strip(fr), "report": json.loads(fjs.read_text()), "json": fjs.name}}


def st_probe(ctx):
    a = ctx.a
    if a.probe_gallery:
        g, fill = Path(a.probe_gallery), None
    else:
        # A copy: synthetic rows in the ingest gallery would pass for unlabelled real faces in a
        # later `bench index --real` (e.g. a --resume that re-runs an index stage).
        g = ctx.work / "gallery-probe"
        if g.exists():
            shutil.rmtree(g)
        shutil.copytree(gallery_dir(ctx), g)
        fill = ctx.run("probe", [ctx.visage, "--data-dir", g, "bench", "fill-synthetic", "--pack", "open",
                                 "--collection", "lfw", "--faces", a.probe_faces])
        fill = strip(fill)
    js = ctx.out / "probe.json"
    r = ctx.run("probe", [ctx.visage, "--data-dir", g, "bench", "probe", "--pack", "open", "--probe", a.probe,
                          "--runs", a.probe_runs, "--json", js])
    st = gallery_stats(ctx, g, "probe")
    return {"gallery": str(g), "fill": fill, "run": strip(r), "report": json.loads(js.read_text()),
            "stats": st, "json": js.name}


# ---------------------------------------------------------------------------------- report


def versions(ctx):
    from importlib.metadata import version, PackageNotFoundError

    peers = {}
    for p in ("faiss-cpu", "dlib-bin", "face-recognition", "face-recognition-models", "numpy", "matplotlib",
              "pillow", "setuptools"):
        try:
            peers[p] = version(p)
        except PackageNotFoundError:
            peers[p] = None
    ref = {}
    try:
        o = subprocess.run([ctx.a.ref_python, "-c",
                            "import json,importlib.metadata as m;print(json.dumps({p:m.version(p) for p in "
                            "('onnxruntime','numpy','opencv-python-headless')}))"],
                           capture_output=True, text=True, check=True)
        ref = json.loads(o.stdout)
    except Exception as e:  # noqa: BLE001
        ref = {"error": str(e)}
    v = subprocess.run([ctx.visage, "--version"], capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    ort = None
    try:
        ort = Path(ctx.a.home, "runtime").glob("*")
        ort = sorted(p.name for p in ort)
    except OSError:
        pass
    return {"visage": v, "git_commit": git, "git_dirty_files": len(dirty.splitlines()),
            "peers_venv": {"python": platform.python_version(), **peers},
            "reference_venv": ref, "visage_home_runtime": ort}


def host():
    cpu = "?"
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for ln in open("/proc/meminfo"):
            if ln.startswith("MemTotal"):
                mem = round(int(ln.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "os": platform.platform()}


def f(x, nd=4):
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{nd}f}"


def res(ctx, name):
    r = ctx.results.get(name) or {}
    return r.get("result") if r.get("status") == "ok" else None


def when(ctx, name):
    r = ctx.results.get(name) or {}
    return f" (resumed: measured {r['started']})" if r.get("resumed") else ""


def interp_qps(points, recall):
    """FAISS qps at `recall` on its (recall, qps) curve: log-linear between the bracketing
    points. Returns (qps, how): how is 'interpolated', '>=' (FAISS's fastest point already has
    a higher recall) or None when FAISS never reaches it."""
    import math

    pts = sorted((p["recall_at_10"], p["qps"]) for p in points)
    if not pts:
        return None, None
    if recall <= pts[0][0]:
        return max(q for _, q in pts), ">="
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= recall <= r1:
            if r1 == r0:
                return max(q0, q1), "interpolated"
            w = (recall - r0) / (r1 - r0)
            return math.exp(math.log(q0) + w * (math.log(q1) - math.log(q0))), "interpolated"
    return None, None


def plots(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    made = []
    pdir = ctx.out / "plots"
    # DET
    fig, ax = plt.subplots(figsize=(6, 4.5))
    any_det = False
    for pack in ctx.a.packs:
        r = res(ctx, f"lfw1n-{pack}")
        if not r:
            continue
        det = [p for p in r["report"]["det"] if p["fpir"] > 0 and p["fnir"] > 0]
        if det:
            any_det = True
            ax.plot([p["fpir"] for p in det], [p["fnir"] for p in det], marker=".", label=pack)
    if any_det:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FPIR (non-mated searches with a candidate above threshold)")
        ax.set_ylabel("FNIR (mate not at rank 1 above threshold)")
        ax.set_title("LFW 1:N DET curve")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(pdir / "det.png", dpi=110, bbox_inches="tight")
        made.append("plots/det.png")
    plt.close(fig)
    # recall vs qps per index size
    for n in ctx.a.index_sizes:
        r = res(ctx, f"index-{n}")
        if not r:
            continue
        o = r["report"]
        pts = sorted([o] + o["ef_sweep"], key=lambda p: p.get("ef", o["expansion_search"]))
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot([1e3 / p["mean_ms"] for p in pts], [p["recall_at_10"] for p in pts], marker="o",
                label=f"visage (usearch HNSW M={o['connectivity']}, i8 + re-rank)")
        for p in pts:
            ax.annotate(str(p.get("ef", o["expansion_search"])), (1e3 / p["mean_ms"], p["recall_at_10"]),
                        fontsize=7, xytext=(3, -8), textcoords="offset points")
        fz = r["faiss"]["report"]
        if "hnsw" in fz:
            sw = fz["hnsw"]["sweep"]
            ax.plot([p["qps"] for p in sw], [p["recall_at_10"] for p in sw], marker="s",
                    label=f"FAISS IndexHNSWFlat M={fz['hnsw']['m']}")
        ax.scatter([fz["flat"]["qps"]], [fz["flat"]["recall_at_10"]], marker="*", s=120, color="k",
                   label="FAISS IndexFlatIP (exact)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("queries per second (1 thread, one query at a time)")
        ax.set_ylabel("recall@10")
        ax.set_title(f"{n:,} x {o['dim']} ({o.get('real_faces') or 0:,} real LFW faces)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(pdir / f"index-{n}.png", dpi=110, bbox_inches="tight")
        made.append(f"plots/index-{n}.png")
        plt.close(fig)
    # probe stages
    r = res(ctx, "probe")
    if r:
        p = r["report"]
        stages = ["decode", "detect", "embed", "index", "join"]
        fig, ax = plt.subplots(figsize=(6, 1.8))
        left = 0.0
        for s in stages:
            ax.barh([0], [p[s]["p50"]], left=left, label=f"{s} {p[s]['p50']:.1f} ms")
            left += p[s]["p50"]
        ax.set_yticks([])
        ax.set_xlabel("ms (p50 per stage)")
        ax.set_title(f"Probe latency, {p['faces_searched']:,} faces: total p50 {p['total']['p50']:.1f} ms")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.45))
        fig.savefig(pdir / "probe.png", dpi=110, bbox_inches="tight")
        made.append("plots/probe.png")
        plt.close(fig)
    # throughput
    c = res(ctx, "ingest-compare")
    frr = res(ctx, "face-recognition")
    bars = []
    if c:
        bars.append(("visage ingest", c["ours"]["report"]["images_per_s"]))
        bars.append(("Python onnxruntime", c["python"]["report"]["images_per_s"]))
    if frr:
        bars.append(("face_recognition (dlib)", frr["report"]["images_per_s"]))
    if bars:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh([b[0] for b in bars], [b[1] for b in bars], color=["C0", "C1", "C2"][: len(bars)])
        for i, b in enumerate(bars):
            ax.text(b[1], i, f" {b[1]:.1f}", va="center")
        ax.set_xlabel("LFW images per second (2 cores)")
        ax.set_title("Throughput")
        fig.tight_layout()
        fig.savefig(pdir / "throughput.png", dpi=110, bbox_inches="tight")
        made.append("plots/throughput.png")
        plt.close(fig)
    return made


def write_report(ctx, meta):
    a = ctx.a
    L = []
    w = L.append
    w("# visage benchmark report\n")
    if a.quick:
        w("> **Quick mode** (`--quick`): reduced sizes for development. These figures are smoke-test "
          "figures, not the protocols' results; do not quote them.\n")
    w(f"- Run: {meta['started']} to {meta['finished']} ({meta['total_s'] / 60:.1f} min), "
      f"mode **{'quick' if a.quick else 'full'}**")
    w(f"- Command: `{meta['command']}`")
    h = meta["host"]
    w(f"- Machine: {h['cpu']}, {h['cores']} cores, {h['mem_gib']} GiB; load average at start "
      f"{meta['load_start']}, at end {meta['load_end']}")
    v = meta["versions"]
    w(f"- visage: {v['visage']}, commit {v['git_commit'][:12]}"
      f"{' + %d uncommitted files' % v['git_dirty_files'] if v['git_dirty_files'] else ''}")
    pv = v["peers_venv"]
    w(f"- Peers (bench/requirements-peers*.txt, Python {pv['python']}): faiss-cpu {pv['faiss-cpu']}, "
      f"face-recognition {pv['face-recognition']} with face-recognition-models {pv['face-recognition-models']} "
      f"on dlib-bin {pv['dlib-bin']}; matplotlib {pv['matplotlib']}, numpy {pv['numpy']}")
    rv = v["reference_venv"]
    w(f"- Python onnxruntime pipeline (.venv, scripts/requirements-ref.txt): onnxruntime "
      f"{rv.get('onnxruntime')}, numpy {rv.get('numpy')}, opencv-python-headless {rv.get('opencv-python-headless')}")
    w("- Every figure below was measured in this run by the stage named with it; raw JSON next to "
      "this file, logs in `logs/`.\n")

    # Headline
    w("## Headline figures\n")
    w("| measure | ours | peer |")
    w("|---|---|---|")
    for pack in a.packs:
        r = res(ctx, f"lfw-{pack}")
        if r:
            x = r["report"]
            w(f"| LFW verification, {pack}, flip ({x['pairs']:,} pairs) | {x['accuracy_mean']:.4f} ± "
              f"{x['accuracy_std']:.4f} | |")
    frr = res(ctx, "face-recognition")
    if frr:
        x = frr["report"]
        w(f"| LFW verification, face_recognition ({x['pairs']:,} pairs of folds "
          f"{','.join(map(str, x['folds']))}) | | {x['accuracy_mean']:.4f} ± {x['accuracy_std']:.4f} |")
    for pack in a.packs:
        r = res(ctx, f"lfw1n-{pack}")
        if r:
            x = r["report"]
            w(f"| LFW 1:N {pack}: rank-1 / rank-10 / FNIR@FPIR 1% / 0.1% | {x['rank1']:.4f} / {x['rank10']:.4f} / "
              f"{x['fnir_at_fpir_0.01']:.3f} / {x['fnir_at_fpir_0.001']:.3f} | |")
    c = res(ctx, "ingest-compare")
    if c:
        o, p = c["ours"]["report"], c["python"]["report"]
        w(f"| ingest images/s, {c['images']:,} LFW images, `open` | {o['images_per_s']:.1f} | Python onnxruntime "
          f"{p['images_per_s']:.1f} ({o['images_per_s'] / p['images_per_s']:.2f}x) |")
    if frr:
        w(f"| face pipeline images/s, face_recognition | | {frr['report']['images_per_s']:.1f} |")
    for n in a.index_sizes:
        r = res(ctx, f"index-{n}")
        if not r:
            continue
        o, fz = r["report"], r["faiss"]["report"]
        qps = 1e3 / o["mean_ms"]
        peer = f"FAISS flat (exact) {fz['flat']['qps']:,.0f} q/s"
        fq, how = interp_qps(fz.get("hnsw", {}).get("sweep", []), o["recall_at_10"])
        if fq:
            peer = f"FAISS HNSW {'>= ' if how == '>=' else ''}{fq:,.0f} q/s at the same recall; " + peer
        w(f"| {n:,} faces ({o.get('real_faces') or 0:,} real): recall@10 / p50 / q/s at ef={o['expansion_search']} | "
          f"{o['recall_at_10']:.4f} / {o['p50_ms']:.3f} ms / {qps:,.0f} q/s | {peer} |")
    pr = res(ctx, "probe")
    if pr:
        p = pr["report"]
        w(f"| probe latency p50, {p['faces_searched']:,} faces | {p['total']['p50']:.1f} ms | |")
    w("")

    # Stages
    w("## Stages\n")
    w("| stage | status | duration | our CPU | others on the machine |")
    w("|---|---|---|---|---|")
    for name, r in ctx.results.items():
        if r.get("status") == "skipped":
            w(f"| {name} | skipped | | | |")
            continue
        runs = list(all_runs(r.get("result")))
        cpu = " / ".join(f"{q['cpu_percent']:.0f}%" for q in runs) or ""
        oth = " / ".join(f"{q.get('others_percent', 0):.0f}%" for q in runs) or ""
        w(f"| {name} | {r['status']}{' (resumed, ' + r['started'] + ')' if r.get('resumed') else ''} | "
          f"{r.get('duration_s', 0):.0f} s | {cpu} | {oth} |")
    total = sum(r.get("duration_s", 0) for r in ctx.results.values())
    w(f"\nSum of the stage durations: {total / 60:.1f} min; setup (build check, Python environments): "
      f"{meta.get('setup_s', 'n/a')} s. CPU columns: each command of the stage (100% = one core of "
      f"{os.cpu_count()}); \"others\": CPU the rest of the machine used meanwhile (from /proc/stat): above a "
      "few percent the stage shared the machine and its speed figures are low.\n")

    # LFW verification
    w("## Accuracy: LFW verification (10-fold, pairs.txt)\n")
    w("`visage bench lfw --pack P --flip --data LFW`: detect on the 250x250 image, face nearest the centre, "
      "align, embed (with the mirrored image), threshold chosen on 9 folds, accuracy on the 10th."
      + (" Quick mode: 30 pairs per fold (15 same, 15 different)." if a.quick else "") + "\n")
    w("| pack / peer | pairs | accuracy (mean ± std) | TAR@FAR=1e-3 | images/s | CPU |")
    w("|---|---|---|---|---|---|")
    for pack in a.packs:
        r = res(ctx, f"lfw-{pack}")
        if r:
            x = r["report"]
            w(f"| {pack}{when(ctx, 'lfw-' + pack)} | {x['pairs']:,} | {x['accuracy_mean']:.4f} ± {x['accuracy_std']:.4f} | "
              f"{x['tar_at_far_1e-3']:.4f} | {x['images_per_second']:.1f} | {r['run']['cpu_percent']:.0f}% |")
    if frr:
        x = frr["report"]
        w(f"| face_recognition {x['versions']['face-recognition']} (dlib HOG + ResNet){when(ctx, 'face-recognition')} | "
          f"{x['pairs']:,} | {x['accuracy_mean']:.4f} ± {x['accuracy_std']:.4f} | | {x['images_per_s']:.1f} | "
          f"{x['cpu_percent']:.0f}% |")
    if frr:
        x = frr["report"]
        w(f"\nface_recognition protocol: {x['protocol']}. At the library's fixed tolerance 0.6: accuracy "
          f"{x['accuracy_at_tolerance_0_6']:.4f}. HOG found no face in {x['hog_fallbacks']} of {x['images']:,} "
          f"images (the central box was encoded instead). Time per image per worker "
          f"{x['ms_per_image_per_worker']:.0f} ms (HOG {x['detect_ms_per_image']:.0f} ms, encoding "
          f"{x['encode_ms_per_image']:.0f} ms), {x['cpu_ms_per_image']:.0f} ms of CPU per image, {x['workers']} "
          f"worker processes: all 7,701 images of pairs.txt would take {7701 / x['images_per_s'] / 60:.1f} min at "
          f"this run's rate ({7701 * x['cpu_ms_per_image'] / 1e3 / x['workers'] / 60:.1f} min with {x['workers']} "
          "cores to itself), which the 60-minute budget of the whole report does not leave: hence the subset.")
        rows = []
        for pack in a.packs:
            r = res(ctx, f"lfw-{pack}")
            if r and len(r["report"]["fold_accuracies"]) >= max(x["folds"]):
                accs = [r["report"]["fold_accuracies"][k - 1] for k in x["folds"]]
                rows.append(f"{pack} {sum(accs) / len(accs):.4f}")
        if rows and not a.quick:
            w(f"Ours on the same folds (mean of those folds' accuracies, threshold from the other 9): "
              f"{', '.join(rows)}; face_recognition {x['accuracy_mean']:.4f}.")
    w("")

    # 1:N
    w("## Accuracy: LFW 1:N identification\n")
    w("`visage bench lfw-1n --pack P --data LFW --json F`: gallery = first image of each person with two or "
      "more images + every single-image person (distractors); probes = the other images; exhaustive search; "
      "non-mated searches are the probes with their mate removed."
      + (f" Quick mode: `--limit-people {a.limit_people}`." if a.limit_people else "") + "\n")
    w("| pack | gallery (enrolled) | probes (searched) | rank-1 | rank-10 | FNIR @ FPIR 1% (T) | FNIR @ FPIR 0.1% (T) | s |")
    w("|---|---|---|---|---|---|---|---|")
    for pack in a.packs:
        r = res(ctx, f"lfw1n-{pack}")
        if r:
            x = r["report"]
            w(f"| {pack}{when(ctx, 'lfw1n-' + pack)} | {x['gallery_size']:,} ({x['gallery_enrolled']:,}) | {x['probes']:,} "
              f"({x['probes_searched']:,}) | {x['rank1']:.4f} | {x['rank10']:.4f} | {x['fnir_at_fpir_0.01']:.3f} "
              f"({x['threshold_at_fpir_0.01']:.3f}) | {x['fnir_at_fpir_0.001']:.3f} ({x['threshold_at_fpir_0.001']:.3f}) | "
              f"{x['elapsed_seconds']:.0f} |")
    if (ctx.out / "plots/det.png").exists():
        w("\n![DET](plots/det.png)\n")
    w("The DET points (50 FPIR targets from 1e-4 to 1) are in `lfw1n-PACK.json` under `det`.\n")

    # Ingest
    w("## Throughput: ingest, ours vs the Python onnxruntime pipeline\n")
    if c:
        o, p = c["ours"], c["python"]
        w(f"Same images ({c['subset']}), same `open` model files, one after the other. Ours: `visage ingest "
          "--subject-from-parent --json` (hash, decode, detect, quality gate, align, embed, crops, thumbnails, "
          "SQLite, blobs, index, fsync). Python: `bench/ingest_python.py` (decode, detect, NMS, align, embed every "
          "detection; stores nothing).\n")
        w("| | images | faces | wall s | images/s | faces/s | CPU | max RSS |")
        w("|---|---|---|---|---|---|---|---|")
        orp = o["report"]
        w(f"| `visage ingest`{when(ctx, 'ingest-compare')} | {orp['images_seen']:,} | {orp['faces_indexed']:,} indexed | "
          f"{orp['elapsed_s']:.1f} | **{orp['images_per_s']:.1f}** | {orp['faces_per_s']:.1f} | "
          f"{o['run']['cpu_percent']:.0f}% | {o['run']['max_rss_mb']:.0f} MB |")
        w(f"| Python onnxruntime | {p['report']['images']:,} | {p['report']['faces']:,} embedded | "
          f"{p['report']['seconds']:.1f} | {p['report']['images_per_s']:.1f} | {p['report']['faces_per_s']:.1f} | "
          f"{p['run']['cpu_percent']:.0f}% | {p['run']['max_rss_mb']:.0f} MB |")
        g = res(ctx, "ingest-gallery")
        if g:
            gr = g["report"]
            w(f"| `visage ingest`, all of LFW{when(ctx, 'ingest-gallery')} | {gr['images_seen']:,} | {gr['faces_indexed']:,} indexed | "
              f"{gr['elapsed_s']:.1f} | {gr['images_per_s']:.1f} | {gr['faces_per_s']:.1f} | "
              f"{g['run']['cpu_percent']:.0f}% | {g['run']['max_rss_mb']:.0f} MB |")
        w(f"\nRatio (images/s, same images): **{orp['images_per_s'] / p['report']['images_per_s']:.2f}x**. "
          f"Faces rejected by our quality gate before embedding: {orp.get('faces_rejected')}.")
        gs = (g or o)["stats"]
        if gs.get("faces"):
            b = gs["bytes_on_disk"]
            w(f"Gallery on disk after ingest ({gs['faces']:,} faces): {b['total'] / gs['faces']:,.0f} B/face "
              f"(metadata {b['metadata'] / gs['faces']:,.0f}, blobs {b['blobs'] / gs['faces']:,.0f}, index "
              f"{b['index'] / gs['faces']:,.0f}); in RAM with its index loaded (`visage stats`): "
              f"{gs['bytes_in_memory'] / gs['faces']:,.0f} B/face.")
    if (ctx.out / "plots/throughput.png").exists():
        w("\n![throughput](plots/throughput.png)\n")
    w("")

    # Index
    w("## Vector search: HNSW vs FAISS on the same vectors\n")
    w("`visage bench index --real lfw --mix-synthetic --n N --dim 128 --connectivity 32 --ef-add 256 --storage i8 "
      f"--ef 256 --ef-sweep {a.ef_sweep} --queries {a.queries} --export DIR`: the gallery's real LFW embeddings "
      "(`open` pack) mixed into synthetic face-like ones up to N; half the queries are held-out real faces, half "
      "synthetic. Ours stores int8 vectors and re-scores 40 candidates exactly (the gallery's settings). FAISS "
      "(`bench/peers_faiss.py`) reads the exported rows, queries and exact top-10, so both are scored against the "
      "same ground truth. Every query: one at a time, top-10, one thread. Identity labels of the real faces "
      "are their LFW folder names (`ingest --subject-from-parent`), so a background face in a photo carries the "
      "wrong name: identity recall@1 over the real queries is a lower bound; recall@10 does not use labels.\n")
    for n in a.index_sizes:
        st = ctx.results.get(f"index-{n}", {})
        if st.get("status") != "ok":
            w(f"**{n:,}**: {st.get('status', 'not run')}{(': ' + st.get('error', '')[:300]) if st.get('error') else ''}\n")
            continue
        r = st["result"]
        o, fz = r["report"], r["faiss"]["report"]
        w(f"### {n:,} x {o['dim']}{when(ctx, f'index-{n}')}\n")
        w(f"{o.get('real_faces') or 0:,} real faces + {n - (o.get('real_faces') or 0):,} synthetic; {o['queries']:,} "
          f"queries ({o.get('real_queries') or 0:,} real). Ours: build {o['build_s']:.1f} s on {o['threads']} threads "
          f"({o['insert_per_s']:,.0f} vectors/s), {o['bytes_per_face_ram']:,.0f} B/face of index RAM (RSS grew "
          f"{f(o.get('rss_bytes_per_face'), 0)} B/face), {o['bytes_per_face_disk']:,.0f} B/face on disk, save "
          f"{o['save_s']:.2f} s, load {o['load_s']:.2f} s, reloaded index identical: {o['reload_identical']}.")
        if "hnsw" in fz:
            hz = fz["hnsw"]
            w(f"FAISS HNSW: build {hz['build_s']:.1f} s ({hz['insert_per_s']:,.0f} vectors/s, {fz['threads_build']} "
              f"threads), {hz['bytes_per_face']:,.0f} B/face serialised. FAISS flat: {fz['flat']['bytes_per_face']:,.0f} "
              f"B/face, {fz['flat']['batch_qps_1_thread']:,.0f} q/s with all queries in one call.\n")
        else:
            w(f"FAISS HNSW not run at this size (`--faiss-hnsw-max {a.faiss_hnsw_max}`). FAISS flat: "
              f"{fz['flat']['batch_qps_1_thread']:,.0f} q/s with all queries in one call.\n")
        w("| index | ef | p50 ms | p99 ms | q/s | recall@10 | identity recall@1 | real queries: recall@10 / identity recall@1 | FAISS HNSW q/s at the same recall@10 |")
        w("|---|---|---|---|---|---|---|---|---|")
        pts = sorted([o] + o["ef_sweep"], key=lambda p: p.get("ef", o["expansion_search"]))
        for p in pts:
            ef = p.get("ef", o["expansion_search"])
            qps = 1e3 / p["mean_ms"]
            fq, how = interp_qps(fz.get("hnsw", {}).get("sweep", []), p["recall_at_10"])
            fcell = "n/a" if "hnsw" not in fz else (
                f"not reached (max {max(x['recall_at_10'] for x in fz['hnsw']['sweep']):.4f})" if fq is None
                else f"{'>= ' if how == '>=' else ''}{fq:,.0f} ({fq / qps:.2f}x)")
            w(f"| visage | {ef} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {qps:,.0f} | {p['recall_at_10']:.4f} | "
              f"{p['identity_recall_at_1']:.4f} | {f(p.get('real_recall_at_10'))} / "
              f"{f(p.get('real_identity_recall_at_1'))} | {fcell} |")
        for p in fz.get("hnsw", {}).get("sweep", []):
            w(f"| FAISS HNSW | {p['ef_search']} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {p['qps']:,.0f} | "
              f"{p['recall_at_10']:.4f} | | | |")
        fl = fz["flat"]
        w(f"| FAISS flat (exact) | | {fl['p50_ms']:.3f} | {fl['p99_ms']:.3f} | {fl['qps']:,.0f} | {fl['recall_at_10']:.4f} | | | |")
        w("\nFAISS q/s at ours' recall is interpolated (log-linear) between the two efSearch points around it; "
          "\">=\" means FAISS's cheapest point already has a higher recall.\n")
        if (ctx.out / f"plots/index-{n}.png").exists():
            w(f"![index {n}](plots/index-{n}.png)\n")

    # Probe
    w("## End-to-end probe latency\n")
    st = ctx.results.get("probe", {})
    if pr:
        p = pr["report"]
        fill = pr.get("fill")
        w(f"`visage bench probe --probe {Path(a.probe).name} --runs {p['runs']}` on the gallery "
          + (f"`{pr['gallery']}` (given with --probe-gallery)" if not fill else
             f"of this run filled to {a.probe_faces:,} faces with `visage bench fill-synthetic` "
             f"({fill['wall_s']:.0f} s)")
          + f": {p['faces_searched']:,} faces searched, probe {p['probe_width']}x{p['probe_height']}, "
          f"min face {p['min_face_px']:.0f} px{when(ctx, 'probe')}.\n")
        w("| stage | p50 ms | p90 ms | mean ms |")
        w("|---|---|---|---|")
        for s in ("decode", "detect", "embed", "index", "join", "search", "total"):
            w(f"| {s} | {p[s]['p50']:.1f} | {p[s]['p90']:.1f} | {p[s]['mean']:.1f} |")
        gs = pr.get("stats") or {}
        if gs.get("faces"):
            w(f"\nGallery: {gs['faces']:,} faces, {gs['bytes_on_disk']['total'] / gs['faces']:,.0f} B/face on disk "
              "(synthetic rows share one crop blob, so this understates real galleries; see the ingest figure), "
              f"{gs['bytes_in_memory'] / gs['faces']:,.0f} B/face in RAM with the index loaded (`visage stats`).")
        if (ctx.out / "plots/probe.png").exists():
            w("\n![probe](plots/probe.png)\n")
    else:
        w(f"{st.get('status', 'not run')}{(': ' + st.get('error', '')[:300]) if st.get('error') else ''}\n")

    (ctx.out / "report.md").write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (a few minutes), for development")
    ap.add_argument("--out", help="output folder (default bench-out/report-<UTC time>)")
    ap.add_argument("--visage", default=str(ROOT / "target/release/visage"))
    ap.add_argument("--home", default=os.environ.get("VISAGE_HOME") or str(Path.home() / ".local/share/visage"))
    ap.add_argument("--lfw", default=str((ROOT / "../shared/data/lfw").resolve()))
    ap.add_argument("--probe", default=str((ROOT / "../shared/data/e2e/face_recognition/examples/obama-1080p.jpg").resolve()))
    ap.add_argument("--packs", default=None, help="packs for the accuracy stages (default: installed ones)")
    ap.add_argument("--ref-python", default=str(ROOT / ".venv/bin/python"), help="interpreter with onnxruntime")
    ap.add_argument("--skip", default="", help="comma-separated stage names (a trailing * matches a prefix)")
    ap.add_argument("--skip-1m", action="store_true", help="skip index sizes of 1,000,000 and more")
    ap.add_argument("--resume", action="store_true", help="keep the stages already done in --out")
    ap.add_argument("--keep-work", action="store_true", help="keep the exported vectors in work/")
    ap.add_argument("--index-sizes", default=None, help="default 100000,1000000 (quick: 20000,50000)")
    ap.add_argument("--faiss-hnsw-max", type=int, default=None,
                    help="largest size FAISS HNSW is built for (default 100000: at 1M its build with efConstruction 256 takes as long as ours, ~16 min)")
    ap.add_argument("--ef-sweep", default="32,64,128,384,512,768,1024")
    ap.add_argument("--faiss-ef", default="16,32,64,128,256,512,1024")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ingest-images", type=int, default=None, help="images of the ingest comparison")
    ap.add_argument("--fr-folds", default=None, help="pairs.txt folds for face_recognition (default 1,2,3,4,5)")
    ap.add_argument("--fr-pairs-per-fold", type=int, default=None)
    ap.add_argument("--probe-faces", type=int, default=None, help="gallery size for the probe stage")
    ap.add_argument("--probe-runs", type=int, default=None)
    ap.add_argument("--probe-gallery", default=None, help="use this existing gallery (read-only) for the probe")
    ap.add_argument("--setup-s", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    q = a.quick
    a.index_sizes = [int(x) for x in (a.index_sizes or ("20000,50000" if q else "100000,1000000")).split(",")]
    if a.skip_1m:
        a.index_sizes = [n for n in a.index_sizes if n < 1_000_000]
    a.faiss_hnsw_max = a.faiss_hnsw_max or 100_000
    a.ingest_images = a.ingest_images or (300 if q else 2000)
    a.fr_folds = a.fr_folds or ("1,2" if q else "1,2,3,4,5")
    a.fr_pairs_per_fold = a.fr_pairs_per_fold if a.fr_pairs_per_fold is not None else (40 if q else 0)
    a.lfw_pairs_per_fold = 30
    a.limit_people = 60 if q else None
    a.probe_faces = a.probe_faces or (10_000 if q else 100_000)
    a.probe_runs = a.probe_runs or (20 if q else 40)
    a.skip = [s for s in a.skip.split(",") if s]
    if a.packs:
        a.packs = a.packs.split(",")
    else:
        a.packs = [p for p in ("open", "insightface-s") if (Path(a.home) / "packs" / p).is_dir()]
    a.out = a.out or str(ROOT / "bench-out" / ("report-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())))
    if not Path(a.visage).exists():
        sys.exit(f"report: {a.visage} not found: build it (bench/report.sh does)")
    ctx = Ctx(a)
    started, t0, load0 = now_iso(), time.perf_counter(), loadavg()
    ctx.log(f"output: {ctx.out}; mode {'quick' if q else 'full'}; packs {a.packs}; index sizes {a.index_sizes}")

    for pack in a.packs:
        stage(ctx, f"lfw-{pack}", lambda pack=pack: st_lfw(ctx, pack))
    for pack in a.packs:
        stage(ctx, f"lfw1n-{pack}", lambda pack=pack: st_lfw1n(ctx, pack))
    stage(ctx, "face-recognition", lambda: st_face_recognition(ctx))
    stage(ctx, "ingest-compare", lambda: st_ingest_compare(ctx))
    if not q:
        stage(ctx, "ingest-gallery", lambda: st_ingest_gallery(ctx))
    for n in a.index_sizes:
        stage(ctx, f"index-{n}", lambda n=n: st_index(ctx, n))
    stage(ctx, "probe", lambda: st_probe(ctx))

    meta = {
        "started": started,
        "finished": now_iso(),
        "total_s": round(time.perf_counter() - t0 + (a.setup_s or 0), 1),
        "setup_s": a.setup_s,
        "mode": "quick" if q else "full",
        "command": a.command or " ".join(shlex.quote(x) for x in sys.argv),
        "host": host(),
        "load_start": load0,
        "load_end": loadavg(),
        "versions": versions(ctx),
        "options": {k: v for k, v in vars(a).items() if k not in ("command",)},
    }
    try:
        meta["plots"] = plots(ctx)
    except Exception as e:  # noqa: BLE001  (a plot failing must not lose the report)
        meta["plots_error"] = str(e)
        ctx.log(f"plots failed: {e}")
    (ctx.out / "report.json").write_text(json.dumps({"meta": meta, "stages": ctx.results}, indent=1) + "\n")
    write_report(ctx, meta)
    failed = [k for k, r in ctx.results.items() if r.get("status") == "failed"]
    ctx.log(f"report: {ctx.out / 'report.md'} ({meta['total_s'] / 60:.1f} min)"
            + (f"; FAILED stages: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
