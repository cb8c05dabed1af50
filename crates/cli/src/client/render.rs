//! Human output: aligned tables, `key  value` detail blocks, sizes, times, and the one-line
//! summary of a batch. Scripts use `--json` instead; nothing here is a format to parse.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::wire::{Batch, File};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key  value` lines, keys aligned.
pub fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

/// Bytes in binary units: `512 B`, `12.3 KiB`, `1.5 GiB`.
pub fn size(bytes: u64) -> String {
    vllm_batch_core::human_bytes(bytes)
}

/// A Unix timestamp as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn time(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix as u64)).to_string()
}

pub fn duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// `297/300 (3 failed)`.
pub fn progress(b: &Batch) -> String {
    let c = b.request_counts;
    if c.failed > 0 {
        format!("{}/{} ({} failed)", c.done(), c.total, c.failed)
    } else {
        format!("{}/{}", c.done(), c.total)
    }
}

pub fn batch_table(batches: &[Batch]) -> String {
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.status.clone(),
                b.endpoint.clone(),
                progress(b),
                time(b.created_at),
                b.model.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "ENDPOINT", "DONE/TOTAL", "CREATED", "MODEL"], &rows)
}

pub fn batch_details(b: &Batch) -> String {
    let c = b.request_counts;
    let mut pairs = vec![
        ("id", b.id.clone()),
        ("status", b.status.clone()),
        ("endpoint", b.endpoint.clone()),
        ("model", or_dash(&b.model)),
        ("requests", format!("{} total, {} completed, {} failed", c.total, c.completed, c.failed)),
        (
            "usage",
            format!(
                "{} input + {} output = {} tokens",
                b.usage.input_tokens, b.usage.output_tokens, b.usage.total_tokens
            ),
        ),
        ("input_file_id", b.input_file_id.clone()),
        ("output_file_id", or_dash(&b.output_file_id)),
        ("error_file_id", or_dash(&b.error_file_id)),
        ("completion_window", b.completion_window.clone()),
        ("created_at", time(b.created_at)),
    ];
    for (key, at) in [
        ("in_progress_at", b.in_progress_at),
        ("completed_at", b.completed_at),
        ("failed_at", b.failed_at),
        ("expired_at", b.expired_at),
        ("cancelled_at", b.cancelled_at),
        ("expires_at", b.expires_at),
    ] {
        if let Some(at) = at {
            pairs.push((key, time(at)));
        }
    }
    if !b.metadata.is_empty() {
        let m: Vec<String> = b.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.push(("metadata", m.join(", ")));
    }
    let mut out = details(&pairs);
    out.push_str(&validation_errors(b));
    out
}

/// The validation errors of a failed batch, one per line.
pub fn validation_errors(b: &Batch) -> String {
    let mut out = String::new();
    for e in &b.errors.data {
        let line = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
        let code = e.code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default();
        let _ = writeln!(out, "  {line}{code}{}", e.message);
    }
    out
}

/// `batch_… completed in 1m 3s: 300 requests, 297 ok, 3 failed`.
pub fn batch_summary(b: &Batch) -> String {
    let c = b.request_counts;
    let took = b.ended_at().filter(|end| *end >= b.created_at && b.created_at > 0);
    let took = took.map(|end| format!(" in {}", duration((end - b.created_at) as u64))).unwrap_or_default();
    format!("{} {}{took}: {} requests, {} ok, {} failed", b.id, b.status, c.total, c.completed, c.failed)
}

pub fn file_table(files: &[File]) -> String {
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| vec![f.id.clone(), f.purpose.clone(), size(f.bytes), time(f.created_at), f.filename.clone()])
        .collect();
    table(&["ID", "PURPOSE", "SIZE", "CREATED", "FILENAME"], &rows)
}

pub fn file_details(f: &File) -> String {
    let mut pairs = vec![
        ("id", f.id.clone()),
        ("filename", f.filename.clone()),
        ("purpose", f.purpose.clone()),
        ("bytes", format!("{} ({})", f.bytes, size(f.bytes))),
        ("created_at", time(f.created_at)),
    ];
    if let Some(status) = &f.status {
        pairs.push(("status", status.clone()));
    }
    if let Some(at) = f.expires_at {
        pairs.push(("expires_at", time(at)));
    }
    details(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_sizes_read_well() {
        let t = table(&["ID", "STATUS", "X"], &[vec!["a".into(), "completed".into(), "1".into()]]);
        assert_eq!(t, "ID  STATUS     X\na   completed  1\n");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(time(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
