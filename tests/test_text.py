"""pantheon.text.storable: any text becomes text PostgreSQL stores as it is."""

from __future__ import annotations

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st

from pantheon.text import storable
from tests.support.hostile import any_char, hostile_text


@given(st.text(alphabet=any_char) | hostile_text())
def test_storable_text_encodes_has_no_nul_and_is_stable(text):
    clean = storable(text)

    clean.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in clean
    assert storable(clean) == clean


@given(st.text())
def test_text_that_is_already_storable_is_unchanged(text):
    # st.text() draws no surrogate; NUL is the one character it may draw that must go.
    assert storable(text) == text.replace("\x00", "\ufffd")


def test_each_unstorable_character_becomes_one_replacement_and_pairs_are_joined():
    assert storable("a\x00b") == "a\ufffdb"
    assert storable("\ud800x\udfff") == "\ufffdx\ufffd"
    assert storable("smile \ud83d\ude00") == "smile \U0001f600"


@pytest.mark.django_db
@given(hostile_text())
def test_postgresql_stores_and_returns_storable_text_exactly(text):
    clean = storable(text)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text", [clean])
        [(stored,)] = cursor.fetchall()

    assert stored == clean
