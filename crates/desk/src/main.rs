//! `tidewire-desk`: the demo. A node with the synthetic desk publishing, the dashboard at
//! `/`, a `/demo/token` endpoint handing the page short-lived read-only tokens, and
//! `POST /demo/delist?lp=…` / `/demo/relist?lp=…` to take an LP off the desk and back.
//!
//! It is the `tidewire` gateway with two additions, made through the embedding API any
//! application would use ([`tidewire_server::process::run`]): a task publishing the
//! catalogue's events and one route. Every gateway flag works here too.

use std::process::ExitCode;

use std::collections::HashMap;
use std::future::Ready;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use tidewire_desk::demo::Listing;
use tidewire_server::Config;

/// The tidewire demo: a synthetic trading desk, the dashboard and dev tokens.
#[derive(Parser)]
#[command(name = "tidewire-desk", version)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Routing decisions published per second.
    #[arg(long, env = "TIDEWIRE_DEMO_RATE", default_value_t = 300)]
    rate: u32,
}

/// Where the demo listens unless told otherwise: this machine only. It hands a token to
/// anyone who asks (`/demo/token`), which is only safe on loopback.
const DEMO_LISTEN: &str = "127.0.0.1:7999";

/// The secret the demo uses when none is configured.
const DEMO_SECRET: &str = "tidewire-demo-secret-never-use-in-production";

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let listen_given =
        matches.value_source("listen").is_some_and(|source| source != clap::parser::ValueSource::DefaultValue);
    let Cli { mut config, rate } = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if !listen_given {
        config.listen = DEMO_LISTEN.parse().unwrap_or(config.listen);
    }
    let warn_secret = config.jwt_secret.is_none();
    let secret = config.jwt_secret.get_or_insert_with(|| DEMO_SECRET.to_owned()).clone();
    if config.web_dir.is_none() {
        config.web_dir = Some("web/dist".into());
    }
    tidewire_server::process::run(config, move |hub, addr, app| {
        if warn_secret {
            tracing::warn!("demo: no --jwt-secret given, using the built-in demo secret (never do this in production)");
        }
        let listing = Listing::default();
        tokio::spawn(tidewire_desk::demo::run_publisher(hub.clone(), rate, listing.clone()));
        let token_secret = secret.clone();
        let app = app.route(
            "/demo/token",
            axum::routing::get(move |Query(query): LpQuery| {
                let secret = token_secret.clone();
                async move {
                    // A page names itself (`?viewer=`, kept across its reconnects, as a
                    // signed-in user would be); without a valid name it gets a new one.
                    let named = query
                        .get("viewer")
                        .filter(|v| (1..=16).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()));
                    let user = match named {
                        Some(name) => format!("viewer-{name}"),
                        None => format!("viewer-{:04x}", fastrand::u16(..)),
                    };
                    tidewire_desk::demo::demo_token(&secret, &user).unwrap_or_default()
                }
            }),
        );
        let app = app
            .route("/demo/delist", axum::routing::post(change_listing(listing.clone(), true)))
            .route("/demo/relist", axum::routing::post(change_listing(listing, false)));
        let browse = addr.to_string().replace("0.0.0.0", "127.0.0.1");
        let token = tidewire_desk::demo::demo_token(&secret, "demo").unwrap_or_default();
        let operator = tidewire_desk::demo::operator_token(&secret).unwrap_or_default();
        tracing::info!(rate, "demo publisher running");
        println!(
            "\n  tidewire demo: open http://{browse}/\n  WebSocket:     ws://{browse}/ws\n  dev token:     {token}\n  \
             console:       http://{browse}/console/ (sign in with the operator token)\n  operator token: {operator}\n"
        );
        app
    })
}

/// The query of `/demo/token`, `/demo/delist` and `/demo/relist`.
type LpQuery = Query<HashMap<String, String>>;

/// `POST /demo/delist?lp=NAME` (or relist): 204, or 404 for an LP the desk does not have;
/// 403 for a request a page of another site made (its `Origin` names another host), so
/// a page the demo's user happens to open cannot change the desk behind their back.
fn change_listing(
    listing: Listing,
    delist: bool,
) -> impl Fn(HeaderMap, LpQuery) -> Ready<StatusCode> + Clone + Send + 'static {
    move |headers, Query(query)| {
        if !same_origin(&headers) {
            return std::future::ready(StatusCode::FORBIDDEN);
        }
        let lp = query.get("lp").map(String::as_str).unwrap_or_default();
        let known = if delist { listing.delist(lp) } else { listing.relist(lp) };
        std::future::ready(if known { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND })
    }
}

/// Whether a request comes from the demo's own page or from no page at all: no
/// `Origin` (curl, scripts), or an `Origin` whose host and port are the request's `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else { return true };
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_demos_own_page_or_no_page_may_change_the_listing() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7999")])), "no Origin: curl, scripts");
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7999"), ("origin", "http://127.0.0.1:7999")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:7999"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:7999"), ("origin", "http://127.0.0.1:8000")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:7999"), ("origin", "null")])), "sandboxed pages");
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:7999")])), "no Host to compare with");
    }
}
