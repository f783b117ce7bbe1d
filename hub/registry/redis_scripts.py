"""The Lua scripts of the Redis registry: every mutation of the shared state is one of them.

A script runs atomically, so each one re-checks what it depends on (a tab still connected, a
deadline passed, a revision unchanged) and appends its change to the ``lh:changes`` stream in the
same step: the stream's order is the order in which changes were applied.

JSON is never decoded in Lua (cjson would reorder object keys): records, variables and messages are
kept as the compact JSON texts Python made, and an ended session's outbox entry is built by
concatenating them. Sizes of the stored data are kept as byte counts beside the texts, so a script
can enforce the session-data limit without decoding anything.

Keys are spelled in :mod:`hub.constants` and formatted into the sources here. Scripts name keys
directly rather than through ``KEYS`` because some discover theirs (the tabs of a dead node); the
registry therefore needs one Redis primary, not Redis Cluster (docs/registry.md).
"""

from __future__ import annotations

from string import Template
from typing import Any

from redis.asyncio import Redis

from hub import constants as c
from hub.records import stored_data
from hub.registry.merge import json_size

# Bytes of the stored data beyond its three parts: '{"sessionInfo":', ',"variables":',
# ',"messages":[' and ']}'. The commas between messages are counted apart.
DATA_OVERHEAD = json_size(stored_data({}, {}, [])) - len("{}{}")

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function skeys(tag)
  local b = '{' .. tag .. '}'
  return '${S}' .. b, '${M}' .. b, '${T}' .. b, '${TN}' .. b
end
local function node_tabs(node) return '${NP}' .. node .. '${NT}' end
local function node_proc(node) return '${NP}' .. node .. '${NO}' end
local function emit(kind, pk, sid, node, rec)
  if rec then
    return redis.call('XADD', '${X}', 'MAXLEN', '~', ${XL}, '*',
      'k', kind, 'p', pk, 's', sid, 'n', node, 'r', rec)
  end
  return redis.call('XADD', '${X}', 'MAXLEN', '~', ${XL}, '*',
    'k', kind, 'p', pk, 's', sid, 'n', node)
end
local function data_size(info, vars, msgs, count)
  local commas = 0
  if count > 1 then commas = count - 1 end
  return ${OVERHEAD} + info + vars + msgs + commas
end
"""

# ARGV: tag, tabId, node, record, projectKey, sessionID, info size, now ms, "1" to get the data.
# → {"dup"} | {"started", streamId, previous streamId ("0-0": none), epoch}
#   | {"joined", reconnected, rec, created, updated[, vars, msgs]}
# The entry before "started" tells the node whether it can apply its own entry without reading it
# back (hub/registry/redis_replica.py, Replica.apply_own).
JOIN = """
local tag, tab, node = ARGV[1], ARGV[2], ARGV[3]
local s, m, t, tn = skeys(tag)
if redis.call('HEXISTS', tn, tab) == 1 then return {'dup'} end
local member = tag .. '\\n' .. tab
if redis.call('EXISTS', s) == 1 then
  local reconnected = 0
  if redis.call('LLEN', t) == 0 then reconnected = 1 end
  redis.call('ZREM', '${GRACE}', tag)
  redis.call('RPUSH', t, tab)
  redis.call('HSET', tn, tab, node)
  redis.call('SADD', node_tabs(node), member)
  local h = redis.call('HMGET', s, 'rec', 'created', 'updated', 'vars')
  if ARGV[9] == '1' then
    return {'joined', reconnected, h[1], h[2], h[3], h[4], redis.call('LRANGE', m, 0, -1)}
  end
  return {'joined', reconnected, h[1], h[2], h[3]}
end
redis.call('DEL', m)
redis.call('HSET', s, 'rec', ARGV[4], 'vars', '{}', 'pk', ARGV[5], 'sid', ARGV[6],
  'created', ARGV[8], 'updated', ARGV[8], 'I', ARGV[7], 'V', 2, 'M', 0, 'N', 0, 'dv', 1)
