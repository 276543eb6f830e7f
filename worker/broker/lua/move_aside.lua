-- Move aside each of the given keys that is not a list (after move_aside_fn.lua): the transport
-- runs it when a BRPOP on its wake lists failed with WRONGTYPE.
-- KEYS: the set-aside id counter, then the keys to check. ARGV: the renamed keys' prefix.
-- Returns {key, new name, ...} for each key moved.
local moved = {}
for i = 2, #KEYS do
  move_aside(KEYS[1], ARGV[1], KEYS[i], 'list', moved)
end
return moved
