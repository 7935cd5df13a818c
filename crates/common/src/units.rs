//! Human units: sizes (`512m`, `2g`, `1.5GiB`) and durations (`90s`, `5m`, `1h30m`).

use std::time::Duration;

/// A size or duration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// Parses a byte size: a number with an optional unit `b`, `k`, `m`, `g`, `t`
/// (powers of 1024; `kb`, `kib`, `mb`, `mib`… are accepted too). A bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let bad = || {
        UnitError(format!(
            "invalid size '{text}': expected a number with an optional unit, like 512m or 2g"
        ))
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(UnitError(format!("size '{text}' is too large")));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration: one or more `<number><unit>` parts with units `ms`, `s`,
/// `m`, `h`, `d` (`90s`, `5m`, `1h30m`). A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim().to_ascii_lowercase();
    let bad = || {
        UnitError(format!(
            "invalid duration '{text}': expected something like 90s, 5m or 1h30m"
        ))
    };
    if trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed.as_str();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" | "sec" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86_400.0,
            _ => return Err(bad()),
        };
        // Parts can each be in range and still overflow together.
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = next;
    }
    Ok(total)
}

/// Formats a byte count with a binary unit, e.g. `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a duration compactly: `45s`, `3m12s`, `2h05m`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// A moment (ms since the Unix epoch) as `2026-12-02 13:45:07 UTC`; a moment
/// out of the calendar's range as its raw number.
pub fn format_millis_utc(millis: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)) else {
        return format!("{millis} ms after the epoch");
    };
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A pull's progress in one line for people: `pulling 43% (1.2 of 2.8 GiB)`,
/// or the layer count while no size is known yet, then the latest note.
pub fn describe_pull(progress: &cloudai_proto::v1::TaskProgress) -> String {
    let mut text = if progress.bytes_total > 0 {
        let done = progress.bytes_done.min(progress.bytes_total);
        let percent = u128::from(done) * 100 / u128::from(progress.bytes_total);
        let (done, total) = (format_bytes(done), format_bytes(progress.bytes_total));
        // "1.2 of 2.8 GiB": the unit once when both share it.
        let done = match (done.rsplit_once(' '), total.rsplit_once(' ')) {
            (Some((number, unit)), Some((_, same))) if unit == same => number.to_string(),
            _ => done,
        };
        format!("{} {percent}% ({done} of {total})", progress.phase)
    } else if progress.layers_total > 0 {
        format!(
            "{} ({} of {} layers)",
            progress.phase, progress.layers_done, progress.layers_total
        )
    } else {
        progress.phase.clone()
    };
    if !progress.message.is_empty() {
        text.push_str(": ");
        text.push_str(&progress.message);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_in_utc() {
        assert_eq!(format_millis_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_millis_utc(1_796_218_507_999),
            "2026-12-02 13:35:07 UTC"
        );
        assert!(format_millis_utc(i64::MAX).contains("epoch"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert!(parse_size("").is_err());
        assert!(parse_size("-5m").is_err());
        assert!(parse_size("12q").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn durations_that_overflow_together_are_refused() {
        // Found by the units_and_validation fuzz target: each part fits in a
        // Duration, their sum does not (it panicked on `+=`).
        let part = "10000000000000000000s";
        assert!(parse_duration(part).is_ok());
        let error = parse_duration(&format!("{part}{part}")).unwrap_err();
        assert!(error.to_string().contains("invalid duration"), "{error}");
        let found = std::fs::read("../../fuzz/regressions/units_and_validation/duration-overflow")
            .expect("the fuzzer's input is kept");
        assert!(parse_duration(&String::from_utf8_lossy(&found)).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h05m");
    }
}
