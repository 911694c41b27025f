"""Key administration (key_admin.py), the one set of operations behind the admin API and
the ``openfal keys`` commands: a changed key is dropped from the caller's auth cache."""

from __future__ import annotations

import pytest

from openfal.key_admin import KeyAdmin
from openfal.store.api_keys import KeyStore
from openfal.store.db import Database


@pytest.fixture
def forgotten() -> list[str]:
    return []


@pytest.fixture
def admin(db: Database, forgotten: list[str]) -> KeyAdmin:
    return KeyAdmin(db, KeyStore(db), forget=forgotten.append)


async def test_a_key_is_created_with_its_limits_and_dollar_credit(admin: KeyAdmin) -> None:
    key, secret = await admin.create("shop", limits={"rpm": 10}, credit=1.5)
    assert secret.startswith(f"{key.id}:")
    assert (key.rpm, key.balance_micros) == (10, 1_500_000)


async def test_new_limits_take_effect_and_the_key_is_forgotten(admin: KeyAdmin, forgotten: list[str]) -> None:
    key, _ = await admin.create("shop")
    limited = await admin.set_limits(key.id, {"max_queued": 3})
    assert limited is not None and limited.max_queued == 3
    assert forgotten == [key.id]


async def test_a_key_is_revoked_once_and_forgotten(admin: KeyAdmin, forgotten: list[str]) -> None:
    key, _ = await admin.create("shop")
    assert await admin.revoke(key.id)
    assert not await admin.revoke(key.id)
    assert forgotten == [key.id]


async def test_a_missing_key_is_none_to_limit_or_credit(admin: KeyAdmin, forgotten: list[str]) -> None:
    assert await admin.set_limits("nope", {"rpm": 1}) is None
    assert await admin.credit("nope", 1.0) is None
    assert forgotten == []


async def test_credit_in_dollars_makes_a_metered_key_credit_limited(admin: KeyAdmin) -> None:
    key, _ = await admin.create("shop")
    assert key.balance_micros is None
    credited = await admin.credit(key.id, 2.25)
    assert credited is not None and credited.balance_micros == 2_250_000
