//! APDU scripts: scriptor's syntax plus expectations that scriptor ignores.
//!
//! The same file runs in-process (`card-sim run`) and through PC/SC under `scriptor`
//! (`card-sim check-scriptor` then compares scriptor's output with the expectations), so
//! the parser follows `scriptor` (pcsc-tools) line by line: blank lines and lines starting
//! with `#` are skipped; a line containing `exit` (any case, anywhere) ends the script; a
//! line containing `reset` resets the card; hex without spaces is read two digits at a
//! time; a trailing `\` continues the APDU on the next line.
//!
//! Expectations are column-0 comments after the APDU they check:
//!
//! ```text
//! 00 A4 04 00 07 F0 50 53 44 00 00 01
//! # expect 9000
//! 80 32 00 05 00
//! # expect 6A88
//! 80 CA 00 01 01
//! # expect 61XX          (X: any hex digit)
//! # expect-data 00       (response data, without the status word)
//! ```

use std::fmt;

/// What a response must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The status word, `X` nibbles matching anything: (value, mask).
    Sw(u16, u16),
    /// The response data (without SW1 SW2).
    Data(Vec<u8>),
}

impl Expect {
    fn check(&self, response: &[u8]) -> bool {
        let n = response.len();
        if n < 2 {
            return false;
        }
        match self {
            Expect::Sw(value, mask) => {
                u16::from_be_bytes([response[n - 2], response[n - 1]]) & mask == *value
            }
            Expect::Data(data) => response[..n - 2] == data[..],
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Sw(value, mask) => {
                for shift in [12, 8, 4, 0] {
                    if (mask >> shift) & 0xF == 0 {
                        f.write_str("X")?;
                    } else {
                        write!(f, "{:X}", (value >> shift) & 0xF)?;
                    }
                }
                Ok(())
            }
            Expect::Data(d) => write!(f, "data {}", hex_spaced(d)),
        }
    }
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send an APDU; `line` is where it starts.
    Apdu {
        /// 1-based line number of the APDU's first line.
        line: usize,
        /// The bytes.
        apdu: Vec<u8>,
        /// What the response must satisfy.
        expect: Vec<Expect>,
    },
    /// Reset the card (`reset`).
    Reset {
        /// 1-based line number.
        line: usize,
    },
}

/// A line scriptor would choke on, or an expectation we cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a script.
pub fn parse(text: &str) -> Result<Vec<Step>, ParseError> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ParseError { line, message };
        if raw.to_ascii_lowercase().contains("exit") {
            break;
        }
        if raw.trim().is_empty() {
            continue;
        }
        if let Some(comment) = raw.strip_prefix('#') {
            if let Some(expect) = parse_expectation(comment).map_err(err)? {
                match (&pending, steps.last_mut()) {
                    (None, Some(Step::Apdu { expect: list, .. })) => list.push(expect),
                    _ => return Err(err("expectation without an APDU before it".into())),
                }
            }
            continue;
        }
        if raw.to_ascii_lowercase().contains("reset") {
            if pending.is_some() {
                return Err(err("reset inside a continued APDU".into()));
            }
            steps.push(Step::Reset { line });
            continue;
        }
        if raw.contains('#') {
            return Err(err(
                "'#' is only allowed in column 0 (scriptor aborts otherwise)".into(),
            ));
        }
        let (body, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        let entry = pending.get_or_insert_with(|| (line, String::new()));
        entry.1.push(' ');
        entry.1.push_str(body);
        if !continues {
            let (start, text) = pending.take().unwrap_or_default();
            let apdu = parse_hex(&text).map_err(|m| ParseError {
                line: start,
                message: m,
            })?;
            steps.push(Step::Apdu {
                line: start,
                apdu,
                expect: Vec::new(),
            });
        }
    }
    if let Some((line, _)) = pending {
        return Err(ParseError {
            line,
            message: "APDU continued with '\\' but never ended".into(),
        });
    }
    Ok(steps)
}

