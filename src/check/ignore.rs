//! Ignore lists for `check`: `--ignore [KIND=]PATTERN` and `[ignore]` in `leakhound.toml`.
//!
//! Each entry names one kind of thing (a rule id, a thread name, a task name or coroutine, a
//! spawn location, an fd path, a child command) and a glob pattern (`*`, `?`, `[abc]`). An entry
//! that suppresses nothing in a run is reported, so stale entries can be removed — goleak's
//! ignore options never tell you that.

use crate::findings::{Finding, LOCATION_KEYS};

/// What an ignore entry matches against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IgnoreKind {
    Rule,
    Thread,
    Task,
    Location,
    Fd,
    Child,
}

impl IgnoreKind {
    pub const ALL: [IgnoreKind; 6] = [
        IgnoreKind::Rule,
        IgnoreKind::Thread,
        IgnoreKind::Task,
        IgnoreKind::Location,
        IgnoreKind::Fd,
        IgnoreKind::Child,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreKind::Rule => "rule",
            IgnoreKind::Thread => "thread",
            IgnoreKind::Task => "task",
            IgnoreKind::Location => "location",
            IgnoreKind::Fd => "fd",
            IgnoreKind::Child => "child",
        }
    }

    pub fn parse(text: &str) -> Option<IgnoreKind> {
        IgnoreKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The strings of a finding this kind looks at: the subject when its `kind:` prefix
    /// belongs to this kind, and the evidence keys rules use for it (docs/RULES.md).
    fn candidates(self, finding: &Finding) -> Vec<String> {
        let (subject_kinds, evidence_keys): (&[&str], &[&str]) = match self {
            IgnoreKind::Rule => return vec![finding.rule.clone()],
            IgnoreKind::Thread => (&["thread", "tid"], &["thread", "thread_name", "threads"]),
            IgnoreKind::Task => (
                &["task", "coroutine"],
                &["task", "task_name", "coroutine", "tasks"],
            ),
            IgnoreKind::Location => (&[], &LOCATION_KEYS),
            IgnoreKind::Fd => (&["fd"], &["path", "target", "fd_target", "fds"]),
            IgnoreKind::Child => (&["pid", "child"], &["cmd", "command", "children"]),
        };
        let mut out = Vec::new();
        if let Some((kind, value)) = finding.subject.split_once(':')
            && subject_kinds.contains(&kind)
        {
            out.push(value.to_string());
        }
        for key in evidence_keys {
            if let Some(value) = finding.evidence.get(*key) {
                collect_strings(value, &mut out);
            }
        }
        out
    }
}

/// Strings inside a JSON value: the value itself, array items, and the `name`/`target`/`cmd`/
/// `site` fields of objects in arrays (how rules list several threads or fds in one finding).
fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_strings(item, out);
            }
        }
        serde_json::Value::Object(map) => {
            for key in ["name", "target", "cmd", "site", "path"] {
                if let Some(v) = map.get(key) {
                    collect_strings(v, out);
                }
            }
        }
        _ => {}
    }
}

/// One ignore entry, as written.
#[derive(Debug, Clone)]
pub struct Ignore {
    pub kind: IgnoreKind,
    pub pattern: glob::Pattern,
    /// Where it came from: `--ignore` or `leakhound.toml`.
    pub origin: String,
}

impl Ignore {
    /// `RULE`, or `KIND=PATTERN`. A bare word is a rule id (or a rule glob like `*-child`).
    pub fn parse(text: &str, origin: &str) -> Result<Ignore, String> {
        let text = text.trim();
        let (kind, pattern) = match text.split_once('=') {
            Some((kind, pattern)) => {
                let kind = IgnoreKind::parse(kind.trim()).ok_or_else(|| {
                    format!(
                        "ignore '{text}' ({origin}): unknown kind '{}': use one of rule, thread, task, location, fd, child",
                        kind.trim()
                    )
                })?;
                (kind, pattern.trim())
            }
            None => (IgnoreKind::Rule, text),
        };
        Ignore::new(kind, pattern, origin)
    }

    pub fn new(kind: IgnoreKind, pattern: &str, origin: &str) -> Result<Ignore, String> {
        if pattern.is_empty() {
            return Err(format!(
                "ignore {}= ({origin}) has an empty pattern: write e.g. thread=worker-*",
                kind.as_str()
            ));
        }
        let pattern = glob::Pattern::new(pattern).map_err(|e| {
            format!(
                "ignore {}={pattern} ({origin}) is not a valid pattern: {e}",
                kind.as_str()
            )
        })?;
        Ok(Ignore {
            kind,
            pattern,
            origin: origin.to_string(),
        })
    }

