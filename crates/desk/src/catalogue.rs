//! The analytics catalogue: the typed messages of a trading desk's routing dashboard.
//!
//! It lives here, outside the protocol and the gateway, because it is one application
//! of them: the protocol carries any JSON, and an embedder defines its own catalogue the
//! same way (a serde struct per payload and an [`Event`] impl).
//!
//! | channel            | type               | payload            | key      |
//! |--------------------|--------------------|--------------------|----------|
//! | `routing-metrics`  | `routing-decision` | [`RoutingDecision`]| —        |
//! | `lp-performance`   | `lp-metrics`       | [`LpMetrics`]      | LP name  |
//! | `exposure-updates` | `exposure-change`  | [`ExposureChange`] | `total`  |
//! | `alerts`           | `alert`            | [`Alert`]          | —        |
//!
//! Field names on the wire are camelCase, exactly as the dashboards this replaces read
//! them. The catalogue is also the example of how an application defines its own typed
//! messages: a serde struct per payload plus an [`Event`] impl, and optionally an enum
//! like [`AnalyticsEvent`] that decodes any of them.
//!
//! Keys make state conflatable: LP metrics are keyed by LP, so a slow client skips stale
//! readings of an LP rather than losing the only reading of another, and a new
//! subscriber gets every LP's latest row at once. Exposure is one aggregate, keyed
//! `total`, so a new subscriber sees the current exposure immediately.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use tidewire_protocol::event::Event;
use tidewire_protocol::message::Publication;
use tidewire_protocol::{Op, Timestamp};

/// The catalogue's channel names.
pub mod channels {
    pub const ROUTING_METRICS: &str = "routing-metrics";
    pub const LP_PERFORMANCE: &str = "lp-performance";
    pub const EXPOSURE_UPDATES: &str = "exposure-updates";
    pub const ALERTS: &str = "alerts";
    /// All four, in dashboard order.
    pub const ALL: [&str; 4] = [ROUTING_METRICS, LP_PERFORMANCE, EXPOSURE_UPDATES, ALERTS];
}

/// An order's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

/// Where an order was routed: passed to an LP (A-Book) or kept in-house (B-Book).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum Book {
    #[serde(rename = "ABOOK")]
    ABook,
    #[serde(rename = "BBOOK")]
    BBook,
}

/// One routing decision (`routing-decision` on `routing-metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct RoutingDecision {
    pub symbol: String,
    pub side: Side,
    pub volume: f64,
    pub routing_decision: Book,
    pub lp_selected: String,
    pub execution_time_ms: u64,
    pub spread: f64,
    pub slippage: f64,
}

impl Event for RoutingDecision {
    const TYPE: &'static str = "routing-decision";
    const CHANNEL: &'static str = channels::ROUTING_METRICS;
}

/// An LP's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum LpStatus {
    Connected,
    Degraded,
    Disconnected,
}

/// An LP's current performance (`lp-metrics` on `lp-performance`, keyed by LP name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LpMetrics {
    pub lp_name: String,
    pub status: LpStatus,
    pub avg_spread: f64,
    /// 0..=1.
    pub execution_quality: f64,
    pub latency_ms: u64,
    pub quotes_per_second: u64,
    /// 0..=1.
    pub reject_rate: f64,
    /// Percent.
    pub uptime: f64,
}

impl Event for LpMetrics {
    const TYPE: &'static str = "lp-metrics";
    const CHANNEL: &'static str = channels::LP_PERFORMANCE;

    fn key(&self) -> Option<String> {
        Some(self.lp_name.clone())
    }
}

/// How close net exposure is to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    /// From utilization in percent (sign ignored: a short book is as risky as a long one):
    /// below 70 low, below 90 medium, below 95 high, from 95 critical.
    pub fn from_utilization(pct: f64) -> RiskLevel {
        match pct.abs() {
            p if p >= 95.0 => RiskLevel::Critical,
            p if p >= 90.0 => RiskLevel::High,
            p if p >= 70.0 => RiskLevel::Medium,
            _ => RiskLevel::Low,
        }
    }
}

