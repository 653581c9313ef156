//! The schedule grammar of Kubernetes CronJobs: `spec.schedule` and `spec.timeZone`, one parser
//! for the validation of CronJobs and for the CronJob controller.
//!
//! Upstream's CronJob controller parses `spec.schedule` with robfig/cron v3's standard parser and
//! asks its `Next` for activation times. This module follows both, quirks included:
//!
//! - Five whitespace-separated fields: minute, hour, day of month, month (`JAN`-`DEC`) and day of
//!   week (`SUN`-`SAT`, 0-6; 7 is out of range). Items are `*`, `?`, a number or name, `a-b`,
//!   `*/n`, `a-b/n` and `a/n` (`a` through the field's maximum), joined by commas.
//! - Descriptors `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`,
//!   and `@every <Go duration>` (a fixed interval, whole seconds, at least one second).
//! - When both day fields are restricted a day matches if either does; otherwise both must match.
//! - `Next` walks the wall clock of the zone: a time inside a spring-forward gap is skipped, and a
//!   time inside a fall-back overlap fires in both passes (robfig's own tests say "runs twice").
//! - No activation within five years of the search start means none at all.
//!
//! Like Kubernetes validation, any schedule containing `TZ` (so the `TZ=` and `CRON_TZ=`
//! prefixes) is rejected; the zone comes from `spec.timeZone` through [`time_zone`].

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

/// [`most_recent`] stops counting missed activations here; upstream warns "too many missed start
/// times" once more than 100 were missed.
pub const MISSED_LIMIT: u32 = 101;

/// Why a schedule or time zone was refused. The messages follow robfig/cron (and Go's `strconv`
/// and `time` packages inside them); Kubernetes prints them as
/// `spec.schedule: Invalid value: "<schedule>": <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule string is empty.
    #[error("empty spec string")]
    Empty,
    /// The schedule contains `TZ` (as in `TZ=...` or `CRON_TZ=...`).
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    /// The schedule starts with `@` but names no known descriptor.
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
    /// `@every` is followed by something that is not a Go duration; `reason` is Go's message.
    #[error("failed to parse duration {descriptor}: {reason}")]
    InvalidDuration { descriptor: String, reason: String },
    /// The schedule does not have exactly five fields; holds the fields it has.
    #[error("expected exactly 5 fields, found {}: [{}]", .0.len(), .0.join(" "))]
    FieldCount(Vec<String>),
    /// A range item has more than one `-`.
    #[error("too many hyphens: {0}")]
    TooManyHyphens(String),
    /// An item has more than one `/`.
    #[error("too many slashes: {0}")]
    TooManySlashes(String),
    /// A value is neither a number nor one of the field's names; `reason` is Go's `strconv` reason.
    #[error("failed to parse int from {text}: strconv.Atoi: parsing {text:?}: {reason}")]
    InvalidNumber { text: String, reason: &'static str },
    /// A step is negative.
    #[error("negative number ({value}) not allowed: {text}")]
    NegativeNumber { value: i64, text: String },
    /// A range starts below the field's minimum.
    #[error("beginning of range ({start}) below minimum ({min}): {item}")]
    BelowMinimum { start: u64, min: u64, item: String },
    /// A range ends above the field's maximum.
    #[error("end of range ({end}) above maximum ({max}): {item}")]
    AboveMaximum { end: u64, max: u64, item: String },
    /// A range starts after it ends.
    #[error("beginning of range ({start}) beyond end of range ({end}): {item}")]
    StartAfterEnd { start: u64, end: u64, item: String },
    /// A step is zero.
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    /// `spec.timeZone` names no zone in the IANA database.
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
    /// `spec.timeZone` is `Local`, which Kubernetes refuses.
    #[error("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")]
    LocalTimeZone,
}

/// A parsed CronJob schedule; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

/// What a schedule fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Five fields, written out or standing behind a descriptor such as `@daily`.
    Fields(Fields),
    /// `@every`: this many whole seconds (at least one) after the previous time.
    Every(i64),
}

/// The five fields as bitsets: bit `n` is set when value `n` matches. [`STAR`] marks a field
/// that had a `*` or `?` item without a step above one; only the day fields consult it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    day_of_month: u64,
    month: u64,
    day_of_week: u64,
}

/// The wildcard marker bit, above every value any field can hold.
const STAR: u64 = 1 << 63;

