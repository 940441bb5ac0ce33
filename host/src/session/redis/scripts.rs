//! The Redis store's Lua scripts: one per write (and for the load that may refresh the expiry),
//! so that each is atomic and checks that the session still exists before writing. Each names
//! the keys it touches, and the keys of one call share a slot, so they run on a cluster too;
//! a cluster's rotation uses `STASH`, `RESTORE` and `UNSTASH` instead of `RENAME`.

use redis::Script;

/// The scripts' shared functions: `touch` refreshes the expiry of a session that exists;
/// `used` does so for a session read as the flat hash `h`, once a tenth of its timeout has
/// passed since the last refresh.
macro_rules! lua {
    ($body:literal) => {
        concat!(
            "local function touch(key, now)\n",
            "  local timeout = redis.call('HGET', key, '#timeout_ms')\n",
            "  redis.call('HSET', key, '#accessed_ms', now)\n",
            "  if timeout then redis.call('PEXPIRE', key, timeout) end\n",
            "end\n",
            "local function used(key, h, now)\n",
            "  local accessed, timeout\n",
            "  for i = 1, #h, 2 do\n",
            "    if h[i] == '#accessed_ms' then accessed = tonumber(h[i + 1])\n",
            "    elseif h[i] == '#timeout_ms' then timeout = tonumber(h[i + 1]) end\n",
            "  end\n",
            "  if timeout and (accessed == nil or tonumber(now) - accessed >= timeout / 10) then\n",
            "    touch(key, now)\n",
            "  end\n",
            "end\n",
            $body
        )
    };
}

/// KEYS[1] session; ARGV[1] now. The flat hash, or nil.
const LOAD: &str = lua!(
    r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
used(KEYS[1], h, ARGV[1])
return h
"
);

/// KEYS[1] session; ARGV[1] now, ARGV[2] timeout ms, then name/value pairs. 1 if created.
const CREATE: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '#created_ms', ARGV[1], '#accessed_ms', ARGV[1],
  '#timeout_ms', ARGV[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"
);

/// KEYS[1] session; ARGV[1] now, ARGV[2] number of pairs to set, the pairs, then names to
/// delete. 1 if saved, 0 if the session is gone.
const SAVE: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local first_del = 3 + 2 * tonumber(ARGV[2])
if first_del > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, first_del - 1)) end
if #ARGV >= first_del then redis.call('HDEL', KEYS[1], unpack(ARGV, first_del)) end
touch(KEYS[1], ARGV[1])
return 1
"
);

/// KEYS[1] session; ARGV[1] now, ARGV[2] name, ARGV[3] '1' if a value is expected, ARGV[4] the
/// expected value, ARGV[5] the new one, ARGV[6] '1' to answer the session's flat hash too (as
/// it was before the write; a conflict then counts as a load). {-1} gone, {0, current or nil,
/// hash} conflict, {1, hash} done (the hash empty unless asked for).
const CAS: &str = lua!(
    r"
local h, cur = {}, false
if ARGV[6] == '1' then
  h = redis.call('HGETALL', KEYS[1])
  if #h == 0 then return {-1} end
  for i = 1, #h, 2 do
    if h[i] == ARGV[2] then cur = h[i + 1] break end
  end
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
  cur = redis.call('HGET', KEYS[1], ARGV[2])
end
if (ARGV[3] == '1' and cur ~= ARGV[4]) or (ARGV[3] ~= '1' and cur) then
  if ARGV[6] == '1' then used(KEYS[1], h, ARGV[1]) end
  return {0, cur, h}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
touch(KEYS[1], ARGV[1])
return {1, h}
"
);

/// KEYS[1] from, KEYS[2] to; ARGV[1] now. 1 if renamed.
const RENAME: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
touch(KEYS[2], ARGV[1])
return 1
"
);

/// KEYS[1] session, KEYS[2] its stash (one slot). Moves the session to the stash, where no
/// operation on its id finds it, and returns the flat hash; nil if there is no session.
const STASH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RENAME', KEYS[1], KEYS[2])
return redis.call('HGETALL', KEYS[2])
";

/// KEYS[1] the new session; ARGV[1] now, then the stashed hash's name/value pairs. 1 if
/// restored, 0 if the id is taken.
const RESTORE: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
touch(KEYS[1], ARGV[1])
return 1
"
);

/// KEYS[1] stash, KEYS[2] session (one slot). Puts a stashed session back; 1 if it did.
const UNSTASH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
";

/// The scripts, hashed once: a call sends `EVALSHA`, and the script itself only if Redis lacks it.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) load: Script,
    pub(super) create: Script,
    pub(super) save: Script,
    pub(super) cas: Script,
    pub(super) rename: Script,
    pub(super) stash: Script,
    pub(super) restore: Script,
    pub(super) unstash: Script,
}

impl Scripts {
    /// Every script, hashed.
    pub(super) fn new() -> Scripts {
        Scripts {
            load: Script::new(LOAD),
            create: Script::new(CREATE),
            save: Script::new(SAVE),
            cas: Script::new(CAS),
            rename: Script::new(RENAME),
            stash: Script::new(STASH),
            restore: Script::new(RESTORE),
            unstash: Script::new(UNSTASH),
        }
    }
}