fn parse_expectation(comment: &str) -> Result<Option<Expect>, String> {
    let comment = comment.trim();
    if let Some(rest) = comment.strip_prefix("expect-data") {
        return parse_hex(rest).map(|d| Some(Expect::Data(d)));
    }
    let Some(rest) = comment.strip_prefix("expect ") else {
        return Ok(None);
    };
    let sw: String = rest.split_whitespace().collect();
    if sw.len() != 4 {
        return Err(format!(
            "'# expect {rest}': a status word is 4 hex digits, e.g. 9000 or 61XX"
        ));
    }
    let (mut value, mut mask) = (0u16, 0u16);
    for c in sw.chars() {
        value <<= 4;
        mask <<= 4;
        if c == 'X' || c == 'x' {
            continue;
        }
        let d = c
            .to_digit(16)
            .and_then(|d| u16::try_from(d).ok())
            .ok_or_else(|| format!("'{c}' in status word '{sw}'"))?;
        value |= d;
        mask |= 0xF;
    }
    Ok(Some(Expect::Sw(value, mask)))
}

/// Hex bytes, spaced or not (scriptor reads unspaced hex two digits at a time).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.split_whitespace().collect();
    if text.split_whitespace().any(|t| !t.len().is_multiple_of(2)) {
        return Err(format!("'{}' is not a sequence of hex bytes", text.trim()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("'{}' is not a hex byte", &digits[i..i + 2]))
        })
        .collect()
}

/// Bytes as `00 A4 04 00`.
pub fn hex_spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first response that did not meet its expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Line of the APDU.
    pub line: usize,
    /// The APDU sent.
    pub apdu: Vec<u8>,
    /// The expectation not met.
    pub expected: Expect,
    /// The response that came (data and status word), if any.
    pub got: Option<Vec<u8>>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: > {}\n  expected {}\n  got      ",
            self.line,
            hex_spaced(&self.apdu),
            self.expected
        )?;
        match &self.got {
            Some(r) => write!(f, "{}", hex_spaced(r)),
            None => f.write_str("no response"),
        }
    }
}

/// Summary of a run that met every expectation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// APDUs sent.
    pub apdus: usize,
    /// Expectations checked.
    pub expectations: usize,
    /// Resets done.
    pub resets: usize,
}

/// Runs `steps` with `transmit` (APDU → response APDU) and `reset`, stopping at the first
/// response that misses an expectation.
pub fn run(
    steps: &[Step],
    mut transmit: impl FnMut(&[u8]) -> Vec<u8>,
    mut reset: impl FnMut(),
) -> Result<Report, Mismatch> {
    let mut report = Report::default();
    for step in steps {
        match step {
            Step::Reset { .. } => {
                reset();
                report.resets += 1;
            }
            Step::Apdu { line, apdu, expect } => {
                let response = transmit(apdu);
                report.apdus += 1;
                check(*line, apdu, expect, Some(&response))?;
                report.expectations += expect.len();
            }
        }
    }
    Ok(report)
}

fn check(
    line: usize,
    apdu: &[u8],
    expect: &[Expect],
    response: Option<&[u8]>,
) -> Result<(), Mismatch> {
    for e in expect {
        if !response.is_some_and(|r| e.check(r)) {
            return Err(Mismatch {
                line,
                apdu: apdu.to_vec(),
                expected: e.clone(),
                got: response.map(<[u8]>::to_vec),
            });
        }
    }
    Ok(())
}

/// Checks `scriptor`'s output for `steps`: each `> APDU` must be the script's next APDU
/// and its `< bytes : text` response must meet the expectations.
pub fn check_scriptor_output(steps: &[Step], output: &str) -> Result<Report, Mismatch> {
    let exchanges = parse_scriptor_output(output);
    let mut report = Report::default();
    let mut got = exchanges.into_iter();
    for step in steps {
        match step {
            Step::Reset { .. } => {
                report.resets += 1;
                // scriptor prints "> RESET" / "< OK: <ATR>"; it is consumed as an exchange.
                got.next();
            }
            Step::Apdu { line, apdu, expect } => {
                let next = got.next();
                let response = match next {
                    Some((sent, resp)) if sent == *apdu => Some(resp),
                    _ => None,
                };
                report.apdus += 1;
                if response.is_none() {
                    return Err(Mismatch {
                        line: *line,
                        apdu: apdu.clone(),
                        expected: expect.first().cloned().unwrap_or(Expect::Sw(0, 0)),
                        got: None,
                    });
                }
                check(*line, apdu, expect, response.as_deref())?;
                report.expectations += expect.len();
            }
        }
    }
    Ok(report)
}

