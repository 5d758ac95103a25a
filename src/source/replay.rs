//! Recordings (`.lhrec`): the format `leakhound record` writes and `leakhound replay` reads.
//! See `docs/RECORDING.md`. A header line, then one JSON snapshot per line; each line is
//! flushed as it is written, so a recorder killed mid-run leaves everything before the cut
//! readable. Reading indexes line offsets once (8 bytes per snapshot), so replay can step
//! and seek without holding the snapshots in memory.

use crate::model::Snapshot;
use crate::source::api::{SampleOptions, Source, SourceError, now_ms};
use crate::source::lines::read_line_capped;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "leakhound-recording";
/// A recording's header line may be at most this long.
const HEADER_CAP: usize = 64 << 10;
/// A snapshot line may be at most this long (a probe's reply is capped at 64 MiB; the OS view
/// comes on top): a longer one is skipped without being held, with a warning.
pub const SNAPSHOT_LINE_CAP: usize = 128 << 20;
pub const VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always `leakhound-recording`.
    pub format: String,
    pub version: u32,
    /// What was recorded, as the user wrote it.
    pub target: String,
    pub started_at_ms: u64,
    pub interval_ms: u64,
    /// The leakhound version that wrote it.
    pub leakhound: String,
}

impl Header {
    pub fn new(target: String, interval_ms: u64) -> Self {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            target,
            started_at_ms: now_ms(),
            interval_ms,
            leakhound: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Writes a recording, one flushed line per snapshot.
pub struct RecordingWriter {
    out: BufWriter<File>,
    pub written: u64,
}

impl RecordingWriter {
    pub fn create(path: &Path, header: &Header) -> anyhow::Result<Self> {
        let file = File::create(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}; choose a writable path with -o",
                path.display()
            )
        })?;
        let mut w = RecordingWriter {
            out: BufWriter::new(file),
            written: 0,
        };
        w.line(header)?;
        Ok(w)
    }

    pub fn write(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        self.line(snapshot)?;
        self.written += 1;
        Ok(())
    }

    fn line(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// A recording opened for reading: its header, where each snapshot line starts, and what
/// was wrong with the parts that could not be read.
pub struct Recording {
    path: PathBuf,
    reader: BufReader<File>,
    header: Header,
    /// (offset, length) of each readable snapshot line.
    lines: Vec<(u64, usize)>,
    /// One line each: truncated tail, corrupt lines skipped.
    pub warnings: Vec<String>,
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> SourceError {
    SourceError::Other(format!(
        "{} is not a readable leakhound recording ({why}); make one with `leakhound record TARGET -o FILE.lhrec`",
        path.display()
    ))
}

impl Recording {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        Self::open_capped(path, SNAPSHOT_LINE_CAP)
    }

    /// [`Recording::open`] with another cap on a snapshot line.
    fn open_capped(path: &Path, line_cap: usize) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|e| {
            SourceError::Other(format!(
                "cannot open recording {}: {e}; check the path",
                path.display()
            ))
        })?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let first = read_line_capped(&mut reader, &mut buf, HEADER_CAP, false)
            .map_err(|e| corrupt(path, e))?;
        if first.consumed == 0 {
            return Err(corrupt(path, "the file is empty"));
        }
        if first.over_cap {
            return Err(corrupt(path, "its first line is not a recording header"));
        }
        let n = first.consumed;
        let header: Header = serde_json::from_slice(&buf)
            .ok()
            .filter(|h: &Header| h.format == FORMAT)
            .ok_or_else(|| corrupt(path, "its first line is not a recording header"))?;
        if header.version > VERSION {
            return Err(SourceError::Other(format!(
                "{} was written by a newer leakhound (format version {}); this one reads version {VERSION}: upgrade leakhound",
                path.display(),
                header.version
            )));
        }
        let mut lines = Vec::new();
        let mut warnings = Vec::new();
        let mut corrupt_lines = Vec::new();
        let mut long_lines = Vec::new();
        let mut offset = n;
        let mut line_no = 1;
        loop {
            let read = match read_line_capped(&mut reader, &mut buf, line_cap, true) {
                Ok(read) => read,
                Err(e) => {
                    warnings.push(format!(
                        "{}: read error after line {line_no} ({e}); replaying the {} snapshots before it",
                        path.display(),
                        lines.len()
                    ));
                    break;
                }
            };
            let n = read.consumed;
            if n == 0 {
                break;
            }
            line_no += 1;
            if read.over_cap {
                long_lines.push(line_no);
                offset += n;
                continue;
            }
            let complete = read.newline;
            let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_ok();
            if !complete && !valid {
                warnings.push(format!(
                    "{}: the recording is cut short at line {line_no} (the recorder was interrupted); replaying the {} snapshots before it",
                    path.display(),
                    lines.len()
                ));
                break;
            }
            if valid {
                lines.push((offset, buf.len()));
            } else if !buf.iter().all(u8::is_ascii_whitespace) {
                corrupt_lines.push(line_no);
            }
            offset += n;
        }
        if !long_lines.is_empty() {
            warnings.push(format!(
                "{}: skipped {} line(s) over the {}-byte cap (line {}); replaying the {} readable snapshots",
                path.display(),
                long_lines.len(),
                line_cap,
                long_lines.iter().take(5).map(u64::to_string).collect::<Vec<_>>().join(", "),
                lines.len()
            ));
        }
        if !corrupt_lines.is_empty() {
            let shown: Vec<String> = corrupt_lines.iter().take(5).map(u64::to_string).collect();
            warnings.push(format!(
                "{}: skipped {} corrupt line(s) (line {}{}); replaying the {} readable snapshots",
                path.display(),
                corrupt_lines.len(),
                shown.join(", "),
                if corrupt_lines.len() > 5 { ", …" } else { "" },
                lines.len()
            ));
        }
        Ok(Recording {
            path: path.to_path_buf(),
            reader,
            header,
            lines,
            warnings,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The snapshot at `index`; an error (one line) if it does not parse as a snapshot.
    pub fn read(&mut self, index: usize) -> Result<Snapshot, String> {
        let (offset, len) = *self
            .lines
            .get(index)
            .ok_or_else(|| format!("no snapshot {index} in {}", self.path.display()))?;
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0; len];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let bound = crate::source::probe::client::parsed_bytes_bound(&buf);
        if bound > crate::source::probe::client::REPLY_PARSED_CAP {
            return Err(format!(
                "{}: snapshot {} would take about {} MiB to hold; skipped",
                self.path.display(),
                index + 1,
                bound >> 20
            ));
        }
        serde_json::from_slice(&buf).map_err(|e| {
            format!(
                "{}: snapshot {} is not a leakhound snapshot ({e})",
                self.path.display(),
                index + 1
            )
        })
    }
}

/// A recording as a [`Source`]: each sample is the next recorded snapshot; the end of the
/// recording is [`SourceError::Gone`]. Snapshots that do not parse are skipped.
pub struct ReplaySource {
    recording: Recording,
    next: usize,
}

impl ReplaySource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        Ok(ReplaySource {
            recording: Recording::open(path)?,
            next: 0,
        })
    }

    pub fn recording(&self) -> &Recording {
        &self.recording
    }
}

