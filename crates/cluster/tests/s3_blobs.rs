//! `S3Blobs` against a real S3-compatible server (moto) and the testkit's PostgreSQL, both
//! started on loopback by the test process. Skips (with a message) when the servers are not
//! installed (scripts/setup-cluster.sh), unless VISAGE_REQUIRE_CLUSTER=1.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};
use visage_cluster::blobs::{S3Blobs, S3Config};
use visage_cluster::testkit::{Postgres, S3Server};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn s3() -> Option<S3Server> {
    let server = S3Server::start().expect("starting the S3 test server");
    if server.is_none() {
        eprintln!("skipped: no S3 test server");
    }
    server
}

fn sorted(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}

fn port_closed(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

/// The calls every test makes, usable from any thread or async context.
fn exercise(cfg: &S3Config) {
    let blobs = S3Blobs::connect(cfg).expect("connect");
    let a = b"face crop bytes".to_vec();
    let b = vec![7u8; 300_000];
    let (sa, sb) = (sha(&a), sha(&b));

    assert_eq!(blobs.list().unwrap(), vec![]);
    blobs.put(&sa, &a).unwrap();
    blobs.put(&sb, &b).unwrap();
    assert_eq!(blobs.get(&sa).unwrap().as_deref(), Some(&a[..]));
    assert_eq!(blobs.get(&sb).unwrap().as_deref(), Some(&b[..]));
    let both = sorted(vec![
        (sa.clone(), a.len() as u64),
        (sb.clone(), b.len() as u64),
    ]);
    assert_eq!(sorted(blobs.list().unwrap()), both);

    // Idempotent put.
    blobs.put(&sa, &a).unwrap();
    assert_eq!(sorted(blobs.list().unwrap()), both);
    assert_eq!(blobs.get(&sa).unwrap().as_deref(), Some(&a[..]));

    blobs.delete(&sa).unwrap();
    assert_eq!(blobs.get(&sa).unwrap(), None);
    assert_eq!(blobs.list().unwrap(), vec![(sb.clone(), b.len() as u64)]);
    // Absent: still Ok, and get says None.
    blobs.delete(&sa).unwrap();
    let missing = sha(b"never stored");
    assert_eq!(blobs.get(&missing).unwrap(), None);
    blobs.delete(&missing).unwrap();
    blobs.delete(&sb).unwrap();
    assert_eq!(blobs.list().unwrap(), vec![]);
}

#[test]
fn round_trip() {
    let Some(server) = s3() else { return };
    let cfg = server.create_bucket("round-trip").unwrap();
    assert_eq!(cfg.endpoint, server.endpoint());
    exercise(&cfg);
}

#[test]
fn keys_are_sharded_under_the_prefix() {
    let Some(server) = s3() else { return };
    let root_cfg = server.create_bucket("prefixed").unwrap();
    let root = S3Blobs::connect(&root_cfg).unwrap();
    let with = |prefix: &str| {
        S3Blobs::connect(&S3Config {
            prefix: prefix.into(),
            ..root_cfg.clone()
        })
        .unwrap()
    };
    let nested = with("visage/blobs/");
    let dashed = with("visage/blobs-");

    let (x, y, z) = (b"x".to_vec(), b"yy".to_vec(), b"zzz".to_vec());
    nested.put(&sha(&x), &x).unwrap();
    dashed.put(&sha(&y), &y).unwrap();
    root.put(&sha(&z), &z).unwrap();

    // Each sees its own blobs only ...
    assert_eq!(nested.list().unwrap(), vec![(sha(&x), 1)]);
    assert_eq!(dashed.list().unwrap(), vec![(sha(&y), 2)]);
    assert_eq!(nested.get(&sha(&y)).unwrap(), None);
    assert_eq!(dashed.get(&sha(&x)).unwrap().as_deref(), None);
    // ... the empty prefix too: blobs are the keys named `{sha[0..2]}/{sha}` right under the
    // prefix, not other prefixes' keys nor staged uploads ...
    let staged = root.staged_key("12", "00001-photo.jpg").unwrap();
    assert_eq!(staged, "uploads/12/00001-photo.jpg");
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"a photo").unwrap();
    assert_eq!(root.stage_file(&staged, local.path()).unwrap(), 7);
    assert_eq!(root.list().unwrap(), vec![(sha(&z), 3)]);
    let listed: Vec<String> = root
        .list_staged()
        .unwrap()
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&staged));
    root.delete_staged(&staged).unwrap();
    // ... and the keys are `{prefix}{sha[0..2]}/{sha}`, as another S3 client sees them.
    let mut expected: Vec<String> = [("visage/blobs/", &x), ("visage/blobs-", &y), ("", &z)]
        .iter()
        .map(|(prefix, bytes)| {
            let h = sha(bytes);
            format!("{prefix}{}/{h}", &h[..2])
        })
        .collect();
    expected.sort();
    assert_eq!(raw_keys(&root_cfg), expected);
}

