//! Score calibration: what a similarity means as a false match rate.
//!
//! A pack's calibration is the impostor score distribution (similarities of faces of
//! *different* people) measured on a calibration set: `visage models calibrate` builds it
//! from every different-person pair among the images of LFW's development split
//! (`pairsDevTrain.txt`) and stores it beside the pack as `calibration.json`.
//!
//! The stored form is the empirical survival function on a fine score grid
//! (`counts_ge[i]` = impostor pairs scoring at least `grid_start + i * grid_step`), so
//! `fmr(s)` = `counts_ge(s) / impostor_pairs`, interpolated log-linearly between grid
//! points. Where fewer than [`MIN_TAIL_COUNT`] impostor pairs reach a score the empirical
//! estimate is noise; there the estimate comes from a straight line fitted to
//! `log10(fmr)` against the score over the last well-measured decades ([`TailFit`]),
//! anchored at the last well-measured point, and is flagged `extrapolated`. Impostor cosine distributions have a
//! roughly Gaussian tail, whose log-survival bends down faster than a straight line, so the
//! extrapolation overstates the false match rate: it errs on the side of caution.
//! See docs/CALIBRATION.md for the method, its validation and its limits.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};

/// File name of a pack's calibration, inside the pack directory.
pub const CALIBRATION_FILE: &str = "calibration.json";
/// Below this many impostor pairs at or above a score, the tail fit is used.
pub const MIN_TAIL_COUNT: u64 = 10;
/// The fit covers false match rates from `MIN_TAIL_COUNT / n` up to this.
const TAIL_FIT_MAX_FMR: f64 = 1e-2;
const GRID_START: f32 = -1.0;
const GRID_STEP: f32 = 0.0025;

/// `log10(fmr) = intercept + slope * score`, valid above `from_score`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TailFit {
    pub intercept: f64,
    pub slope: f64,
    /// Score from which the fit replaces the empirical estimate.
    pub from_score: f32,
    /// Grid points the line was fitted to.
    pub points: usize,
}

/// A pack's impostor score distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    /// `name@version` of the pack whose embeddings were measured.
    pub pack: String,
    /// Where the impostor pairs came from.
    pub source: String,
    pub images: usize,
    pub identities: usize,
    pub impostor_pairs: u64,
    pub created_unix: u64,
    pub grid_start: f32,
    pub grid_step: f32,
    /// `counts_ge[i]`: impostor pairs with score >= `grid_start + i * grid_step`.
    pub counts_ge: Vec<u64>,
    pub tail: Option<TailFit>,
}

/// A false match rate estimate for one score.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FmrEstimate {
    pub fmr: f64,
    /// True where the estimate comes from the tail fit rather than observed pairs.
    pub extrapolated: bool,
}

impl Calibration {
    /// Builds the calibration from impostor similarities.
    pub fn from_impostor_scores(
        pack: &str,
        source: &str,
        images: usize,
        identities: usize,
        scores: &[f32],
    ) -> Calibration {
        let bins = ((1.0 - GRID_START) / GRID_STEP).round() as usize + 1;
        let mut hist = vec![0u64; bins];
        for &s in scores {
            if !s.is_finite() {
                continue;
            }
            // Bin i holds scores in [g_i, g_{i+1}); scores below the grid land in bin 0.
            let i = ((s - GRID_START) / GRID_STEP).floor();
            let i = if i < 0.0 {
                0
            } else {
                (i as usize).min(bins - 1)
            };
            hist[i] += 1;
        }
        let mut counts_ge = vec![0u64; bins];
        let mut acc = 0u64;
        for i in (0..bins).rev() {
            acc += hist[i];
            counts_ge[i] = acc;
        }
        let n = acc;
        let mut c = Calibration {
            pack: pack.to_string(),
            source: source.to_string(),
            images,
            identities,
            impostor_pairs: n,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            grid_start: GRID_START,
            grid_step: GRID_STEP,
            counts_ge,
            tail: None,
        };
        c.tail = c.fit_tail();
        c
    }