/// The values a field accepts; `names[i]` stands for `min + i`.
struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DAYS_OF_MONTH: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds { min: 1, max: 12, names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"] };
const DAYS_OF_WEEK: Bounds = Bounds { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// The fixed descriptors and the five fields each stands for.
const DESCRIPTORS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses `spec.schedule`: five fields or a descriptor. A schedule containing `TZ` is refused,
    /// as Kubernetes validation refuses it; the zone belongs in `spec.timeZone`.
    pub fn parse(spec: &str) -> Result<Schedule, ScheduleError> {
        if spec.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if spec.contains("TZ") {
            return Err(ScheduleError::TimeZoneInSchedule);
        }
        let kind = if spec.starts_with('@') { parse_descriptor(spec)? } else { Kind::Fields(Fields::parse(spec)?) };
        Ok(Schedule { kind })
    }

    /// The first activation strictly after `after`, in `tz` (DST handled like robfig: a local
    /// time that does not exist in the gap is skipped; one that repeats in the overlap fires in
    /// both passes). `None` when nothing matches within five years.
    pub fn next_after(&self, after: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
        let second = match self.kind {
            Kind::Fields(fields) => fields.next_after(floor_second(after), tz)?,
            Kind::Every(interval) => floor_second(after).checked_add(interval)?,
        };
        Timestamp::from_second(second).ok()
    }
}

/// Resolves `spec.timeZone`: `None` or `""` is UTC, otherwise an IANA name spelled exactly as in
/// the database (Go's lookup is case-sensitive, so `america/new_york` is unknown).
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, ScheduleError> {
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return Ok(TimeZone::UTC);
    };
    let unknown = || ScheduleError::UnknownTimeZone(name.to_string());
    if !name.split('/').all(is_zone_name_part) {
        return Err(unknown());
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(ScheduleError::LocalTimeZone);
    }
    match TimeZone::get(name) {
        Ok(tz) if tz.iana_name() == Some(name) => Ok(tz),
        _ => Err(unknown()),
    }
}

/// Upstream's helper for missed runs: the most recent scheduled time in (earliest, now], and how
/// many were missed in that window, counting stops at [`MISSED_LIMIT`] (so 101 means "more than
/// 100"). `@every` activations are counted from `earliest`, as repeated `next_after` would.
pub fn most_recent(schedule: &Schedule, tz: &jiff::tz::TimeZone, earliest: jiff::Timestamp, now: jiff::Timestamp) -> (Option<jiff::Timestamp>, u32) {
    match schedule.kind {
        Kind::Every(interval) => every_most_recent(interval, earliest, now),
        Kind::Fields(_) => fields_most_recent(schedule, tz, earliest, now),
    }
}

/// [`most_recent`] for `@every`: activations are `floor(earliest) + k * interval` for `k >= 1`.
fn every_most_recent(interval: i64, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, u32) {
    let base = floor_second(earliest);
    let elapsed = floor_second(now) - base;
    if elapsed < interval {
        return (None, 0);
    }
    let missed = elapsed / interval;
    let latest = Timestamp::from_second(base + missed * interval).ok();
    (latest, u32::try_from(missed).unwrap_or(u32::MAX).min(MISSED_LIMIT))
}

/// [`most_recent`] for field schedules: walks activations one by one up to the limit, then jumps
/// to the latest one before `now`.
fn fields_most_recent(schedule: &Schedule, tz: &TimeZone, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, u32) {
    let (mut latest, mut missed, mut cursor) = (None, 0, earliest);
    while missed < MISSED_LIMIT {
        match schedule.next_after(cursor, tz) {
            Some(at) if at <= now => (latest, missed, cursor) = (Some(at), missed + 1, at),
            _ => return (latest, missed),
        }
    }
    (latest_in(schedule, tz, cursor, now).or(latest), missed)
}

/// The latest activation in (floor, now], found by searching windows that end at `now` and double
/// in width, so the cost follows the schedule's density near `now`, not the window's length.
fn latest_in(schedule: &Schedule, tz: &TimeZone, floor: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let mut width: i64 = 60;
    loop {
        let start = now.checked_sub(SignedDuration::from_secs(width)).ok().filter(|start| *start > floor).unwrap_or(floor);
        let (mut latest, mut cursor) = (None, start);
        while let Some(at) = schedule.next_after(cursor, tz).filter(|at| *at <= now) {
            (latest, cursor) = (Some(at), at);
        }
        if latest.is_some() || start == floor {
            return latest;
        }
        width = width.saturating_mul(2);
    }
}

/// Parses a descriptor: one of [`DESCRIPTORS`] exactly, or `@every ` and a Go duration.
fn parse_descriptor(spec: &str) -> Result<Kind, ScheduleError> {
    if let Some((_, fields)) = DESCRIPTORS.iter().find(|(name, _)| *name == spec) {
        return Ok(Kind::Fields(Fields::parse(fields)?));
    }
    let Some(duration) = spec.strip_prefix("@every ") else {
        return Err(ScheduleError::UnknownDescriptor(spec.to_string()));
    };
    let nanos =
        berth_names::duration::parse_nanos(duration).map_err(|e| ScheduleError::InvalidDuration { descriptor: spec.to_string(), reason: e.to_string() })?;
    // robfig raises anything under a second (zero and negative included) to one second and
    // drops the fraction of a second.
    Ok(Kind::Every(nanos.max(1_000_000_000) / 1_000_000_000))
}

