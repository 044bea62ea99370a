//! The demo: a synthetic trading desk publishing through the same path as production.
//!
//! `tidewire-desk` runs a node with this publisher, the dashboard's static files, and a
//! `/demo/token` endpoint that hands the page a short-lived token (the page's token
//! provider calls it before each connect and before expiry, so the demo exercises the
//! refresh path too). The market is a random walk, not a replay:
//!
//! - routing decisions at `rate` per second over six symbols and six LPs, mostly A-Book
//!   for large orders, with execution times that depend on the chosen LP's latency;
//! - every LP's metrics once a second (keyed by LP, so a new page sees all six at once),
//!   with occasional degradations and disconnects;
//! - the book's exposure four times a second, driven by the B-Book flow, mean-reverting
//!   towards flat, with its limit at 10 million;
//! - alerts when exposure crosses 80 % and 95 % of the limit, when an LP disconnects or
//!   recovers, and a routing summary every few seconds;
//! - LPs leave and rejoin the desk when told ([`Listing`], the demo's
//!   `POST /demo/delist?lp=…` and `/demo/relist?lp=…`): a delisted LP's row is deleted
//!   from the keyed table, so every dashboard drops it and a new one never sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidewire_server::Hub;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};

use crate::catalogue::{Book, Category, LpMetrics, LpStatus, RoutingDecision, Severity, Side};
use crate::publish::{DeskPublisher, Exposure, NewAlert};

const SYMBOLS: [(&str, f64); 6] = [
    ("EURUSD", 1.0842),
    ("GBPUSD", 1.2671),
    ("USDJPY", 151.42),
    ("AUDUSD", 0.6583),
    ("USDCHF", 0.8791),
    ("XAUUSD", 2331.5),
];
const LPS: [&str; 6] = ["OANDA", "LMAX", "Citi", "HSBC", "Barclays", "Jump"];
const EXPOSURE_LIMIT: f64 = 10_000_000.0;

/// Which of the desk's LPs are delisted; shared by the demo's routes and its publisher.
#[derive(Debug, Clone, Default)]
pub struct Listing(Arc<Mutex<BTreeSet<String>>>);

impl Listing {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes an LP off the desk; false for a name the desk does not have.
    pub fn delist(&self, lp: &str) -> bool {
        LPS.contains(&lp) && {
            self.lock().insert(lp.to_owned());
            true
        }
    }

    /// Brings an LP back; false for a name the desk does not have.
    pub fn relist(&self, lp: &str) -> bool {
        LPS.contains(&lp) && {
            self.lock().remove(lp);
            true
        }
    }

    fn is_listed(&self, lp: &str) -> bool {
        !self.lock().contains(lp)
    }
}

/// How long demo tokens live (the page refreshes them in band).
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(600);

/// A token for the dashboard: every shared channel, no publishing.
pub fn demo_token(secret: &str, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = unix_now();
    // `iat`, so that revoking the viewer's tokens (issued before now) lets the next one in.
    let claims =
        Claims { sub: user.to_owned(), exp: now + DEMO_TOKEN_TTL.as_secs(), iat: Some(now), ..Claims::default() };
    mint_hs256(secret, &claims)
}

/// How long the demo's operator token lives.
pub const OPERATOR_TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

/// A token for the operator console (`/console/`): the operator grant, nothing to
/// subscribe or publish. Printed at start, never served.
pub fn operator_token(secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: "demo-operator".to_owned(),
        exp: unix_now() + OPERATOR_TOKEN_TTL.as_secs(),
        channels: Some(Vec::new()),
        operator: true,
        ..Claims::default()
    };
    mint_hs256(secret, &claims)
}

struct Lp {
    name: &'static str,
    status: LpStatus,
    latency_ms: f64,
    quality: f64,
    spread: f64,
    quotes: f64,
    reject_rate: f64,
    up_seconds: f64,
    total_seconds: f64,
    /// On the desk as of the last metrics published.
    listed: bool,
}

struct Market {
    rng: fastrand::Rng,
    listing: Listing,
    lps: Vec<Lp>,
    by_symbol: BTreeMap<String, f64>,
    by_lp: BTreeMap<String, f64>,
    gross: f64,
    last_band: u8,
}

impl Market {
    fn new(seed: u64, listing: Listing) -> Market {
        let mut rng = fastrand::Rng::with_seed(seed);
        let lps = LPS
            .iter()
            .map(|&name| Lp {
                name,
                status: LpStatus::Connected,
                latency_ms: 10.0 + rng.f64() * 40.0,
                quality: 0.9 + rng.f64() * 0.09,
                spread: 0.00008 + rng.f64() * 0.0001,
                quotes: 300.0 + rng.f64() * 700.0,
                reject_rate: rng.f64() * 0.03,
                up_seconds: 0.0,
                total_seconds: 0.0,
                listed: true,
            })
            .collect();
        Market { rng, listing, lps, by_symbol: BTreeMap::new(), by_lp: BTreeMap::new(), gross: 0.0, last_band: 0 }
    }

