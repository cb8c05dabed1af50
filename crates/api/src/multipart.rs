//! The upload form (`POST /v1/files`, `multipart/form-data`) read with bounded memory.
//!
//! multer (under axum's `Multipart`) streams a part's *data*, but buffers a part's *headers* —
//! and any preamble before the first boundary — until their end arrives, without a cap: one
//! `filename="…"` of 256 MiB was held whole in memory. So the body passes through
//! [`PartGuard`] before multer sees it: a scanner that finds the boundaries and refuses a part
//! head (or preamble, or epilogue) longer than [`MAX_PART_HEAD_BYTES`] and more than
//! [`MAX_PARTS`] parts, while the bytes it has not judged yet stay a few dozen. multer's own
//! constraints then refuse unknown fields, small fields over [`MAX_FIELD_BYTES`], a `file` over
//! `--max-upload-bytes`, and a whole body over that plus [`FORM_OVERHEAD_BYTES`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Longest head of one part (its `Content-Disposition`, `Content-Type` and other headers).
pub const MAX_PART_HEAD_BYTES: usize = 8 * 1024;
/// Most parts one upload may have (`file`, `purpose`, `expires_after[…]`, with room to spare).
pub const MAX_PARTS: usize = 16;
/// Longest value of a field other than `file`.
pub const MAX_FIELD_BYTES: u64 = 1024;
/// What a form may carry beyond its file: every part's head and small value, with room.
pub const FORM_OVERHEAD_BYTES: u64 = (MAX_PARTS as u64) * (MAX_PART_HEAD_BYTES as u64 + MAX_FIELD_BYTES + 128);

/// The fields an upload may have: OpenAI's `file`, `purpose` and `expires_after[…]`.
pub const FIELDS: [&str; 4] = ["file", "purpose", "expires_after[anchor]", "expires_after[seconds]"];

/// Why [`PartGuard`] refused a body.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("A multipart part's headers exceed {MAX_PART_HEAD_BYTES} bytes")]
    HeadTooLong,
    #[error("The form has more than {MAX_PARTS} parts")]
    TooManyParts,
}

/// multer's constraints for an upload of at most `max_file_bytes`.
pub fn constraints(max_file_bytes: u64) -> multer::Constraints {
    multer::Constraints::new().allowed_fields(FIELDS.to_vec()).size_limit(
        multer::SizeLimit::new()
            .whole_stream(max_file_bytes.saturating_add(FORM_OVERHEAD_BYTES))
            .per_field(MAX_FIELD_BYTES)
            .for_field("file", max_file_bytes),
    )
}

/// Where the scanner is in the form.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    /// Before the first boundary, in a part's head, or after the last boundary: bounded.
    Head,
    /// In a part's data: any length (multer streams it out and its limits apply).
    Data,
}

/// A stream adapter that passes a multipart body through unchanged while checking the bounds
/// above. It looks for `\r\n--BOUNDARY` in data (the body is treated as if a `\r\n` came
/// first, so the first boundary needs none) and for `\r\n\r\n` in heads; `tail` keeps the last
/// bytes of the previous chunk so that a marker split across chunks is still found.
pub struct PartGuard<S> {
    inner: S,
    delimiter: Vec<u8>,
    place: Place,
    tail: Vec<u8>,
    head_bytes: usize,
    parts: usize,
    failed: bool,
}

const HEAD_END: &[u8] = b"\r\n\r\n";

impl<S> PartGuard<S> {
    pub fn new(inner: S, boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        // The body starts as if after a line break; until the first boundary (the preamble) the
        // scanner looks for a boundary as in data, but counts the bytes as a head (see `count`).
        PartGuard {
            inner,
            delimiter,
            place: Place::Data,
            tail: b"\r\n".to_vec(),
            head_bytes: 0,
            parts: 0,
            failed: false,
        }
    }

