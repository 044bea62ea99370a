//! What the Redis engine keeps in Redis, and the Lua scripts that read and write it.
//!
//! Per channel, under the prefix and a `{channel}` hash tag (so a channel's keys live
//! on one Redis Cluster slot):
//!
//! | key       | type   | what                                              | expires after |
//! |-----------|--------|---------------------------------------------------|---------------|
//! | `seq`     | string | the head seq                                      | `--channel-ttl` without a publication |
//! | `epoch`   | string | the stream's id, made by the first publication    | `--channel-ttl` |
//! | `latest`  | hash   | key → `seq\nmessage`: the snapshot                 | `--channel-ttl` |
//! | `lbytes`  | string | the bytes of `latest`'s values                    | `--channel-ttl` |
//! | `hist`    | stream | the last publications, ids `<seq>-1`              | `--history-ttl` |
//! | `idem`    | hash   | idempotency key → seq of recent publications      | `--idempotency-window` |
//! | `idemt`   | sorted set | idempotency key → when (ms), to expire them one by one | `--idempotency-window` |
//!
//! Besides, for the cluster as a whole: `node:<id>` (each node's announcement, 15 s),
//! `revocations` (see [`REVOKE`]) and `reply:<question>` (other nodes' answers to one
//! node's question, seconds).
//!
//! Only publications write. Subscribing reads: a channel nobody publishes leaves nothing
//! in Redis, and its start reports the empty epoch `""` (no state); the first publication
//! then creates the epoch, and nodes re-announce it to their subscribers as a
//! continuation, not a loss.

use std::sync::Arc;

use tidewire_protocol::{EncodedMessage, PublicationTemplate, StreamPosition};

/// The Redis keys of one channel.
pub struct Keys {
    pub seq: String,
    pub hist: String,
    pub latest: String,
    pub latest_bytes: String,
    pub epoch: String,
    pub idempotency: String,
    pub idempotency_times: String,
    pub pubsub: String,
}

impl Keys {
    pub fn new(prefix: &str, channel: &str) -> Keys {
        let base = format!("{prefix}:{{{channel}}}");
        Keys {
            seq: format!("{base}:seq"),
            hist: format!("{base}:hist"),
            latest: format!("{base}:latest"),
            latest_bytes: format!("{base}:lbytes"),
            epoch: format!("{base}:epoch"),
            idempotency: format!("{base}:idem"),
            idempotency_times: format!("{base}:idemt"),
            pubsub: Keys::pubsub(prefix, channel),
        }
    }

    /// The pub/sub channel a channel's publications travel on.
    pub fn pubsub(prefix: &str, channel: &str) -> String {
        format!("{prefix}:pub:{channel}")
    }

    /// Where a node announces itself (`GET /api/info` lists the nodes whose key lives).
    pub fn node(prefix: &str, instance: &str) -> String {
        format!("{prefix}:node:{instance}")
    }

    /// The live nodes: a sorted set of node ids scored by when each last announced
    /// itself (ms), so listing and counting them never scans the keyspace.
    pub fn nodes(prefix: &str) -> String {
        format!("{prefix}:nodes")
    }

    /// The cluster's revocations: a sorted set of `jti:<id>` and `user:<name>` scored
    /// by when they expire (seconds since the epoch), expiring with the last of them;
    /// see [`REVOKE`].
    pub fn revocations(prefix: &str) -> String {
        format!("{prefix}:revocations")
    }

    /// Each revoked user's cut (tokens issued before it are revoked), beside
    /// [`Keys::revocations`].
    pub fn revocation_cuts(prefix: &str) -> String {
        format!("{prefix}:revcuts")
    }

    /// Where the nodes answer one question of another node (a list, kept seconds).
    pub fn reply(prefix: &str, question: &str) -> String {
        format!("{prefix}:reply:{question}")
    }

    /// The pub/sub channel that carries watched users' trace events to every node.
    pub fn traces(prefix: &str) -> String {
        format!("{prefix}:trace")
    }

    /// The pub/sub channel that carries operator orders to every node (outside the
    /// `pub:` namespace, so no channel name can reach it).
    pub fn control(prefix: &str) -> String {
        format!("{prefix}:control")
    }
}