/// The book's exposure (`exposure-change` on `exposure-updates`, keyed `total`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ExposureChange {
    pub total_exposure: f64,
    pub net_exposure: f64,
    pub exposure_limit: f64,
    /// `netExposure / exposureLimit × 100`.
    pub utilization_pct: f64,
    pub risk_level: RiskLevel,
    pub by_symbol: BTreeMap<String, f64>,
    #[serde(rename = "byLP")]
    pub by_lp: BTreeMap<String, f64>,
}

/// A payload that would not survive the trip (JSON has no NaN) or makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogueError {
    #[error("exposure limit must be a positive number, got {0}")]
    BadLimit(f64),
    #[error("{field} must be a finite number")]
    NotFinite { field: &'static str },
}

impl ExposureChange {
    /// Builds an exposure change, deriving `utilizationPct` and `riskLevel`.
    pub fn new(
        total_exposure: f64,
        net_exposure: f64,
        exposure_limit: f64,
        by_symbol: BTreeMap<String, f64>,
        by_lp: BTreeMap<String, f64>,
    ) -> Result<ExposureChange, CatalogueError> {
        if !(exposure_limit.is_finite() && exposure_limit > 0.0) {
            return Err(CatalogueError::BadLimit(exposure_limit));
        }
        for (field, value) in [("totalExposure", total_exposure), ("netExposure", net_exposure)] {
            if !value.is_finite() {
                return Err(CatalogueError::NotFinite { field });
            }
        }
        if by_symbol.values().chain(by_lp.values()).any(|v| !v.is_finite()) {
            return Err(CatalogueError::NotFinite { field: "bySymbol/byLP" });
        }
        let utilization_pct = net_exposure / exposure_limit * 100.0;
        Ok(ExposureChange {
            total_exposure,
            net_exposure,
            exposure_limit,
            utilization_pct,
            risk_level: RiskLevel::from_utilization(utilization_pct),
            by_symbol,
            by_lp,
        })
    }
}

impl Event for ExposureChange {
    const TYPE: &'static str = "exposure-change";
    const CHANNEL: &'static str = channels::EXPOSURE_UPDATES;

    fn key(&self) -> Option<String> {
        Some("total".to_owned())
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Exposure,
    Lp,
    Routing,
    System,
}

/// An alert for the desk (`alert` on `alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `YYYYMMDD-HHMMSS-xxxxxx`, see [`alert_id`].
    pub id: String,
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    pub message: String,
    pub source: String,
    pub action_items: Vec<String>,
}

impl Event for Alert {
    const TYPE: &'static str = "alert";
    const CHANNEL: &'static str = channels::ALERTS;
}

/// An alert id like `20260119-103045-abc123`: the UTC time to the second, then six
/// base-36 characters from `entropy` (taken modulo 36⁶) (the caller's randomness: this crate has none).
pub fn alert_id(at: Timestamp, entropy: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let (year, month, day, hour, minute, second) = at.civil();
    let mut n = entropy % 36u32.pow(6);
    let mut suffix = [b'0'; 6];
    for slot in suffix.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    let suffix = std::str::from_utf8(&suffix).unwrap_or("000000");
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}-{suffix}")
}

/// Any catalogue event, tagged as on the wire: `{"type": "...", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", content = "data")]
pub enum AnalyticsEvent {
    #[serde(rename = "routing-decision")]
    RoutingDecision(RoutingDecision),
    #[serde(rename = "lp-metrics")]
    LpMetrics(LpMetrics),
    #[serde(rename = "exposure-change")]
    ExposureChange(ExposureChange),
    #[serde(rename = "alert")]
    Alert(Alert),
}

impl AnalyticsEvent {
    /// Decodes a publication; `Ok(None)` for a type outside the catalogue.
    pub fn from_publication(publication: &Publication) -> Result<Option<AnalyticsEvent>, serde_json::Error> {
        Ok(Some(match publication.kind.as_str() {
            RoutingDecision::TYPE => AnalyticsEvent::RoutingDecision(RoutingDecision::deserialize(&publication.data)?),
            LpMetrics::TYPE => AnalyticsEvent::LpMetrics(LpMetrics::deserialize(&publication.data)?),
            ExposureChange::TYPE => AnalyticsEvent::ExposureChange(ExposureChange::deserialize(&publication.data)?),
            Alert::TYPE => AnalyticsEvent::Alert(Alert::deserialize(&publication.data)?),
            _ => return Ok(None),
        }))
    }
}

