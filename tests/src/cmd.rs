//! Running external programs with a timeout, capturing what they print.
//!
//! Every program the rig starts goes through here, so a hung `ip`, `nft` or plugin fails the
//! test with the command line instead of hanging the whole run.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The usual bound for a short command (`ip`, `nft`, a CNI plugin).
pub const SHORT: Duration = Duration::from_secs(20);

/// What a finished program printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// This output if the program exited 0, else an error carrying everything it printed.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{self}")
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` exited with {}", self.command, self.status)?;
        if !self.stdout.trim().is_empty() {
            write!(f, "\n  stdout: {}", self.stdout.trim())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "\n  stderr: {}", self.stderr.trim())?;
        }
        Ok(())
    }
}

/// A command line as a person would type it, for messages.
pub fn display(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Run `cmd` to completion, feeding it `stdin`, killing it after `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let command = display(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{command}`"))?;
    // Writing stdin and draining both pipes on their own threads, so a chatty program
    // cannot block on a full pipe while we wait for it.
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin was piped above");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            // A program may exit without reading its stdin; that is its answer, not our error.
            let _ = pipe.write_all(&bytes);
        })
    });
    let stdout = drain(child.stdout.take().expect("stdout was piped above"));
    let stderr = drain(child.stderr.take().expect("stderr was piped above"));
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command}` did not finish within {timeout:?}; killed");
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        command,
        status,
        stdout: join_text(stdout),
        stderr: join_text(stderr),
    })
}

/// Run a program given as words, e.g. `sh(&["ip", "netns", "add", name])`, failing on a
/// non-zero exit.
pub fn sh(words: &[&str]) -> Result<Output> {
    let (program, args) = words.split_first().expect("a command has a program");
    run(Command::new(program).args(args), None, SHORT)?.ok()
}

/// Wait for `child` up to `timeout`; `None` when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_text(handle: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&handle.join().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_are_captured() {
        let out = run(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Some(b"hello"),
            SHORT,
        )
        .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr.trim(), "err");
        assert_eq!(out.status.code(), Some(3));
        assert!(out.ok().unwrap_err().to_string().contains("err"));
    }

    #[test]
    fn a_hung_program_is_killed_at_the_timeout() {
        let start = Instant::now();
        let err = run(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
