//! The lines of a check and how they are printed.

use std::io::{self, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but worth knowing (e.g. no native sidecars, a certificate expiring soon).
    Warn,
    Fail,
}

/// One answered question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub header: String,
    pub lines: Vec<Line>,
}

impl Line {
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Line {
        Line::new(Verdict::Ok, subject, detail)
    }

    pub fn warn(subject: impl Into<String>, detail: impl Into<String>) -> Line {
        Line::new(Verdict::Warn, subject, detail)
    }

    pub fn fail(subject: impl Into<String>, detail: impl Into<String>) -> Line {
        Line::new(Verdict::Fail, subject, detail)
    }

    fn new(verdict: Verdict, subject: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            verdict,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

impl Report {
    pub fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    pub fn extend(&mut self, lines: impl IntoIterator<Item = Line>) {
        self.lines.extend(lines);
    }

    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }

    fn count(&self, v: Verdict) -> usize {
        self.lines.iter().filter(|l| l.verdict == v).count()
    }

    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        if !self.header.is_empty() {
            writeln!(out, "{}\n", self.header)?;
        }
        for l in &self.lines {
            let mark = match l.verdict {
                Verdict::Ok => "[ok]  ",
                Verdict::Warn => "[warn]",
                Verdict::Fail => "[FAIL]",
            };
            writeln!(out, "{mark} {}: {}", l.subject, l.detail)?;
        }
        writeln!(
            out,
            "\n{} ok, {} warnings, {} failed",
            self.count(Verdict::Ok),
            self.count(Verdict::Warn),
            self.failed()
        )
    }
}
