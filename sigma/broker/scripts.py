"""The Lua scripts Redis runs atomically for the cluster: numbering events, and the lease.

Keys, all under one hash tag so that a Redis Cluster keeps them in one slot:
`{<stream>}:events` (the stream: entry id `<seq>-0`, fields `e` = epoch, `d` = the event's
JSON without its seq), `{<stream>}:meta` (hash: `epoch`, `seq`), `{<stream>}:poller` (the
lease: the leader's token), `{<stream>}:idem:<key>` (what a publish with that key was given).
"""

from __future__ import annotations

from dataclasses import dataclass

NUMBER = """
-- KEYS: events, meta, lease, idempotency key (meta again when there is none)
-- ARGV: maxlen, epoch to create if there is none, fence token or '', idempotency key or '',
--       idempotency ttl in ms, then one event payload per argument
-- Returns {epoch, first seq, count, seq after}; count 0 answers a duplicate or a mere read.
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return redis.error_reply('NOTLEADER the poller lease is held by another node')
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', 0)
end
local count = #ARGV - 5
if ARGV[4] ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    local sep = string.find(prior, ' ', 1, true)
    local sep2 = string.find(prior, ' ', sep + 1, true)
    if string.sub(prior, 1, sep - 1) == epoch then
      return {epoch, string.sub(prior, sep + 1, sep2 - 1), string.sub(prior, sep2 + 1), '-1'}
    end
  end
end
if count == 0 then
  return {epoch, '0', '0', tostring(redis.call('HGET', KEYS[2], 'seq'))}
end
local last = redis.call('HINCRBY', KEYS[2], 'seq', count)
local first = last - count + 1
for i = 1, count do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], (first + i - 1) .. '-0',
             'e', epoch, 'd', ARGV[5 + i])
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[4], epoch .. ' ' .. first .. ' ' .. count, 'PX', ARGV[5])
end
return {epoch, tostring(first), tostring(count), tostring(last)}
"""

NEW_EPOCH = """
-- KEYS: events, meta. ARGV: the epoch this node knows, a new epoch.
-- When Redis still has the epoch this node knows but a shorter numbering (a failover to a
-- replica that lacked the tail, an append-only file that lost its last second), start anew.
if redis.call('HGET', KEYS[2], 'epoch') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'seq', 0)
end
return redis.call('HGET', KEYS[2], 'epoch')
"""

RENEW_LEASE = """
-- KEYS: lease. ARGV: token, lease in ms. 1 when the token still holds the lease (renewed).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LEASE = """
-- KEYS: lease. ARGV: token. Deletes the lease only when this token holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class StreamKeys:
    """The Redis keys of one cluster, named after its `[broker] stream` prefix."""

    events: str
    meta: str
    lease: str
    idempotency_prefix: str

    @classmethod
    def of(cls, prefix: str) -> StreamKeys:
        """The keys under `{prefix}`."""
        tag = f"{{{prefix}}}"
        return cls(f"{tag}:events", f"{tag}:meta", f"{tag}:poller", f"{tag}:idem:")
