//! The Lua scripts that make the shared state's multi-key updates atomic. Every key is under the prefix passed as an
//! argument (`sb:`); `docs/cluster.md` lists them. Name keys and room keys are case-folded NFC names, which never
//! contain `|`, the separator of room member entries (`node|name`).

/// Lua that drops everything node `n` held (its lease, names, room member entries, membership of the node set);
/// shared by the heartbeat (pruning dead nodes) and a clean departure.
macro_rules! purge_node {
    () => {
        r#"
local function purge(p, n)
  redis.call('DEL', p .. 'node:' .. n)
  for _, k in ipairs(redis.call('SMEMBERS', p .. 'names:' .. n)) do
    if redis.call('GET', p .. 'name:' .. k) == n then redis.call('DEL', p .. 'name:' .. k) end
  end
  redis.call('DEL', p .. 'names:' .. n)
  local prefix = n .. '|'
  for _, r in ipairs(redis.call('SMEMBERS', p .. 'rooms:' .. n)) do
    local list = p .. 'room:' .. r .. ':members'
    for _, m in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if string.sub(m, 1, #prefix) == prefix then redis.call('LREM', list, 0, m) end
    end
    if redis.call('LLEN', list) == 0 then redis.call('DEL', list, p .. 'room:' .. r) end
  end
  redis.call('DEL', p .. 'rooms:' .. n)
  redis.call('SREM', p .. 'nodes', n)
end
"#
    };
}

/// Renews this node's lease, registers it, prunes nodes whose lease is gone (with the names and room entries they
/// held) and returns the live nodes.
/// ARGV: prefix, node, lease in ms.
pub(crate) const HEARTBEAT: &str = concat!(
    purge_node!(),
    r#"
local p, me, lease = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', p .. 'node:' .. me, '1', 'PX', lease)
redis.call('SADD', p .. 'nodes', me)
local alive = {}
for _, n in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'node:' .. n) == 1 then
    table.insert(alive, n)
  else
    purge(p, n)
  end
end
return alive
"#
);
/// Takes a name: free, held by this node, or held by a node whose lease is gone; with replace, from anyone.
/// Returns {1, previous live holder or ''} when taken, {0, holder} when refused.
/// ARGV: prefix, node, name key, '1' to replace.
pub(crate) const CLAIM: &str = r#"
local p, me, key, replace = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local holder = redis.call('GET', p .. 'name:' .. key)
local evicted = ''
if holder and holder ~= me then
  local alive = redis.call('EXISTS', p .. 'node:' .. holder) == 1
  if alive and replace ~= '1' then return {0, holder} end
  if alive then evicted = holder end
  redis.call('SREM', p .. 'names:' .. holder, key)
end
redis.call('SET', p .. 'name:' .. key, me)
redis.call('SADD', p .. 'names:' .. me, key)
return {1, evicted}
"#;

/// Gives a name up if this node holds it.
/// ARGV: prefix, node, name key.
pub(crate) const RELEASE: &str = r#"
local p, me, key = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. 'name:' .. key) == me then redis.call('DEL', p .. 'name:' .. key) end
redis.call('SREM', p .. 'names:' .. me, key)
return 1
"#;

/// Enters a room: creates it (with the given password digest) or checks its size and password.
/// Returns {'ok', room name, password digest or '', member entries...} or {'full'}, {'password-required'},
/// {'wrong-password'}.
/// ARGV: prefix, node, room key, room name, member name, password digest or '', '1' to check it, max size.
pub(crate) const JOIN: &str = r#"
local p, me, room, room_name, member, given, check, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local meta = p .. 'room:' .. room
local list = meta .. ':members'
local entry = me .. '|' .. member
if redis.call('EXISTS', meta) == 1 then
  local stored = redis.call('HGET', meta, 'password') or ''
  if check == '1' and stored ~= '' then
    if given == '' then return {'password-required'} end
    if given ~= stored then return {'wrong-password'} end
  end
  if not redis.call('LPOS', list, entry) then
    if redis.call('LLEN', list) >= max then return {'full'} end
    redis.call('RPUSH', list, entry)
  end