    fn grid(&self, i: usize) -> f32 {
        self.grid_start + i as f32 * self.grid_step
    }

    fn fit_tail(&self) -> Option<TailFit> {
        let n = self.impostor_pairs as f64;
        if n < 1.0 {
            return None;
        }
        let pts: Vec<(f64, f64)> = self
            .counts_ge
            .iter()
            .enumerate()
            .filter(|(_, &c)| c >= MIN_TAIL_COUNT && (c as f64 / n) <= TAIL_FIT_MAX_FMR)
            .map(|(i, &c)| (self.grid(i) as f64, (c as f64 / n).log10()))
            .collect();
        if pts.len() < 3 {
            return None;
        }
        let m = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / m;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / m;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        if !(slope < 0.0 && slope.is_finite()) {
            return None;
        }
        // The fit takes over from the last grid point still holding MIN_TAIL_COUNT pairs.
        let last = self.counts_ge.iter().rposition(|&c| c >= MIN_TAIL_COUNT)?;
        Some(TailFit {
            intercept: my - slope * mx,
            slope,
            from_score: self.grid(last),
            points: pts.len(),
        })
    }

    /// Estimated probability that a face of a different person scores at least `score`.
    pub fn fmr(&self, score: f32) -> FmrEstimate {
        let n = self.impostor_pairs.max(1) as f64;
        if !score.is_finite() || self.counts_ge.is_empty() {
            return FmrEstimate {
                fmr: 1.0,
                extrapolated: false,
            };
        }
        if let Some(t) = &self.tail {
            if score > t.from_score {
                // The fitted slope, anchored at the last well-measured point: continuous
                // with the empirical estimate.
                let at_edge = self.fmr_empirical(t.from_score, n);
                let fit = at_edge * 10f64.powf(t.slope * (score - t.from_score) as f64);
                return FmrEstimate {
                    fmr: fit.max(f64::MIN_POSITIVE),
                    extrapolated: true,
                };
            }
        }
        FmrEstimate {
            fmr: self.fmr_empirical(score, n),
            extrapolated: self.count_at(score) < MIN_TAIL_COUNT,
        }
    }

    fn count_at(&self, score: f32) -> u64 {
        let x = ((score - self.grid_start) / self.grid_step).floor();
        if x < 0.0 {
            return self.counts_ge[0];
        }
        self.counts_ge.get(x as usize).copied().unwrap_or(0)
    }

    /// Log-linear interpolation of the survival function between grid points.
    fn fmr_empirical(&self, score: f32, n: f64) -> f64 {
        let x = ((score - self.grid_start) / self.grid_step) as f64;
        if x <= 0.0 {
            return self.counts_ge[0] as f64 / n;
        }
        let i = x.floor() as usize;
        let last = self.counts_ge.len() - 1;
        if i >= last {
            return self.counts_ge[last] as f64 / n;
        }
        let (a, b) = (self.counts_ge[i] as f64, self.counts_ge[i + 1] as f64);
        let f = x - i as f64;
        if a <= 0.0 {
            return 0.0;
        }
        if b <= 0.0 {
            // Nothing observed at the next grid point: linear towards zero.
            return a * (1.0 - f) / n;
        }
        (a.ln() * (1.0 - f) + b.ln() * f).exp() / n
    }

