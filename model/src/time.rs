//! Time helpers: the KST business calendar (UTC+9, no daylight saving).

use crate::Millis;

/// KST is UTC+9 all year.
pub const KST_OFFSET_MS: i64 = 9 * 3600 * 1000;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Formats epoch milliseconds as an RFC 3339 UTC timestamp with milliseconds, for humans.
pub fn rfc3339_utc(ms: Millis) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The KST calendar day (days since 1970-01-01 in KST) holding the instant `ms`.
fn kst_day(ms: Millis) -> i64 {
    (ms as i64 + KST_OFFSET_MS).div_euclid(DAY_MS as i64)
}

/// Epoch milliseconds of 00:00 KST of KST day `day`, clamped at 0.
fn kst_day_start(day: i64) -> Millis {
    (day * DAY_MS as i64 - KST_OFFSET_MS).max(0) as Millis
}

/// Start (00:00 KST) of the KST day holding `ms`.
pub fn kst_day_floor(ms: Millis) -> Millis {
    kst_day_start(kst_day(ms))
}

/// Start (Monday 00:00 KST) of the KST week holding `ms` (SPEC §4).
pub fn kst_week_start(ms: Millis) -> Millis {
    let day = kst_day(ms);
    // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) mod 7.
    kst_day_start(day - (day + 3).rem_euclid(7))
}

/// Start of the KST week after the one holding `ms`.
pub fn kst_next_week_start(ms: Millis) -> Millis {
    let day = kst_day(ms);
    kst_day_start(day - (day + 3).rem_euclid(7) + 7)
}

/// Start (the 1st, 00:00 KST) of the KST month holding `ms`.
pub fn kst_month_start(ms: Millis) -> Millis {
    let (y, m, _) = civil_from_days(kst_day(ms));
    kst_day_start(days_from_civil(y, m, 1))
}

/// Start of the KST month after the one holding `ms`.
pub fn kst_next_month_start(ms: Millis) -> Millis {
    let (y, m, _) = civil_from_days(kst_day(ms));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    kst_day_start(days_from_civil(y, m, 1))
}

/// The KST date of `ms` as `YYYY-MM-DD`.
pub fn kst_date(ms: Millis) -> String {
    let (y, m, d) = civil_from_days(kst_day(ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The KST month of `ms` as `YYYY-MM`.
pub fn kst_month(ms: Millis) -> String {
    let (y, m, _) = civil_from_days(kst_day(ms));
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_leap_day() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z
        assert_eq!(rfc3339_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn civil_round_trips() {
        for day in [-800_000, -1, 0, 1, 59, 365, 11_016, 19_782, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn kst_weeks_and_months() {
        // 2024-03-03 (Sunday) 23:59:59.999 KST = 2024-03-03T14:59:59.999Z.
        let sunday_last = 1_709_477_999_999;
        assert_eq!(kst_date(sunday_last), "2024-03-03");
        assert_eq!(kst_date(sunday_last + 1), "2024-03-04");
        // Its week started Monday 2024-02-26 00:00 KST = 2024-02-25T15:00:00Z.
        assert_eq!(kst_week_start(sunday_last), 1_708_873_200_000);
        assert_eq!(kst_next_week_start(sunday_last), sunday_last + 1);
        assert_eq!(kst_week_start(sunday_last + 1), sunday_last + 1);
        assert_eq!(kst_date(kst_week_start(sunday_last)), "2024-02-26");
        // 2024-02-29T15:00:00Z is 2024-03-01 00:00 KST.
        let march = 1_709_218_800_000;
        assert_eq!(kst_month(march - 1), "2024-02");
        assert_eq!(kst_month(march), "2024-03");
        assert_eq!(kst_month_start(march + 5), march);
        assert_eq!(kst_next_month_start(march - 1), march);
        assert_eq!(
            kst_month(kst_next_month_start(1_733_000_000_000)),
            "2025-01"
        );
    }
}
