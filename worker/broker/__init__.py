"""The broker layer: Redis connections and URLs, the embedded Redis, the reliable-fetch transport,
leases, queue names and stats, and the Lua scripts they run. Imports only jobrunner.config."""