/// Numbers, stores and publishes one publication, atomically. A publication whose
/// idempotency key the channel has seen within the window is answered with that seq
/// (`{seq, '', 1}`) and not published. Refuses (`{0, reason}`) a new key beyond the
/// channel's key limit, or latest values over their byte limit, without storing the
/// publication. Every write renews the channel's TTLs. A channel without an epoch
/// starts a new stream at seq 1, clearing what an older one may have left (a stream that
/// outlived its seq would refuse the new ids).
///
/// A `delete` takes its key out of the latest values (and their byte count), a `clear`
/// empties them; both are numbered, kept in history and published like any other.
///
/// KEYS: seq, hist, latest, lbytes, epoch, idem, idemt. ARGV: message prefix, message
/// suffix, key (`''` for none), history length, history TTL (ms), a fresh epoch, the
/// pub/sub channel, channel TTL (ms), max keys, max latest bytes, idempotency key
/// (`''` for none), idempotency window (ms), max idempotency keys, op (`''` for an
/// upsert, `delete`, `clear`).
pub const PUBLISH: &str = r#"
local ikey = ARGV[11]
local now = 0
if ikey ~= '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local old = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[12]))
  for _, k in ipairs(old) do redis.call('HDEL', KEYS[6], k) end
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[12]))
  local seen = redis.call('HGET', KEYS[6], ikey)
  if seen then return {tonumber(seen), '', 1} end
end
local epoch = redis.call('GET', KEYS[5])
local seq = 1
if epoch then
  seq = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
else
  epoch = ARGV[6]
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
end
local msg = ARGV[1] .. seq .. ARGV[2]
local key = ARGV[3]
local ttl = ARGV[8]
local op = ARGV[14]
if op == 'clear' then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[4], 0, 'PX', ttl)
elseif key ~= '' and op == 'delete' then
  local old = redis.call('HSTRLEN', KEYS[3], key)
  if old > 0 then
    redis.call('HDEL', KEYS[3], key)
    redis.call('SET', KEYS[4], math.max(0, tonumber(redis.call('GET', KEYS[4]) or '0') - old), 'PX', ttl)
  end
elseif key ~= '' then
  local entry = seq .. '\n' .. msg
  local old = redis.call('HSTRLEN', KEYS[3], key)
  if old == 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[9]) then return {0, 'keys'} end
  local bytes = tonumber(redis.call('GET', KEYS[4]) or '0') - old + string.len(entry)
  if bytes > tonumber(ARGV[10]) then return {0, 'bytes'} end
  redis.call('HSET', KEYS[3], key, entry)
  redis.call('SET', KEYS[4], bytes, 'PX', ttl)
end
redis.call('SET', KEYS[5], epoch, 'PX', ttl)
redis.call('SET', KEYS[1], seq, 'PX', ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'm', msg)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ikey ~= '' then
  redis.call('HSET', KEYS[6], ikey, seq)
  redis.call('ZADD', KEYS[7], now, ikey)
  while redis.call('ZCARD', KEYS[7]) > tonumber(ARGV[13]) do
    local oldest = redis.call('ZPOPMIN', KEYS[7])
    redis.call('HDEL', KEYS[6], oldest[1])
  end
  redis.call('PEXPIRE', KEYS[6], ARGV[12])
  redis.call('PEXPIRE', KEYS[7], ARGV[12])
end
redis.call('PUBLISH', ARGV[7], epoch .. '\n' .. seq .. '\n' .. string.len(key) .. '\n' .. key .. msg)
return {seq, epoch}
"#;

/// Reads a subscription's start, writing nothing: `{epoch, head, recovered (1/0),
/// messages…}`, the replay after `since` when its epoch matches (`=epoch`, or `''` for a
/// position without one) and the stream has every entry within the count and byte
/// limits, else the snapshot (`seq\nmsg` values). A channel without state answers the
/// empty epoch and head 0.
///
/// KEYS: seq, hist, latest, epoch. ARGV: since seq (-1 for none), max count, since epoch,
/// max bytes.
pub const START: &str = r#"
local epoch = redis.call('GET', KEYS[4]) or ''
local head = 0
if epoch ~= '' then head = tonumber(redis.call('GET', KEYS[1]) or '0') end
local since = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
if since >= 0 and ARGV[3] ~= '' and ARGV[3] ~= ('=' .. epoch) then since = -1 end
if since >= 0 and since <= head and head - since <= max then
  local missing = head - since
  local reply = {epoch, head, 1}
  if missing == 0 then return reply end
  local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-1', head .. '-1')
  if #entries == missing then
    local bytes = 0
    for i, entry in ipairs(entries) do
      bytes = bytes + string.len(entry[2][2])
      reply[3 + i] = entry[2][2]
    end
    if bytes <= tonumber(ARGV[4]) then return reply end
  end
