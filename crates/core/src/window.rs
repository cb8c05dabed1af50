//! `completion_window`: OpenAI accepts `24h`; we accept any whole duration in seconds, minutes,
//! hours or days (`90s`, `30m`, `1h`, `7d`, at most 30 days) so that operators can run shorter
//! or longer jobs.

use std::fmt;
use std::str::FromStr;

/// A validated completion window, kept as the text the client sent plus its length in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionWindow {
    text: String,
    seconds: i64,
}

/// Longest window accepted: 30 days.
const MAX_SECONDS: i64 = 30 * 86_400;

impl CompletionWindow {
    pub fn seconds(&self) -> i64 {
        self.seconds
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for CompletionWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("Invalid completion_window {s:?}: expected a whole number of seconds, minutes, hours or days such as \"24h\", \"1h\", \"30m\" or \"7d\" (at most 30 days)")
        };
        // Every valid window is ASCII; checking it first also keeps `split_at` on a char boundary
        // (a multi-byte last character such as "\u{80}" made it panic).
        if s.len() < 2 || !s.is_ascii() {
            return Err(bad());
        }
        let (digits, unit) = s.split_at(s.len() - 1);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 6 {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let seconds = n * unit_secs;
        if n == 0 || seconds > MAX_SECONDS {
            return Err(bad());
        }
        Ok(CompletionWindow { text: s.to_string(), seconds })
    }
}

impl fmt::Display for CompletionWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_durations() {
        assert_eq!("24h".parse::<CompletionWindow>().unwrap().seconds(), 86_400);
        assert_eq!("1h".parse::<CompletionWindow>().unwrap().seconds(), 3600);
        assert_eq!("7d".parse::<CompletionWindow>().unwrap().seconds(), 7 * 86_400);
        assert_eq!("30m".parse::<CompletionWindow>().unwrap().seconds(), 1800);
        assert_eq!("90s".parse::<CompletionWindow>().unwrap().seconds(), 90);
        for bad in ["", "h", "0h", "1.5h", "24", "-1h", "31d", "1w", "24 h", "\u{80}", "1\u{e9}", "24h\u{3a057}"] {
            assert!(bad.parse::<CompletionWindow>().is_err(), "{bad}");
        }
    }
}