else
  redis.call('HSET', meta, 'name', room_name, 'password', given)
  redis.call('RPUSH', list, entry)
end
redis.call('SADD', p .. 'rooms:' .. me, room)
local out = {'ok', redis.call('HGET', meta, 'name'), redis.call('HGET', meta, 'password') or ''}
for _, m in ipairs(redis.call('LRANGE', list, 0, -1)) do table.insert(out, m) end
return out
"#;

/// Leaves a room; an empty room is deleted.
/// ARGV: prefix, node, room key, member name.
pub(crate) const LEAVE: &str = r#"
local p, me, room, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local meta = p .. 'room:' .. room
local list = meta .. ':members'
redis.call('LREM', list, 0, me .. '|' .. member)
local prefix = me .. '|'
local still = false
for _, m in ipairs(redis.call('LRANGE', list, 0, -1)) do
  if string.sub(m, 1, #prefix) == prefix then still = true end
end
if not still then redis.call('SREM', p .. 'rooms:' .. me, room) end
if redis.call('LLEN', list) == 0 then redis.call('DEL', list, meta) end
return 1
"#;

/// After a (re)connection: this node holds exactly these names and room memberships. Restores what the store lost,
/// forgets what the node no longer holds, and returns the names another live node holds now.
/// ARGV: prefix, node, N, N name keys, R, then per room: key, name, password digest or '', M, M member names.
pub(crate) const RESYNC: &str = r#"
local p, me = ARGV[1], ARGV[2]
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
local wanted, lost = {}, {}
for _ = 1, n do
  local k = ARGV[i]; i = i + 1
  local holder = redis.call('GET', p .. 'name:' .. k)
  if (not holder) or holder == me or redis.call('EXISTS', p .. 'node:' .. holder) == 0 then
    redis.call('SET', p .. 'name:' .. k, me)
    wanted[k] = true
  else
    table.insert(lost, k)
  end
end
for _, k in ipairs(redis.call('SMEMBERS', p .. 'names:' .. me)) do
  if not wanted[k] then
    if redis.call('GET', p .. 'name:' .. k) == me then redis.call('DEL', p .. 'name:' .. k) end
    redis.call('SREM', p .. 'names:' .. me, k)
  end
end
for k, _ in pairs(wanted) do redis.call('SADD', p .. 'names:' .. me, k) end
local prefix = me .. '|'
local keep = {}
local rooms = tonumber(ARGV[i]); i = i + 1
for _ = 1, rooms do
  local room, room_name, password, m = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  keep[room] = true
  local meta = p .. 'room:' .. room
  local list = meta .. ':members'
  if redis.call('EXISTS', meta) == 0 then redis.call('HSET', meta, 'name', room_name, 'password', password) end
  local present, mine = {}, {}
  for _, e in ipairs(redis.call('LRANGE', list, 0, -1)) do present[e] = true end
  for _ = 1, m do
    local e = prefix .. ARGV[i]; i = i + 1
    mine[e] = true
    if not present[e] then redis.call('RPUSH', list, e) end
  end
  for e, _ in pairs(present) do
    if string.sub(e, 1, #prefix) == prefix and not mine[e] then redis.call('LREM', list, 0, e) end
  end
  redis.call('SADD', p .. 'rooms:' .. me, room)
end
for _, room in ipairs(redis.call('SMEMBERS', p .. 'rooms:' .. me)) do
  if not keep[room] then
    local meta = p .. 'room:' .. room
    local list = meta .. ':members'
    for _, e in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if string.sub(e, 1, #prefix) == prefix then redis.call('LREM', list, 0, e) end
    end
    if redis.call('LLEN', list) == 0 then redis.call('DEL', list, meta) end
    redis.call('SREM', p .. 'rooms:' .. me, room)
  end
end
return lost
"#;

/// Leaves the cluster on a clean shutdown: drops the lease and everything the node held, as a peer's heartbeat would
/// once the lease ran out.
/// ARGV: prefix, node.
pub(crate) const DEPART: &str = concat!(
    purge_node!(),
    r#"
purge(ARGV[1], ARGV[2])
return 1
"#
);