end
local reply = {epoch, head, 0}
if epoch == '' then return reply end
local latest = redis.call('HVALS', KEYS[3])
for i, value in ipairs(latest) do reply[3 + i] = value end
return reply
"#;

/// Returns `{epoch or '', head, messages…}` for `from..=to` when the stream has all of
/// them, else `{epoch, head}`.
///
/// KEYS: seq, epoch, hist. ARGV: from, to.
pub const RANGE: &str = r#"
local epoch = redis.call('GET', KEYS[2])
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local from = tonumber(ARGV[1])
local to = math.min(tonumber(ARGV[2]), head)
local reply = {epoch or '', head}
if to < from then return reply end
local entries = redis.call('XRANGE', KEYS[3], from .. '-1', to .. '-1')
if #entries == to - from + 1 then
  for i, entry in ipairs(entries) do reply[2 + i] = entry[2][2] end
end
return reply
"#;

/// Keeps a revocation for the cluster and tells every node, atomically. The set
/// holds one member per token (`jti:<id>`) or user (`user:<name>`), scored by when it
/// expires (a later expiry widens it, an earlier one never narrows it); a user's cut
/// (tokens issued before it are revoked) is in the hash beside it, and only ever moves
/// later. Expired members (and their cuts) are forgotten first; a new member when the
/// set holds `max` already is refused (`0`). Both keys live as long as the last member.
/// Then the notice is `PUBLISH`ed (`1`).
///
/// KEYS: revocations, cuts. ARGV: member, expires at, cut (or ''), now, max, control
/// channel, notice.
pub const REVOKE: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
for _, member in ipairs(expired) do redis.call('HDEL', KEYS[2], member) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  return 0
end
if not held or tonumber(held) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
if ARGV[3] ~= '' then
  local cut = redis.call('HGET', KEYS[2], ARGV[1])
  if not cut or tonumber(cut) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], tonumber(last[2]))
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIREAT', KEYS[2], tonumber(last[2])) end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"#;