impl Fields {
    /// Parses five whitespace-separated fields.
    fn parse(spec: &str) -> Result<Fields, ScheduleError> {
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
            return Err(ScheduleError::FieldCount(fields.iter().map(|field| field.to_string()).collect()));
        };
        Ok(Fields {
            minute: parse_field(minute, &MINUTES)?,
            hour: parse_field(hour, &HOURS)?,
            day_of_month: parse_field(day_of_month, &DAYS_OF_MONTH)?,
            month: parse_field(month, &MONTHS)?,
            day_of_week: parse_field(day_of_week, &DAYS_OF_WEEK)?,
        })
    }

    /// robfig's `Next` from the whole second `after`: the first later whole second whose wall
    /// clock in `tz` matches, found field by field from the month down; a field that rolls
    /// over sends the search back to the month.
    fn next_after(&self, after: i64, tz: &TimeZone) -> Option<i64> {
        let mut search = Search { tz, at: after.checked_add(1)?, moved: false };
        let year_limit = i32::from(search.wall()?.year()) + 5;
        loop {
            if i32::from(search.wall()?.year()) > year_limit {
                return None;
            }
            let rolled_over = self.settle_month(&mut search)?
                || self.settle_day(&mut search)?
                || self.settle_hour(&mut search)?
                || self.settle_minute(&mut search)?
                || search.settle_second()?;
            if !rolled_over {
                return Some(search.at);
            }
        }
    }

    /// Moves to the start of the next month until the month matches; true when the year rolled over.
    fn settle_month(&self, search: &mut Search) -> Option<bool> {
        while !has(self.month, search.wall()?.month()) {
            if search.first_move() {
                let wall = search.wall()?;
                search.at = go_date(search.tz, wall.year(), wall.month(), 1, 0, 0, 0)?;
            }
            let wall = search.wall()?;
            search.at = go_date(search.tz, wall.year(), wall.month() + 1, wall.day(), wall.hour(), wall.minute(), wall.second())?;
            if search.wall()?.month() == 1 {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Moves to the next midnight until the day matches; true when the month rolled over. Where
    /// midnight does not exist, Go lands an hour off and the hour is pulled back to 0.
    fn settle_day(&self, search: &mut Search) -> Option<bool> {
        while !self.day_matches(search.wall()?) {
            if search.first_move() {
                let wall = search.wall()?;
                search.at = go_date(search.tz, wall.year(), wall.month(), wall.day(), 0, 0, 0)?;
            }
            let wall = search.wall()?;
            search.at = go_date(search.tz, wall.year(), wall.month(), wall.day() + 1, wall.hour(), wall.minute(), wall.second())?;
            let hour = i64::from(search.wall()?.hour());
            search.at += if hour > 12 { (24 - hour) * 3600 } else { -hour * 3600 };
            if search.wall()?.day() == 1 {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Adds whole hours until the hour matches; true when the day rolled over.
    fn settle_hour(&self, search: &mut Search) -> Option<bool> {
        while !has(self.hour, search.wall()?.hour()) {
            if search.first_move() {
                let wall = search.wall()?;
                search.at = go_date(search.tz, wall.year(), wall.month(), wall.day(), wall.hour(), 0, 0)?;
            }
            search.at += 3600;
            if search.wall()?.hour() == 0 {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Adds whole minutes until the minute matches; true when the hour rolled over.
    fn settle_minute(&self, search: &mut Search) -> Option<bool> {
        while !has(self.minute, search.wall()?.minute()) {
            if search.first_move() {
                search.at -= search.at.rem_euclid(60);
            }
            search.at += 60;
            if search.wall()?.minute() == 0 {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Whether the wall clock's day matches: both day fields must match when either is a
    /// wildcard, otherwise either may.
    fn day_matches(&self, wall: DateTime) -> bool {
        let by_month = has(self.day_of_month, wall.day());
        let by_week = has(self.day_of_week, wall.weekday().to_sunday_zero_offset());
        if (self.day_of_month | self.day_of_week) & STAR != 0 {
            by_month && by_week
        } else {
            by_month || by_week
        }
    }
}

/// The state of one `next_after` search: the instant reached (whole Unix seconds), the zone
/// whose wall clock is matched, and whether any field has moved the instant yet.
struct Search<'a> {
    tz: &'a TimeZone,
    at: i64,
    moved: bool,
}

impl Search<'_> {
    /// The wall clock in the zone at the instant reached.
    fn wall(&self) -> Option<DateTime> {
        Some(self.tz.to_datetime(Timestamp::from_second(self.at).ok()?))
    }

    /// True the first time any field moves the instant (which then starts from a clean boundary).
    fn first_move(&mut self) -> bool {
        !std::mem::replace(&mut self.moved, true)
    }

    /// Adds seconds until the second is 0 (the 5-field form always fires on second 0); true
    /// when it had to move, which rolls the minute over.
    fn settle_second(&mut self) -> Option<bool> {
        let mut moved = false;
        while self.wall()?.second() != 0 {
            self.first_move();
            self.at += 1;
            moved = true;
        }
        Some(moved)
    }
}

/// Go's `time.Date(year, month, day, hour, minute, second, 0, tz)` in Unix seconds. A month past
/// December or a day past the month's end carries into the next, as in Go.
fn go_date(tz: &TimeZone, year: i16, month: i8, day: i8, hour: i8, minute: i8, second: i8) -> Option<i64> {
    let months = i32::from(year) * 12 + i32::from(month) - 1;
    let first = Date::new(i16::try_from(months.div_euclid(12)).ok()?, i8::try_from(months.rem_euclid(12) + 1).ok()?, 1).ok()?;
    let date = first.checked_add(i32::from(day - 1).days()).ok()?;
    resolve_like_go(tz, date.at(hour, minute, second, 0))
}

/// Go's rule for placing a wall-clock time in a zone: take the offset in force at the wall clock
/// read as UTC; keep it if the instant it gives really has that offset, otherwise use the offset
/// in force at that instant. Outside transitions this is the only answer; inside a gap or
/// overlap the result depends on the zone, exactly as in Go.
fn resolve_like_go(tz: &TimeZone, wall: DateTime) -> Option<i64> {
    let as_utc = Offset::UTC.to_timestamp(wall).ok()?.as_second();
    let guess = offset_at(tz, as_utc)?;
    let instant = as_utc - guess;
    let actual = offset_at(tz, instant)?;
    Some(if actual == guess { instant } else { as_utc - actual })
}

/// The zone's UTC offset, in seconds, at the Unix second `at`.
fn offset_at(tz: &TimeZone, at: i64) -> Option<i64> {
    Some(i64::from(tz.to_offset(Timestamp::from_second(at).ok()?).seconds()))
}

/// The whole Unix second at or before `at` (Go's `t.Nanosecond()` is never negative).
fn floor_second(at: Timestamp) -> i64 {
    at.as_second() - i64::from(at.subsec_nanosecond() < 0)
}

/// Whether bit `value` is set in `bits`.
fn has(bits: u64, value: i8) -> bool {
    bits & (1u64 << value) != 0
}

/// Parses one field: comma-separated items, their bits OR-ed together. Empty items are skipped,
/// as robfig skips them, so a field of only commas matches nothing.
fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    field.split(',').filter(|item| !item.is_empty()).try_fold(0, |bits, item| Ok(bits | parse_item(item, bounds)?))
}

/// Parses one item (`*`, `?`, `v`, `a-b`, each optionally `/step`) into its bits, plus [`STAR`]
/// for a wildcard without a step above one. Checks run in robfig's order, so its first complaint
/// is the one reported. After a wildcard anything up to the `/` is ignored, as in robfig.
fn parse_item(item: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (low, Some(high)),
        None => (range, None),
    };
    let (start, mut end, mut star) = if low == "*" || low == "?" {
        (bounds.min, bounds.max, true)
    } else {
        let start = parse_value(low, bounds)?;
        let end = match high {
            None => start,
            Some(high) if high.contains('-') => return Err(ScheduleError::TooManyHyphens(item.to_string())),
            Some(high) => parse_value(high, bounds)?,
        };
        (start, end, false)
    };
    let step = match step {
        None => 1,
        Some(step) if step.contains('/') => return Err(ScheduleError::TooManySlashes(item.to_string())),
        Some(step) => {
            let step = parse_number(step)?;
            if high.is_none() {
                end = bounds.max;
            }
            star &= step <= 1;
            step
        }
    };
    let item = item.to_string();
    if start < bounds.min {
        return Err(ScheduleError::BelowMinimum { start, min: bounds.min, item });
    }
    if end > bounds.max {
        return Err(ScheduleError::AboveMaximum { end, max: bounds.max, item });
    }
    if start > end {
        return Err(ScheduleError::StartAfterEnd { start, end, item });
    }
    if step == 0 {
        return Err(ScheduleError::ZeroStep(item));
    }
    let bits = (start..=end).step_by(usize::try_from(step).unwrap_or(usize::MAX)).fold(0, |bits, value| bits | 1 << value);
    Ok(if star { bits | STAR } else { bits })
}

/// A field value: one of the field's names (any case) or a number.
fn parse_value(text: &str, bounds: &Bounds) -> Result<u64, ScheduleError> {
    match bounds.names.iter().zip(bounds.min..).find(|(name, _)| text.eq_ignore_ascii_case(name)) {
        Some((_, value)) => Ok(value),
        None => parse_number(text),
    }
}

/// A non-negative decimal number as Go's `strconv.Atoi` reads it (an optional sign, then digits).
fn parse_number(text: &str) -> Result<u64, ScheduleError> {
    let value: i64 = text.parse().map_err(|error: std::num::ParseIntError| {
        let reason = match error.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        ScheduleError::InvalidNumber { text: text.to_string(), reason }
    })?;
    u64::try_from(value).map_err(|_| ScheduleError::NegativeNumber { value, text: text.to_string() })
}

/// Whether one `/`-separated part of a zone name passes Kubernetes validation: 1 to 14 of
/// `A-Za-z0-9._-+`, not `.` or `..`, not starting with `-`.
fn is_zone_name_part(part: &str) -> bool {
    (1..=14).contains(&part.len())
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        && part != "."
        && part != ".."
        && !part.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn zone(name: &str) -> TimeZone {
        time_zone(Some(name)).expect("zone")
    }

    fn schedule(spec: &str) -> Schedule {
        Schedule::parse(spec).expect("schedule")
    }

    fn next(spec: &str, after: &str, tz: &TimeZone) -> Option<Timestamp> {
        schedule(spec).next_after(ts(after), tz)
    }

    fn error(spec: &str) -> String {
        Schedule::parse(spec).expect_err("should be refused").to_string()
    }

    fn fields(spec: &str) -> Fields {
        match schedule(spec).kind {
            Kind::Fields(fields) => fields,
            Kind::Every(_) => panic!("{spec} is @every"),
        }
    }

    fn every(spec: &str) -> i64 {
        match schedule(spec).kind {
            Kind::Every(seconds) => seconds,
            Kind::Fields(_) => panic!("{spec} is not @every"),
        }
    }

    fn bits(values: impl IntoIterator<Item = u64>) -> u64 {
        values.into_iter().fold(0, |bits, value| bits | 1 << value)
    }

    /// The latest activation and the full count in (earliest, now], by walking `next_after`.
    fn walk(schedule: &Schedule, tz: &TimeZone, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, u32) {
        let (mut latest, mut count, mut cursor) = (None, 0, earliest);
        while let Some(at) = schedule.next_after(cursor, tz).filter(|at| *at <= now) {
            (latest, count, cursor) = (Some(at), count + 1, at);
        }
        (latest, count)
    }

    #[test]
    fn field_errors_read_like_robfig() {
        assert_eq!(error(""), "empty spec string");
        assert_eq!(error("* * *"), "expected exactly 5 fields, found 3: [* * *]");
        assert_eq!(error("0 * * * * *"), "expected exactly 5 fields, found 6: [0 * * * * *]");
        assert_eq!(error("   "), "expected exactly 5 fields, found 0: []");
        assert_eq!(error(" @daily"), "expected exactly 5 fields, found 1: [@daily]");
        assert_eq!(error("0-60 * * * *"), "end of range (60) above maximum (59): 0-60");
        assert_eq!(error("* 24 * * *"), "end of range (24) above maximum (23): 24");
        assert_eq!(error("* * 0 * *"), "beginning of range (0) below minimum (1): 0");
        assert_eq!(error("* * * 13 *"), "end of range (13) above maximum (12): 13");
        assert_eq!(error("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(error("5-1 * * * *"), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(error("60/0 * * * *"), "beginning of range (60) beyond end of range (59): 60/0");
        assert_eq!(error("*/0 * * * *"), "step of range should be a positive number: */0");
        assert_eq!(error("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(error("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(error("*/-1 * * * *"), "negative number (-1) not allowed: -1");
        assert_eq!(error("x * * * *"), r#"failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax"#);
        assert_eq!(error("x/1/2 * * * *"), r#"failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax"#);
        assert_eq!(error("-1 * * * *"), r#"failed to parse int from : strconv.Atoi: parsing "": invalid syntax"#);
        assert_eq!(error("* * * JANUARY *"), r#"failed to parse int from JANUARY: strconv.Atoi: parsing "JANUARY": invalid syntax"#);
        assert_eq!(
            error("99999999999999999999 * * * *"),
            r#"failed to parse int from 99999999999999999999: strconv.Atoi: parsing "99999999999999999999": value out of range"#
        );
    }

    #[test]
    fn time_zone_in_schedule_is_refused() {
        let message = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";
        assert_eq!(error("TZ=America/New_York 0 * * * *"), message);
        assert_eq!(error("CRON_TZ=UTC 0 * * * *"), message);
        assert_eq!(Schedule::parse("TZ=Etc/UTC @daily"), Err(ScheduleError::TimeZoneInSchedule));
    }

    #[test]
    fn names_and_steps() {
        assert_eq!(fields("*/15 * * * *").minute, bits([0, 15, 30, 45]));
        assert_eq!(fields("5/20 * * * *").minute, bits([5, 25, 45]));
        assert_eq!(fields("10-30/10 * * * *").minute, bits([10, 20, 30]));
        assert_eq!(fields("0 0-23/6 * * *").hour, bits([0, 6, 12, 18]));
        assert_eq!(fields("1,,2 * * * *").minute, bits([1, 2]));
        assert_eq!(fields("0 0 * JAN,mar,Dec *").month, bits([1, 3, 12]));
        assert_eq!(fields("0 0 * Mar-may *").month, bits([3, 4, 5]));
        assert_eq!(fields("0 0 * * MON-fri").day_of_week, bits(1..=5));
        assert_eq!(fields("0 0 * * sun,SAT").day_of_week, bits([0, 6]));
        assert_eq!(fields("0 0 * * 0-6/2").day_of_week, bits([0, 2, 4, 6]));
        // Wildcards carry the star bit unless stepped by more than one; `?` is `*`.
        assert_eq!(fields("0 0 * * *").day_of_week, bits(0..=6) | STAR);
        assert_eq!(fields("0 0 ? * ?").day_of_month, bits(1..=31) | STAR);
        assert_eq!(fields("*/1 * * * *").minute, bits(0..=59) | STAR);
        assert_eq!(fields("0 0 */2 * *").day_of_month, bits((1..=31).step_by(2)));
        // robfig ignores whatever follows a wildcard up to the slash.
        assert_eq!(fields("*-5 * * * *").minute, bits(0..=59) | STAR);
    }

    #[test]
    fn restricted_day_fields_match_either() {
        let utc = TimeZone::UTC;
        // 2026-01-01 is a Thursday.
        assert_eq!(next("0 0 13 * 5", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(next("0 0 13 * 5", "2026-01-10T00:00:00Z", &utc), Some(ts("2026-01-13T00:00:00Z")));
        assert_eq!(next("0 0 1-7 * MON", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(next("0 0 */2 * 1", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-03T00:00:00Z")));
        // A wildcard on either side makes both fields count.
        assert_eq!(next("0 0 13 * *", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-13T00:00:00Z")));
        assert_eq!(next("0 0 * * 5", "2026-01-03T00:00:00Z", &utc), Some(ts("2026-01-09T00:00:00Z")));
        assert_eq!(next("0 0 ? * 1", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-05T00:00:00Z")));
        assert_eq!(next("0 0 */1 * 1", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-05T00:00:00Z")));
    }

    #[test]
    fn descriptors() {
        assert_eq!(fields("@yearly"), fields("0 0 1 1 *"));
        assert_eq!(fields("@annually"), fields("0 0 1 1 *"));
        assert_eq!(fields("@monthly"), fields("0 0 1 * *"));
        assert_eq!(fields("@weekly"), fields("0 0 * * 0"));
        assert_eq!(fields("@daily"), fields("0 0 * * *"));
        assert_eq!(fields("@midnight"), fields("0 0 * * *"));
        assert_eq!(fields("@hourly"), fields("0 * * * *"));
        let utc = TimeZone::UTC;
        assert_eq!(next("@weekly", "2026-01-01T00:00:00Z", &utc), Some(ts("2026-01-04T00:00:00Z")));
        assert_eq!(next("@monthly", "2026-01-15T00:00:00Z", &utc), Some(ts("2026-02-01T00:00:00Z")));
        assert_eq!(next("@yearly", "2026-01-01T00:00:00Z", &utc), Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(error("@foo"), "unrecognized descriptor: @foo");
        assert_eq!(error("@daily "), "unrecognized descriptor: @daily ");
        assert_eq!(error("@DAILY"), "unrecognized descriptor: @DAILY");
        assert_eq!(error("@every"), "unrecognized descriptor: @every");
    }

    #[test]
    fn every_is_a_fixed_interval_in_whole_seconds() {
        assert_eq!(every("@every 1h30m"), 5400);
        assert_eq!(every("@every 1.5h"), 5400);
        assert_eq!(every("@every 2h45m30.9s"), 9930);
        assert_eq!(every("@every +90s"), 90);
        assert_eq!(every("@every .5m"), 30);
        assert_eq!(every("@every 1.m"), 60);
        assert_eq!(every("@every 1500ms"), 1);
        // Anything under a second, zero and negatives included, becomes one second.
        assert_eq!(every("@every 500ms"), 1);
        assert_eq!(every("@every 1\u{b5}s"), 1);
        assert_eq!(every("@every 0"), 1);
        assert_eq!(every("@every -5m"), 1);
        let utc = TimeZone::UTC;
        assert_eq!(next("@every 1h30m", "2026-01-01T00:00:00.75Z", &utc), Some(ts("2026-01-01T01:30:00Z")));
        assert_eq!(next("@every 1h30m", "2026-01-01T01:30:00Z", &utc), Some(ts("2026-01-01T03:00:00Z")));
        assert_eq!(error("@every 1x"), r#"failed to parse duration @every 1x: time: unknown unit "x" in duration "1x""#);
        assert_eq!(error("@every 10"), r#"failed to parse duration @every 10: time: missing unit in duration "10""#);
        assert_eq!(error("@every "), r#"failed to parse duration @every : time: invalid duration """#);
        assert_eq!(error("@every  1h"), r#"failed to parse duration @every  1h: time: invalid duration " 1h""#);
        assert_eq!(error("@every h"), r#"failed to parse duration @every h: time: invalid duration "h""#);
        assert_eq!(error("@every 1h "), r#"failed to parse duration @every 1h : time: unknown unit "h " in duration "1h ""#);
        assert_eq!(error("@every 9999999999h"), r#"failed to parse duration @every 9999999999h: time: invalid duration "9999999999h""#);
    }

    #[test]
    fn next_after_crosses_month_ends() {
        let utc = TimeZone::UTC;
        assert_eq!(next("0 0 31 * *", "2026-01-31T00:00:00Z", &utc), Some(ts("2026-03-31T00:00:00Z")));
        assert_eq!(next("0 12 30 * *", "2026-01-30T12:00:00Z", &utc), Some(ts("2026-03-30T12:00:00Z")));
        assert_eq!(next("59 23 31 12 *", "2026-06-01T00:00:00Z", &utc), Some(ts("2026-12-31T23:59:00Z")));
        assert_eq!(next("0 0 1 * *", "2026-12-31T23:59:59Z", &utc), Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(next("* * * * *", "2026-01-31T23:59:30.5Z", &utc), Some(ts("2026-02-01T00:00:00Z")));
        assert_eq!(next("0 * * * *", "2026-01-01T01:00:00Z", &utc), Some(ts("2026-01-01T02:00:00Z")));
        assert_eq!(next("0 * * * *", "2026-01-01T00:59:59.999Z", &utc), Some(ts("2026-01-01T01:00:00Z")));
        // Valid but unsatisfiable: robfig gives up after five years.
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z", &utc), None);
        assert_eq!(next("0 0 31 4 *", "2026-01-01T00:00:00Z", &utc), None);
        assert_eq!(next("0 0 , * *", "2026-01-01T00:00:00Z", &utc), None);
    }

    #[test]
    fn next_after_finds_leap_days() {
        let utc = TimeZone::UTC;
        assert_eq!(next("0 0 29 2 *", "2026-01-01T00:00:00Z", &utc), Some(ts("2028-02-29T00:00:00Z")));
        assert_eq!(next("0 0 29 2 *", "2028-02-29T00:00:00Z", &utc), Some(ts("2032-02-29T00:00:00Z")));
        // 2100 is not a leap year; 2104 is just inside the five-year horizon from 2099 ...
        assert_eq!(next("0 0 29 2 *", "2099-01-01T00:00:00Z", &utc), Some(ts("2104-02-29T00:00:00Z")));
        // ... and just outside it from 2096.
        assert_eq!(next("0 0 29 2 *", "2096-03-01T00:00:00Z", &utc), None);
    }

    #[test]
    fn dst_gap_skips_missing_wall_times() {
        // America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
        let ny = zone("America/New_York");
        assert_eq!(next("30 2 * * *", "2026-03-08T00:00:00-05:00", &ny), Some(ts("2026-03-09T02:30:00-04:00")));
        assert_eq!(next("30 2 8 3 *", "2026-03-01T00:00:00-05:00", &ny), Some(ts("2027-03-08T02:30:00-05:00")));
        assert_eq!(next("0 * * * *", "2026-03-08T01:00:00-05:00", &ny), Some(ts("2026-03-08T03:00:00-04:00")));
        assert_eq!(next("*/20 * * * *", "2026-03-08T01:40:00-05:00", &ny), Some(ts("2026-03-08T03:00:00-04:00")));
        assert_eq!(next("30 1 * * *", "2026-03-07T12:00:00-05:00", &ny), Some(ts("2026-03-08T01:30:00-05:00")));
        assert_eq!(next("0 3 * * *", "2026-03-08T00:00:00-05:00", &ny), Some(ts("2026-03-08T03:00:00-04:00")));
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST.
        let berlin = zone("Europe/Berlin");
        assert_eq!(next("30 2 * * *", "2026-03-29T00:00:00+01:00", &berlin), Some(ts("2026-03-30T02:30:00+02:00")));
        // America/Havana, 2026-03-08: midnight itself is skipped (00:00 CST becomes 01:00 CDT).
        let havana = zone("America/Havana");
        assert_eq!(next("0 0 * * *", "2026-03-07T00:00:00-05:00", &havana), Some(ts("2026-03-09T00:00:00-04:00")));
        assert_eq!(next("0 0 8 3 *", "2026-03-01T00:00:00-05:00", &havana), Some(ts("2027-03-08T00:00:00-05:00")));
        // Go places the missing midnight at 23:00 the day before and robfig pulls it forward an hour.
        assert_eq!(next("0 5 8 3 *", "2026-03-01T00:00:00-05:00", &havana), Some(ts("2026-03-08T05:00:00-04:00")));
    }

    #[test]
    fn dst_overlap_fires_in_both_passes() {
        // America/New_York, 2026-11-01: 02:00 EDT becomes 01:00 EST, so 01:xx happens twice.
        let ny = zone("America/New_York");
        assert_eq!(next("30 1 * * *", "2026-11-01T00:00:00-04:00", &ny), Some(ts("2026-11-01T01:30:00-04:00")));
        assert_eq!(next("30 1 * * *", "2026-11-01T01:30:00-04:00", &ny), Some(ts("2026-11-01T01:30:00-05:00")));
        assert_eq!(next("30 1 * * *", "2026-11-01T01:30:00-05:00", &ny), Some(ts("2026-11-02T01:30:00-05:00")));
        assert_eq!(next("0 * * * *", "2026-11-01T00:30:00-04:00", &ny), Some(ts("2026-11-01T01:00:00-04:00")));
        assert_eq!(next("0 * * * *", "2026-11-01T01:00:00-04:00", &ny), Some(ts("2026-11-01T01:00:00-05:00")));
        assert_eq!(next("0 * * * *", "2026-11-01T01:00:00-05:00", &ny), Some(ts("2026-11-01T02:00:00-05:00")));
        assert_eq!(next("30 2 * * *", "2026-11-01T00:00:00-04:00", &ny), Some(ts("2026-11-01T02:30:00-05:00")));
        assert_eq!(next("0 3 * * *", "2026-11-01T01:30:00-05:00", &ny), Some(ts("2026-11-01T03:00:00-05:00")));
    }

    #[test]
    fn most_recent_counts_misses() {
        let utc = TimeZone::UTC;
        let hourly = schedule("0 * * * *");
        let start = ts("2026-01-01T00:00:00Z");
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-01-01T00:30:00Z")), (None, 0));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2025-12-31T00:00:00Z")), (None, 0));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-01-01T05:30:00Z")), (Some(ts("2026-01-01T05:00:00Z")), 5));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-01-01T05:00:00Z")), (Some(ts("2026-01-01T05:00:00Z")), 5));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-01-05T04:00:00Z")), (Some(ts("2026-01-05T04:00:00Z")), 100));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-01-05T05:00:00Z")), (Some(ts("2026-01-05T05:00:00Z")), MISSED_LIMIT));
        assert_eq!(most_recent(&hourly, &utc, start, ts("2026-02-01T00:10:00Z")), (Some(ts("2026-02-01T00:00:00Z")), MISSED_LIMIT));
        // Far past the limit, the latest is found without walking every miss; it agrees with a walk.
        let first_of_month = schedule("* * 1 * *");
        let now = ts("2026-03-15T12:00:00Z");
        assert_eq!(most_recent(&first_of_month, &utc, start, now), (Some(ts("2026-03-01T23:59:00Z")), MISSED_LIMIT));
        assert_eq!(walk(&first_of_month, &utc, start, now).0, Some(ts("2026-03-01T23:59:00Z")));
        // The overlap's repeated 01:30 counts twice.
        let ny = zone("America/New_York");
        let nightly = schedule("30 1 * * *");
        assert_eq!(most_recent(&nightly, &ny, ts("2026-10-31T12:00:00-04:00"), ts("2026-11-01T12:00:00-05:00")), (Some(ts("2026-11-01T01:30:00-05:00")), 2));
    }

    #[test]
    fn most_recent_counts_every_from_earliest() {
        let utc = TimeZone::UTC;
        let every = schedule("@every 1h30m");
        let start = ts("2026-01-01T00:00:00.5Z");
        assert_eq!(most_recent(&every, &utc, start, ts("2026-01-01T01:29:59Z")), (None, 0));
        assert_eq!(most_recent(&every, &utc, start, ts("2026-01-01T05:00:00Z")), (Some(ts("2026-01-01T04:30:00Z")), 3));
        let now = ts("2026-02-01T01:00:00Z");
        let (latest, walked) = walk(&every, &utc, start, now);
        assert_eq!(walked, 496);
        assert_eq!(most_recent(&every, &utc, start, now), (latest, MISSED_LIMIT));
        assert_eq!(latest, Some(ts("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn time_zones() {
        assert_eq!(time_zone(None), Ok(TimeZone::UTC));
        assert_eq!(time_zone(Some("")), Ok(TimeZone::UTC));
        assert_eq!(zone("UTC").iana_name(), Some("UTC"));
        assert_eq!(zone("Etc/UTC").iana_name(), Some("Etc/UTC"));
        assert_eq!(zone("America/New_York").iana_name(), Some("America/New_York"));
        assert_eq!(time_zone(Some("Mars/Olympus")).map_err(|e| e.to_string()), Err("unknown time zone Mars/Olympus".to_string()));
        assert_eq!(time_zone(Some("america/new_york")), Err(ScheduleError::UnknownTimeZone("america/new_york".to_string())));
        assert_eq!(time_zone(Some("../zoneinfo/UTC")), Err(ScheduleError::UnknownTimeZone("../zoneinfo/UTC".to_string())));
        assert_eq!(time_zone(Some("America/New York")), Err(ScheduleError::UnknownTimeZone("America/New York".to_string())));
        assert_eq!(time_zone(Some("Local")), Err(ScheduleError::LocalTimeZone));
        assert_eq!(time_zone(Some("local")), Err(ScheduleError::LocalTimeZone));
    }
}
