//! Expanding command-line paths into the files to process.

use std::path::{Path, PathBuf};

pub struct Listing {
    pub files: Vec<PathBuf>,
    /// Paths that were not processed, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Files named directly, plus every regular file under named folders (recursively, sorted,
/// hidden entries skipped). Symbolic links inside folders are not followed, so a walk never
/// leaves the tree it was given.
pub fn collect(paths: &[PathBuf]) -> Listing {
    let mut l = Listing {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut l),
            Ok(_) => l.files.push(p.clone()),
            Err(e) => l.skipped.push((p.clone(), e.to_string())),
        }
    }
    l
}

fn walk(dir: &Path, l: &mut Listing) {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
        Err(e) => {
            l.skipped.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_symlink() => l.skipped.push((path, "symbolic link not followed".into())),
            Ok(t) if t.is_dir() => walk(&path, l),
            Ok(t) if t.is_file() => l.files.push(path),
            Ok(_) => l.skipped.push((path, "not a regular file".into())),
            Err(err) => l.skipped.push((path, err.to_string())),
        }
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
