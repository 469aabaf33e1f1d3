//! The CLI as scripts and shells use it: every command answers `--json` with JSON (its
//! result on stdout, or one JSON error line on stderr), shell completions that bash loads,
//! and manual pages generated from the same clap definitions.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_openpsd");

/// Runs `openpsd ARGS` with nothing reachable: a card directory that holds no card, no
/// session, a meter server on a closed port; in its own session (`setsid`), so a prompt for
/// a password or PIN finds no terminal instead of waiting on the one running the tests.
fn run(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new("setsid")
        .arg(BIN)
        .args(args)
        .env(
            "OPENPSD_CARD",
            format!("state:{}", dir.join("no-card").display()),
        )
        .env("OPENPSD_CONFIG_DIR", dir.join("config"))
        .env("OPENPSD_METER", "https://127.0.0.1:9")
        .env("HOME", dir)
        .env_remove("OPENPSD_PSD")
        .env_remove("OPENPSD_TERMINAL")
        .env_remove("OPENPSD_PIN")
        .env_remove("OPENPSD_API_KEY")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setsid openpsd");
    // Read its output while it runs (a completion script is more than a pipe holds), and
    // give up on it after a minute.
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status()
                .ok();
            panic!("openpsd {args:?} still running after 60 s");
        }
    }
}

/// The command paths of the tree, read from `--help` as a user would: each command, and
/// under it the ones its "Commands:" section lists.
fn command_paths(dir: &Path) -> Vec<Vec<String>> {
    fn walk(dir: &Path, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = run(dir, &args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        let help = String::from_utf8(o.stdout).unwrap();
        let subs: Vec<String> = help
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|name| name != "help")
            .collect();
        if !path.is_empty() {
            out.push(path.clone());
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            walk(dir, p, out);
        }
    }
    let mut out = Vec::new();
    walk(dir, Vec::new(), &mut out);
    out
}

/// Every command run with `--json` and no further arguments answers in JSON: on success
/// every line of stdout is a JSON value; on failure stdout holds no text and stderr's last
/// line is `{"error": {"kind", "message", "exit_code"}}` with the process's exit code.
#[test]
fn every_command_answers_json() {
    let dir = tempfile::tempdir().unwrap();
    let paths = command_paths(dir.path());
    assert!(paths.len() > 30, "{paths:?}");
    let mut report = Vec::new();
    for path in &paths {
        let mut args = vec!["--json"];
        args.extend(path.iter().map(String::as_str));
        let o = run(dir.path(), &args);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "openpsd {args:?} printed a line that is not JSON: {line:?}\nstderr: {stderr}"
            );
        }
        if o.status.success() {
            report.push(format!("{}: ok", path.join(" ")));
            continue;
        }
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let v: Value = serde_json::from_str(last).unwrap_or_else(|_| {
            panic!("openpsd {args:?} failed without a JSON error line: {stderr}")
        });
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{args:?}: {v}"
        );
        assert!(
            matches!(e["kind"].as_str(), Some("usage" | "failed")),
            "{args:?}: {v}"
        );
        assert_eq!(
            e["exit_code"].as_i64(),
            o.status.code().map(i64::from),
            "{args:?}: {v}"
        );
        report.push(format!("{}: {}", path.join(" "), e["kind"]));
    }
    println!("{}", report.join("\n"));
}

/// Errors stay one plain line without --json, and a usage error keeps clap's text.
#[test]
fn errors_without_json_stay_text() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["status"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    let o = run(dir.path(), &["indicium"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8(o.stderr).unwrap().contains("Usage:"));
    // --help and --version print as usual under --json.
    let o = run(dir.path(), &["--json", "--version"]);
    assert!(o.status.success());
    assert!(String::from_utf8(o.stdout).unwrap().starts_with("openpsd "));
}

/// The bash completion script is valid bash, registers `openpsd`, and completes its
/// subcommands; the other shells' scripts name them too.
#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(dir.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {o:?}");
        let script = String::from_utf8(o.stdout).unwrap();
        for word in ["openpsd", "indicium", "license", "completions"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        let o = run(dir.path(), &["--json", "completions", shell]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (v["shell"].as_str(), v["script"].as_str()),
            (Some(shell), Some(script.as_str()))
        );
    }
    let o = run(dir.path(), &["completions", "bash"]);
    let file = dir.path().join("openpsd.bash");
    std::fs::write(&file, &o.stdout).unwrap();
    // Source it and ask for the completions of `openpsd lic` and of `openpsd license `.
    let probe = format!(
        "source {f}; complete -p openpsd >/dev/null || exit 3; \
         COMP_WORDS=(openpsd lic); COMP_CWORD=1; COMP_LINE='openpsd lic'; COMP_POINT=11; \
         _openpsd openpsd lic openpsd; printf '%s\\n' \"${{COMPREPLY[@]}}\"; echo --; \
         COMP_WORDS=(openpsd license ''); COMP_CWORD=2; COMP_LINE='openpsd license '; COMP_POINT=16; \
         _openpsd openpsd '' license; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        f = file.display()
    );
    let o = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (first, second) = out.split_once("--\n").unwrap();
    assert_eq!(first.trim(), "license", "{out}");
    for sub in ["request", "list", "export", "import", "retire"] {
        assert!(
            second.lines().any(|l| l == sub),
            "{sub} not completed: {out}"
        );
    }
}

/// `openpsd man` is a roff page with the commands; `--out-dir` writes one page per command
/// of the tree (the same tree `--help` shows), each of which `man` can render when it is
/// installed.
#[test]
fn man_pages_for_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["man"]);
    assert!(o.status.success(), "{o:?}");
    let page = String::from_utf8(o.stdout).unwrap();
    assert!(page.contains(".TH openpsd 1"), "{page}");
    assert!(
        page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"),
        "{page}"
    );
    let out = dir.path().join("man");
    let o = run(
        dir.path(),
        &["--json", "man", "--out-dir", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let written = v["written"].as_array().unwrap();
    let paths = command_paths(dir.path());
    assert_eq!(
        written.len(),
        paths.len() + 1,
        "one page per command and openpsd.1"
    );
    for p in &paths {
        let name = format!("openpsd-{}.1", p.join("-"));
        let page = std::fs::read_to_string(out.join(&name)).unwrap_or_else(|_| panic!("{name}"));
        assert!(
            page.contains(&format!(".TH {}", name.trim_end_matches(".1"))),
            "{name}"
        );
    }
    // Rendered by man(1) where it is installed (Debian's man-db), as a reader sees it.
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(out.join("openpsd-indicium.1"))
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains("--postage"), "{text}");
    }
}
