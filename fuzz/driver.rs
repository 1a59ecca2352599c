//! A small seeded mutation fuzzer that runs inside `cargo test`, on the stable toolchain.
//!
//! Every input surface has a corpus of real inputs in `fuzz/corpus/<surface>/`. [`run`] hands
//! the target each corpus entry as it is, then mutated copies of them: bit flips, byte inserts
//! and deletes, truncation, repeated chunks and lines, splices of two entries, numbers replaced
//! by extreme values, strings by long or odd ones, JSON and YAML tokens, deep nesting. The
//! target only has to return: a panic fails the test with the case's seed and input, so that
//! it can be replayed and added to the corpus.
//!
//! An input that once made a target panic is kept in the corpus as `crash-<what>`: it is run
//! as it is every time, but never mutated, since such inputs are often large.
//!
//! Each crate's `tests/fuzz.rs` includes this file with `#[path]`, so the product gains no
//! dependency; each test's name contains its surface's, so that the name selects it. The
//! driver reads three environment variables:
//! - `PODWALL_FUZZ_ITERS=N`: mutated cases per surface (default: the test's own, about a second);
//! - `PODWALL_FUZZ_SECONDS=S`: mutate for S seconds per surface instead, from a clock seed;
//! - `PODWALL_FUZZ_SEED=X` (decimal or `0x…`): the first case's seed; the cases are X, X+1, …,
//!   so `PODWALL_FUZZ_SEED=X PODWALL_FUZZ_ITERS=1` replays case X alone.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The seed of the first case when none is given: `cargo test` runs the same cases every time.
const DEFAULT_SEED: u64 = 0x706f_6477_616c_6c00;

/// Mutated inputs are cut to this size: far above any honest input on these surfaces, and
/// small enough that one case stays cheap in a debug build.
const MAX_INPUT: usize = 256 << 10;

/// Feeds `target` the corpus of `surface` and then mutated copies of it, and fails with a
/// replayable report if the target panics. `default_iters` is the number of mutated cases
/// when the environment does not say otherwise.
pub fn run(surface: &str, default_iters: u64, target: impl Fn(&[u8])) {
    let (corpus, crashes): (Vec<Entry>, Vec<Entry>) = load_corpus(surface)
        .into_iter()
        .partition(|entry| !entry.name.starts_with("crash-"));
    assert!(
        !corpus.is_empty(),
        "fuzz corpus {surface} has only crash- entries"
    );
    let plan = Plan::from_env(default_iters);
    for entry in corpus.iter().chain(&crashes) {
        check(surface, None, &entry.name, &entry.data, &target);
    }
    let start = Instant::now();
    let mut cases = 0u64;
    while !plan.done(cases, start) {
        let seed = plan.seed.wrapping_add(cases);
        let (base, input) = mutate(&mut Rng::new(seed), &corpus);
        check(surface, Some(seed), &corpus[base].name, &input, &target);
        cases += 1;
    }
    eprintln!(
        "fuzz {surface}: {} corpus entries, {cases} mutated cases from seed {:#x} in {:.1?}",
        corpus.len() + crashes.len(),
        plan.seed,
        start.elapsed()
    );
}

/// How many cases to run, and from which seed.
struct Plan {
    seed: u64,
    iters: u64,
    seconds: Option<Duration>,
}

impl Plan {
    fn from_env(default_iters: u64) -> Self {
        let number = |name: &str| {
            std::env::var(name).ok().map(|text| {
                let text = text.trim();
                let parsed = match text.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => text.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
            })
        };
        let seconds = number("PODWALL_FUZZ_SECONDS").map(Duration::from_secs);
        let seed = number("PODWALL_FUZZ_SEED").unwrap_or_else(|| match seconds {
            // A long run should explore new ground; the seed is printed either way.
            Some(_) => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(DEFAULT_SEED, |d| d.as_nanos() as u64),
            None => DEFAULT_SEED,
        });
        Plan {
            seed,
            iters: number("PODWALL_FUZZ_ITERS").unwrap_or(default_iters),
            seconds,
        }
    }

    fn done(&self, cases: u64, start: Instant) -> bool {
        match self.seconds {
            Some(limit) => start.elapsed() >= limit,
            None => cases >= self.iters,
        }
    }
}

struct Entry {
    name: String,
    data: Vec<u8>,
}

/// The files of `fuzz/corpus/<surface>/`, by name. The directory is found from the including
/// crate's manifest directory upwards, so every crate of the workspace finds the same one.
fn load_corpus(surface: &str) -> Vec<Entry> {
    let dir = corpus_root().join(surface);
    let mut entries: Vec<Entry> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading fuzz corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("listing the fuzz corpus").path();
            Entry {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                data: std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            }
        })
        .collect();
    assert!(
        !entries.is_empty(),
        "fuzz corpus {} is empty",
        dir.display()
    );
    // Sorted, so that a seed names the same case on every machine.
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("fuzz/corpus"))
        .find(|dir| dir.is_dir())
        .expect("fuzz/corpus above the crate directory")
}