/// A publication whose `type` and `data` are a catalogue event: what a typed consumer
/// of the analytics channels handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AnalyticsPublication {
    pub timestamp: Timestamp,
    pub channel: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub key: Option<String>,
    /// `delete`: the key left the channel's table (the event is its last value).
    #[serde(default, skip_serializing_if = "Op::is_upsert")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Op>", optional))]
    pub op: Op,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub snapshot: bool,
    #[serde(flatten)]
    pub event: AnalyticsEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The envelope the seed dashboards received: type, timestamp, data.
    #[derive(Debug, Serialize, Deserialize)]
    struct SeedMessage {
        timestamp: Timestamp,
        #[serde(flatten)]
        event: AnalyticsEvent,
    }

    /// Parses a seed message, checks that the envelope round-trips to the same JSON and
    /// that the payload re-serializes to the same bytes, field order included.
    fn round_trip(seed: &str) -> AnalyticsEvent {
        let parsed: SeedMessage = serde_json::from_str(seed).unwrap();
        let original: Value = serde_json::from_str(seed).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "seed message must round-trip");
        let data = match &parsed.event {
            AnalyticsEvent::RoutingDecision(d) => serde_json::to_string(d),
            AnalyticsEvent::LpMetrics(d) => serde_json::to_string(d),
            AnalyticsEvent::ExposureChange(d) => serde_json::to_string(d),
            AnalyticsEvent::Alert(d) => serde_json::to_string(d),
        }
        .unwrap();
        // serde_json's `preserve_order` keeps the seed's field order.
        assert_eq!(data, serde_json::to_string(&original["data"]).unwrap(), "payload bytes must match the seed");
        parsed.event
    }

    #[test]
    fn seed_routing_decision() {
        let event = round_trip(
            r#"{
                "type": "routing-decision",
                "timestamp": "2026-01-19T10:30:45.123456Z",
                "data": {
                    "symbol": "EURUSD",
                    "side": "BUY",
                    "volume": 10000.0,
                    "routingDecision": "ABOOK",
                    "lpSelected": "OANDA",
                    "executionTimeMs": 45,
                    "spread": 0.00015,
                    "slippage": 0.00002
                }
            }"#,
        );
        let AnalyticsEvent::RoutingDecision(d) = event else { panic!() };
        assert_eq!((d.side, d.routing_decision, d.execution_time_ms), (Side::Buy, Book::ABook, 45));
    }

    #[test]
    fn seed_lp_metrics() {
        let event = round_trip(
            r#"{
                "type": "lp-metrics",
                "timestamp": "2026-01-19T10:30:45.123456Z",
                "data": {
                    "lpName": "OANDA",
                    "status": "connected",
                    "avgSpread": 0.00015,
                    "executionQuality": 0.98,
                    "latencyMs": 25,
                    "quotesPerSecond": 500,
                    "rejectRate": 0.02,
                    "uptime": 99.9
                }
            }"#,
        );
        let AnalyticsEvent::LpMetrics(m) = event else { panic!() };
        assert_eq!(m.key().as_deref(), Some("OANDA"));
    }

    #[test]
    fn seed_exposure_change() {
        let event = round_trip(
            r#"{
                "type": "exposure-change",
                "timestamp": "2026-01-19T10:30:45.123456Z",
                "data": {
                    "totalExposure": 80000.0,
                    "netExposure": 80000.0,
                    "exposureLimit": 100000.0,
                    "utilizationPct": 80.0,
                    "riskLevel": "medium",
                    "bySymbol": { "EURUSD": 50000.0, "GBPUSD": 30000.0 },
                    "byLP": { "OANDA": 80000.0 }
                }
            }"#,
        );
        let AnalyticsEvent::ExposureChange(parsed) = event else { panic!() };
        let built = ExposureChange::new(
            80000.0,
            80000.0,
            100000.0,
            [("EURUSD".into(), 50000.0), ("GBPUSD".into(), 30000.0)].into(),
            [("OANDA".into(), 80000.0)].into(),
        )
        .unwrap();
        assert_eq!(built, parsed, "derived fields match the seed");
    }

    #[test]
    fn seed_alert() {
        let event = round_trip(
            r#"{
                "type": "alert",
                "timestamp": "2026-01-19T10:30:45.123456Z",
                "data": {
                    "id": "20260119-103045-abc123",
                    "severity": "critical",
                    "category": "exposure",
                    "title": "Exposure Limit Exceeded",
                    "message": "Net exposure is at 95% of limit",
                    "source": "ExposureMonitor",
                    "actionItems": ["Review open positions", "Consider hedging large positions"]
                }
            }"#,
        );
        let AnalyticsEvent::Alert(alert) = event else { panic!() };
        assert_eq!(alert.severity, Severity::Critical);
    }

    #[test]
    fn risk_levels() {
        assert_eq!(RiskLevel::from_utilization(10.0), RiskLevel::Low);
        assert_eq!(RiskLevel::from_utilization(80.0), RiskLevel::Medium);
        assert_eq!(RiskLevel::from_utilization(92.0), RiskLevel::High);
        assert_eq!(RiskLevel::from_utilization(95.0), RiskLevel::Critical);
        assert_eq!(RiskLevel::from_utilization(-96.0), RiskLevel::Critical);
        let short = ExposureChange::new(0.0, -95_000.0, 100_000.0, BTreeMap::new(), BTreeMap::new()).unwrap();
        assert_eq!((short.utilization_pct, short.risk_level), (-95.0, RiskLevel::Critical));
    }

    #[test]
    fn exposure_rejects_what_json_cannot_carry() {
        let empty = BTreeMap::new;
        assert_eq!(ExposureChange::new(1.0, 1.0, 0.0, empty(), empty()), Err(CatalogueError::BadLimit(0.0)));
        assert!(ExposureChange::new(1.0, 1.0, f64::NAN, empty(), empty()).is_err());
        assert!(ExposureChange::new(f64::INFINITY, 1.0, 1.0, empty(), empty()).is_err());
        assert!(ExposureChange::new(1.0, 1.0, 1.0, [("X".into(), f64::NAN)].into(), empty()).is_err());
    }

    #[test]
    fn alert_ids() {
        let at = Timestamp::parse("2026-01-19T10:30:45.123456Z").unwrap();
        assert_eq!(alert_id(at, 0), "20260119-103045-000000");
        assert_eq!(alert_id(at, 35), "20260119-103045-00000z");
        assert_eq!(alert_id(at, u32::MAX).len(), "20260119-103045-abc123".len());
    }

    #[test]
    fn typed_publication_round_trip() {
        let metrics = LpMetrics {
            lp_name: "LMAX".into(),
            status: LpStatus::Degraded,
            avg_spread: 0.0001,
            execution_quality: 0.9,
            latency_ms: 12,
            quotes_per_second: 800,
            reject_rate: 0.01,
            uptime: 99.5,
        };
        let new = metrics.to_publication().unwrap();
        assert_eq!(
            (new.channel.as_str(), new.kind.as_str(), new.key.as_deref()),
            ("lp-performance", "lp-metrics", Some("LMAX"))
        );
        let publication = Publication {
            kind: new.kind,
            timestamp: Timestamp::UNIX_EPOCH,
            channel: new.channel,
            seq: 1,
            key: new.key,
            op: Default::default(),
            snapshot: false,
            base: None,
            data: new.data,
        };
        assert_eq!(LpMetrics::from_publication(&publication).unwrap(), Some(metrics.clone()));
        assert_eq!(Alert::from_publication(&publication).unwrap(), None);
        assert_eq!(AnalyticsEvent::from_publication(&publication).unwrap(), Some(AnalyticsEvent::LpMetrics(metrics)));
    }

    #[test]
    fn analytics_publication_reads_a_wire_message() {
        let text = concat!(
            r#"{"type":"alert","timestamp":"2026-01-19T10:30:45.123456Z","channel":"alerts","seq":3,"#,
            r#""data":{"id":"x","severity":"info","category":"system","title":"t","message":"m","source":"s","#,
            r#""actionItems":[]}}"#,
        );
        let typed: AnalyticsPublication = serde_json::from_str(text).unwrap();
        assert_eq!((typed.seq, typed.snapshot), (3, false));
        assert!(matches!(typed.event, AnalyticsEvent::Alert(ref a) if a.severity == Severity::Info));
        assert_eq!(serde_json::to_value(&typed).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }
}