/// The revocations in force after `now`: `{member, expires at, cut or false, …}`.
///
/// KEYS: revocations, cuts. ARGV: now.
pub const REVOCATIONS: &str = r#"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local reply = {}
for i = 1, #members, 2 do
  reply[#reply + 1] = members[i]
  reply[#reply + 1] = members[i + 1]
  reply[#reply + 1] = redis.call('HGET', KEYS[2], members[i]) or ''
end
return reply
"#;

/// A page of history, writing nothing: `{epoch or '', head, more (1/0), messages…}`, the
/// stored publications after `since`, oldest or newest first, at most `limit` of them
/// and at most `max bytes` in all (`more` says whether the page stopped early).
///
/// KEYS: seq, epoch, hist. ARGV: since, limit, newest first (1/0), max bytes.
pub const HISTORY: &str = r#"
local epoch = redis.call('GET', KEYS[2])
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[4])
local reply = {epoch or '', head, 0}
if not epoch or since >= head then return reply end
local entries
if ARGV[3] == '1' then
  entries = redis.call('XREVRANGE', KEYS[3], '+', (since + 1) .. '-1', 'COUNT', limit + 1)
else
  entries = redis.call('XRANGE', KEYS[3], (since + 1) .. '-1', '+', 'COUNT', limit + 1)
end
local bytes = 0
for i, entry in ipairs(entries) do
  local message = entry[2][2]
  if i > limit or bytes + string.len(message) > max_bytes then
    reply[3] = 1
    break
  end
  bytes = bytes + string.len(message)
  reply[3 + i] = message
end
return reply
"#;

/// The `since` epoch argument of [`START`]: `''` for a position without an epoch,
/// `=epoch` for one with it (the empty epoch included).
pub fn since_epoch(since: Option<&StreamPosition>) -> String {
    since.and_then(|p| p.epoch.as_deref()).map_or_else(String::new, |epoch| format!("={epoch}"))
}

/// What [`PUBLISH`] answered.
pub enum Published {
    Accepted {
        seq: u64,
        duplicate: bool,
    },
    /// A new key beyond the channel's limit.
    TooManyKeys,
    /// Latest values over their byte limit.
    TooManyBytes,
}

pub fn parse_published(reply: Vec<redis::Value>) -> redis::RedisResult<Published> {
    let mut items = reply.into_iter();
    let seq: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    if seq > 0 {
        let _epoch = items.next();
        let duplicate = items.next().is_some();
        return Ok(Published::Accepted { seq, duplicate });
    }
    let reason: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
    Ok(if reason == "keys" { Published::TooManyKeys } else { Published::TooManyBytes })
}

/// A subscription's start, as [`START`] answered it.
pub struct Start {
    /// `""` when the channel has no state yet.
    pub epoch: String,
    pub head: u64,
    pub recovered: bool,
    pub texts: Vec<String>,
}

pub fn parse_start(reply: Vec<redis::Value>) -> redis::RedisResult<Start> {
    let mut items = reply.into_iter();
    let epoch: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
    let head: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let recovered: i64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let texts: Vec<String> = items.map(redis::from_redis_value).collect::<Result<_, _>>()?;
    Ok(Start { epoch, head, recovered: recovered == 1, texts })
}

/// A stretch of the stream, as [`RANGE`] answered it.
pub struct Range {
    pub epoch: String,
    pub head: u64,
    /// `None` when some of it is gone.
    pub texts: Option<Vec<String>>,
}

pub fn parse_range(reply: Vec<redis::Value>, from: u64, to: u64) -> redis::RedisResult<Range> {
    let mut items = reply.into_iter();
    let epoch: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
    let head: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let texts: Vec<String> = items.map(redis::from_redis_value).collect::<Result<_, _>>()?;
    let complete = to < from || texts.len() as u64 == to.min(head).saturating_sub(from) + 1;
    Ok(Range { epoch, head, texts: complete.then_some(texts) })
}

/// Reads what [`HISTORY`] answered.
pub fn parse_history(reply: Vec<redis::Value>) -> redis::RedisResult<crate::hub::HistoryPage> {
    let mut items = reply.into_iter();
    let epoch: String = redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
    let head: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let more: u64 = redis::from_redis_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let messages: Vec<String> = items.map(redis::from_redis_value).collect::<Result<_, _>>()?;
    Ok(crate::hub::HistoryPage { epoch, head, messages, more: more == 1 })
}

/// A publication as pub/sub delivers it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub key: Option<Arc<str>>,
    pub message: EncodedMessage,
}

/// Reads what [`PUBLISH`] published: `epoch\nseq\nkey length\nkey message`.
pub fn parse_delivered(payload: &[u8]) -> Option<Delivered> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once('\n')?;
    let (seq, rest) = rest.split_once('\n')?;
    let (key_len, rest) = rest.split_once('\n')?;
    let key_len: usize = key_len.parse().ok()?;
    let key = rest.get(..key_len)?;
    let message = rest.get(key_len..)?;
    Some(Delivered {
        epoch: epoch.into(),
        seq: seq.parse().ok()?,
        key: (!key.is_empty()).then(|| key.into()),
        message: PublicationTemplate::message_from_text(message.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_payloads_parse() {
        let d = parse_delivered(b"ep-1\n42\n5\nOANDA{\"type\":\"x\"}").unwrap();
        assert_eq!(
            (&*d.epoch, d.seq, d.key.as_deref(), d.message.as_str()),
            ("ep-1", 42, Some("OANDA"), "{\"type\":\"x\"}")
        );
        let d = parse_delivered(b"e\n1\n0\n{}").unwrap();
        assert_eq!(d.key, None);
        for bad in [&b"e\n1\n9\nab"[..], b"e\nx\n0\n{}", b"e\n1", b"\xff\n1\n0\n{}"] {
            assert!(parse_delivered(bad).is_none());
        }
    }

    #[test]
    fn keys_share_a_hash_tag() {
        let keys = Keys::new("tw", "lp-performance");
        assert_eq!(keys.seq, "tw:{lp-performance}:seq");
        assert_eq!(keys.hist, "tw:{lp-performance}:hist");
        assert_eq!(keys.latest_bytes, "tw:{lp-performance}:lbytes");
        assert_eq!(keys.pubsub, "tw:pub:lp-performance");
    }

    #[test]
    fn since_epochs_tell_none_from_empty() {
        assert_eq!(since_epoch(None), "");
        assert_eq!(since_epoch(Some(&StreamPosition { seq: 3, epoch: None })), "");
        assert_eq!(since_epoch(Some(&StreamPosition { seq: 0, epoch: Some(String::new()) })), "=");
        assert_eq!(since_epoch(Some(&StreamPosition { seq: 3, epoch: Some("e1".into()) })), "=e1");
    }
}