/// Runs one case; on a panic, saves the input and fails with what it takes to replay it.
fn check(surface: &str, seed: Option<u64>, base: &str, input: &[u8], target: &impl Fn(&[u8])) {
    if panic::catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return;
    }
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "fuzz-{surface}-{}",
        seed.map_or_else(|| base.to_string(), |s| format!("{s:#x}"))
    ));
    let saved = match std::fs::write(&saved, input) {
        Ok(()) => saved.display().to_string(),
        Err(e) => format!("not saved: {e}"),
    };
    let case = match seed {
        Some(seed) => format!(
            "mutated case {seed:#x} of corpus entry {base}; replay it with\n  \
             PODWALL_FUZZ_SEED={seed:#x} PODWALL_FUZZ_ITERS=1 cargo test --workspace --test fuzz {surface}"
        ),
        None => format!("corpus entry {base} itself"),
    };
    let shown: String = input.escape_ascii().take(4096).map(char::from).collect();
    panic!(
        "fuzz {surface}: the target panicked (message above) on {case}\n\
         input ({} bytes, saved to {saved}):\n{shown}",
        input.len()
    );
}

/// xorshift64*, seeded through splitmix64 so that neighbouring seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // xorshift never leaves an all-zero state.
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must not be zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        self.below(n + 1)
    }

    /// A length or repeat count: mostly small, sometimes around a buffer size, rarely huge
    /// (large inputs are slow in a debug build, and one in a few hundred cases finds what
    /// they can find).
    fn count(&mut self) -> usize {
        match self.below(200) {
            0 => 100_000,
            1..=4 => 65_536,
            5..=19 => *self.pick(&[1000, 4096]),
            _ => *self.pick(&[1, 2, 8, 64, 255, 256]),
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers just inside and outside the limits the parsers check: ports, i32, u32, u64, f64.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e308",
    "1e309",
    "-1e309",
    "0.5",
    "1.0",
    "1e2",
    "0x10",
    "0o17",
    "010",
    ".inf",
    ".nan",
];

/// String contents that mean something to one of the parsers, or to none of them.
const STRINGS: &[&str] = &[
    "",
    " ",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.1/33",
    "10.0.0.1/-1",
    "10.0.0.0/8/8",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "256.1.1.1",
    "1.2.3",
    "/",
    "a/b/c",
    "=",
    ";;",
    "K=V=W",
    "\\u0000",
    "\\ud800",
    "\\udfff\\ud800",
    "\\\\",
    "é",
    "\u{202e}",
    "\u{10ffff}",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "TCP",
    "tcp",
    "SCTP",
    "ICMP",
    "Ingress",
    "Egress",
    "List",
    "NetworkPolicy",
    "Namespace",
    "Pod",
    "v1",
    "extensions/v1beta1",
    "interval",
    "jump",
    "goto",
    "accept",
    "0.3.1",
    "1.1.0",
    "9.9.9",
];

/// Tokens of JSON, YAML and of the line formats, to insert anywhere or to replace a value.
const TOKENS: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"\"",
    "[[]]",
    "{\"\":{}}",
    ",",
    ":",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "\r\n",
    "\t",
    "---\n",
    "...\n",
    "- ",
    "? ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "!<tag:x> ",
    "%YAML 1.2\n",
    "|\n",
    ">-\n",
    "~",
    "#",
    "'",
    "\u{feff}",
    "=",
    ";",
    "\0",
];

/// What long strings are made of: plain, digits, escapes (counted twice by a naive length
/// check), multi-byte UTF-8, path-like.
const LONG_UNITS: &[&[u8]] = &[b"a", b"9", b"\\\\", b"\\u00e9", b"\xc3\xa9", b"ab/"];

/// Bytes that start, end or separate something in one of the formats.
const BYTES: &[u8] = b"\0\x7f\xff\xc3\"'{}[]:,;=/.-\\\n\r\t #&*!|>%@`0";