/// Every key in the bucket, listed with object_store directly.
fn raw_keys(cfg: &S3Config) -> Vec<String> {
    use futures_util::StreamExt;
    use object_store::ObjectStore;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&cfg.endpoint)
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_access_key_id(&cfg.access_key_id)
        .with_secret_access_key(&cfg.secret_access_key)
        .with_allow_http(true)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut keys: Vec<String> = rt.block_on(async {
        let list: Vec<_> = store.list(None).collect().await;
        list.into_iter()
            .map(|m| m.unwrap().location.to_string())
            .collect()
    });
    keys.sort();
    keys
}

#[test]
fn bad_sha_rejected() {
    let Some(server) = s3() else { return };
    let blobs = S3Blobs::connect(&server.create_bucket("bad-sha").unwrap()).unwrap();
    let good = sha(b"ok");
    let bad = [
        good.to_uppercase(),
        good[..63].to_string(),
        format!("{good}0"),
        format!("../{}", &good[3..]),
        String::new(),
        "g".repeat(64),
    ];
    for name in &bad {
        for err in [
            blobs.put(name, b"x").unwrap_err(),
            blobs.get(name).unwrap_err(),
            blobs.delete(name).unwrap_err(),
        ] {
            let msg = format!("{err:#}");
            assert!(msg.contains("64 lowercase hex"), "{name:?}: {msg}");
        }
    }
    assert_eq!(blobs.list().unwrap(), vec![]);
}

#[test]
fn missing_bucket_is_a_clear_error() {
    let Some(server) = s3() else { return };
    let mut cfg = server.create_bucket("exists").unwrap();
    cfg.bucket = "does-not-exist".into();
    let msg = format!("{:#}", S3Blobs::connect(&cfg).unwrap_err());
    assert!(
        msg.contains("does-not-exist") && msg.contains(&server.endpoint()),
        "{msg}"
    );
}

#[test]
fn server_stops_on_drop() {
    let Some(server) = s3() else { return };
    let port = server.port();
    assert!(!port_closed(port));
    drop(server);
    assert!(
        port_closed(port),
        "moto still listening on {port} after drop"
    );
}

/// The sync API called straight from async code on a multi-thread runtime's worker, and
/// the client dropped there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_multi_thread_runtime() {
    let Some(server) = s3() else { return };
    let cfg = server.create_bucket("in-runtime").unwrap();
    exercise(&cfg);
    // And from spawn_blocking, as the server does.
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || exercise(&c))
        .await
        .unwrap();
    // And from a spawned task on a worker thread.
    tokio::spawn(async move { exercise(&cfg) }).await.unwrap();
}

#[test]
fn works_inside_a_current_thread_runtime() {
    let Some(server) = s3() else { return };
    let cfg = server.create_bucket("in-current-thread").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        exercise(&cfg);
        // Connected outside, used and dropped inside.
        let blobs = S3Blobs::connect(&cfg).unwrap();
        async {}.await;
        blobs.put(&sha(b"q"), b"q").unwrap();
        assert_eq!(blobs.list().unwrap().len(), 1);
        drop(blobs);
    });
}

