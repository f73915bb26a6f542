//! Helpers for tests across the workspace: locating `../shared/data` and installed packs,
//! and skipping with a clear message when they are absent (failing instead when
//! `VISAGE_REQUIRE_MODELS=1`, as CI sets it, so a broken setup cannot pass as skips).

use std::path::PathBuf;

use crate::{FacePipeline, Home, InferenceOptions};

/// `../shared/data` relative to the workspace root, if present.
pub fn shared_data() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    match root.canonicalize() {
        Ok(p) if p.is_dir() => Some(p),
        _ => {
            eprintln!("skipping: ../shared/data not found (tests with real images need it beside the repository)");
            None
        }
    }
}

fn require() -> bool {
    std::env::var("VISAGE_REQUIRE_MODELS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// The installed pack `name`, or `None` (with a message) when it is not installed.
pub fn pipeline(name: &str) -> Option<FacePipeline> {
    let home = Home::from_env();
    match FacePipeline::load(
        &home,
        name,
        &InferenceOptions {
            intra_threads: 1,
            spinning: false,
        },
    ) {
        Ok(p) => Some(p),
        Err(e) if !require() => {
            eprintln!("skipping: pack `{name}` not available ({e}); run scripts/setup.sh");
            None
        }
        Err(e) => panic!("pack `{name}` must be installed (VISAGE_REQUIRE_MODELS=1): {e}"),
    }
}

/// Both built-in packs that are installed.
pub fn pipelines() -> Vec<FacePipeline> {
    ["open", "insightface-s"]
        .iter()
        .filter_map(|n| pipeline(n))
        .collect()
}
