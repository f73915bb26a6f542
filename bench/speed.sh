#!/usr/bin/env bash
# Side-by-side inference speed: visage (Rust, ort load-dynamic) vs onnxruntime's Python
# binding on the same model files and photo, same thread counts, alternating runs.
# Writes bench-out/speed-*.json and prints a table with the ratio ours/python (<= 1.05 wanted).
#   bench/speed.sh [PACK...]      (default: every installed pack)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/visage
home=$($bin models list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["dir"].rsplit("/packs/",1)[0])')
img=../shared/data/e2e/face-api.js/examples_images/bbt4.jpg
[ -f "$img" ] || { echo "speed: $img not found (../shared/data)"; exit 0; }
packs=("$@")
[ ${#packs[@]} -gt 0 ] || packs=(open insightface-s)
mkdir -p bench-out
printf '%-14s %-3s %-26s %10s %10s %7s\n' pack thr measure rust_ms python_ms ratio
for pack in "${packs[@]}"; do
  [ -f "$home/packs/$pack/pack.toml" ] || { echo "skip $pack: not installed"; continue; }
  for t in 1 2; do
    for round in 1 2; do
      $bin --threads $t bench speed --pack "$pack" --image "$img" --runs 200 --json "bench-out/speed-rust-$pack-$t-$round.json" >/dev/null
      .venv/bin/python bench/speed_python.py --pack-dir "$home/packs/$pack" --threads $t --runs 200 --image "$img" --json "bench-out/speed-python-$pack-$t-$round.json" >/dev/null
    done
    python3 - "$pack" "$t" <<'PY'
import json, sys
pack, t = sys.argv[1], sys.argv[2]
def best(kind, key):
    return min(json.load(open(f"bench-out/speed-{kind}-{pack}-{t}-{r}.json"))[key] for r in (1, 2))
for key in ("detect_ms", "embed_ms_batch1", "embed_ms_per_face_batch16"):
    r, p = best("rust", key), best("python", key)
    print(f"{pack:<14} {t:<3} {key:<26} {r:10.3f} {p:10.3f} {r/p:7.3f}")
PY
  done
done
