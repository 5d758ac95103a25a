//! Reading a line with a cap: what a probe's reply and a recording's snapshot lines are read
//! with, so a line without an end (a probe that never sends `\n`, a 1 GB file with no newline)
//! costs at most the cap in memory.

use std::io::{BufRead, ErrorKind};

/// What [`read_line_capped`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CappedLine {
    /// Bytes taken from the reader, the `\n` included.
    pub consumed: u64,
    /// The line ended with `\n` (not at the end of the input).
    pub newline: bool,
    /// The line was longer than the cap: `buf` holds only its first `cap` bytes.
    pub over_cap: bool,
}

/// Reads through the next `\n` (or to the end of the input) into `buf` (cleared first), keeping
/// at most `cap` bytes. A longer line is consumed to its end without being kept when `skip_rest`
/// is set; otherwise reading stops as soon as it passes the cap.
pub fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
    skip_rest: bool,
) -> std::io::Result<CappedLine> {
    buf.clear();
    let mut line = CappedLine {
        consumed: 0,
        newline: false,
        over_cap: false,
    };
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(line);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > cap {
            line.over_cap = true;
        }
        if !line.over_cap {
            buf.extend_from_slice(&chunk[..take]);
        } else if !skip_rest {
            return Ok(line);
        }
        let used = take + usize::from(done);
        reader.consume(used);
        line.consumed += used as u64;
        if done {
            line.newline = true;
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    #[test]
    fn a_long_line_is_skipped_to_its_end_without_being_kept() {
        let mut input = b"short\n".to_vec();
        input.extend(vec![b'x'; 10_000]);
        input.extend(b"\nnext");
        let mut reader = BufReader::with_capacity(64, Cursor::new(input));
        let mut buf = Vec::new();
        let first = read_line_capped(&mut reader, &mut buf, 100, true).unwrap();
        assert_eq!(
            (buf.as_slice(), first.consumed, first.over_cap),
            (&b"short"[..], 6, false)
        );
        let long = read_line_capped(&mut reader, &mut buf, 100, true).unwrap();
        assert!(long.over_cap && long.newline && buf.len() <= 100);
        assert_eq!(long.consumed, 10_001);
        assert!(buf.capacity() <= 256, "{}", buf.capacity());
        let last = read_line_capped(&mut reader, &mut buf, 100, true).unwrap();
        assert_eq!((buf.as_slice(), last.newline), (&b"next"[..], false));
    }
}
