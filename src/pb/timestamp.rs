//! `google.protobuf.Timestamp` with the proto3 JSON mapping's exact form.
//!
//! The mapping writes a timestamp in RFC 3339, "Z-normalized", with 0, 3, 6
//! or 9 fractional digits: `2026-11-26T12:05:23.519286Z`, what grpcurl and
//! `buf curl` print. pbjson-types writes `+00:00` instead of `Z`, so the
//! generated code uses this type (`build.rs` maps the proto type to it):
//! the same two fields on the wire, its own serde. Reading accepts any
//! RFC 3339 offset, as the mapping asks of parsers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser};

/// A point in time: seconds and nanoseconds since the Unix epoch, in UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = u32::try_from(self.nanos)
            .map_err(|_| ser::Error::custom("a timestamp's nanos are negative"))?;
        let time = DateTime::<Utc>::from_timestamp(self.seconds, nanos)
            .ok_or_else(|| ser::Error::custom("a timestamp out of range"))?;
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let time = DateTime::parse_from_rfc3339(&text).map_err(de::Error::custom)?;
        Ok(Self {
            seconds: time.timestamp(),
            nanos: i32::try_from(time.timestamp_subsec_nanos()).map_err(de::Error::custom)?,
        })
    }
}

/// The `google.protobuf.Timestamp` of `time` (times before 1970 become the
/// epoch: the server makes none).
pub fn timestamp(time: SystemTime) -> Timestamp {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

/// The time a `google.protobuf.Timestamp` names, when it is a valid one
/// after the epoch.
pub fn system_time(timestamp: &Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(timestamp.seconds).ok()?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(seconds: i64, nanos: i32) -> String {
        serde_json::to_string(&Timestamp { seconds, nanos }).expect("serializes")
    }

    #[test]
    fn json_is_z_normalized_with_0_3_6_or_9_fractional_digits() {
        assert_eq!(json(0, 0), r#""1970-01-01T00:00:00Z""#);
        assert_eq!(
            json(1_764_158_723, 519_000_000),
            r#""2025-11-26T12:05:23.519Z""#
        );
        assert_eq!(
            json(1_764_158_723, 519_286_000),
            r#""2025-11-26T12:05:23.519286Z""#
        );
        assert_eq!(
            json(1_764_158_723, 519_286_001),
            r#""2025-11-26T12:05:23.519286001Z""#
        );
    }

    #[test]
    fn json_reads_back_and_accepts_offsets() {
        let read = |text: &str| -> Timestamp {
            serde_json::from_str(&format!("\"{text}\"")).expect("parses")
        };
        let t = Timestamp {
            seconds: 1_764_158_723,
            nanos: 519_286_000,
        };
        assert_eq!(read(json(t.seconds, t.nanos).trim_matches('"')), t);
        assert_eq!(read("2025-11-26T13:05:23.519286+01:00"), t);
        assert!(serde_json::from_str::<Timestamp>(r#""yesterday""#).is_err());
    }

    #[test]
    fn out_of_range_values_are_errors_not_panics() {
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            })
            .is_err()
        );
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
    }
}
