//! How numbers and times read on screen: sizes in binary units, rates, ages, local times and
//! text bars. Pure functions of their arguments (the local time takes the UTC offset), so
//! screens render the same in tests on any machine.

/// A size in binary units: `512 B`, `73.1 MiB`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut size = value as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// A rate: `12.0 MiB/s`.
pub fn rate(bytes_per_second: u64) -> String {
    format!("{}/s", bytes(bytes_per_second))
}

/// A length of time, coarsely: `45s`, `3m 20s`, `2h 05m`, `3d 4h`.
pub fn age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// A Unix time as local time, `2026-11-25 17:50:20`.
pub fn local_time(secs: i64, utc_offset: i32) -> String {
    chrono::DateTime::from_timestamp(secs + i64::from(utc_offset), 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// A Unix time as local time of day when it is today, else as a date: `17:50:20`,
/// `2026-11-24`.
pub fn short_time(secs: i64, now: i64, utc_offset: i32) -> String {
    let full = local_time(secs, utc_offset);
    let today = local_time(now, utc_offset);
    match (full.split_once(' '), today.split_once(' ')) {
        (Some((day, time)), Some((this_day, _))) if day == this_day => time.to_owned(),
        (Some((day, _)), _) => day.to_owned(),
        _ => full,
    }
}

/// When something next happens, relative to now: `in 3h 05m`, `-` for never.
pub fn next_time(secs: Option<i64>, now: i64) -> String {
    secs.map_or_else(|| "-".into(), |t| format!("in {}", age(t - now)))
}

/// A bar of `width` cells filled to `fraction` (0 to 1), in eighths of a cell.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut text = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        text.push(PARTS[eighths % 8]);
    }
    let used = text.chars().count();
    text.push_str(&" ".repeat(width.saturating_sub(used)));
    text
}

/// `part / whole` as a fraction, 0 when `whole` is 0.
pub fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let ratio = part as f64 / whole as f64;
        ratio.clamp(0.0, 1.0)
    }
}

/// A fraction as a whole percentage: `61%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

/// A latency in milliseconds, `-` without operations.
pub fn millis(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(76_640_256), "73.1 MiB");
        assert_eq!(rate(4 << 20), "4.0 MiB/s");
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(age(-5), "0s");
        assert_eq!(age(200), "3m 20s");
        assert_eq!(age(7500), "2h 05m");
        assert_eq!(age(3 * 86400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn times_are_local_by_the_given_offset() {
        assert_eq!(local_time(1_795_629_020, 0), "2026-11-25 17:50:20");
        assert_eq!(local_time(1_795_629_020, 3600), "2026-11-25 18:50:20");
        assert_eq!(short_time(1_795_629_020, 1_795_629_100, 0), "17:50:20");
        assert_eq!(short_time(1_795_529_020, 1_795_629_100, 0), "2026-11-24");
    }

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.0 / 32.0, 4), "▏   ");
    }
}
