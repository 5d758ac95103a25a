//! The `[agent]` table of `leakhound.toml` (read with the rest of the file by
//! `check::settings`; unknown keys are refused there and here).
//!
//! ```toml
//! [agent]
//! pid = [1234]
//! match = ["gunicorn*", "celery"]
//! probes = true
//! probe-dir = ["/run/leakhound"]
//! cgroup = ["/system.slice/api.service"]
//! unit = ["worker"]
//! listen = "127.0.0.1:9464"
//! interval = "1s"
//! max-targets = 64
//! memory = "64MiB"
//! python-stacks = false
//! ```
//!
//! Flags add to the lists and win over the single values.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentSection {
    #[serde(default)]
    pub pid: Vec<u32>,
    #[serde(default, rename = "match")]
    pub patterns: Vec<String>,
    pub probes: Option<bool>,
    #[serde(default)]
    pub probe_dir: Vec<PathBuf>,
    #[serde(default)]
    pub cgroup: Vec<String>,
    #[serde(default)]
    pub unit: Vec<String>,
    pub listen: Option<String>,
    pub interval: Option<String>,
    pub max_targets: Option<usize>,
    pub memory: Option<String>,
    pub otlp: Option<String>,
    pub python_stacks: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        agent: AgentSection,
    }

    #[test]
    fn reads_every_key_and_refuses_unknown_ones() {
        let f: File = toml::from_str(
            r#"
[agent]
pid = [12]
match = ["gunicorn*"]
probes = true
probe-dir = ["/run/leakhound"]
cgroup = ["/system.slice"]
unit = ["api"]
listen = "127.0.0.1:9464"
interval = "2s"
max-targets = 10
memory = "32MiB"
python-stacks = true
"#,
        )
        .unwrap();
        assert_eq!(f.agent.pid, vec![12]);
        assert_eq!(f.agent.patterns, vec!["gunicorn*"]);
        assert_eq!(f.agent.max_targets, Some(10));
        assert_eq!(f.agent.python_stacks, Some(true));
        assert_eq!(f.agent.probe_dir, vec![PathBuf::from("/run/leakhound")]);
        let err = toml::from_str::<File>("[agent]\nmax_targets = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
