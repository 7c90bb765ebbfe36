"""The header-kind cache the hot loops classify header names with (responses.KindCache).

Both loops (`ClientProtocol._dispatch`, `UpstreamProtocol._write_head`) skip the dict probe for a
name whose length no special name has; a wrong length mask would forward a hop-by-hop header
(Transfer-Encoding, Connection...) as an ordinary one, so the mask is checked against every
special name in any case and against arbitrary names.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotunnel_builtin_proxy.responses import REQ_KINDS, REQ_SPECIAL, RESP_KINDS, RESP_SPECIAL, KindCache

CACHES = [(REQ_KINDS, REQ_SPECIAL), (RESP_KINDS, RESP_SPECIAL)]


def _kind(cache: KindCache, name: bytes) -> int | None:
    """What the hot loops compute for `name` (the inline form of `ordinary_by_length` + probe)."""
    size = len(name)
    kind = cache.known.get(name, -1) if size < 64 and (cache.lengths >> size) & 1 else None
    return cache.miss(name) if kind == -1 else kind


@pytest.mark.parametrize(("cache", "table"), CACHES)
def test_every_special_name_is_found_in_any_case(cache, table):
    for name, kind in table.items():
        for spelling in (name, name.upper(), name.title(), name[:1].upper() + name[1:]):
            assert not cache.ordinary_by_length(spelling)
            assert _kind(cache, spelling) == kind


@pytest.mark.parametrize(("cache", "table"), CACHES)
@given(name=st.binary(min_size=1, max_size=80))
def test_a_name_skipped_by_length_is_never_special(cache, table, name):
    assert _kind(cache, name) == table.get(name.lower())
    if cache.ordinary_by_length(name):
        assert table.get(name.lower()) is None


def test_the_memo_stops_growing_at_its_limit():
    cache = KindCache({b"te": 0})
    for i in range(KindCache.LIMIT + 10):
        assert cache.miss(b"x-%d" % i) is None
    assert len(cache.known) == KindCache.LIMIT
    assert _kind(cache, b"TE") == 0  # still answered past the limit
