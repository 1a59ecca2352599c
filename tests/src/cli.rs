//! What the rig's long-running binaries share (`podwall-differential` here, the `bench-*`
//! binaries of `podwall-bench`): reading flag values, and how a run ends (the report on
//! stdout and exit 0, or one line naming what failed and exit 1; bad arguments exit 2).

use std::fmt::Display;
use std::process::ExitCode;

/// A flag's value that must be a positive number.
pub fn positive(flag: &str, value: Option<String>) -> Result<usize, String> {
    match value.as_deref().map(str::parse::<usize>) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive number")),
    }
}

/// A flag's value that is a comma-separated list of items `parse` accepts (`what` says what
/// one looks like), or `none` for the empty list when `none_allowed`.
pub fn list<T>(
    flag: &str,
    value: Option<String>,
    what: &str,
    none_allowed: bool,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    let fail = || {
        let none = if none_allowed { ", or none" } else { "" };
        format!("{flag} needs a comma-separated list of {what}{none}")
    };
    match value.as_deref() {
        Some("none") if none_allowed => Ok(Vec::new()),
        Some(text) => text
            .split(',')
            .map(|item| parse(item.trim()))
            .collect::<Option<Vec<T>>>()
            .filter(|items| !items.is_empty())
            .ok_or_else(fail),
        None => Err(fail()),
    }
}

/// One such binary's whole run. `flag` handles each argument the binary knows, reading
/// any value from the rest, and answers `None` for one it does not; `-h`/`--help`, unknown
/// arguments and bad values are handled here. Then, as root, `run` and print its report.
pub fn main<O, R: Display>(
    program: &str,
    usage: &str,
    mut options: O,
    mut flag: impl FnMut(&mut O, &str, &mut dyn Iterator<Item = String>) -> Option<Result<(), String>>,
    run: impl FnOnce(&O) -> anyhow::Result<R>,
) -> ExitCode {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        let parsed = flag(&mut options, &arg, &mut args)
            .unwrap_or_else(|| Err(format!("unknown argument {arg}")));
        if let Err(message) = parsed {
            return usage_error(program, usage, &message);
        }
    }
    crate::require_root();
    finish(program, run(&options))
}

/// Exit for a bad argument: `message`, then the usage text.
fn usage_error(program: &str, usage: &str, message: &str) -> ExitCode {
    eprintln!("{program}: {message}\n{usage}");
    ExitCode::from(2)
}

/// Print a run's report, or say what failed.
fn finish<R: Display>(program: &str, result: anyhow::Result<R>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{program}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn positive_numbers_only() {
        assert_eq!(positive("--rounds", some("5")), Ok(5));
        for bad in [some("0"), some("-1"), some("x"), None] {
            assert_eq!(
                positive("--rounds", bad),
                Err("--rounds needs a positive number".to_string())
            );
        }
    }

    #[test]
    fn lists_and_none() {
        let num = |s: &str| s.parse::<usize>().ok();
        assert_eq!(
            list("--sizes", some("1, 2,3"), "numbers", false, num),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(list("--f", some("none"), "numbers", true, num), Ok(vec![]));
        assert_eq!(
            list("--sizes", some("none"), "numbers", false, num),
            Err("--sizes needs a comma-separated list of numbers".to_string())
        );
        assert_eq!(
            list("--f", some("1,x"), "numbers", true, num),
            Err("--f needs a comma-separated list of numbers, or none".to_string())
        );
        assert!(list("--f", None, "numbers", true, num).is_err());
    }
}
