#!lua name=websocket_service
-- websocket-service: sequenced publishing and history (docs/PROTOCOL.md "Publishing").
-- The service loads this library with FUNCTION LOAD REPLACE at start (on every primary of a
-- cluster) with its own HISTORY_SIZE, HISTORY_TTL and Pub/Sub command written in below, so a
-- caller of ws_publish needs to know none of them.
local HISTORY_SIZE = {{.Size}}
local HISTORY_TTL_MS = {{.TTLMillis}}
local PUBLISH = '{{.Publish}}'

-- A tag tells one message from another at the same position: microseconds of the server clock,
-- folded into 1..4294967295 (0 means "before the first message").
local function new_tag()
  local t = redis.call('TIME')
  return string.format('%d', (tonumber(t[1]) * 1000000 + tonumber(t[2])) % 4294967295 + 1)
end

-- meta returns the stream's epoch, top position and top tag. A stream without meta starts a
-- new epoch (named by the server clock in microseconds) at position 0, and whatever history is
-- left under it belongs to an older epoch and is dropped.
local function meta(hkey, mkey)
  local m = redis.call('HMGET', mkey, 'e', 's', 't')
  if m[1] then
    return m[1], m[2], m[3]
  end
  local t = redis.call('TIME')
  local e = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', mkey, 'e', e, 's', '0', 't', '0')
  redis.call('DEL', hkey)
  return e, '0', '0'
end

-- keys_fit reports whether the keys are the ones the service reads for channel (the rule is in
-- docs/PROTOCOL.md): 'wsh:h:' then the channel, '{' channel '}', or '{' n '}' channel; and the
-- meta key the same with 'wsh:m:'. A caller that got them wrong would publish into a history
-- nobody reads.
local function keys_fit(hkey, mkey, channel)
  if string.sub(hkey, 1, 6) ~= 'wsh:h:' or mkey ~= 'wsh:m:' .. string.sub(hkey, 7) then
    return false
  end
  local rest = string.sub(hkey, 7)
  return string.sub(rest, -#channel) == channel or rest == '{' .. channel .. '}'
end

-- FCALL ws_publish 2 <history key> <meta key> <channel> <payload> [traceparent]
-- Appends payload to the stream's history and publishes it on channel, in one step. Returns
-- the message's position: {epoch, seq, tag}.
local function ws_publish(keys, args)
  local hkey, mkey = keys[1], keys[2]
  local channel, payload, tp = args[1], args[2], args[3] or ''
  if not hkey or not mkey or not channel or not payload then
    return redis.error_reply('ERR usage: FCALL ws_publish 2 <history key> <meta key> <channel> <payload> [traceparent]')
  end
  if not keys_fit(hkey, mkey, channel) then
    return redis.error_reply('ERR ws_publish: the keys of channel ' .. channel .. ' are not ' .. hkey .. ' and ' .. mkey .. ' (see docs/PROTOCOL.md, "Publishing")')
  end
  if #tp > 0 and (#tp > 128 or not string.find(tp, '^[%w%-]+$')) then
    return redis.error_reply('ERR ws_publish: traceparent must be a W3C traceparent')
  end
  local e, s, prev = meta(hkey, mkey)
  local seq = string.format('%d', tonumber(s) + 1)
  local tag = new_tag()
  redis.call('HSET', mkey, 's', seq, 't', tag)
  if HISTORY_SIZE > 0 then
    if tp == '' then
      redis.call('XADD', hkey, 'MAXLEN', HISTORY_SIZE, seq .. '-' .. tag, 'd', payload, 'p', prev)
    else
      redis.call('XADD', hkey, 'MAXLEN', HISTORY_SIZE, seq .. '-' .. tag, 'd', payload, 'p', prev, 't', tp)
    end
    redis.call('PEXPIRE', hkey, HISTORY_TTL_MS)
  end
  -- The envelope: byte 0xFF (never valid UTF-8, so no text payload starts with it), version,
  -- epoch, seq, tag, previous tag, traceparent, newline, then the payload untouched.
  redis.call(PUBLISH, channel, '\255' .. '1 ' .. e .. ' ' .. seq .. ' ' .. tag .. ' ' .. prev .. ' ' .. tp .. '\n' .. payload)
  return {e, seq, tag}
end

-- FCALL ws_history 2 <history key> <meta key> <from position> <count>
-- Returns {epoch, top seq, top tag, entries held, entries from <from position> (at most
-- <count>)}; starts the stream's epoch when it has none, so every stream has a position.
local function ws_history(keys, args)
  local hkey, mkey = keys[1], keys[2]
  local from, count = args[1], tonumber(args[2])
  if not hkey or not mkey or not from or not count then
    return redis.error_reply('ERR usage: FCALL ws_history 2 <history key> <meta key> <from position> <count>')
  end
  local e, s, t = meta(hkey, mkey)
  local held = redis.call('XLEN', hkey)
  local entries = {}
  if count > 0 and held > 0 then
    entries = redis.call('XRANGE', hkey, from, '+', 'COUNT', count)
  end
  return {e, s, t, held, entries}
end

redis.register_function('ws_publish', ws_publish)
redis.register_function('ws_history', ws_history)