    /// The lowest score whose estimated false match rate is at most `fmr` (bisection on the
    /// monotone estimate). Used to turn "at most 1e-4 false match rate" into a threshold.
    pub fn score_at_fmr(&self, fmr: f64) -> f32 {
        let (mut lo, mut hi) = (-1.0f32, 1.0f32);
        if self.fmr(hi).fmr > fmr {
            return hi;
        }
        for _ in 0..40 {
            let mid = (lo + hi) / 2.0;
            if self.fmr(mid).fmr <= fmr {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Reads `dir/calibration.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Calibration>> {
        let path = dir.join(CALIBRATION_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(VisionError::Io { path, source }),
        };
        let c: Calibration = serde_json::from_str(&text).map_err(|e| VisionError::PackInvalid {
            pack: dir.display().to_string(),
            detail: format!("{}: {e}", path.display()),
        })?;
        let bins = ((1.0 - c.grid_start) / c.grid_step).round() as usize + 1;
        if c.counts_ge.len() != bins
            || c.grid_step <= 0.0
            || c.counts_ge.windows(2).any(|w| w[1] > w[0])
        {
            return Err(VisionError::PackInvalid {
                pack: dir.display().to_string(),
                detail: format!("{}: inconsistent survival table", path.display()),
            });
        }
        Ok(Some(c))
    }

    /// Writes `dir/calibration.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("calibration serialises");
        crate::pack::write_atomic(&dir.join(CALIBRATION_FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-normal impostor scores (Box-Muller on a fixed LCG).
    fn gaussian_scores(n: usize, mean: f64, sd: f64) -> Vec<f32> {
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut u = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (a, b) = (u(), u());
                let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
                (mean + sd * z) as f32
            })
            .collect()
    }

    #[test]
    fn empirical_fmr_matches_the_sample() {
        let scores = gaussian_scores(200_000, 0.0, 0.1);
        let c = Calibration::from_impostor_scores("p@1", "test", 10, 5, &scores);
        assert_eq!(c.impostor_pairs, 200_000);
        for s in [-0.1f32, 0.0, 0.1, 0.2, 0.25] {
            let observed = scores.iter().filter(|&&x| x >= s).count() as f64 / 200_000.0;
            let est = c.fmr(s);
            assert!(
                (est.fmr / observed - 1.0).abs() < 0.05,
                "score {s}: estimate {} observed {observed}",
                est.fmr
            );
            assert!(!est.extrapolated);
        }
        // Monotone decreasing everywhere, including through the tail.
        let mut prev = 2.0;
        for i in 0..=400 {
            let f = c.fmr(-1.0 + i as f32 * 0.005).fmr;
            assert!(f <= prev + 1e-12, "not monotone at step {i}");
            prev = f;
        }
    }

    #[test]
    fn tail_extrapolation_is_conservative_for_a_gaussian() {
        // 20k samples measure down to ~5e-4; the true Gaussian tail at 0.45 (4.5 sd) is 3.4e-6.
        let scores = gaussian_scores(20_000, 0.0, 0.1);
        let c = Calibration::from_impostor_scores("p@1", "test", 10, 5, &scores);
        let tail = c.tail.as_ref().expect("a tail fit");
        assert!(tail.slope < 0.0);
        let e = c.fmr(0.45);
        assert!(e.extrapolated);
        assert!(
            e.fmr >= 3.4e-6,
            "extrapolation {} is below the true tail",
            e.fmr
        );
        assert!(e.fmr < 1e-3, "extrapolation {} is uselessly loose", e.fmr);
    }

    #[test]
    fn score_at_fmr_inverts_fmr() {
        let scores = gaussian_scores(100_000, 0.05, 0.08);
        let c = Calibration::from_impostor_scores("p@1", "test", 10, 5, &scores);
        for target in [1e-1, 1e-2, 1e-3, 1e-5] {
            let s = c.score_at_fmr(target);
            assert!(c.fmr(s).fmr <= target * 1.0001);
            assert!(
                c.fmr(s - 0.002).fmr > target * 0.99,
                "{target}: {s} is not the lowest"
            );
        }
    }

    #[test]
    fn save_and_load_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Calibration::load(dir.path()).unwrap().is_none());
        let c = Calibration::from_impostor_scores(
            "p@1",
            "test",
            10,
            5,
            &gaussian_scores(1000, 0.0, 0.1),
        );
        c.save(dir.path()).unwrap();
        let back = Calibration::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.counts_ge, c.counts_ge);
        assert_eq!(back.fmr(0.1), c.fmr(0.1));
        std::fs::write(dir.path().join(CALIBRATION_FILE), "{not json").unwrap();
        assert!(Calibration::load(dir.path()).is_err());
    }
}