    async fn routing_decision(&mut self, publisher: &DeskPublisher) {
        let (symbol, _) = SYMBOLS[self.rng.usize(..SYMBOLS.len())];
        let side = if self.rng.bool() { Side::Buy } else { Side::Sell };
        let volume = (self.rng.f64().powi(3) * 990_000.0 + 10_000.0).round();
        // Large tickets go to an LP; small flow is internalised more often.
        let decision = if volume > 250_000.0 || self.rng.f64() < 0.35 { Book::ABook } else { Book::BBook };
        let live: Vec<usize> = (0..self.lps.len())
            .filter(|&i| self.lps[i].status != LpStatus::Disconnected && self.lps[i].listed)
            .collect();
        let lp_index = if live.is_empty() { 0 } else { live[self.rng.usize(..live.len())] };
        let lp = &self.lps[lp_index];
        let execution = (lp.latency_ms * (0.6 + self.rng.f64() * 0.9)).round() as u64;
        let spread = lp.spread * (0.8 + self.rng.f64() * 0.4);
        let slippage = (self.rng.f64() - 0.4) * 0.00005;
        if decision == Book::BBook {
            let signed = if side == Side::Buy { -volume } else { volume };
            *self.by_symbol.entry(symbol.to_owned()).or_insert(0.0) += signed;
        } else {
            let signed = if side == Side::Buy { volume } else { -volume };
            *self.by_lp.entry(lp.name.to_owned()).or_insert(0.0) += signed * 0.02;
        }
        self.gross += volume;
        let decision = RoutingDecision {
            symbol: symbol.to_owned(),
            side,
            volume,
            routing_decision: decision,
            lp_selected: lp.name.to_owned(),
            execution_time_ms: execution,
            spread: round6(spread),
            slippage: round6(slippage),
        };
        let _ = publisher.routing_decision(&decision).await;
    }

    async fn lp_metrics(&mut self, publisher: &DeskPublisher) {
        for i in 0..self.lps.len() {
            let roll = self.rng.f64();
            let listed = self.listing.is_listed(self.lps[i].name);
            let lp = &mut self.lps[i];
            if !listed {
                if std::mem::replace(&mut lp.listed, false) {
                    let last = LpMetrics {
                        lp_name: lp.name.to_owned(),
                        status: LpStatus::Disconnected,
                        avg_spread: round6(lp.spread),
                        execution_quality: 0.0,
                        latency_ms: 0,
                        quotes_per_second: 0,
                        reject_rate: round3(lp.reject_rate),
                        uptime: 0.0,
                    };
                    let _ = publisher.lp_delisted(&last).await;
                }
                continue;
            }
            lp.listed = true;
            let before = lp.status;
            lp.status = match lp.status {
                LpStatus::Connected if roll < 0.01 => LpStatus::Disconnected,
                LpStatus::Connected if roll < 0.04 => LpStatus::Degraded,
                LpStatus::Degraded if roll < 0.35 => LpStatus::Connected,
                LpStatus::Disconnected if roll < 0.25 => LpStatus::Connected,
                status => status,
            };
            let drift = |value: f64, scale: f64, rng: &mut fastrand::Rng| value + (rng.f64() - 0.5) * scale;
            lp.latency_ms = drift(lp.latency_ms, 6.0, &mut self.rng).clamp(3.0, 180.0);
            lp.quality = drift(lp.quality, 0.02, &mut self.rng).clamp(0.7, 0.999);
            lp.spread = drift(lp.spread, 0.00001, &mut self.rng).clamp(0.00004, 0.0004);
            lp.quotes = drift(lp.quotes, 80.0, &mut self.rng).clamp(50.0, 2000.0);
            lp.reject_rate = drift(lp.reject_rate, 0.004, &mut self.rng).clamp(0.0, 0.2);
            lp.total_seconds += 1.0;
            if lp.status != LpStatus::Disconnected {
                lp.up_seconds += 1.0;
            }
            let (latency, quality) = match lp.status {
                LpStatus::Degraded => (lp.latency_ms * 3.0, lp.quality * 0.85),
                LpStatus::Disconnected => (0.0, 0.0),
                LpStatus::Connected => (lp.latency_ms, lp.quality),
            };
            let quotes = if lp.status == LpStatus::Disconnected { 0 } else { lp.quotes.round() as u64 };
            let uptime = 100.0 * (lp.up_seconds + 3600.0) / (lp.total_seconds + 3600.0);
            let (name, status) = (lp.name, lp.status);
            let metrics = LpMetrics {
                lp_name: name.to_owned(),
                status,
                avg_spread: round6(lp.spread),
                execution_quality: round3(quality),
                latency_ms: latency.round() as u64,
                quotes_per_second: quotes,
                reject_rate: round3(lp.reject_rate),
                uptime: round3(uptime),
            };
            let _ = publisher.lp_metrics(&metrics).await;
            if before != status && (before == LpStatus::Disconnected || status == LpStatus::Disconnected) {
                let (severity, title, message, actions): (Severity, String, String, &[&str]) =
                    if status == LpStatus::Disconnected {
                        (
                            Severity::Warning,
                            "LP Connection Lost".to_owned(),
                            format!("Connection to {name} LP was lost. Attempting reconnection."),
                            &["Check LP credentials", "Verify network connectivity"],
                        )
                    } else {
                        (Severity::Info, "LP Reconnected".to_owned(), format!("{name} is quoting again."), &[])
                    };
                let _ = publisher.alert(alert(severity, Category::Lp, title, message, "LPManager", actions)).await;
            }
        }
    }

