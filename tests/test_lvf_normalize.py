"""Street and civic value normalization for the LVF (USPS Publication 28 rules)."""

from __future__ import annotations

import pytest

from firebox.ecrf.normalize import (
    AliasTable,
    StreetName,
    clean,
    normalize_country,
    normalize_state,
    normalize_street,
    normalize_town,
    normalize_zip,
    parse_house_number,
    street_key,
)


def test_case_punctuation_and_whitespace():
    assert clean("  Mt.   Auburn\tSt. ") == "MT AUBURN ST"
    assert clean("O'Brien") == "OBRIEN"
    assert clean("O\u2019Brien") == "OBRIEN"
    assert clean("South_William") == "SOUTH WILLIAM"
    assert clean("Wellington-Harrington") == "WELLINGTON HARRINGTON"
    assert clean(None) == "" and clean("  ") == ""


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("Massachusetts Avenue", "MASSACHUSETTS AVE"),
        ("massachusetts av", "MASSACHUSETTS AVE"),
        ("MASSACHUSETTS AVE.", "MASSACHUSETTS AVE"),
        ("Memorial Drive", "MEMORIAL DR"),
        ("Acorn Pk", "ACORN PARK"),
        ("Acorn Park", "ACORN PARK"),
        ("Concord Turnpike", "CONCORD TPKE"),
        ("Concord Tpk", "CONCORD TPKE"),
        ("Linnaean Street", "LINNAEAN ST"),
        ("Normandy Terrace Ext", "NORMANDY TER EXT"),
        ("Coolidge Hill Road", "COOLIDGE HL RD"),
        ("Ash Street Pl", "ASH ST PL"),  # suffix words inside a name too
        ("Ash St Place", "ASH ST PL"),
        ("Education St St", "EDUCATION ST"),  # a suffix repeated in the data counts once
    ],
)
def test_street_suffixes(written: str, key: str):
    assert street_key(written) == key


def test_directionals_pre_and_post():
    assert normalize_street("North First Street") == StreetName("N", "1ST", "ST", "")
    assert normalize_street("N. 1st St.") == StreetName("N", "1ST", "ST", "")
    assert normalize_street("Elm St N") == StreetName("", "ELM", "ST", "N")
    assert normalize_street("Elm Street North") == normalize_street("Elm St N")
    assert normalize_street("Southwest Main Rd").pre == "SW"
    # A directional that is the whole name stays the name (``East St`` is named EAST).
    east = normalize_street("East Street")
    assert (east.name, east.suffix, east.pre) == ("E", "ST", "")
    assert street_key("E St") == east.key


def test_parts_in_separate_elements_equal_one_string():
    """PRD / RD / STS / POD given apart give the same key as written together."""
    assert street_key("N", "First", "Street", None) == street_key("North First St")
    assert street_key(None, "Elm", "St", "North") == street_key("Elm St N")
    assert street_key(None, "Massachusetts", "Avenue", None) == "MASSACHUSETTS AVE"


def test_ordinal_words():
    assert street_key("Third Street") == "3RD ST"
    assert street_key("3rd St") == "3RD ST"
    assert street_key("Eleventh Ave") == "11TH AVE"
    assert street_key("Twenty-First St") == "TWENTY 1ST ST"  # compound ordinals stay words
    assert street_key("Second") == "2ND"


def test_name_words_saint_mount_fort():
    assert street_key("Saint Paul St") == street_key("St Paul St") == "ST PAUL ST"
    assert street_key("Mount Auburn Street") == street_key("Mt Auburn St") == "MT AUBURN ST"
    assert street_key("Fort Washington Pl") == "FT WASHINGTON PL"
    assert street_key("Monsignor O'Brien Hwy") == "MSGR OBRIEN HWY"


def test_single_word_streets_keep_their_name():
    assert normalize_street("Broadway") == StreetName("", "BROADWAY", "", "")
    parkway = normalize_street("Parkway")  # a street named for a suffix word
    assert parkway.name == "PKWY" and parkway.suffix == ""
    assert normalize_street("").key == ""


def test_alias_table_normalizes_both_sides():
    table = AliasTable({"Mass Ave": "Massachusetts Avenue", "mass av": "MASSACHUSETTS AVE"})
    assert table.lookup("MASS AVE") == {"MASSACHUSETTS AVE"}
    assert table.lookup(street_key("Mass. Avenue")) == {"MASSACHUSETTS AVE"}
    assert table.lookup("MASSACHUSETTS AVE") == frozenset()
    table.add("Boylston St", "JFK St")
    table.add("Boylston St", "Boylston Pl")
    assert table.lookup("BOYLSTON ST") == {"JFK ST", "BOYLSTON PL"}
    table.add("3rd St", "Third Street")  # same key after normalization: not an alias
    assert table.lookup("3RD ST") == frozenset()


def test_town_state_country_zip():
    assert normalize_town(" cambridge ") == "CAMBRIDGE"
    assert normalize_town("Mount Washington") == normalize_town("Mt. Washington")
    assert normalize_state("Massachusetts") == "MA" and normalize_state("ma") == "MA"
    assert normalize_state("New Hampshire") == "NH"
    assert normalize_country("USA") == "US" and normalize_country("us") == "US"
    assert normalize_zip("02139-4307") == "02139"
    assert normalize_zip("021394307") == "02139"
    assert normalize_zip(" 02138 ") == "02138"


def test_house_numbers():
    assert parse_house_number("795") == (795, "")
    assert parse_house_number("12A") == (12, "A")
    assert parse_house_number("12", "b") == (12, "B")
    assert parse_house_number("12 1/2") == (12, "1/2")
    assert parse_house_number(" 40 ") == (40, "")
    assert parse_house_number("A12") is None
    assert parse_house_number("") is None
    assert parse_house_number(None) is None
