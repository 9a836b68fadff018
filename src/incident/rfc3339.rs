//! The timestamps of incident documents, written and read without chrono's
//! general-purpose RFC 3339 machinery on the common path.
//!
//! An incident document carries a timestamp per alert, per alert status change
//! and per timeline entry, and the daemon reads and writes whole documents on
//! every update: at 5,000 alerts/s chrono's parser and its `Display`-based
//! writer took about 10 % of the daemon's CPU (BENCHMARKS.md, "Where the time
//! goes"). The exact shape chrono writes for a `DateTime<Utc>` (for instance
//! `2026-11-27T03:15:00.123Z`: 0, 3, 6 or 9 fraction digits, `Z`, years 0 to
//! 9999) is handled here directly; anything else (an offset, more digits, a
//! leap second, another year) is handed to chrono. So what is written and what
//! is accepted are exactly what `chrono`'s own serde support writes and
//! accepts: documents are interchangeable with those written before.
//!
//! Use with `#[serde(with = "rfc3339")]`, `rfc3339::option` (add
//! `#[serde(default)]`: a missing field is then `None`, as for a plain
//! `Option`) or `rfc3339::vec`.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The longest fast-path text: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// `t` as chrono's serde support writes it (RFC 3339, `SecondsFormat::AutoSi`,
/// `Z`): into `buf` when it has the common shape, else `None`.
fn write_fast(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    // Other years get a sign and more digits; nanos ≥ 1e9 is a leap second.
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    fn put(buf: &mut [u8], at: usize, value: u32, digits: usize) {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    put(buf, 0, year as u32, 4);
    buf[4] = b'-';
    put(buf, 5, t.month(), 2);
    buf[7] = b'-';
    put(buf, 8, t.day(), 2);
    buf[10] = b'T';
    put(buf, 11, t.hour(), 2);
    buf[13] = b':';
    put(buf, 14, t.minute(), 2);
    buf[16] = b':';
    put(buf, 17, t.second(), 2);
    let mut len = 19;
    // chrono's AutoSi: the fewest of 0, 3, 6, 9 digits that are exact.
    let (value, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if digits > 0 {
        buf[len] = b'.';
        put(buf, len + 1, value, digits);
        len += 1 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// `s` when it has the shape [`write_fast`] writes (any 1 to 9 fraction
/// digits); `None` sends it to chrono.
fn parse_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > MAX_LEN || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        n if n >= 22 && b[19] == b'.' => {
            let digits = n - 21;
            num(20, n - 1)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    // A leap second (`:60`) is not valid here: chrono reads it.
    let time = date.and_hms_nano_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, nanos)?;
    Some(time.and_utc())
}

/// Writes `t` as chrono's serde support does.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write_fast(t, &mut buf) {
        Some(n) => {
            s.serialize_str(std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?)
        }
        None => t.serialize(s),
    }
}

/// Reads what chrono's serde support reads.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            match parse_fast(s) {
                Some(t) => Ok(t),
                None => s.parse().map_err(E::custom),
            }
        }
    }
    d.deserialize_str(Visitor)
}

/// A timestamp written through [`serialize`] and read through [`deserialize`]:
/// what `option` and `vec` hold while (de)serializing.
struct Fast(DateTime<Utc>);

impl Serialize for Fast {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Fast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Fast)
    }
}

/// For `Option<DateTime<Utc>>` fields (with `#[serde(default)]`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Fast(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Fast>::deserialize(d)?.map(|t| t.0))
    }
}

/// For `Vec<DateTime<Utc>>` fields.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| Fast(*t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
        // Same layout: the collect reuses the vector's allocation.
        Ok(Vec::<Fast>::deserialize(d)?
            .into_iter()
            .map(|t| t.0)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Doc {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(
            default,
            with = "super::option",
            skip_serializing_if = "Option::is_none"
        )]
        maybe: Option<DateTime<Utc>>,
        #[serde(default, with = "super::vec")]
        changes: Vec<DateTime<Utc>>,
    }

    /// What chrono's own serde support writes for `t`.
    fn chrono_json(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap()
    }

    fn ours_json(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn ours_parse(json: &str) -> Result<DateTime<Utc>, serde_json::Error> {
        deserialize(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn writes_exactly_what_chrono_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut cases = vec![
            Utc.with_ymd_and_hms(2026, 11, 27, 3, 15, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ];
        for _ in 0..20_000 {
            let secs = rng.i64(-70_000_000_000..400_000_000_000);
            let nanos = match rng.u8(0..4) {
                0 => 0,
                1 => rng.u32(0..1000) * 1_000_000,
                2 => rng.u32(0..1_000_000) * 1_000,
                _ => rng.u32(0..1_000_000_000),
            };
            cases.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        // A leap second.
        cases.push(
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap()
                .and_utc(),
        );
        for t in &cases {
            assert_eq!(ours_json(t), chrono_json(t), "{t:?}");
            assert_eq!(ours_parse(&chrono_json(t)).unwrap(), *t, "{t:?}");
        }
    }

    #[test]
    fn reads_what_chrono_reads_and_rejects_what_it_rejects() {
        for text in [
            "2026-11-27T03:15:00Z",
            "2026-11-27T03:15:00.1Z",
            "2026-11-27T03:15:00.12345Z",
            "2026-11-27T03:15:00.123456789Z",
            "2026-11-27T03:15:00.1234567891Z",
            "2026-11-27T03:15:00+02:00",
            "2026-11-27T03:15:00.5-05:30",
            "2026-11-27 03:15:00Z",
            "2026-11-27t03:15:00z",
            "2016-12-31T23:59:60Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T03:15:00.Z",
            "2026-11-27T03:15Z",
            "+2026-11-27T03:15:00Z",
            "2026-1a-27T03:15:00Z",
            "",
        ] {
            let json = serde_json::to_string(text).unwrap();
            let ours = ours_parse(&json).map_err(|e| e.to_string());
            let chrono: Result<DateTime<Utc>, String> =
                serde_json::from_str(&json).map_err(|e| e.to_string());
            assert_eq!(ours, chrono, "{text}");
        }
    }

    #[test]
    fn option_and_vec_fields_round_trip_and_a_missing_option_is_none() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 3, 15, 0).unwrap();
        let doc = Doc {
            at: t,
            maybe: Some(t),
            changes: vec![t, t + chrono::Duration::milliseconds(1)],
        };
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-11-27T03:15:00Z","maybe":"2026-11-27T03:15:00Z","changes":["2026-11-27T03:15:00Z","2026-11-27T03:15:00.001Z"]}"#
        );
        assert_eq!(serde_json::from_str::<Doc>(&json).unwrap(), doc);
        let bare: Doc = serde_json::from_str(r#"{"at":"2026-11-27T03:15:00Z"}"#).unwrap();
        assert_eq!((bare.maybe, bare.changes.len()), (None, 0));
        let null: Doc =
            serde_json::from_str(r#"{"at":"2026-11-27T03:15:00Z","maybe":null}"#).unwrap();
        assert_eq!(null.maybe, None);
        assert!(serde_json::from_str::<Doc>(r#"{"at":12}"#).is_err());
    }
}
