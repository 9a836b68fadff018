//! Maintenance windows: one-off or weekly periods, in a named time zone,
//! during which matching alerts are known to be expected.
//!
//! Local times are turned into instants the way most schedulers do: a time
//! that occurs twice (clocks going back) means its first occurrence, a time
//! that does not exist (clocks going forward) is moved later by the gap.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::Deserialize;

use super::compile::Problems;
use super::error::Code;
use super::matcher::{self, Matcher};
use crate::alert::Alert;

/// The maintenance window covering an alert, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceHit {
    pub name: String,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(super) struct Window {
    name: String,
    matchers: Vec<Matcher>,
    schedule: Schedule,
}

#[derive(Debug)]
enum Schedule {
    Once {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Starts on each of `days` at `start`; ends at `end` the same day, or
    /// the next day when `end` is not after `start`.
    Weekly {
        days: Vec<Weekday>,
        start: NaiveTime,
        end: NaiveTime,
        tz: Tz,
    },
}

impl Window {
    pub(super) fn hit(&self, alert: &Alert, now: DateTime<Utc>) -> Option<MaintenanceHit> {
        if !matcher::all_match(&self.matchers, &alert.labels) {
            return None;
        }
        let ends_at = match &self.schedule {
            Schedule::Once { start, end } => (*start <= now && now < *end).then_some(*end)?,
            Schedule::Weekly {
                days,
                start,
                end,
                tz,
            } => {
                let today = now.with_timezone(tz).date_naive();
                // A window that crosses midnight may have started yesterday.
                [today.checked_sub_days(Days::new(1))?, today]
                    .into_iter()
                    .filter(|day| days.contains(&day.weekday()))
                    .find_map(|day| {
                        let end_day = if end > start { day } else { day.succ_opt()? };
                        let s = instant(tz, day.and_time(*start));
                        let e = instant(tz, end_day.and_time(*end));
                        (s <= now && now < e).then_some(e)
                    })?
            }
        };
        Some(MaintenanceHit {
            name: self.name.clone(),
            ends_at,
        })
    }

    /// Compiles `raw` (found at dotted path `at`), reporting every problem.
    pub(super) fn compile(raw: &RawMaintenance, at: &str, p: &mut Problems<'_>) -> Option<Window> {
        let errors_before = p.count();
        let matchers = super::compile::matchers(&raw.matchers, &format!("{at}.match"), p);
        let tz = raw.timezone.parse::<Tz>().map_err(|_| {
            p.at(
                &format!("{at}.timezone"),
                Code::Timezone,
                format!(
                    "unknown time zone {:?} (use an IANA name such as Europe/Berlin)",
                    raw.timezone
                ),
            );
        });
        let mut bad =
            |field: &str, msg: String| p.at(&format!("{at}.{field}"), Code::Maintenance, msg);
        let schedule = match (&raw.start, &raw.end, &raw.recurring) {
            (Some(start), Some(end), None) => {
                let start = local_datetime(start).map_err(|m| bad("start", m));
                let end = local_datetime(end).map_err(|m| bad("end", m));
                let (start, end, tz) = (start.ok()?, end.ok()?, tz.ok()?);
                let (start, end) = (instant(&tz, start), instant(&tz, end));
                if end <= start {
                    bad("end", "end must be after start".into());
                }
                Schedule::Once { start, end }
            }
            (None, None, Some(r)) => {
                let days: Vec<Weekday> = r
                    .weekdays
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        d.parse()
                            .map_err(|_| {
                                bad(
                                    &format!("recurring.weekdays.{i}"),
                                    format!("{d:?} is not a weekday (mon, tue, ...)"),
                                )
                            })
                            .ok()
                    })
                    .collect();
                let start = local_time(&r.start).map_err(|m| bad("recurring.start", m));
                let end = local_time(&r.end).map_err(|m| bad("recurring.end", m));
                let (start, end, tz) = (start.ok()?, end.ok()?, tz.ok()?);
                if start == end {
                    bad("recurring.end", "end must differ from start".into());
                }
                let days = if r.weekdays.is_empty() {
                    ALL_DAYS.to_vec()
                } else {
                    days
                };
                Schedule::Weekly {
                    days,
                    start,
                    end,
                    tz,
                }
            }
            _ => {
                bad(
                    "start",
                    "give either `start` and `end`, or `recurring`".into(),
                );
                return None;
            }
        };
        (p.count() == errors_before).then(|| Window {
            name: raw.name.clone(),
            matchers,
            schedule,
        })
    }
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn local_datetime(s: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| format!("{s:?} is not a local date and time like 2026-11-25T04:00:00"))
}

fn local_time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not a time like 02:00"))
}

/// The instant of local time `t` in `tz`; see the module doc for the rules.
fn instant(tz: &Tz, t: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => d.with_timezone(&Utc),
        // In a gap: read `t` with the offset in force before the gap, which
        // lands the same distance past the transition. Offsets change at
        // most a few times a year, so a day earlier is before the gap.
        LocalResult::None => {
            let before = t.checked_sub_days(Days::new(1)).unwrap_or(t);
            let offset = tz.offset_from_utc_datetime(&before).fix();
            (t - offset).and_utc()
        }
    }
}