/// (sent, received) pairs from scriptor's output; RESET lines give empty pairs.
fn parse_scriptor_output(output: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut sent: Option<Vec<u8>> = None;
    let mut received = String::new();
    let mut in_response = false;
    for line in output.lines() {
        if let Some(cmd) = line.strip_prefix("> ") {
            sent = Some(if cmd.trim() == "RESET" {
                Vec::new()
            } else {
                parse_hex(cmd).unwrap_or_default()
            });
            continue;
        }
        let body = match line.strip_prefix("< ") {
            Some(b) => {
                in_response = true;
                received.clear();
                b
            }
            None if in_response => line,
            None => continue,
        };
        if body.starts_with("OK:") || body.starts_with("KO:") {
            out.push((sent.take().unwrap_or_default(), Vec::new()));
            in_response = false;
            continue;
        }
        match body.split_once(" : ") {
            Some((hex, _status)) => {
                received.push_str(hex);
                out.push((
                    sent.take().unwrap_or_default(),
                    parse_hex(&received).unwrap_or_default(),
                ));
                in_response = false;
            }
            None => {
                received.push(' ');
                received.push_str(body);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "# a comment\n00 A4 04 00 07 F0 50 53 44 00 00 01\n# expect 9000\n\n80CA000100\n# expect 9000\n# expect-data 00\n80 32 00 00 \\\n 00\n# expect 69XX\nreset\n80 20 00 00\n# expect 6D00\nexit\n80 20 00 00\n";

    #[test]
    fn parses_scriptor_syntax_and_expectations() {
        let steps = parse(SCRIPT).unwrap();
        assert_eq!(steps.len(), 5, "stops at exit: {steps:?}");
        assert_eq!(
            steps[0],
            Step::Apdu {
                line: 2,
                apdu: vec![0, 0xA4, 4, 0, 7, 0xF0, 0x50, 0x53, 0x44, 0, 0, 1],
                expect: vec![Expect::Sw(0x9000, 0xFFFF)]
            }
        );
        assert_eq!(
            steps[1],
            Step::Apdu {
                line: 5,
                apdu: vec![0x80, 0xCA, 0, 1, 0],
                expect: vec![Expect::Sw(0x9000, 0xFFFF), Expect::Data(vec![0])]
            }
        );
        assert_eq!(
            steps[2],
            Step::Apdu {
                line: 8,
                apdu: vec![0x80, 0x32, 0, 0, 0],
                expect: vec![Expect::Sw(0x6900, 0xFF00)]
            }
        );
        assert_eq!(steps[3], Step::Reset { line: 11 });
    }

    #[test]
    fn refuses_what_scriptor_would_not_run() {
        assert_eq!(parse("00 A4 04 00 # select").unwrap_err().line, 1);
        assert_eq!(parse("# expect 9000\n").unwrap_err().line, 1);
        assert!(parse("00 A4 0\n").is_err());
        assert!(parse("00 A4 04 00 \\\n").is_err());
        assert!(parse("00A4\n# expect 90\n").is_err());
    }

    #[test]
    fn run_stops_at_the_first_mismatch_with_line_and_response() {
        let steps =
            parse("80 20 00 00\n# expect 6D00\n80 20 00 01\n# expect 9000\n80 20 00 02\n").unwrap();
        let mut sent = 0;
        let m = run(
            &steps,
            |_| {
                sent += 1;
                vec![0x6D, 0x00]
            },
            || {},
        )
        .unwrap_err();
        assert_eq!((m.line, m.got.clone()), (3, Some(vec![0x6D, 0x00])));
        assert_eq!(sent, 2);
        assert!(m.to_string().contains("expected 9000"), "{m}");
    }

    #[test]
    fn reads_scriptor_output() {
        let steps = parse("00 A4 04 00 02 3F 00\n# expect 6A82\nreset\n80 CA 00 01 00\n# expect-data 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10\n# expect 9000\n").unwrap();
        let output = "Using T=1 protocol\n> 00 A4 04 00 02 3F 00\n< 6A 82 : Wrong parameter(s) P1-P2.\n> RESET\n< OK: 3B 88 80 01 \n> 80 CA 00 01 00\n< 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F \n10 90 00 : Normal processing.\n";
        assert_eq!(
            check_scriptor_output(&steps, output).unwrap().expectations,
            3
        );
        let wrong = output.replace("10 90 00", "11 90 00");
        assert_eq!(check_scriptor_output(&steps, &wrong).unwrap_err().line, 4);
        let short = "> 00 A4 04 00 02 3F 00\n< 6A 82 : x\n";
        assert_eq!(check_scriptor_output(&steps, short).unwrap_err().got, None);
    }
}