redis.call('RPUSH', t, tab)
redis.call('HSET', tn, tab, node)
redis.call('SADD', node_tabs(node), member)
redis.call('SADD', '${SESSIONS}', tag)
redis.call('ZREM', '${GRACE}', tag)
local before = redis.call('XREVRANGE', '${X}', '+', '-', 'COUNT', 1)
local id = emit('started', ARGV[5], ARGV[6], node, ARGV[4])
redis.call('HSET', s, 'ver', id)
local previous = '0-0'
if before[1] then previous = before[1][1] end
return {'started', id, previous, redis.call('GET', '${EPOCH}') or ''}
"""

# ARGV: tag, tabId, grace ms. → -1 (tab not connected) | 0 (tabs remain) | grace deadline ms
LEAVE = """
local tag, tab = ARGV[1], ARGV[2]
local s, m, t, tn = skeys(tag)
local owner = redis.call('HGET', tn, tab)
if not owner then return -1 end
redis.call('HDEL', tn, tab)
redis.call('LREM', t, 1, tab)
redis.call('SREM', node_tabs(owner), tag .. '\\n' .. tab)
if redis.call('LLEN', t) > 0 or redis.call('EXISTS', s) == 0 then return 0 end
local deadline = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', '${GRACE}', deadline, tag)
return deadline
"""

# ARGV: tag, expected data revision, record, variables, info size, max bytes (-1: none), now ms,
# node, "1" to emit "updated". → {"missing"} | {"conflict"} | {"too_large", size} | {"ok", id}
UPDATE = """
local s = skeys(ARGV[1])
local h = redis.call('HMGET', s, 'dv', 'pk', 'sid', 'M', 'N')
if not h[1] then return {'missing'} end
if h[1] ~= ARGV[2] then return {'conflict'} end
local size = data_size(tonumber(ARGV[5]), #ARGV[4], tonumber(h[4]), tonumber(h[5]))
if tonumber(ARGV[6]) >= 0 and size > tonumber(ARGV[6]) then return {'too_large', size} end
redis.call('HSET', s, 'rec', ARGV[3], 'vars', ARGV[4], 'I', ARGV[5], 'V', #ARGV[4],
  'updated', ARGV[7])
redis.call('HINCRBY', s, 'dv', 1)
if ARGV[9] ~= '1' then return {'ok', ''} end
local id = emit('updated', h[2], h[3], ARGV[8], ARGV[3])
redis.call('HSET', s, 'ver', id)
return {'ok', id}
"""

# ARGV: tag, message JSON, max bytes, now ms. → {"missing"} | {"too_large", size} | {"ok"}
ADD_MESSAGE = """
local s, m = skeys(ARGV[1])
local h = redis.call('HMGET', s, 'I', 'V', 'M', 'N')
if not h[1] then return {'missing'} end
local count = tonumber(h[4]) + 1
local msgs = tonumber(h[3]) + #ARGV[2]
local size = data_size(tonumber(h[1]), tonumber(h[2]), msgs, count)
if size > tonumber(ARGV[3]) then return {'too_large', size} end
redis.call('RPUSH', m, ARGV[2])
redis.call('HSET', s, 'M', msgs, 'N', count, 'updated', ARGV[4])
redis.call('HINCRBY', s, 'dv', 1)
return {'ok'}
"""

# ARGV: node, then pairs of tag and end id (hex). Ends each of those sessions whose grace passed
# with no tab. → how many this call ended.
END = """
local now = now_ms()
local function end_one(tag, end_id, node)
  local s, m, t, tn = skeys(tag)
  local deadline = redis.call('ZSCORE', '${GRACE}', tag)
  if not deadline then return 0 end
  if tonumber(deadline) > now then return 0 end
  redis.call('ZREM', '${GRACE}', tag)
  if redis.call('LLEN', t) > 0 then return 0 end
  local h = redis.call('HMGET', s, 'rec', 'vars', 'pk', 'sid', 'updated')
  if not h[1] then
    redis.call('SREM', '${SESSIONS}', tag)
    return 0
  end
  local msgs = redis.call('LRANGE', m, 0, -1)
  local entry = '{"end_id":"' .. end_id .. '","updated":' .. h[5]
    .. ',"rec":' .. h[1] .. ',"vars":' .. h[2] .. ',"msgs":[' .. table.concat(msgs, ',') .. ']}'
  redis.call('LPUSH', '${OUTBOX}', entry)
  redis.call('DEL', s, m, t, tn)
  redis.call('SREM', '${SESSIONS}', tag)
  emit('ended', h[3], h[4], node, false)
  return 1
end
local ended = 0
for i = 2, #ARGV - 1, 2 do
  ended = ended + end_one(ARGV[i], ARGV[i + 1], ARGV[1])
end
return ended
"""

# ARGV: node, timeout ms ("-1": unconditionally, for a node closing itself), grace ms.
# Removes the node's tabs, starts the grace of sessions left with none, hands the node's
# processing list back to the outbox. → -1 when the node turned out alive, else sessions graced.
REAP_NODE = """
local node = ARGV[1]
local now = now_ms()
if ARGV[2] ~= '-1' then
  local beat = redis.call('ZSCORE', '${NODES}', node)
  if beat and tonumber(beat) >= now - tonumber(ARGV[2]) then return -1 end
end
local nt = node_tabs(node)
local graced = 0
for _, member in ipairs(redis.call('SMEMBERS', nt)) do
  local cut = string.find(member, '\\n', 1, true)
  local tag = string.sub(member, 1, cut - 1)
  local tab = string.sub(member, cut + 1)
  local s, m, t, tn = skeys(tag)
  if redis.call('HGET', tn, tab) == node then
    redis.call('HDEL', tn, tab)
    redis.call('LREM', t, 1, tab)
  end
  if redis.call('LLEN', t) == 0 and redis.call('EXISTS', s) == 1
      and not redis.call('ZSCORE', '${GRACE}', tag) then
    redis.call('ZADD', '${GRACE}', now + tonumber(ARGV[3]), tag)
    graced = graced + 1
  end
end
redis.call('DEL', nt)
redis.call('ZREM', '${NODES}', node)
local proc = node_proc(node)
while redis.call('LMOVE', proc, '${OUTBOX}', 'RIGHT', 'RIGHT') do end
return graced
"""

# ARGV: node, a fresh epoch token. → {epoch, 1 when the node was not registered}
HEARTBEAT = """
local added = redis.call('ZADD', '${NODES}', now_ms(), ARGV[1])
local epoch = redis.call('GET', '${EPOCH}')
if not epoch then
  redis.call('SET', '${EPOCH}', ARGV[2])
  epoch = ARGV[2]
end
return {epoch, added}
"""

# ARGV: node timeout ms, how many due sessions at most. → {dead nodes, tags whose grace passed}
DUE = """
local now = now_ms()
local cutoff = now - tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', '${NODES}', '-inf', '(' .. cutoff, 'LIMIT', 0, 16)
local due = redis.call('ZRANGEBYSCORE', '${GRACE}', '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
return {dead, due}
"""

# ARGV: last applied stream id, count.
# → {epoch or "", first id in the stream or "", the entries after that id as one text, their count}
# Each entry is one line of tab-separated fields: its id, kind (k), projectKey (p), sessionID (s)
# and, when it has one, its record (r); the node (n) is left out, no reader needs it. A reply of
# one string per 1,000 entries costs the client far less to parse than nested arrays of ~13
# elements each. Ids, kinds, project keys and session ids hold neither tab nor newline, and
# compact JSON holds no raw newline, so the lines split back unambiguously (the record last).
CATCH_UP = """
local epoch = redis.call('GET', '${EPOCH}') or ''
local first = redis.call('XRANGE', '${X}', '-', '+', 'COUNT', 1)
local first_id = ''
if first[1] then first_id = first[1][1] end
local lines = {}
for i, entry in ipairs(redis.call('XRANGE', '${X}', '(' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
  local f = entry[2]
  local k, p, s, r
  for j = 1, #f, 2 do
    local name = f[j]
    if name == 'k' then k = f[j + 1]
    elseif name == 'p' then p = f[j + 1]
    elseif name == 's' then s = f[j + 1]
    elseif name == 'r' then r = f[j + 1] end
  end
  if not (k and p and s) then
    return redis.error_reply('change stream entry ' .. entry[1] .. ' lacks k, p or s')
  end
  if r then
    lines[i] = entry[1] .. '\\t' .. k .. '\\t' .. p .. '\\t' .. s .. '\\t' .. r
  else
    lines[i] = entry[1] .. '\\t' .. k .. '\\t' .. p .. '\\t' .. s
  end
end
return {epoch, first_id, table.concat(lines, '\\n'), #lines}
"""

# → {epoch or "", last stream id or "0-0", every live session's tag}, one consistent moment.
# Tags (which hold no newline) come as one text joined by newlines: a reply of 100,000 small
# strings costs the client far more to parse than one long one.
HEAD = """
local epoch = redis.call('GET', '${EPOCH}') or ''
local last = redis.call('XREVRANGE', '${X}', '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
return {epoch, last_id, table.concat(redis.call('SMEMBERS', '${SESSIONS}'), '\\n')}
"""

# ARGV: tags. → one text: per tag its "ver" line and its record line (both empty when it ended).
# Compact JSON holds no raw newline, so the lines split back unambiguously.
LOAD = """
local out = {}
for _, tag in ipairs(ARGV) do
  local h = redis.call('HMGET', '${S}{' .. tag .. '}', 'ver', 'rec')
  out[#out + 1] = h[1] or ''
  out[#out + 1] = h[2] or ''
end
return table.concat(out, '\\n')
"""

# ARGV: tag, node, record, variables, projectKey, sessionID, created, updated, info size, grace
# deadline ms, tab count, the tabs..., the messages... Puts back a session this node keeps a copy
# of; when the session exists already, adds the tabs and keeps the fresher data.
# → "restored" | "kept" | "replaced"
RESTORE = """
local tag, node = ARGV[1], ARGV[2]
local s, m, t, tn = skeys(tag)
local ntabs = tonumber(ARGV[11])
local function add_tabs()
  for i = 12, 11 + ntabs do
    local tab = ARGV[i]
    if redis.call('HEXISTS', tn, tab) == 0 then
      redis.call('RPUSH', t, tab)
      redis.call('HSET', tn, tab, node)
      redis.call('SADD', node_tabs(node), tag .. '\\n' .. tab)
    end
  end
  if redis.call('LLEN', t) > 0 then redis.call('ZREM', '${GRACE}', tag) end
end
local function put_data()
  redis.call('DEL', m)
  local total = 0
  for i = 12 + ntabs, #ARGV do
    redis.call('RPUSH', m, ARGV[i])
    total = total + #ARGV[i]
  end
  redis.call('HSET', s, 'rec', ARGV[3], 'vars', ARGV[4], 'pk', ARGV[5], 'sid', ARGV[6],
    'updated', ARGV[8], 'I', ARGV[9], 'V', #ARGV[4], 'M', total, 'N', #ARGV - 11 - ntabs)
  redis.call('HINCRBY', s, 'dv', 1)
end
if redis.call('EXISTS', s) == 1 then
  add_tabs()
  if tonumber(ARGV[8]) <= tonumber(redis.call('HGET', s, 'updated')) then return 'kept' end
  put_data()
  redis.call('HSET', s, 'ver', emit('updated', ARGV[5], ARGV[6], node, ARGV[3]))
  return 'replaced'
end
redis.call('HSET', s, 'created', ARGV[7])
put_data()
redis.call('SADD', '${SESSIONS}', tag)
add_tabs()
if redis.call('LLEN', t) == 0 then redis.call('ZADD', '${GRACE}', ARGV[10], tag) end
redis.call('HSET', s, 'ver', emit('started', ARGV[5], ARGV[6], node, ARGV[3]))
return 'restored'
"""

# KEYS: a processing list. ARGV: most entries, most bytes. Moves entries from the outbox to the
# list, oldest first, until either bound is reached (each entry moves whole: the last may pass the
# byte bound). → the entries moved, in the order moved.
TAKE = """
local most, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local taken, bytes = {}, 0
while #taken < most and bytes < budget do
  local entry = redis.call('LMOVE', '${OUTBOX}', KEYS[1], 'RIGHT', 'LEFT')
  if not entry then break end
  taken[#taken + 1] = entry
  bytes = bytes + #entry
end
return taken
"""

# KEYS: a processing list. ARGV: entries the sink took. Removes each once. → how many were there.
DONE = """
local removed = 0
for _, entry in ipairs(ARGV) do
  removed = removed + redis.call('LREM', KEYS[1], 1, entry)
end
return removed
"""

# KEYS: a processing list. ARGV: entry. Puts an entry a closing node could not store back in the
# outbox, at the far end, so other entries are tried first.
FAIL_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('LPUSH', '${OUTBOX}', ARGV[1])
  return 1
end
return 0
"""

_NAMES = {
    "S": c.SESSION_HASH_PREFIX,
    "M": c.MESSAGES_PREFIX,
    "T": c.TABS_PREFIX,
    "TN": c.TAB_NODES_PREFIX,
    "NP": c.NODE_PREFIX,
    "NT": c.NODE_TABS_SUFFIX,
    "NO": c.NODE_PROCESSING_SUFFIX,
    "X": c.CHANGES_STREAM,
    "XL": str(c.CHANGES_MAXLEN),
    "GRACE": c.GRACE_ZSET,
    "SESSIONS": c.SESSIONS_SET,
    "NODES": c.NODES_ZSET,
    "OUTBOX": c.OUTBOX_LIST,
    "EPOCH": c.EPOCH_KEY,
    "OVERHEAD": str(DATA_OVERHEAD),
}


def lua(body: str) -> str:
    """The full source of a script: the shared helpers, then ``body``, keys formatted in."""
    return Template(_PRELUDE + body).substitute(_NAMES)


class Scripts:
    """The registry's scripts, registered on one client (EVALSHA, loaded again when missing)."""

    def __init__(self, redis: Redis) -> None:
        self.join = redis.register_script(lua(JOIN))
        self.leave = redis.register_script(lua(LEAVE))
        self.update = redis.register_script(lua(UPDATE))
        self.add_message = redis.register_script(lua(ADD_MESSAGE))
        self.end = redis.register_script(lua(END))
        self.reap_node = redis.register_script(lua(REAP_NODE))
        self.heartbeat = redis.register_script(lua(HEARTBEAT))
        self.due = redis.register_script(lua(DUE))
        self.catch_up = redis.register_script(lua(CATCH_UP))
        self.head = redis.register_script(lua(HEAD))
        self.load = redis.register_script(lua(LOAD))
        self.restore = redis.register_script(lua(RESTORE))
        self.fail_back = redis.register_script(lua(FAIL_BACK))
        self.take = redis.register_script(lua(TAKE))
        self.done = redis.register_script(lua(DONE))


def as_text(value: Any) -> str:
    """A reply value as text (replies are decoded; integers come back as ints)."""
    return value if isinstance(value, str) else str(value)