/// One mutated input: a corpus entry (its index is returned) with one to four mutations.
fn mutate(rng: &mut Rng, corpus: &[Entry]) -> (usize, Vec<u8>) {
    let base = rng.below(corpus.len());
    let mut data = corpus[base].data.clone();
    // Mostly one mutation, so that most cases stay close to valid and reach past the syntax.
    let rounds = 1 << rng.below(3);
    for _ in 0..rounds {
        mutate_once(rng, &mut data, corpus);
        data.truncate(MAX_INPUT);
    }
    (base, data)
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Entry]) {
    let at = rng.upto(data.len());
    match rng.below(15) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = if rng.below(2) == 0 {
                *rng.pick(BYTES)
            } else {
                rng.next() as u8
            };
        }
        2 => {
            let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 => {
            let len = (1 + rng.below(16)).min(data.len() - at);
            data.drain(at..at + len);
        }
        4 => data.truncate(at),
        5 => {
            // A chunk repeated: long arrays, duplicate keys, many documents.
            let len = (1 + rng.below(64)).min(data.len() - at);
            let chunk = data[at..at + len].to_vec();
            let times = rng.count();
            data.splice(at..at, chunk.repeat(times));
        }
        6 => {
            // The head of this entry and the tail of another.
            let other = &rng.pick(corpus).data;
            let from = rng.upto(other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        7 => {
            let token = rng.pick(TOKENS).as_bytes();
            data.splice(at..at, token.iter().copied());
        }
        8 => replace_span(rng, data, number_spans(data), |rng| {
            rng.pick(NUMBERS).as_bytes().to_vec()
        }),
        9 => replace_span(rng, data, string_spans(data), |rng| match rng.below(4) {
            0 => long_text(rng),
            _ => rng.pick(STRINGS).as_bytes().to_vec(),
        }),
        10 => replace_span(rng, data, word_spans(data), |rng| match rng.below(3) {
            0 => rng.pick(NUMBERS).as_bytes().to_vec(),
            1 => rng.pick(STRINGS).as_bytes().to_vec(),
            _ => rng.pick(TOKENS).as_bytes().to_vec(),
        }),
        11 => {
            // Deep nesting, closed or not: recursion limits must hold.
            let depth = match rng.below(8) {
                0 => rng.count(),
                _ => *rng.pick(&[127, 128, 129]),
            };
            let (open, close): (&[u8], &[u8]) = match rng.below(3) {
                0 => (b"[", b"]"),
                1 => (b"{\"a\":", b"}"),
                _ => (b"- ", b""),
            };
            let end = at + rng.upto(data.len() - at);
            data.splice(end..end, close.repeat(depth * rng.below(2)));
            data.splice(at..at, open.repeat(depth));
        }
        12 => {
            let text = long_text(rng);
            data.splice(at..at, text);
        }
        13 => line_op(rng, data),
        _ => {
            // A value's type changed: a string or number becomes a token, `{}`, `null`, ….
            let spans = match rng.below(2) {
                0 => string_spans(data),
                _ => number_spans(data),
            };
            replace_span(rng, data, spans, |rng| rng.pick(TOKENS).as_bytes().to_vec());
        }
    }
}

/// Replaces one of `spans` (half-open byte ranges) with what `with` makes; without spans,
/// inserts it at a random place.
fn replace_span(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    spans: Vec<(usize, usize)>,
    with: impl FnOnce(&mut Rng) -> Vec<u8>,
) {
    let (start, end) = if spans.is_empty() {
        let at = rng.upto(data.len());
        (at, at)
    } else {
        *rng.pick(&spans)
    };
    let new = with(rng);
    data.splice(start..end, new);
}

/// A long run of one character or of a short pattern.
fn long_text(rng: &mut Rng) -> Vec<u8> {
    let len = rng.count().max(1);
    let unit = *rng.pick(LONG_UNITS);
    let mut text = unit.repeat(len.div_ceil(unit.len()));
    text.truncate(len);
    text
}

/// Runs of digits, with a leading minus sign.
fn number_spans(data: &[u8]) -> Vec<(usize, usize)> {
    spans(data, |b| b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Runs of characters that make up names, addresses and plain YAML scalars.
fn word_spans(data: &[u8]) -> Vec<(usize, usize)> {
    spans(data, |b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

fn spans(data: &[u8], inside: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    // A trailing separator closes a span that runs to the end.
    for (i, &b) in data.iter().chain(b" ").enumerate() {
        match (start, inside(b)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The contents of double-quoted strings (between the quotes, escapes skipped over).
fn string_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut open = None;
    let mut i = 0;
    while i < data.len() {
        match (data[i], open) {
            (b'\\', Some(_)) => i += 1,
            (b'"', None) => open = Some(i + 1),
            (b'"', Some(start)) => {
                out.push((start, i));
                open = None;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// A line deleted, repeated or moved: YAML structure and KEY=VALUE lists change shape.
fn line_op(rng: &mut Rng, data: &mut Vec<u8>) {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let i = rng.below(lines.len());
    match rng.below(3) {
        0 => {
            lines.remove(i);
        }
        1 => {
            let line = lines[i].clone();
            lines.insert(i, line);
        }
        _ => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
    }
    *data = lines.join(&b'\n');
}
