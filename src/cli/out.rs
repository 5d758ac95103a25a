//! Writing to standard output without panicking when the reader has gone (`| head`, `| true`):
//! every command prints through here, never with `print!` (which panics on a broken pipe and
//! exits 101), and files it writes get their folder made first.

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

/// Creates the folder `path` goes in when it is missing, as `-o` promises for every command
/// that writes a file.
pub fn create_parent(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}
