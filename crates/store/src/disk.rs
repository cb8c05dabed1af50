//! The free-space guard of the data folder: what `/ready`, uploads, chunk claims and
//! finalization consult before they write to a local disk that may be full.
//!
//! A full volume fails writes half-way (ENOSPC) and leaves work to be retried forever; the guard
//! keeps a margin (`--min-free-disk`) free instead: under it the server reports not ready,
//! refuses uploads (507), and its workers stop claiming work that writes — they resume by
//! themselves once space returns.

use std::path::PathBuf;
use std::str::FromStr;

use vllm_batch_core::human_bytes as human;

/// The margin to keep free: bytes, or a share of the volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    Percent(f64),
}

impl MinFree {
    /// The margin in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl FromStr for MinFree {
    type Err = String;

    /// `0` (no margin), `2GiB`, `500MB`, `1048576`, `5%`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("{s:?}: expected a percentage such as 5%"))?;
            if !(0.0..100.0).contains(&p) {
                return Err(format!("{s:?}: a percentage from 0 to 99"));
            }
            return Ok(MinFree::Percent(p));
        }
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number.parse().map_err(|_| format!("{s:?}: expected a size such as 2GiB or 5%"))?;
        let unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            "kib" | "k" => 1024.0,
            "mib" | "m" => 1024.0 * 1024.0,
            "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
            "tib" | "t" => 1024.0_f64.powi(4),
            other => return Err(format!("{s:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)")),
        };
        Ok(MinFree::Bytes((number * unit) as u64))
    }
}

/// A reading of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    pub total: u64,
    /// The margin the guard keeps, in bytes.
    pub min_free: u64,
}

/// Watches the volume of one folder. Each check reads the volume afresh (`statvfs` costs
/// microseconds), so a freed disk is seen at the next check.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    path: PathBuf,
    min_free: MinFree,
    /// Whether the margin is enforced (`false`: the folder holds neither bodies nor the
    /// database, only readings are reported).
    enforced: bool,
    /// Test hook: a file holding the free byte count to report instead of the volume's.
    free_override: Option<PathBuf>,
}

impl DiskGuard {
    pub fn new(path: impl Into<PathBuf>, min_free: MinFree, enforced: bool) -> Self {
        DiskGuard {
            path: path.into(),
            min_free,
            enforced,
            free_override: std::env::var_os("VLLM_BATCH_TEST_DISK_FREE_FILE").map(PathBuf::from),
        }
    }

    /// A guard that never refuses (tests and tools without a data folder).
    pub fn off() -> Self {
        DiskGuard { path: PathBuf::from("."), min_free: MinFree::Bytes(0), enforced: false, free_override: None }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads the volume now.
    pub fn space(&self) -> std::io::Result<Space> {
        let st = rustix::fs::statvfs(&self.path).map_err(std::io::Error::from)?;
        let block = st.f_frsize.max(1);
        let total = st.f_blocks.saturating_mul(block);
        let mut free = st.f_bavail.saturating_mul(block);
        if let Some(file) = &self.free_override {
            if let Some(v) = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok()) {
                free = v;
            }
        }
        let min_free = if self.enforced { self.min_free.bytes(total) } else { 0 };
        Ok(Space { free, total, min_free })
    }

    /// Why writing `extra` more bytes would leave less than the margin, or `None` when it fits.
    /// A volume that cannot be read is not refused (the write itself will say what is wrong).
    pub fn shortfall(&self, extra: u64) -> Option<String> {
        let space = self.space().ok()?;
        if space.min_free == 0 || space.free.saturating_sub(extra) >= space.min_free {
            return None;
        }
        Some(format!(
            "the data folder {} has {} free{}, below the {} kept free (--min-free-disk)",
            self.path.display(),
            human(space.free),
            if extra > 0 { format!(" for {} more", human(extra)) } else { String::new() },
            human(space.min_free),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_parse_as_sizes_or_shares() {
        assert_eq!("2GiB".parse::<MinFree>(), Ok(MinFree::Bytes(2 << 30)));
        assert_eq!("500MB".parse::<MinFree>(), Ok(MinFree::Bytes(500_000_000)));
        assert_eq!("0".parse::<MinFree>(), Ok(MinFree::Bytes(0)));
        assert_eq!("5%".parse::<MinFree>(), Ok(MinFree::Percent(5.0)));
        assert_eq!(MinFree::Percent(5.0).bytes(1000), 50);
        for bad in ["", "lots", "5 parsecs", "120%", "-1GiB"] {
            assert!(bad.parse::<MinFree>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_guard_reads_the_real_volume_and_refuses_under_its_margin() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskGuard::new(dir.path(), MinFree::Bytes(0), true).space().unwrap();
        assert!(space.total > 0 && space.free <= space.total, "{space:?}");
        assert_eq!(DiskGuard::new(dir.path(), MinFree::Bytes(0), true).shortfall(1 << 20), None);
        // A margin larger than the volume: always short, and the message names the folder.
        let full = DiskGuard::new(dir.path(), MinFree::Bytes(space.total + 1), true);
        let why = full.shortfall(0).unwrap();
        assert!(why.contains(&dir.path().display().to_string()) && why.contains("--min-free-disk"), "{why}");
        // Not enforced: readings only.
        assert_eq!(DiskGuard::new(dir.path(), MinFree::Bytes(space.total + 1), false).shortfall(0), None);
    }
}
