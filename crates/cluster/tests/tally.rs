//! Benchmark (ignored by default): the cluster's statistics at N faces, read from the counts
//! migration 12 keeps in `tally`, against the grouped scans of `face` and `image` they
//! replaced (the baseline queries below are those scans, verbatim), and what keeping the
//! counts costs a writer.
//!
//! ```sh
//! VISAGE_TALLY_BENCH=2000000 cargo nextest run --release -p visage-cluster --test tally \
//!     --run-ignored only --no-capture
//! ```
//!
//! Rows are written with SQL (`generate_series`), not through `add_images`: 20 sources, 5
//! jurisdictions, 1.1 faces per image. A face's vector is 16 bytes here; a real 512-d vector
//! (2 KiB) is stored out of line by PostgreSQL (TOAST), so the face rows the scans read are
//! about as wide as here.

mod common;

use std::time::Instant;

use common::PG;
use visage_cluster::testkit::S3Server;
use visage_cluster::{ClusterConfig, ClusterStore};
use visage_gallery::{Catalog, FaceStore};

/// The grouped scans `ClusterStore::stats` ran before migration 12.
const BASELINE_STATS: [&str; 3] = [
    "SELECT source_id, COUNT(*) FROM image GROUP BY 1",
    "SELECT source_id, COUNT(*) FROM face GROUP BY 1",
    "SELECT i.collection_id, i.jurisdiction, COUNT(*), COALESCE(SUM(f.n), 0)::BIGINT \
     FROM image i LEFT JOIN (SELECT image_id, COUNT(*) AS n FROM face GROUP BY image_id) f \
     ON f.image_id = i.id GROUP BY 1, 2 ORDER BY 2 NULLS LAST",
];

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: set VISAGE_TALLY_BENCH=N (faces) and run with --run-ignored only"]
fn stats_at_scale() {
    let n: i64 = std::env::var("VISAGE_TALLY_BENCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("set VISAGE_TALLY_BENCH to the number of faces");
    let (Some(pg), Some(s3)) = (PG.as_ref(), S3Server::start().expect("starting S3")) else {
        panic!("PostgreSQL and the S3 server are needed (scripts/setup-cluster.sh)");
    };
    let db = format!("tally_bench_{}", std::process::id());
    let cfg = ClusterConfig {
        postgres_url: pg.create_database(&db).unwrap(),
        s3: s3.create_bucket(&db.replace('_', "-")).unwrap(),
        qdrant: None,
        audit_key_file: None,
        policy_file: None,
        operator_org: None,
        login_per_minute: None,
        public_per_minute: None,
        upload_limit: None,
        upload_dir: None,
    };
    let store = ClusterStore::open(&cfg).unwrap();
    let coll = store.ensure_collection("bench", "open@1", 512).unwrap();
    let images = n * 10 / 11;
    let mut c = store.pool().get().unwrap();
    let t = Instant::now();
    c.batch_execute(&format!(
        "INSERT INTO source (collection_id, name, kind, created_at) \
         SELECT {coll}, 'source' || s, 'folder', 0 FROM generate_series(1, 20) s;
         INSERT INTO image (collection_id, source_id, sha256, jurisdiction, width, height, \
           ingested_at) \
         SELECT {coll}, (SELECT min(id) FROM source) + i % 20, md5(i::text), \
           (ARRAY['DE', 'FR', 'US-CA', 'GB', NULL])[1 + (i / 20) % 5], 250, 250, 0 \
         FROM generate_series(0, {images} - 1) i;
         INSERT INTO face (id, collection_id, image_id, source_id, bbox, landmarks, det_score, \
           quality, pack, vector, crop_sha, thumb_sha, created_at) \
         SELECT k, {coll}, im.id, im.source_id, '[10,10,100,100]', '[]', 0.9, '{{}}', 'open@1', \
           '\\x00112233445566778899aabbccddeeff', md5(k::text), md5(k::text), 0 \
         FROM generate_series(1, {n}) k \
         JOIN image im ON im.id = (SELECT min(id) FROM image) + (k - 1) % {images}",
        coll = coll.id
    ))
    .unwrap();
    c.batch_execute("VACUUM ANALYZE image").unwrap();
    c.batch_execute("VACUUM ANALYZE face").unwrap();
    eprintln!(
        "wrote {n} faces on {images} images in {:.1}s (triggers keeping the counts)",
        secs(t)
    );
    assert_eq!(store.face_count().unwrap(), n as u64);
    assert_eq!(store.image_count().unwrap(), images as u64);

    // Each read three times; the best shown (warm cache, as a dashboard polling it sees).
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                secs(t)
            })
            .fold(f64::MAX, f64::min)
    };
    let baseline = best(&mut || {
        for q in BASELINE_STATS {
            c.query(q, &[]).unwrap();
        }
    });
    let stats = best(&mut || {
        let s = store.stats().unwrap();
        assert_eq!(s.faces, n as u64);
    });
    let describe = best(&mut || {
        let d = Catalog::describe_collection(&store, "bench").unwrap();
        assert_eq!(d.faces, n as u64);
    });
    let metric = best(&mut || {
        store.face_count().unwrap();
    });
    let count_rows = best(&mut || {
        c.query_one("SELECT COUNT(*) FROM face", &[]).unwrap();
    });
    let t = Instant::now();
    c.batch_execute("SELECT tally_rebuild()").unwrap();
    let rebuild = secs(t);
    // (The synthetic faces have no blobs: only the counts are checked here.)
    let check = store.check(false).unwrap();
    let mismatches = check
        .inconsistencies
        .iter()
        .filter(|f| f.kind == "tally_mismatch")
        .count();
    assert_eq!(mismatches, 0, "the kept counts disagree with the rows");

    // What keeping the counts costs a writer: single-row inserts (as a worker stores a
    // face), with the triggers and without them.
    let rows = 20_000i64;
    assert!(images >= rows, "VISAGE_TALLY_BENCH must be at least 22000");
    let with = single_face_inserts(&mut c, "with the triggers", n + 1, rows);
    c.batch_execute("ALTER TABLE face DISABLE TRIGGER face_tally_insert")
        .unwrap();
    let without = single_face_inserts(&mut c, "without them", n + 1 + rows, rows);
    c.batch_execute("ALTER TABLE face ENABLE TRIGGER face_tally_insert")
        .unwrap();
    eprintln!("faces {n}, images {images}:");
    eprintln!("  stats, baseline grouped scans: {baseline:.3}s");
    eprintln!(
        "  stats() from tally:            {stats:.4}s ({:.0}x)",
        baseline / stats
    );
    eprintln!("  describe_collection:           {describe:.4}s");
    eprintln!("  face_count (metrics):          {metric:.4}s (COUNT(*) of face: {count_rows:.3}s)");
    eprintln!("  tally_rebuild (check --repair, migration 12): {rebuild:.1}s");
    eprintln!(
        "  a face insert: {with:.0} us with the triggers, {without:.0} us without (+{:.0}%)",
        (with / without - 1.0) * 100.0
    );
}

/// `rows` transactions of one face insert each (as a worker stores a face), ids from `base`
/// on, one per image: microseconds per transaction.
fn single_face_inserts(c: &mut postgres::Client, label: &str, base: i64, rows: i64) -> f64 {
    let st = c
        .prepare(
            "INSERT INTO face (id, collection_id, image_id, source_id, bbox, landmarks, \
             det_score, quality, pack, vector, crop_sha, thumb_sha, created_at) \
             SELECT $1, collection_id, id, source_id, '[1,1,9,9]', '[]', 0.9, '{}', \
             'open@1', '\\x00'::bytea, 'c', 't', 0 FROM image WHERE id = $2",
        )
        .unwrap();
    let first: i64 = c
        .query_one("SELECT min(id) FROM image", &[])
        .unwrap()
        .get(0);
    let t = Instant::now();
    for k in 0..rows {
        let mut tx = c.transaction().unwrap();
        tx.execute(&st, &[&(base + k), &(first + k)]).unwrap();
        tx.commit().unwrap();
    }
    let per = secs(t) / rows as f64 * 1e6;
    eprintln!("{rows} single-face transactions {label}: {per:.0} us each");
    per
}
