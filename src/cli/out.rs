//! Writing to standard output without panicking when the reader has gone (`| head`).

use std::io::Write;

/// Writes `text` and flushes. Returns false when standard output is closed (broken pipe) or
/// failing: the caller should stop producing output and end normally.
pub fn print(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// [`print`] plus a newline.
pub fn println(line: &str) -> bool {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    print(&text)
}
