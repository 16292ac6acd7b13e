//! Wall-clock text for the bodies that carry it (CPIM `DateTime`, IMDN `datetime`), from
//! milliseconds since the Unix epoch. Nothing here reads a clock: callers pass the time.

/// RFC 3339 UTC with milliseconds: `2026-11-25T16:00:00.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let (date, ms) = civil(unix_ms);
    format!("{date}.{ms:03}Z")
}

/// RFC 3339 UTC to the second: `2026-11-25T16:00:00Z`.
pub fn rfc3339_secs(unix_ms: u64) -> String {
    let (date, _) = civil(unix_ms);
    format!("{date}Z")
}

/// `YYYY-MM-DDTHH:MM:SS` and the milliseconds.
fn civil(unix_ms: u64) -> (String, u64) {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        ),
        ms,
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_secs(951_782_400_000), "2000-02-29T00:00:00Z");
        // 2026-11-25T16:00:00Z
        assert_eq!(rfc3339_ms(1_795_622_400_123), "2026-11-25T16:00:00.123Z");
    }
}
