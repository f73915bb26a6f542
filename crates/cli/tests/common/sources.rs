//! Inputs of every kind the ingest reads, built from real LFW photos with hostile entries
//! mixed in (shared by the embedded and the cluster ingest tests).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The first `n` photos of `person` as (file name, bytes).
pub fn photos(lfw: &Path, person: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(lfw.join(person))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(n)
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect()
}

pub fn tar_gz(path: &Path, entries: &[(String, Vec<u8>)], hostile: bool) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, format!("people/{name}"), bytes.as_slice())
            .unwrap();
    }
    if hostile {
        // A path that climbs out of any extraction folder, written raw (the tar crate refuses
        // to build one through its safe API).
        let bytes = &entries[0].1;
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..14].copy_from_slice(b"../../evil.jpg");
        }
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        t.append(&h, bytes.as_slice()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

pub fn zip_file(path: &Path, entries: &[(String, Vec<u8>)], bomb: bool) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        z.start_file(format!("archive/{name}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    if bomb {
        // 64 MiB of zeros deflate to ~64 KiB: ratio ~1000.
        z.start_file("bomb.jpg", opts).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
    }
    z.finish().unwrap();
}

pub fn warc_record(kind: &str, uri: &str, id: &str, content_type: &str, block: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-01-31T12:00:00Z\r\n\
         WARC-Record-ID: <urn:uuid:{id}>\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        block.len()
    )
    .into_bytes();
    r.extend_from_slice(block);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

/// A WARC.gz (one gzip member per record) with a request + response per photo, an HTML page,
/// and a last response cut short.
pub fn warc_gz(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut out = Vec::new();
    let mut member = |rec: Vec<u8>| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&rec).unwrap();
        out.extend(gz.finish().unwrap());
    };
    member(warc_record(
        "warcinfo",
        "",
        "00000000-0000-0000-0000-000000000000",
        "application/warc-fields",
        b"software: visage test\r\n",
    ));
    let html =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>";
    member(warc_record(
        "response",
        "http://news.example/page.html",
        "00000000-0000-0000-0000-0000000000aa",
        "application/http; msgtype=response",
        html,
    ));
    for (i, (name, bytes)) in entries.iter().enumerate() {
        let uri = format!("http://news.example/img/{name}");
        let req = format!(
            "GET /img/{name} HTTP/1.1\r\nHost: news.example\r\nReferer: http://news.example/page.html\r\n\r\n"
        );
        member(warc_record(
            "request",
            &uri,
            &format!("00000000-0000-0000-0000-{:012}", 2 * i + 1),
            "application/http; msgtype=request",
            req.as_bytes(),
        ));
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        )
        .into_bytes();
        resp.extend_from_slice(bytes);
        member(warc_record(
            "response",
            &uri,
            &format!("00000000-0000-0000-0000-{:012}", 2 * i + 2),
            "application/http; msgtype=response",
            &resp,
        ));
    }
    // Truncated: a record that announces more bytes than the file holds (uncompressed tail).
    let cut = warc_record(
        "response",
        "http://news.example/img/cut.jpg",
        "00000000-0000-0000-0000-00000000ffff",
        "application/http; msgtype=response",
        &entries[0].1,
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cut[..cut.len() / 2]).unwrap();
    out.extend(gz.finish().unwrap());
    std::fs::write(path, out).unwrap();
}

/// The failure codes of `every_source_kind`'s hostile entries (besides the broken JPEG).
pub const HOSTILE_CODES: [&str; 5] = [
    "path_traversal",
    "decompression_bomb",
    "truncated_record",
    "bad_row",
    "io_error",
];

/// Under `inputs`: a folder (3 photos of one person, one photo whose EXIF GPS says New York,
/// a broken JPEG), a tar.gz with a path-traversal entry, a zip with a decompression bomb, a
/// WARC.gz with a page, photos and a truncated record, and a JSONL manifest with provenance
/// columns, a bad row and a missing file. Returns the paths to ingest (absolute when
/// `inputs` is): 16 images can be indexed from them.
pub fn every_source_kind(lfw: &Path, inputs: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(inputs.join("folder/Colin_Powell")).unwrap();
    for (name, b) in photos(lfw, "Colin_Powell", 3) {
        std::fs::write(inputs.join("folder/Colin_Powell").join(name), b).unwrap();
    }
    // A photo whose EXIF GPS puts it in New York City: the source says US, the photo says US-NY.
    let (_, gps_photo) = photos(lfw, "George_W_Bush", 1).remove(0);
    std::fs::create_dir_all(inputs.join("folder/George_W_Bush")).unwrap();
    std::fs::write(
        inputs.join("folder/George_W_Bush/new_york.jpg"),
        visage_engine::geo::with_exif(&gps_photo, 40.7128, -74.0060, "2019:05:04 12:30:00"),
    )
    .unwrap();
    std::fs::write(
        inputs.join("folder/broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    tar_gz(
        &inputs.join("people.tar.gz"),
        &photos(lfw, "Tony_Blair", 3),
        true,
    );
    zip_file(
        &inputs.join("people.zip"),
        &photos(lfw, "Hugo_Chavez", 3),
        true,
    );
    warc_gz(
        &inputs.join("crawl.warc.gz"),
        &photos(lfw, "Ariel_Sharon", 3),
    );
    let man_dir = inputs.join("manifest_files");
    std::fs::create_dir_all(&man_dir).unwrap();
    let mut lines = Vec::new();
    for (i, (name, b)) in photos(lfw, "Junichiro_Koizumi", 3).into_iter().enumerate() {
        std::fs::write(man_dir.join(&name), b).unwrap();
        lines.push(serde_json::json!({
            "path": format!("manifest_files/{name}"), "page_url": format!("https://archive.example/p{i}"),
            "captured_at": 1_600_000_000 + i, "licence": "CC-BY-4.0", "legal_basis": "public-interest-archive",
            "jurisdiction": "FR", "subject": "Koizumi", "external_id": format!("K{i}")
        }).to_string());
    }
    lines.push("{not json".into());
    lines.push(serde_json::json!({"path": "manifest_files/missing.jpg"}).to_string());
    std::fs::write(inputs.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();

    [
        "folder",
        "people.tar.gz",
        "people.zip",
        "crawl.warc.gz",
        "manifest.jsonl",
    ]
    .iter()
    .map(|p| inputs.join(p))
    .collect()
}

/// Copies the given videos of `../shared/data/e2e` (path inside it, file name) into `dir` and
/// adds `broken.mp4` (a header, then text). `None` (with a message) when the folder or ffmpeg
/// is missing; ffmpeg missing fails under `VISAGE_REQUIRE_MODELS=1`.
pub fn videos_with_a_broken_one(dir: &Path, videos: &[(&str, &str)]) -> Option<()> {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/e2e");
    if !e2e.is_dir() {
        eprintln!("no videos: ../shared/data/e2e missing");
        return None;
    }
    let ffmpeg = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ffmpeg {
        assert!(
            !super::require(),
            "ffmpeg must be installed (scripts/setup.sh installs it)"
        );
        eprintln!("no videos: ffmpeg not installed");
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    for (from, name) in videos {
        std::fs::copy(e2e.join(from), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("broken.mp4"),
        b"\x00\x00\x00\x18ftypmp42 this is not a video",
    )
    .unwrap();
    Some(())
}