    /// Checks one chunk of the body.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), FormError> {
        let mut pos = 0;
        loop {
            let rest = &chunk[pos..];
            let marker: &[u8] = match self.place {
                Place::Data => &self.delimiter,
                Place::Head => HEAD_END,
            };
            let (found, keep) = (find_across(&self.tail, rest, marker), marker.len() - 1);
            match found {
                Some(consumed) => {
                    self.count(consumed)?;
                    pos += consumed;
                    self.tail.clear();
                    match self.place {
                        Place::Data => {
                            self.parts += 1;
                            // The closing delimiter is one more than the parts it closes.
                            if self.parts > MAX_PARTS + 1 {
                                return Err(FormError::TooManyParts);
                            }
                            self.place = Place::Head;
                        }
                        Place::Head => self.place = Place::Data,
                    }
                    self.head_bytes = 0;
                }
                None => {
                    self.count(rest.len())?;
                    let mut joined = std::mem::take(&mut self.tail);
                    if rest.len() >= keep {
                        joined.clear();
                        joined.extend_from_slice(&rest[rest.len() - keep..]);
                    } else {
                        joined.extend_from_slice(rest);
                        let excess = joined.len().saturating_sub(keep);
                        joined.drain(..excess);
                    }
                    self.tail = joined;
                    return Ok(());
                }
            }
        }
    }

    /// Counts bytes of the current place; heads (and the preamble, before any part) are bounded.
    fn count(&mut self, n: usize) -> Result<(), FormError> {
        if self.place == Place::Head || self.parts == 0 {
            self.head_bytes += n;
            if self.head_bytes > MAX_PART_HEAD_BYTES {
                return Err(FormError::HeadTooLong);
            }
        }
        Ok(())
    }
}

/// Finds `marker` in `tail ++ rest` (with `tail` shorter than `marker`) and returns how many
/// bytes of `rest` the match ends after.
fn find_across(tail: &[u8], rest: &[u8], marker: &[u8]) -> Option<usize> {
    if !tail.is_empty() {
        // A match that starts in `tail` ends within the first `marker.len() - 1` bytes of `rest`.
        let mut seam = tail.to_vec();
        seam.extend_from_slice(&rest[..rest.len().min(marker.len() - 1)]);
        if let Some(at) = find(&seam, marker) {
            return Some(at + marker.len() - tail.len());
        }
    }
    find(rest, marker).map(|at| at + marker.len())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

impl<S, E> Stream for PartGuard<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(e) => {
                    self.failed = true;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(head: &str, parts: usize) -> Vec<u8> {
        let mut b = b"--B\r\n".to_vec();
        for i in 0..parts {
            if i > 0 {
                b.extend_from_slice(b"\r\n--B\r\n");
            }
            b.extend_from_slice(format!("Content-Disposition: form-data; name=\"f{i}\"{head}\r\n\r\n").as_bytes());
            b.extend_from_slice(b"value with \r\n-- almost a boundary \r\n--C");
        }
        b.extend_from_slice(b"\r\n--B--\r\n");
        b
    }

    /// Feeds `body` in chunks of `size` bytes; the first refusal, if any.
    fn run(body: &[u8], size: usize) -> Result<(), FormError> {
        let mut g = PartGuard::new(futures_util::stream::empty::<Result<Bytes, std::io::Error>>(), "B");
        body.chunks(size).try_for_each(|c| g.scan(c))
    }

    #[test]
    fn ordinary_forms_pass_in_chunks_of_any_size() {
        let body = form("; filename=\"a.jsonl\"", 3);
        for size in [1, 2, 3, 5, 7, 64, body.len()] {
            run(&body, size).unwrap_or_else(|e| panic!("chunk size {size}: {e}"));
        }
    }

    #[test]
    fn a_long_part_head_is_refused_whatever_the_chunking() {
        let long = format!("; filename=\"{}\"", "x".repeat(MAX_PART_HEAD_BYTES));
        let body = form(&long, 1);
        for size in [1, 7, 4096, body.len()] {
            assert!(matches!(run(&body, size), Err(FormError::HeadTooLong)), "chunk size {size}");
        }
        // Just under the bound passes.
        let fits = format!("; filename=\"{}\"", "x".repeat(MAX_PART_HEAD_BYTES - 200));
        run(&form(&fits, 1), 13).unwrap();
    }

    #[test]
    fn a_long_preamble_or_a_head_with_no_end_is_refused() {
        let mut body = vec![b'p'; MAX_PART_HEAD_BYTES + 1];
        body.extend_from_slice(&form("", 1));
        assert!(matches!(run(&body, 100), Err(FormError::HeadTooLong)));
        let mut endless = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 1 << 20));
        assert!(matches!(run(&endless, 65536), Err(FormError::HeadTooLong)));
    }

    #[test]
    fn data_of_any_length_passes() {
        let mut body = b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'd', 3 * MAX_PART_HEAD_BYTES));
        body.extend_from_slice(b"\r\n--B--\r\n");
        run(&body, 1000).unwrap();
    }

    #[test]
    fn too_many_parts_are_refused() {
        run(&form("", MAX_PARTS), 50).unwrap();
        assert!(matches!(run(&form("", MAX_PARTS + 1), 50), Err(FormError::TooManyParts)));
    }
}
