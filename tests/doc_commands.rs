//! The documentation's commands stay true: every `leakhound …` line in a code block of
//! README.md and docs/*.md must be accepted by the real command line (subcommand, flags and
//! their values), so renaming a flag without updating the docs fails here. A line the docs show
//! failing with a usage error must still fail. Also: the README stays short and keeps the
//! set-up commands, and every relative link in these pages points at a file (and heading)
//! that exists.

use clap::Parser;
use leakhound::cli::Cli;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// One documented command: where it is, its arguments after `leakhound`, and whether the docs
/// show it rejected as a usage error.
struct DocCommand {
    at: String,
    args: Vec<String>,
    shown_rejected: bool,
}

/// Splits a shell line into words as `sh` would for plain commands: quotes, backslashes, a
/// `#` comment, and the end of the command at `|`, `;`, `&` or a redirection.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            '|' | ';' | '&' | '>' | '<' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The arguments after `leakhound` if this code line runs leakhound: `leakhound …`, after a
/// `$ ` prompt or a YAML `run:`, or `cargo run --release -- …`. Output lines such as
/// `leakhound: error: …` are not commands.
fn leakhound_args(line: &str) -> Option<Vec<String>> {
    let mut line = line.trim();
    for prefix in ["$ ", "- run: ", "run: "] {
        line = line.strip_prefix(prefix).unwrap_or(line).trim_start();
    }
    let words = shell_words(line);
    match words.first().map(String::as_str) {
        Some("leakhound") => Some(words[1..].to_vec()),
        Some("cargo") if words.get(1).map(String::as_str) == Some("run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            Some(words[dashes + 1..].to_vec())
        }
        _ => None,
    }
}

/// Every leakhound command in the fenced code blocks of one page. In a block that shows a
/// session (`$ ` prompts), only the prompted lines are commands; the rest is output.
fn commands_in(path: &Path) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(path).expect("read page");
    let name = path
        .strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with("```") {
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_start().starts_with("```"))
            .unwrap_or(lines.len());
        let block = &lines[start..end];
        let session = block.iter().any(|l| l.trim_start().starts_with("$ "));
        for (k, line) in block.iter().enumerate() {
            if session && !line.trim_start().starts_with("$ ") {
                continue;
            }
            let Some(args) = leakhound_args(line) else {
                continue;
            };
            let next = block.get(k + 1).copied().unwrap_or("");
            let shown_rejected = ["invalid value", "unexpected argument", "unrecognized"]
                .iter()
                .any(|e| next.starts_with(&format!("leakhound: error: {e}")));
            found.push(DocCommand {
                at: format!("{name}:{}", start + k + 1),
                args,
                shown_rejected,
            });
        }
        i = end + 1;
    }
    found
}

#[test]
fn every_documented_command_is_accepted_by_the_command_line() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for page in pages() {
        for cmd in commands_in(&page) {
            let argv = std::iter::once("leakhound".to_string()).chain(cmd.args.iter().cloned());
            let parsed = Cli::try_parse_from(argv);
            match (&parsed, cmd.shown_rejected) {
                (Ok(_), false) | (Err(_), true) => {}
                (Ok(_), true) => wrong.push(format!(
                    "{}: `leakhound {}` is shown failing with a usage error but is accepted",
                    cmd.at,
                    cmd.args.join(" ")
                )),
                (Err(e), false) => wrong.push(format!(
                    "{}: `leakhound {}` is rejected: {}",
                    cmd.at,
                    cmd.args.join(" "),
                    e.render().to_string().lines().next().unwrap_or_default()
                )),
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The docs show dozens; finding few means the extraction broke, not that all is well.
    assert!(checked >= 20, "only {checked} documented commands found");
}

#[test]
fn the_readme_has_the_set_up_commands_the_recipes_and_stays_short() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    assert!(
        readme.len() < 12 * 1024,
        "README.md is {} bytes",
        readme.len()
    );
    let commands: Vec<Vec<String>> = commands_in(&root().join("README.md"))
        .into_iter()
        .map(|c| c.args)
        .collect();
    for sub in ["demo", "watch", "attach", "check"] {
        assert!(
            commands
                .iter()
                .any(|a| a.first().map(String::as_str) == Some(sub)),
            "README.md shows no `leakhound {sub}` command"
        );
    }
    for line in ["cargo run --release -- demo", "scripts/test.sh"] {
        assert!(
            readme.lines().any(|l| l.trim() == line),
            "README.md lost the set-up line `{line}`"
        );
    }
    // .ci/run runs the README's test command.
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect("read .ci/run");
    assert!(ci.lines().any(|l| l.trim() == "scripts/test.sh"));
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as `-`.
fn heading_anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#') && l.trim_start_matches('#').starts_with(' '))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn relative_links_point_at_files_and_headings_that_exist() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        let dir = page.parent().expect("page folder");
        for (n, line) in text.lines().enumerate() {
            for (start, _) in line.match_indices("](") {
                let rest = &line[start + 2..];
                let Some(end) = rest.find(')') else { continue };
                let (target, anchor) = rest[..end].split_once('#').unwrap_or((&rest[..end], ""));
                if rest[..end].contains("://") {
                    continue;
                }
                let file = if target.is_empty() {
                    page.clone()
                } else {
                    dir.join(target)
                };
                let ok = file.exists()
                    && (anchor.is_empty()
                        || std::fs::read_to_string(&file)
                            .is_ok_and(|t| heading_anchors(&t).iter().any(|a| a == anchor)));
                if !ok {
                    broken.push(format!("{}:{}: {}", page.display(), n + 1, &rest[..end]));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn shell_words_splits_like_sh_for_plain_commands() {
    assert_eq!(
        shell_words("leakhound check --settle 300ms -- sh -c 'sleep 60 >/dev/null & exit 0'"),
        [
            "leakhound",
            "check",
            "--settle",
            "300ms",
            "--",
            "sh",
            "-c",
            "sleep 60 >/dev/null & exit 0"
        ]
    );
    assert_eq!(
        shell_words("leakhound rules | head  # the first lines"),
        ["leakhound", "rules"]
    );
    assert_eq!(
        leakhound_args("$ leakhound watch 7 --json"),
        Some(vec!["watch".into(), "7".into(), "--json".into()])
    );
    assert_eq!(
        leakhound_args("cargo run --release -- demo"),
        Some(vec!["demo".into()])
    );
    assert_eq!(leakhound_args("leakhound: error: no process"), None);
}
