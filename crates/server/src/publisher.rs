//! The in-process publisher: what a Rust service embedding tidewire calls to push
//! updates, through the same path as `POST /api/publish`.
//!
//! Besides the generic [`Publisher::publish`] and [`Publisher::publish_event`], it has
//! typed helpers for the analytics catalogue, one per event, mirroring the calls the
//! routing engine, LP manager and exposure monitor already make.

use std::collections::BTreeMap;

use tidewire_protocol::analytics::{
    Alert, Book, Category, ExposureChange, LpMetrics, LpStatus, RoutingDecision, Severity, Side, alert_id,
};
use tidewire_protocol::{ErrorCode, Event, NewPublication};

use crate::hub::{Accepted, Hub, PublishError, now_timestamp};

/// Publishes into a hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    hub: Hub,
}

impl Publisher {
    pub fn new(hub: Hub) -> Publisher {
        Publisher { hub }
    }

    /// Publishes an untyped message.
    pub async fn publish(&self, publication: NewPublication) -> Result<Accepted, PublishError> {
        self.hub.publish(publication).await
    }

    /// Publishes a typed event on its home channel.
    pub async fn publish_event<E: Event>(&self, event: &E) -> Result<Accepted, PublishError> {
        let publication =
            event.to_publication().map_err(|e| PublishError { code: ErrorCode::BadRequest, message: e.to_string() })?;
        self.hub.publish(publication).await
    }

    /// After a routing decision.
    #[allow(clippy::too_many_arguments)]
    pub async fn notify_routing_decision(
        &self,
        symbol: &str,
        side: Side,
        volume: f64,
        decision: Book,
        lp_selected: &str,
        execution_time_ms: u64,
        spread: f64,
        slippage: f64,
    ) -> Result<Accepted, PublishError> {
        self.publish_event(&RoutingDecision {
            symbol: symbol.to_owned(),
            side,
            volume,
            routing_decision: decision,
            lp_selected: lp_selected.to_owned(),
            execution_time_ms,
            spread,
            slippage,
        })
        .await
    }

    /// When an LP's status or metrics change.
    #[allow(clippy::too_many_arguments)]
    pub async fn notify_lp_status_change(
        &self,
        lp_name: &str,
        status: LpStatus,
        avg_spread: f64,
        execution_quality: f64,
        latency_ms: u64,
        quotes_per_second: u64,
        reject_rate: f64,
        uptime: f64,
    ) -> Result<Accepted, PublishError> {
        self.publish_event(&LpMetrics {
            lp_name: lp_name.to_owned(),
            status,
            avg_spread,
            execution_quality,
            latency_ms,
            quotes_per_second,
            reject_rate,
            uptime,
        })
        .await
    }

    /// When exposure changes; utilization and risk level are derived.
    pub async fn notify_exposure_change(
        &self,
        total_exposure: f64,
        net_exposure: f64,
        exposure_limit: f64,
        by_symbol: BTreeMap<String, f64>,
        by_lp: BTreeMap<String, f64>,
    ) -> Result<Accepted, PublishError> {
        let change = ExposureChange::new(total_exposure, net_exposure, exposure_limit, by_symbol, by_lp)
            .map_err(|e| PublishError { code: ErrorCode::BadRequest, message: e.to_string() })?;
        self.publish_event(&change).await
    }

    /// Raises an alert with a fresh id.
    pub async fn notify_alert(
        &self,
        severity: Severity,
        category: Category,
        title: &str,
        message: &str,
        source: &str,
        action_items: &[&str],
    ) -> Result<Accepted, PublishError> {
        self.publish_event(&Alert {
            id: alert_id(now_timestamp(), fastrand::u32(..)),
            severity,
            category,
            title: title.to_owned(),
            message: message.to_owned(),
            source: source.to_owned(),
            action_items: action_items.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
    }
}
