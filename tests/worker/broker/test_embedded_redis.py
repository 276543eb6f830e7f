"""The embedded redis-server: 127.0.0.1 only, a password, append-only persistence, clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from jobrunner.worker.broker.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def test_embedded_redis_is_private_and_persistent(tmp_path: Path) -> None:
    url_file = tmp_path / "broker.url"
    data_dir = tmp_path / "data"  # made by the server: the owner's only
    server = EmbeddedRedis(data_dir, url_file=url_file)
    url = server.start()
    try:
        assert url_file.read_text().strip() == url
        assert url_file.stat().st_mode & 0o077 == 0  # the URL holds the password
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(url)
        conf = (data_dir / "redis" / "redis.conf").read_text().splitlines()
        for line in ("bind 127.0.0.1", "appendonly yes", "maxmemory-policy noeviction"):
            assert line in conf
        client.rpush("survives", "job")
        # Files holding payloads are the owner's only.
        for folder in (data_dir, data_dir / "redis"):
            assert folder.stat().st_mode & 0o777 == 0o700
        aof = [path for path in (data_dir / "redis").rglob("*.aof") if path.is_file()]
        assert aof and all(path.stat().st_mode & 0o077 == 0 for path in aof)
    finally:
        server.stop()
    assert not url_file.exists()
    assert server.process is not None and server.process.poll() is not None

    again = EmbeddedRedis(data_dir)
    redis_url = again.start()
    try:  # the append-only file brought the queued item back
        assert redis.Redis.from_url(redis_url).lrange("survives", 0, -1) == [b"job"]
    finally:
        again.stop()


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "GET", "requirepass"),
        ("CONFIG", "SET", "dir", "/tmp"),
        ("MODULE", "LIST"),
        ("DEBUG", "SLEEP", "0"),
        ("SLAVEOF", "127.0.0.1", "1"),
        ("SHUTDOWN",),
        ("ACL", "LIST"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_admin_commands_are_off(redis_server: EmbeddedRedis, command: tuple[str, ...]) -> None:
    """With the password, a client could otherwise write files anywhere (CONFIG SET dir) or load
    code (MODULE LOAD) as the server's user, or read the password back."""
    client = redis.Redis.from_url(redis_server.url)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command(*command)
    assert client.ping()
