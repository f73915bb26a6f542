//! Detection recall on hand-marked faces (dlib's PASCAL VOC annotations, `training.xml` and
//! `testing.xml` in the imglab format): a marked face counts as found when an unmatched
//! detection overlaps it with IoU >= the threshold (greedy, best overlap first).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use visage_core::BBox;
use visage_vision::{AnalyzeOptions, DecodeLimits, DetectOptions, FacePipeline};

#[derive(Debug, Clone, PartialEq)]
pub struct Marked {
    pub file: String,
    pub boxes: Vec<BBox>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let i = tag.find(&key)? + key.len();
    let q = tag[i..].chars().next()?;
    let rest = &tag[i + 1..];
    Some(rest[..rest.find(q)?].to_string())
}

/// Parses an imglab XML file; boxes marked `ignore='1'` are left out.
pub fn parse_imglab(text: &str) -> Result<Vec<Marked>> {
    let mut out: Vec<Marked> = Vec::new();
    for tag in text.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        if tag.starts_with("image ") {
            out.push(Marked {
                file: attr(tag, "file").context("image without file")?,
                boxes: Vec::new(),
            });
        } else if tag.starts_with("box ") {
            if attr(tag, "ignore").as_deref() == Some("1") {
                continue;
            }
            let n = |k: &str| -> Result<f32> {
                attr(tag, k)
                    .with_context(|| format!("box without {k}"))?
                    .parse()
                    .context("bad number")
            };
            let (top, left, w, h) = (n("top")?, n("left")?, n("width")?, n("height")?);
            out.last_mut()
                .context("box outside an image")?
                .boxes
                .push(BBox {
                    x1: left,
                    y1: top,
                    x2: left + w,
                    y2: top + h,
                });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct RecallReport {
    pub pack: String,
    pub iou_threshold: f32,
    pub marked_faces: usize,
    pub found: usize,
    pub recall: f64,
    pub detections: usize,
    pub unmatched_detections: usize,
    pub images: usize,
    pub missed: Vec<String>,
}

/// Greedy matching; returns the number of marked boxes matched.
pub fn match_boxes(marked: &[BBox], found: &[BBox], iou: f32) -> usize {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, m) in marked.iter().enumerate() {
        for (j, f) in found.iter().enumerate() {
            let o = m.iou(f);
            if o >= iou {
                pairs.push((o, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_m, mut used_f) = (vec![false; marked.len()], vec![false; found.len()]);
    let mut n = 0;
    for (_, i, j) in pairs {
        if !used_m[i] && !used_f[j] {
            used_m[i] = true;
            used_f[j] = true;
            n += 1;
        }
    }
    n
}

pub fn run(
    p: &FacePipeline,
    dir: &Path,
    files: &[&str],
    iou: f32,
    min_face: f32,
) -> Result<RecallReport> {
    let mut marked = Vec::new();
    for f in files {
        let path = dir.join(f);
        marked.extend(parse_imglab(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )?);
    }
    let opts = AnalyzeOptions {
        embed: false,
        detect: DetectOptions {
            min_face_px: min_face,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = RecallReport {
        pack: p.pack_id(),
        iou_threshold: iou,
        marked_faces: 0,
        found: 0,
        recall: 0.0,
        detections: 0,
        unmatched_detections: 0,
        images: marked.len(),
        missed: Vec::new(),
    };
    for m in &marked {
        let img = visage_vision::decode_file(&dir.join(&m.file), &DecodeLimits::default())?.rgb;
        let faces = p.analyze(&img, &opts)?;
        let boxes: Vec<BBox> = faces.iter().map(|f| f.detection.bbox).collect();
        let n = match_boxes(&m.boxes, &boxes, iou);
        r.marked_faces += m.boxes.len();
        r.found += n;
        r.detections += boxes.len();
        r.unmatched_detections += boxes.len() - n;
        if n < m.boxes.len() {
            r.missed
                .push(format!("{}: {}/{} found", m.file, n, m.boxes.len()));
        }
    }
    r.recall = r.found as f64 / r.marked_faces.max(1) as f64;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imglab_and_matches() {
        let x = "<images><image file='a.jpg'><box top='10' left='20' width='30' height='30'/><box top='0' left='0' width='5' height='5' ignore='1'/></image><image file=\"b.jpg\"></image></images>";
        let m = parse_imglab(x).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].boxes,
            vec![BBox {
                x1: 20.0,
                y1: 10.0,
                x2: 50.0,
                y2: 40.0
            }]
        );
        let found = [
            BBox {
                x1: 22.0,
                y1: 8.0,
                x2: 52.0,
                y2: 44.0,
            },
            BBox {
                x1: 21.0,
                y1: 9.0,
                x2: 51.0,
                y2: 41.0,
            },
        ];
        assert_eq!(match_boxes(&m[0].boxes, &found, 0.4), 1);
        assert_eq!(match_boxes(&m[0].boxes, &[], 0.4), 0);
    }
}
