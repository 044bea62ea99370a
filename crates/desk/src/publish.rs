//! Publishing the catalogue's events into a node, typed.
//!
//! Each helper takes the event itself (or, where the catalogue derives fields, a struct
//! of named inputs), so a call reads like the event it publishes and two numbers of the
//! same type cannot trade places unnoticed.

use std::collections::BTreeMap;

use tidewire_protocol::{ErrorCode, Event, Op};
use tidewire_server::Publisher;
use tidewire_server::hub::{Accepted, PublishError, now_timestamp};

use crate::catalogue::{Alert, Category, ExposureChange, LpMetrics, RoutingDecision, Severity, alert_id};

/// The inputs of an exposure change; utilization and risk level are derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub total_exposure: f64,
    pub net_exposure: f64,
    pub exposure_limit: f64,
    pub by_symbol: BTreeMap<String, f64>,
    pub by_lp: BTreeMap<String, f64>,
}

/// An alert to raise; it gets a fresh id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    pub message: String,
    pub source: String,
    pub action_items: Vec<String>,
}

/// Publishes the desk's events through a node's [`Publisher`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeskPublisher {
    publisher: Publisher,
}

impl DeskPublisher {
    pub fn new(publisher: Publisher) -> DeskPublisher {
        DeskPublisher { publisher }
    }

    /// After a routing decision (on `routing-metrics`).
    pub async fn routing_decision(&self, decision: &RoutingDecision) -> Result<Accepted, PublishError> {
        self.publisher.publish_event(decision).await
    }

    /// When an LP's status or metrics change (on `lp-performance`, keyed by LP).
    pub async fn lp_metrics(&self, metrics: &LpMetrics) -> Result<Accepted, PublishError> {
        self.publisher.publish_event(metrics).await
    }

    /// An LP leaves the desk: its row leaves `lp-performance`'s table (a delete that
    /// carries its last metrics), so no dashboard shows it and new ones never see it.
    pub async fn lp_delisted(&self, last: &LpMetrics) -> Result<Accepted, PublishError> {
        let mut publication =
            last.to_publication().map_err(|e| PublishError { code: ErrorCode::BadRequest, message: e.to_string() })?;
        publication.op = Op::Delete;
        self.publisher.publish(publication).await
    }

    /// When exposure changes (on `exposure-updates`); refused with BAD_REQUEST when a
    /// figure is not finite or the limit is not positive.
    pub async fn exposure(&self, exposure: Exposure) -> Result<Accepted, PublishError> {
        let Exposure { total_exposure, net_exposure, exposure_limit, by_symbol, by_lp } = exposure;
        let change = ExposureChange::new(total_exposure, net_exposure, exposure_limit, by_symbol, by_lp)
            .map_err(|e| PublishError { code: ErrorCode::BadRequest, message: e.to_string() })?;
        self.publisher.publish_event(&change).await
    }

    /// Raises an alert (on `alerts`) with a fresh id.
    pub async fn alert(&self, alert: NewAlert) -> Result<Accepted, PublishError> {
        let NewAlert { severity, category, title, message, source, action_items } = alert;
        let alert = Alert {
            id: alert_id(now_timestamp(), fastrand::u32(..)),
            severity,
            category,
            title,
            message,
            source,
            action_items,
        };
        self.publisher.publish_event(&alert).await
    }
}

#[cfg(test)]
mod tests {
    use tidewire_protocol::{Event, Publication};
    use tidewire_server::{Config, Hub};

    use super::*;
    use crate::catalogue::{Book, Side, channels};

    fn hub() -> Hub {
        Hub::new(Config::for_tests("desk-tests-secret-of-32-bytes-or-more")).expect("hub")
    }

    #[tokio::test]
    async fn each_helper_publishes_its_event_on_its_channel() {
        let hub = hub();
        let desk = DeskPublisher::new(hub.publisher());
        let decision = RoutingDecision {
            symbol: "EURUSD".into(),
            side: Side::Buy,
            volume: 100_000.0,
            routing_decision: Book::ABook,
            lp_selected: "OANDA".into(),
            execution_time_ms: 12,
            spread: 0.0001,
            slippage: 0.0,
        };
        assert_eq!(desk.routing_decision(&decision).await.unwrap().seq, 1);
        let exposure = Exposure {
            total_exposure: 2e6,
            net_exposure: 1e6,
            exposure_limit: 1e7,
            by_symbol: BTreeMap::new(),
            by_lp: BTreeMap::new(),
        };
        desk.exposure(exposure.clone()).await.unwrap();
        let bad = Exposure { exposure_limit: 0.0, ..exposure };
        assert_eq!(desk.exposure(bad).await.unwrap_err().code, ErrorCode::BadRequest);
        let alert = NewAlert {
            severity: Severity::Info,
            category: Category::System,
            title: "Started".into(),
            message: "The desk is live".into(),
            source: "tests".into(),
            action_items: vec![],
        };
        desk.alert(alert).await.unwrap();
        let channels: Vec<String> = hub.channels().await.into_iter().map(|c| c.channel).collect();
        for channel in [channels::ROUTING_METRICS, channels::EXPOSURE_UPDATES, channels::ALERTS] {
            assert!(channels.iter().any(|c| c == channel), "{channel} in {channels:?}");
        }
        // What went out reads back as the typed event.
        let publication = Publication {
            kind: RoutingDecision::TYPE.into(),
            timestamp: now_timestamp(),
            channel: channels::ROUTING_METRICS.into(),
            seq: 1,
            key: None,
            op: Default::default(),
            snapshot: false,
            base: None,
            data: serde_json::to_value(&decision).unwrap(),
        };
        assert_eq!(RoutingDecision::from_publication(&publication).unwrap(), Some(decision));
    }
}