    async fn exposure(&mut self, publisher: &DeskPublisher) {
        // Hedging pulls the book back towards flat; now and then a burst of one-sided
        // client flow pushes it towards the limit.
        for value in self.by_symbol.values_mut().chain(self.by_lp.values_mut()) {
            *value *= 0.97;
        }
        if self.rng.f64() < 0.01 {
            let (symbol, _) = SYMBOLS[self.rng.usize(..SYMBOLS.len())];
            let shock = (1.0 + self.rng.f64()) * 6_000_000.0 * if self.rng.bool() { 1.0 } else { -1.0 };
            *self.by_symbol.entry(symbol.to_owned()).or_insert(0.0) += shock;
        }
        let net: f64 = self.by_symbol.values().sum::<f64>() * 0.6;
        let total: f64 = self.by_symbol.values().map(|v| v.abs()).sum::<f64>() * 0.6;
        let rounded = |map: &BTreeMap<String, f64>| map.iter().map(|(k, v)| (k.clone(), v.round())).collect();
        let exposure = Exposure {
            total_exposure: total.round(),
            net_exposure: net.round(),
            exposure_limit: EXPOSURE_LIMIT,
            by_symbol: rounded(&self.by_symbol),
            by_lp: rounded(&self.by_lp),
        };
        let _ = publisher.exposure(exposure).await;
        let utilization = (net / EXPOSURE_LIMIT * 100.0).abs();
        let band = match utilization {
            u if u >= 95.0 => 2,
            u if u >= 80.0 => 1,
            _ => 0,
        };
        if band > self.last_band {
            let (severity, title) = if band == 2 {
                (Severity::Critical, "Exposure Limit Exceeded")
            } else {
                (Severity::Error, "Exposure Near Limit")
            };
            let message = format!("Net exposure is at {utilization:.0}% of limit");
            let actions = ["Review open positions", "Consider hedging large positions"];
            let _ =
                publisher.alert(alert(severity, Category::Exposure, title, message, "ExposureMonitor", &actions)).await;
        }
        self.last_band = band;
        if self.rng.f64() < 0.06 {
            let message = format!("{:.1}M notional routed since the last summary", self.gross / 1e6);
            let summary = alert(Severity::Info, Category::Routing, "Routing Summary", message, "RoutingEngine", &[]);
            let _ = publisher.alert(summary).await;
            self.gross = 0.0;
        }
    }
}

fn alert(
    severity: Severity,
    category: Category,
    title: impl Into<String>,
    message: String,
    source: &str,
    actions: &[&str],
) -> NewAlert {
    let action_items = actions.iter().map(|a| (*a).to_owned()).collect();
    NewAlert { severity, category, title: title.into(), message, source: source.to_owned(), action_items }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Publishes the synthetic desk into `hub` until the hub drains; `listing` says which
/// LPs are on the desk.
pub async fn run_publisher(hub: Hub, routing_per_second: u32, listing: Listing) {
    let publisher = DeskPublisher::new(hub.publisher());
    let mut market = Market::new(fastrand::u64(..), listing);
    let shutdown = hub.shutdown_token();
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0;
    let mut ticks: u64 = 0;
    market.lp_metrics(&publisher).await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        ticks += 1;
        owed += f64::from(routing_per_second) * tick.as_secs_f64();
        while owed >= 1.0 {
            market.routing_decision(&publisher).await;
            owed -= 1.0;
        }
        if ticks % 25 == 0 {
            market.exposure(&publisher).await;
        }
        if ticks % 100 == 0 {
            market.lp_metrics(&publisher).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_knows_the_desks_lps_only() {
        let listing = Listing::default();
        assert!(listing.is_listed("Jump"));
        assert!(listing.delist("Jump"));
        assert!(!listing.is_listed("Jump"));
        assert!(!listing.delist("Nobody"), "an LP the desk does not have");
        assert!(listing.relist("Jump"));
        assert!(listing.is_listed("Jump"));
    }
}
