//! The daemon's log: the `log` facade's records, on stderr with a UTC timestamp, or to syslog
//! (`--syslog`, the local `/dev/log` socket, facility `daemon`).
//!
//! The library crates log through the facade too (a refused request or a broken ring at `warn`,
//! each request at `trace`); this module only decides where records go and which pass. When
//! syslog cannot be reached the log stays on stderr and says so once, so a launcher that asks
//! for syslog on a host without it still gets a running daemon. Which records pass is
//! [`log_filter`](crate::log_filter)'s.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::LogLevel;
use crate::log_filter::Filter;

/// Where records go.
enum Sink {
    Stderr,
    Syslog(Mutex<UnixDatagram>),
}

struct Logger {
    sink: Sink,
    pid: u32,
    filter: Filter,
}

/// The facade's filter for a `--log-level`.
fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// Installs the logger; call once, before any thread starts. `RUST_LOG`, when set, overrides
/// `level`. Returns whether records go to syslog (asked for and reached).
pub(crate) fn init(level: LogLevel, syslog: bool) -> bool {
    let (filter, refused) = match std::env::var("RUST_LOG") {
        Ok(spec) => match Filter::parse(&spec, filter(level)) {
            Ok(filter) => (filter, None),
            Err(error) => (Filter::level(filter(level)), Some(error)),
        },
        Err(_) => (Filter::level(filter(level)), None),
    };
    let mut fallback = None;
    let sink = if syslog {
        // Never waiting: a syslog daemon that stops reading (hung, restarting) must not hold
        // every thread that logs; a record it has no room for is dropped.
        let connected = UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match connected {
            Ok(socket) => Sink::Syslog(Mutex::new(socket)),
            Err(error) => {
                fallback = Some(error);
                Sink::Stderr
            }
        }
    } else {
        Sink::Stderr
    };
    let max = filter.max();
    let to_syslog = matches!(sink, Sink::Syslog(_));
    let logger = Logger { sink, pid: std::process::id(), filter };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    if let Some(error) = refused {
        log::warn!("{error}; logging at --log-level instead");
    }
    if let Some(error) = fallback {
        log::warn!("--syslog: /dev/log: {error}; logging to stderr instead");
    }
    to_syslog
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level().as_str().to_ascii_lowercase();
        match &self.sink {
            Sink::Stderr => {
                let line = format!("{} vhu-fsd: {level}: {}\n", timestamp(), record.args());
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog(socket) => {
                // RFC 3164: <facility * 8 + severity>; facility 3 is `daemon`.
                let severity = match record.level() {
                    Level::Error => 3,
                    Level::Warn => 4,
                    Level::Info => 6,
                    Level::Debug | Level::Trace => 7,
                };
                let line =
                    format!("<{}>vhu-fsd[{}]: {level}: {}", 24 + severity, self.pid, record.args());
                let socket = socket.lock().unwrap_or_else(|e| e.into_inner());
                let _ = socket.send(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// The time now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

/// `secs` since the epoch as a UTC date and time (days to civil date: Howard Hinnant's
/// algorithm from "chrono-Compatible Low-Level Date Algorithms").
fn format_utc(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_796_428_799, 999), "2026-12-04T23:59:59.999Z");
        assert_eq!(format_utc(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }
}