/// A maintenance entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    pub(super) name: String,
    #[serde(rename = "match", default)]
    matchers: Vec<String>,
    start: Option<String>,
    end: Option<String>,
    recurring: Option<RawRecurring>,
    timezone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecurring {
    /// Days the window starts on; empty means every day.
    #[serde(default)]
    weekdays: Vec<String>,
    start: String,
    end: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;
    use crate::rules::tests::alert;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().unwrap()
    }

    fn windows(yaml: &str) -> RuleSet {
        RuleSet::from_sources(&[("m.yaml".into(), format!("maintenance:\n{yaml}"))]).unwrap()
    }

    #[test]
    fn one_off_window_in_local_time_covers_only_its_interval() {
        let rs = windows(
            "  - name: db-upgrade\n    match: [service=\"postgres\"]\n    start: \"2026-11-25T04:00:00\"\n    end: \"2026-11-25T05:00:00\"\n    timezone: Europe/Berlin\n",
        );
        let db = alert(&[("service", "postgres")]);
        // Berlin is UTC+1 in November.
        let hit = rs.maintenance_at(&db, at("2026-11-25T03:30:00Z")).unwrap();
        assert_eq!(hit.name, "db-upgrade");
        assert_eq!(hit.ends_at, at("2026-11-25T04:00:00Z"));
        assert!(rs.maintenance_at(&db, at("2026-11-25T02:59:59Z")).is_none());
        assert!(rs.maintenance_at(&db, at("2026-11-25T04:00:00Z")).is_none());
        assert!(
            rs.maintenance_at(&alert(&[("service", "api")]), at("2026-11-25T03:30:00Z"))
                .is_none()
        );
    }

    #[test]
    fn weekly_window_on_its_weekday_only() {
        let rs = windows(
            "  - name: weekly-patching\n    match: [team=\"platform\"]\n    recurring: { weekdays: [sat], start: \"02:00\", end: \"04:00\" }\n    timezone: UTC\n",
        );
        let a = alert(&[("team", "platform")]);
        // 2026-11-28 is a Saturday.
        let hit = rs.maintenance_at(&a, at("2026-11-28T03:00:00Z")).unwrap();
        assert_eq!(hit.ends_at, at("2026-11-28T04:00:00Z"));
        assert!(rs.maintenance_at(&a, at("2026-11-27T03:00:00Z")).is_none());
        assert!(rs.maintenance_at(&a, at("2026-11-28T04:00:00Z")).is_none());
    }

    #[test]
    fn weekly_window_crossing_midnight_covers_the_next_morning() {
        let rs = windows(
            "  - name: nightly\n    recurring: { weekdays: [sat], start: \"22:00\", end: \"02:00\" }\n    timezone: UTC\n",
        );
        let a = alert(&[]);
        let hit = rs.maintenance_at(&a, at("2026-11-29T01:00:00Z")).unwrap();
        assert_eq!(hit.ends_at, at("2026-11-29T02:00:00Z"));
        assert!(rs.maintenance_at(&a, at("2026-11-28T21:59:00Z")).is_none());
        assert!(rs.maintenance_at(&a, at("2026-11-28T23:00:00Z")).is_some());
        // Friday night is not a Saturday start.
        assert!(rs.maintenance_at(&a, at("2026-11-28T01:00:00Z")).is_none());
    }

    #[test]
    fn weekly_window_follows_local_time_across_dst_changes() {
        let rs = windows(
            "  - name: sunday\n    recurring: { weekdays: [sun], start: \"01:00\", end: \"04:00\" }\n    timezone: Europe/Berlin\n",
        );
        let a = alert(&[]);
        // 2026-03-29: Berlin goes from UTC+1 to UTC+2 at 02:00 local.
        let hit = rs.maintenance_at(&a, at("2026-03-29T00:30:00Z")).unwrap();
        assert_eq!(hit.ends_at, at("2026-03-29T02:00:00Z"));
        assert!(rs.maintenance_at(&a, at("2026-03-29T02:00:00Z")).is_none());
        // The Sunday before, still winter time: 04:00 local is 03:00 UTC.
        let hit = rs.maintenance_at(&a, at("2026-03-22T02:30:00Z")).unwrap();
        assert_eq!(hit.ends_at, at("2026-03-22T03:00:00Z"));
    }

    #[test]
    fn local_times_in_a_dst_gap_move_later_and_repeated_ones_take_the_first() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let local = |s: &str| local_datetime(s).unwrap();
        // 02:30 does not exist on 2026-03-29; it becomes 03:30 CEST.
        assert_eq!(
            instant(&berlin, local("2026-03-29T02:30:00")),
            at("2026-03-29T01:30:00Z")
        );
        // 02:30 happens twice on 2026-10-25; the first is still CEST.
        assert_eq!(
            instant(&berlin, local("2026-10-25T02:30:00")),
            at("2026-10-25T00:30:00Z")
        );
    }
}
