"""The embedded redis-server: 127.0.0.1 only, a password, append-only persistence, clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from jobrunner.worker.broker.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def test_embedded_redis_is_private_and_persistent(tmp_path: Path) -> None:
    url_file = tmp_path / "broker.url"
    server = EmbeddedRedis(tmp_path, url_file=url_file)
    url = server.start()
    try:
        assert url_file.read_text().strip() == url
        assert url_file.stat().st_mode & 0o077 == 0  # the URL holds the password
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(url)
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.rpush("survives", "job")
    finally:
        server.stop()
    assert not url_file.exists()
    assert server.process is not None and server.process.poll() is not None

    again = EmbeddedRedis(tmp_path)
    redis_url = again.start()
    try:  # the append-only file brought the queued item back
        assert redis.Redis.from_url(redis_url).lrange("survives", 0, -1) == [b"job"]
    finally:
        again.stop()