    pub fn matches(&self, finding: &Finding) -> bool {
        self.kind
            .candidates(finding)
            .iter()
            .any(|c| self.pattern.matches(c))
    }

    /// `thread=pydevd*`, as the user would write it.
    pub fn display(&self) -> String {
        format!("{}={}", self.kind.as_str(), self.pattern.as_str())
    }
}

/// What applying the ignore list did.
#[derive(Debug, Default)]
pub struct Applied {
    pub kept: Vec<Finding>,
    pub ignored: Vec<Finding>,
    /// Entries that matched no finding: `thread=old-worker (leakhound.toml)`.
    pub unused: Vec<String>,
}

/// Splits findings into kept and ignored, and names the entries that matched nothing.
pub fn apply(ignores: &[Ignore], findings: Vec<Finding>) -> Applied {
    let mut used = vec![false; ignores.len()];
    let mut applied = Applied::default();
    for finding in findings {
        let mut hit = false;
        for (i, ignore) in ignores.iter().enumerate() {
            if ignore.matches(&finding) {
                used[i] = true;
                hit = true;
            }
        }
        if hit {
            applied.ignored.push(finding);
        } else {
            applied.kept.push(finding);
        }
    }
    applied.unused = ignores
        .iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|(i, _)| format!("{} ({})", i.display(), i.origin))
        .collect();
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Severity;

    fn thread_finding(name: &str) -> Finding {
        Finding::new(
            "thread-leak",
            Severity::Warning,
            format!("thread:{name}"),
            "alive at exit",
        )
        .with("thread_name", name)
    }

    #[test]
    fn bare_word_is_a_rule() {
        let i = Ignore::parse("thread-leak", "--ignore").unwrap();
        assert_eq!(i.kind, IgnoreKind::Rule);
        assert!(i.matches(&thread_finding("x")));
        let i = Ignore::parse("*-child", "--ignore").unwrap();
        assert!(!i.matches(&thread_finding("x")));
    }

    #[test]
    fn kinds_look_at_their_own_fields() {
        let f = thread_finding("pool-worker-3");
        assert!(
            Ignore::parse("thread=pool-worker-*", "t")
                .unwrap()
                .matches(&f)
        );
        assert!(
            !Ignore::parse("task=pool-worker-*", "t")
                .unwrap()
                .matches(&f)
        );
        let fd = Finding::new(
            "unclosed-resource",
            Severity::Warning,
            "fd:7",
            "open at exit",
        )
        .with("target", "/tmp/data/x.log");
        assert!(Ignore::parse("fd=/tmp/data/*", "t").unwrap().matches(&fd));
        let child = Finding::new("orphan-child", Severity::Error, "pid:42", "alive")
            .with("cmd", "sleep 30");
        assert!(Ignore::parse("child=sleep *", "t").unwrap().matches(&child));
        assert!(!Ignore::parse("child=python*", "t").unwrap().matches(&child));
    }

    #[test]
    fn arrays_of_objects_are_searched() {
        let f = Finding::new("thread-leak", Severity::Warning, "pid:1", "2 threads").with(
            "threads",
            serde_json::json!([{"name": "a"}, {"name": "bg-1"}]),
        );
        assert!(Ignore::parse("thread=bg-*", "t").unwrap().matches(&f));
    }

    #[test]
    fn unused_entries_are_reported() {
        let ignores = vec![
            Ignore::parse("thread=pool-*", "--ignore").unwrap(),
            Ignore::parse("child=never-*", "leakhound.toml").unwrap(),
        ];
        let applied = apply(
            &ignores,
            vec![thread_finding("pool-1"), thread_finding("x")],
        );
        assert_eq!(applied.kept.len(), 1);
        assert_eq!(applied.ignored.len(), 1);
        assert_eq!(applied.unused, vec!["child=never-* (leakhound.toml)"]);
    }

    #[test]
    fn bad_entries_name_the_fix() {
        assert!(
            Ignore::parse("colour=red", "--ignore")
                .unwrap_err()
                .contains("use one of")
        );
        assert!(
            Ignore::parse("thread=", "--ignore")
                .unwrap_err()
                .contains("empty pattern")
        );
        assert!(
            Ignore::parse("fd=[", "--ignore")
                .unwrap_err()
                .contains("not a valid pattern")
        );
    }
}