impl Source for ReplaySource {
    fn describe(&self) -> String {
        format!(
            "recording {} ({}/{})",
            self.recording.path.display(),
            self.next.min(self.recording.len()),
            self.recording.len()
        )
    }

    fn sample(&mut self, _options: SampleOptions) -> Result<Snapshot, SourceError> {
        while self.next < self.recording.len() {
            let i = self.next;
            self.next += 1;
            match self.recording.read(i) {
                Ok(s) => return Ok(s),
                Err(e) => self.recording.warnings.push(e),
            }
        }
        Err(SourceError::Gone(format!(
            "end of recording {} ({} snapshots)",
            self.recording.path.display(),
            self.recording.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: u64) -> Snapshot {
        Snapshot {
            taken_at_ms: t,
            pid: 42,
            source: "test".into(),
            ..Default::default()
        }
    }

    fn write(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("r.lhrec");
        let mut w = RecordingWriter::create(&path, &Header::new("pid 42".into(), 1000)).unwrap();
        for t in 0..n {
            w.write(&snap(t * 1000)).unwrap();
        }
        path
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_without_being_held() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 2);
        let small = std::fs::metadata(&path).unwrap().len() as usize;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // A 4 MB line, then a good snapshot, then 4 MB with no newline at all.
        f.write_all(&vec![b'x'; 4 << 20]).unwrap();
        f.write_all(b"\n").unwrap();
        serde_json::to_writer(&mut f, &snap(9_000)).unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(&vec![b'{'; 4 << 20]).unwrap();
        drop(f);
        let mut r = Recording::open_capped(&path, small * 4).unwrap();
        assert_eq!(r.len(), 3, "{:?}", r.warnings);
        assert_eq!(r.read(2).unwrap().taken_at_ms, 9_000);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("skipped 2 line(s) over the"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn round_trip_and_seek() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 5);
        let mut r = Recording::open(&path).unwrap();
        assert_eq!(r.len(), 5);
        assert!(r.warnings.is_empty());
        assert_eq!(r.read(3).unwrap().taken_at_ms, 3000);
        assert_eq!(r.read(0).unwrap().taken_at_ms, 0);
        let mut src = ReplaySource::open(&path).unwrap();
        let got: Vec<u64> = std::iter::from_fn(|| src.sample(SampleOptions::default()).ok())
            .map(|s| s.taken_at_ms)
            .collect();
        assert_eq!(got, [0, 1000, 2000, 3000, 4000]);
        assert!(matches!(
            src.sample(SampleOptions::default()),
            Err(SourceError::Gone(_))
        ));
    }

    #[test]
    fn truncated_tail_replays_what_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 4);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        let r = Recording::open(&path).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].contains("cut short at line 5"),
            "{:?}",
            r.warnings
        );
        assert!(!r.warnings[0].contains('\n'));
    }

    #[test]
    fn corrupt_middle_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "{\"taken_at_ms\": garbage";
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let mut r = Recording::open(&path).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.warnings[0].contains("skipped 1 corrupt line(s) (line 3)"));
        assert_eq!(r.read(1).unwrap().taken_at_ms, 2000);
    }

    #[test]
    fn not_a_recording_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lhrec");
        std::fs::write(&path, "hello\n").unwrap();
        let err = Recording::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a readable leakhound recording"), "{err}");
        std::fs::write(&path, "").unwrap();
        let err = Recording::open(&path).err().unwrap().to_string();
        assert!(err.contains("empty"), "{err}");
        let newer = r#"{"format":"leakhound-recording","version":99,"target":"x","started_at_ms":0,"interval_ms":1,"leakhound":"9"}"#;
        std::fs::write(&path, format!("{newer}\n")).unwrap();
        let err = Recording::open(&path).err().unwrap().to_string();
        assert!(err.contains("upgrade leakhound"), "{err}");
    }
}
