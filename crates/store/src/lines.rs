//! A line reader over any byte stream that bounds memory per line: a line longer than the limit
//! is reported as too long and skipped, never buffered whole.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One physical line: its 1-based number, byte offset of its start, and its content without
/// the `\n` (`None` when it exceeded the limit).
pub struct Line<'a> {
    pub number: u64,
    pub offset: u64,
    /// Bytes consumed by the line including its newline.
    pub len: u64,
    pub content: Option<&'a [u8]>,
}

/// Reads `\n`-separated lines, tracking byte offsets.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max_line: usize,
    number: u64,
    offset: u64,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        LineReader { inner, buf: Vec::new(), max_line, number: 0, offset: 0 }
    }

    /// The next line, or `None` at the end of the stream.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut consumed: u64 = 0;
        let mut too_long = false;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                break;
            }
            let (take, done) = match memchr(available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                // `take` counts the newline when the line ends in this read; it is not content.
                if self.buf.len() + take - usize::from(done) > self.max_line {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(&available[..take]);
                }
            }
            self.inner.consume(take);
            consumed += take as u64;
            if done {
                break;
            }
        }
        if consumed == 0 {
            return Ok(None);
        }
        self.number += 1;
        let offset = self.offset;
        self.offset += consumed;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(Some(Line {
            number: self.number,
            offset,
            len: consumed,
            content: if too_long { None } else { Some(&self.buf) },
        }))
    }
}

fn memchr(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_bounds_long_ones() {
        let data: &[u8] = b"ab\n\nxxxxxxxxxx\nlast";
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(4, data), 5);
        let mut seen = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            seen.push((l.number, l.offset, l.len, l.content.map(|c| c.to_vec())));
        }
        assert_eq!(
            seen,
            vec![
                (1, 0, 3, Some(b"ab".to_vec())),
                (2, 3, 1, Some(vec![])),
                (3, 4, 11, None),
                (4, 15, 4, Some(b"last".to_vec())),
            ]
        );
    }
}
