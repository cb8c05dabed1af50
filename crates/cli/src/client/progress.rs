//! What the client shows while it works: whether it may draw bars and ask questions (only on a
//! terminal), the byte bar of uploads and downloads, and the live bar of a followed batch with
//! its counts, rate and ETA.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::wire::Batch;

const TICK: Duration = Duration::from_millis(120);
/// The request rate is measured over this much recent history.
const RATE_WINDOW: Duration = Duration::from_secs(15);

/// The terminal's capabilities, decided once per command.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Bars and human notes on stderr: stdout and stderr are terminals and `--json` is off.
    pub bars: bool,
    /// Questions (y/N) may be asked: stdin and stderr are terminals.
    pub can_ask: bool,
    /// `--json`: stdout carries only the API's objects.
    pub json: bool,
}

impl Ui {
    pub fn new(json: bool) -> Ui {
        let stderr = std::io::stderr().is_terminal();
        Ui {
            bars: !json && stderr && std::io::stdout().is_terminal(),
            can_ask: stderr && std::io::stdin().is_terminal(),
            json,
        }
    }

    /// A human note on stderr, shown only on a terminal (scripts get only the result).
    pub fn note(&self, msg: impl AsRef<str>) {
        if self.bars {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A bar counting `len` bytes (unknown length: a spinner with the count).
    pub fn bytes_bar(&self, len: Option<u64>, what: String) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let (bar, template) = match len {
            Some(len) => (
                ProgressBar::new(len),
                "{spinner:.cyan} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ),
            None => (ProgressBar::no_length(), "{spinner:.cyan} {msg} {bytes} {bytes_per_sec}"),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(style(template));
        bar.set_message(what);
        bar.enable_steady_tick(TICK);
        bar
    }

    /// The live bar of a followed batch.
    pub fn batch_bar(&self) -> BatchBar {
        let bar = if self.bars {
            let bar = ProgressBar::no_length();
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(style(WAITING));
            bar.enable_steady_tick(TICK);
            bar
        } else {
            ProgressBar::hidden()
        };
        BatchBar { bar, counting: false, samples: VecDeque::new() }
    }
}

/// Before the batch has a total (validating): a spinner, the status and the time so far.
const WAITING: &str = "{spinner:.cyan} {msg} [{elapsed}]";
/// Once it has one: the bar, done/total, then status, counts, rate and ETA in the message.
const COUNTING: &str = "{spinner:.cyan} [{bar:30.cyan/blue}] {pos}/{len} {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid progress template").progress_chars("=> ")
}

/// The bar of a followed batch; [`BatchBar::update`] takes each polled Batch object.
pub struct BatchBar {
    bar: ProgressBar,
    counting: bool,
    /// (when, requests done) of recent polls, for the rate and the ETA.
    samples: VecDeque<(Instant, u64)>,
}

impl BatchBar {
    pub fn update(&mut self, b: &Batch) {
        let c = b.request_counts;
        let now = Instant::now();
        self.samples.push_back((now, c.done()));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, _)| now - *t > RATE_WINDOW) {
            self.samples.pop_front();
        }
        if c.total > 0 && !self.counting {
            self.counting = true;
            self.bar.set_style(style(COUNTING));
        }
        if self.counting {
            self.bar.set_length(c.total);
            self.bar.set_position(c.done().min(c.total));
        }
        let mut msg = format!("{}  ok {}  failed {}", b.status, c.completed, c.failed);
        if let Some(rate) = self.rate().filter(|_| !b.is_terminal() && c.total > 0) {
            msg.push_str(&format!("  {rate:.1} req/s"));
            if rate > 0.0 {
                let left = c.total.saturating_sub(c.done()) as f64 / rate;
                msg.push_str(&format!("  ETA {}", humantime::format_duration(Duration::from_secs(left.ceil() as u64))));
            }
        }
        self.bar.set_message(msg);
    }

    /// Requests per second over the recent polls (none until two polls a moment apart).
    fn rate(&self) -> Option<f64> {
        let (t0, n0) = self.samples.front()?;
        let (t1, n1) = self.samples.back()?;
        let secs = (*t1 - *t0).as_secs_f64();
        (secs >= 0.5).then(|| n1.saturating_sub(*n0) as f64 / secs)
    }

    /// Shows a transient problem in place of the counts.
    pub fn warn(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Stops the bar and leaves its last state on the screen.
    pub fn stop(&self) {
        self.bar.disable_steady_tick();
        self.bar.abandon();
    }

    /// Stops the bar after Ctrl-C. The terminal has already echoed `^C` after the bar, which
    /// indicatif pads to the full width, so the echo wrapped to a line of its own: clearing the
    /// bar's "current" line erases that echo, keeps the last state above, and leaves the
    /// cursor at the start of a fresh line.
    pub fn interrupted(&self) {
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
    }
}
