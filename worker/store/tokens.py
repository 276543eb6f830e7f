"""API tokens: a role and a scope each, stored as an argon2 hash (the secret is shown once).

A token reads `jr_<id>.<secret>`. The id is public (audit entries, `tokens list`, `tokens
revoke` name it); only argon2's hash of the secret is kept. Every check reads the token's record
(one Redis round trip), so a revoked or expired token is refused at once; the argon2 verification
itself (tens of milliseconds by design) runs once per token and process, then a SHA-256 of the
verified secret stands in for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from jobrunner.config import JobrunnerError
from jobrunner.worker.broker.keys import TOKEN, TOKENS

VIEWER, SUBMITTER, OPERATOR = "viewer", "submitter", "operator"
ROLES = (VIEWER, SUBMITTER, OPERATOR)
READ, SUBMIT, OPERATE = "read", "submit", "operate"
# What each role may do: an operator also submits and reads, a submitter also reads.
GRANTS = {VIEWER: {READ}, SUBMITTER: {READ, SUBMIT}, OPERATOR: {READ, SUBMIT, OPERATE}}
PREFIX = "jr_"

_hasher = PasswordHasher()


class AuthError(JobrunnerError):
    """No usable token: missing, malformed, unknown, revoked or expired (HTTP 401)."""


class Denied(JobrunnerError):
    """A valid token whose role or scope does not cover the call (HTTP 403)."""


@dataclass(frozen=True)
class Token:
    id: str
    role: str
    pipelines: tuple[str, ...]  # empty: every pipeline
    tiers: tuple[str, ...]  # empty: every tier
    created_at: float
    expires_at: float | None
    created_by: str
    revoked_at: float | None = None

    @property
    def who(self) -> str:
        """How audit entries name the caller."""
        return f"token:{self.id}"

    def check(self, action: str, pipeline: str | None = None, tier: str | None = None) -> None:
        """Denied unless the role grants `action` and the scope covers `pipeline` and `tier`."""
        if action not in GRANTS[self.role]:
            raise Denied(f"token {self.id} ({self.role}) may not {action}")
        if pipeline is not None and self.pipelines and pipeline not in self.pipelines:
            raise Denied(f"token {self.id} is not scoped to pipeline {pipeline!r}")
        if tier is not None and self.tiers and tier not in self.tiers:
            raise Denied(f"token {self.id} is not scoped to tier {tier!r}")

    def public(self) -> dict[str, object]:
        """What `tokens list` shows: everything but the hash."""
        return {
            "id": self.id,
            "role": self.role,
            "pipelines": list(self.pipelines),
            "tiers": list(self.tiers),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }


class TokenStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._verified: dict[str, bytes] = {}  # token id -> SHA-256 of its verified secret

    def create(
        self,
        role: str,
        *,
        pipelines: list[str] | None = None,
        tiers: list[str] | None = None,
        expires_s: float | None = None,
        created_by: str,
    ) -> tuple[Token, str]:
        """A new token and its secret string (shown once: only its hash is stored)."""
        if role not in ROLES:
            raise JobrunnerError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        token = Token(
            id=token_id,
            role=role,
            pipelines=tuple(pipelines or ()),
            tiers=tuple(tiers or ()),
            created_at=now,
            expires_at=now + expires_s if expires_s else None,
            created_by=created_by,
        )
        fields = {
            "hash": _hasher.hash(secret),
            "role": role,
            "pipelines": json.dumps(token.pipelines),
            "tiers": json.dumps(token.tiers),
            "created_at": repr(now),
            "expires_at": repr(token.expires_at) if token.expires_at else "",
            "created_by": created_by,
        }
        with self.redis.pipeline() as pipe:
            pipe.hset(TOKEN + token_id, mapping=fields)
            pipe.zadd(TOKENS, {token_id: now})
            pipe.execute()
        return token, f"{PREFIX}{token_id}.{secret}"

    def _load(self, token_id: str) -> tuple[Token, str] | None:
        raw = self.redis.hgetall(TOKEN + token_id)
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        token = Token(
            id=token_id,
            role=f["role"],
            pipelines=tuple(json.loads(f["pipelines"])),
            tiers=tuple(json.loads(f["tiers"])),
            created_at=float(f["created_at"]),
            expires_at=float(f["expires_at"]) if f.get("expires_at") else None,
            created_by=f.get("created_by", ""),
            revoked_at=float(f["revoked_at"]) if f.get("revoked_at") else None,
        )
        return token, f["hash"]

    def every(self) -> list[Token]:
        ids = [raw.decode() for raw in self.redis.zrange(TOKENS, 0, -1)]
        return [loaded[0] for token_id in ids if (loaded := self._load(token_id))]

    def revoke(self, token_id: str) -> bool:
        """Refuse the token from now on (kept, marked revoked, for the record); False if
        unknown."""
        if not self.redis.exists(TOKEN + token_id):
            return False
        self.redis.hset(TOKEN + token_id, "revoked_at", repr(time.time()))
        self._verified.pop(token_id, None)
        return True

    def authenticate(self, presented: str) -> Token:
        """The token `presented` names, if its secret matches and it is live; else AuthError."""
        token_id, _, secret = presented.removeprefix(PREFIX).partition(".")
        if not presented.startswith(PREFIX) or not token_id or not secret:
            raise AuthError("malformed token (expected jr_<id>.<secret>)")
        loaded = self._load(token_id)
        if loaded is None:
            raise AuthError(f"unknown token {token_id}")
        token, stored = loaded
        digest = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(token_id)
        if known is None or not hmac.compare_digest(known, digest):
            try:
                _hasher.verify(stored, secret)
            except (VerificationError, InvalidHashError):
                raise AuthError(f"wrong secret for token {token_id}") from None
            self._verified[token_id] = digest
        if token.revoked_at is not None:
            raise AuthError(f"token {token_id} was revoked")
        if token.expires_at is not None and token.expires_at <= time.time():
            raise AuthError(f"token {token_id} expired")
        return token