#[test]
fn postgres_databases_and_stop_on_drop() {
    let Some(pg) = Postgres::start().expect("starting PostgreSQL") else {
        eprintln!("skipped: no PostgreSQL");
        return;
    };
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    let a = pg.create_database("visage_a").unwrap();
    let b = pg.create_database("visage_b").unwrap();
    assert_eq!(a, format!("postgres://postgres@127.0.0.1:{port}/visage_a"));
    for (url, name) in [(&a, "visage_a"), (&b, "visage_b")] {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let row = client
            .query_one("SELECT 1::int4, current_database()", &[])
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, String>(1), name);
    }
    assert!(
        pg.create_database("visage_a").is_err(),
        "a second CREATE of the same name"
    );
    for bad in ["", "Upper", "x; DROP DATABASE postgres", "quo\"te"] {
        assert!(pg.create_database(bad).is_err(), "{bad:?}");
    }
    drop(pg);
    assert!(
        port_closed(port),
        "PostgreSQL still listening on {port} after drop"
    );
}

/// Staged uploads (`uploads/{job}/{name}`): a file over one 8 MiB piece goes up as a
/// multipart upload and comes back byte for byte; a removed one reads as gone; keys outside
/// `uploads/` or with unsafe names are refused.
#[test]
fn staged_uploads_round_trip() {
    let Some(server) = s3() else { return };
    let cfg = S3Config {
        prefix: "v/".into(),
        ..server.create_bucket("staged").unwrap()
    };
    let blobs = S3Blobs::connect(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();
    let key = blobs.staged_key("5", "00001-big.bin").unwrap();
    assert_eq!(key, "v/uploads/5/00001-big.bin");
    assert_eq!(blobs.stage_file(&key, &src).unwrap(), big.len() as u64);
    let back = dir.path().join("back.bin");
    assert_eq!(
        blobs.fetch_staged(&key, &back).unwrap(),
        Some(big.len() as u64)
    );
    assert!(std::fs::read(&back).unwrap() == big, "the same bytes");
    // An empty file is an object too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let k2 = blobs.staged_key("5", "00002-empty").unwrap();
    assert_eq!(blobs.stage_file(&k2, &empty).unwrap(), 0);
    let mut keys: Vec<String> = blobs
        .list_staged()
        .unwrap()
        .into_iter()
        .map(|k| k.0)
        .collect();
    keys.sort();
    assert_eq!(keys, [key.clone(), k2.clone()]);
    assert!(blobs.list().unwrap().is_empty(), "uploads are not blobs");
    for k in [&key, &k2] {
        blobs.delete_staged(k).unwrap();
    }
    // Many at once: small ones concurrently, the large one in parts.
    let mut batch = Vec::new();
    for i in 0..40u32 {
        let f = dir.path().join(format!("s{i}"));
        std::fs::write(&f, vec![i as u8; 1000 + i as usize]).unwrap();
        batch.push((blobs.staged_key("6", &format!("s{i}")).unwrap(), f));
    }
    batch.push((blobs.staged_key("6", "big").unwrap(), src.clone()));
    let want: u64 = (0..40u64).map(|i| 1000 + i).sum::<u64>() + big.len() as u64;
    assert_eq!(blobs.stage_files(&batch).unwrap(), want);
    assert_eq!(blobs.list_staged().unwrap().len(), 41);
    for (i, (k, _)) in batch.iter().enumerate().take(40) {
        assert_eq!(blobs.fetch_staged(k, &back).unwrap(), Some(1000 + i as u64));
        assert_eq!(std::fs::read(&back).unwrap(), vec![i as u8; 1000 + i]);
    }
    for (k, _) in &batch {
        blobs.delete_staged(k).unwrap();
    }
    assert_eq!(blobs.fetch_staged(&key, &back).unwrap(), None);
    blobs.delete_staged(&key).unwrap();
    // Names that could leave `uploads/`, and keys of other places, are refused.
    for (job, name) in [
        ("5", "../x"),
        ("..", "a"),
        ("5", ".hidden"),
        ("5", "a/b"),
        ("", "a"),
    ] {
        assert!(blobs.staged_key(job, name).is_err(), "{job}/{name}");
    }
    for k in ["uploads/5/a", "v/ab/cd", "v/uploads/../ab/cd"] {
        assert!(blobs.delete_staged(k).is_err(), "{k}");
        assert!(blobs.fetch_staged(k, &back).is_err(), "{k}");
    }
}
