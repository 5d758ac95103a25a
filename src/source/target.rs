//! Parsing what the user wrote as a target into the kind of source that reaches it.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local process: /proc view, plus its probe if one is loaded.
    Pid(u32),
    /// A probe's Unix socket, reached directly.
    ProbeSocket(PathBuf),
    /// A console-subscriber gRPC endpoint (`http://host:port`).
    Console(String),
    /// A recording made by `leakhound record`.
    Recording(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "empty target: give a PID, unix:/path/to.sock, http://HOST:PORT or FILE.lhrec"
                    .into(),
            );
        }
        if let Ok(pid) = text.parse::<u32>() {
            if pid == 0 {
                return Err("PID 0 is not a process: give the PID of a running process".into());
            }
            return Ok(Target::Pid(pid));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("'unix:' needs a path: write unix:/path/to.sock".into());
            }
            return Ok(Target::ProbeSocket(PathBuf::from(path)));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            let rest = text.split_once("://").map_or("", |(_, r)| r);
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!(
                    "'{text}' has no host: write e.g. http://127.0.0.1:6669"
                ));
            }
            return Ok(Target::Console(text.to_string()));
        }
        if text.ends_with(".lhrec") {
            return Ok(Target::Recording(PathBuf::from(text)));
        }
        if text.contains('/') || text.ends_with(".sock") {
            return Ok(Target::ProbeSocket(PathBuf::from(text)));
        }
        Err(format!(
            "'{text}' is not a target: give a PID, unix:/path/to.sock, http://HOST:PORT or FILE.lhrec"
        ))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "pid {pid}"),
            Target::ProbeSocket(p) => write!(f, "unix:{}", p.display()),
            Target::Console(url) => write!(f, "{url}"),
            Target::Recording(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!("1234".parse::<Target>().unwrap(), Target::Pid(1234));
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Target>().unwrap(),
            Target::ProbeSocket("/tmp/x.sock".into())
        );
        assert_eq!(
            "http://127.0.0.1:6669".parse::<Target>().unwrap(),
            Target::Console("http://127.0.0.1:6669".into())
        );
        assert_eq!(
            "run.lhrec".parse::<Target>().unwrap(),
            Target::Recording("run.lhrec".into())
        );
    }

    #[test]
    fn rejects_malformed_with_the_fix() {
        for bad in ["", "0", "abc", "unix:", "http://", "-5"] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.contains(':'), "{bad}: {err}");
        }
    }
}
