"""LVF (civic address validation, RFC 5222 section 8.4.2) on Cambridge's street centerlines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import shapely
from pyproj import Geod, Transformer

from firebox.ecrf.lvf import (
    AddressRange,
    CenterlineFields,
    Lvf,
    LvfDataError,
    Side,
    address_range,
    interpolate,
    load_address_points,
)
from firebox.ecrf.normalize import street_key
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Point

_GEOD = Geod(ellps="WGS84")
# Massachusetts State Plane (metres), for distances from a point to a line.
_TO_METRES = Transformer.from_crs("EPSG:4326", "EPSG:26986", always_xy=True)


def _metres(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: list(zip(*_TO_METRES.transform(xy[:, 0], xy[:, 1]))))


def _distance_m(point: Point, line_coords) -> float:
    return _metres(shapely.Point(point.lon, point.lat)).distance(
        _metres(shapely.LineString(line_coords))
    )


@pytest.fixture(scope="module")
def centerlines(shared_data: Path) -> Path:
    return shared_data / "cambridge" / "TRANS_Centerlines.geojson"


@pytest.fixture(scope="module")
def lvf(centerlines: Path) -> Lvf:
    return Lvf.from_geojson(centerlines, default_town="CAMBRIDGE", default_state="MA")


def cambridge(**kw: str) -> CivicAddress:
    return CivicAddress(country="US", A1="MA", A3="CAMBRIDGE", **kw)


# --- ranges and interpolation ---------------------------------------------------------


def test_address_range_rules():
    assert address_range(-1, -1) is None
    assert address_range(0, 0) is None
    assert address_range(None, None) is None
    assert address_range(None, 15) == AddressRange(15, 15)  # a missing end: the other value
    assert address_range(-1, 7) == AddressRange(7, 7)
    down = address_range(30, 14)  # ranges run either way
    assert down is not None and down.contains(20) and not down.contains(21)
    assert down.fraction(30) == 0.0 and down.fraction(14) == 1.0
    odd = AddressRange(29, 45)
    assert odd.contains(31) and not odd.contains(32) and not odd.contains(47)
    mixed = AddressRange(3, 8)  # ends of different parity: both parities accepted
    assert mixed.parity is None and mixed.contains(4) and mixed.contains(5)
    assert AddressRange(10, 10).fraction(10) == 0.5


def test_interpolate_steps_to_the_requested_side():
    line = [(-71.1, 42.37), (-71.099, 42.37)]  # drawn due east
    mid_left = interpolate(line, 0.5, Side.LEFT, 10.0)
    mid_right = interpolate(line, 0.5, Side.RIGHT, 10.0)
    assert mid_left.lat > 42.37 > mid_right.lat  # left of an eastward line is north
    assert mid_left.lon == pytest.approx(-71.0995, abs=1e-9)
    assert _GEOD.inv(mid_left.lon, mid_left.lat, -71.0995, 42.37)[2] == pytest.approx(10, abs=0.1)
    start = interpolate(line, 0.0, None, 10.0)
    assert (start.lat, start.lon) == pytest.approx((42.37, -71.1))
    assert interpolate([(-71.1, 42.37), (-71.1, 42.37)], 0.3, Side.LEFT, 5.0) == Point(42.37, -71.1)


# --- loading --------------------------------------------------------------------------


def test_loads_every_cambridge_segment(lvf: Lvf):
    assert len(lvf.segments) == 2643 and lvf.skipped == []
    assert lvf.towns == {"CAMBRIDGE"} and lvf.states == {"MA"}
    assert "MASSACHUSETTS AVE" in lvf.street_keys()
    assert len(lvf.segments_of("Mass Ave")) == len(lvf.segments_of("Massachusetts Avenue")) > 100


def test_bad_files_are_named(tmp_path: Path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(LvfDataError, match="bad.geojson: not valid JSON"):
        Lvf.from_geojson(bad, default_town="X")
    bad.write_text('{"type": "Feature"}')
    with pytest.raises(LvfDataError, match="not a GeoJSON FeatureCollection"):
        Lvf.from_geojson(bad, default_town="X")
    with pytest.raises(LvfDataError, match="cannot read"):
        Lvf.from_geojson(tmp_path / "missing.geojson", default_town="X")


def test_features_without_town_or_geometry_are_skipped_and_listed(centerlines: Path, tmp_path):
    features = json.loads(centerlines.read_text())["features"][:3]
    features[1]["geometry"] = None
    path = tmp_path / "few.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    lvf = Lvf.from_geojson(path, default_town="Cambridge")
    assert len(lvf.segments) == 2 and len(lvf.skipped) == 1
    assert "not a usable LineString" in lvf.skipped[0]
    with pytest.raises(LvfDataError, match="no usable street segments"):
        Lvf.from_geojson(path)  # no Town field and no default town: nothing usable


# --- real addresses -------------------------------------------------------------------


def _sample_addresses(centerlines: Path, n: int = 100):
    """Deterministic sample of (feature, side, number): the first number of one side of a
    segment, kept only when no other segment of the same street holds that number."""
    features = json.loads(centerlines.read_text())["features"]
    holders: dict[tuple[str, int], int] = {}
    candidates = []
    for f in features:
        p = f["properties"]
        key = street_key(p.get("Street_Name"), p.get("Street_Type"))
        for side, lo, hi in ((Side.LEFT, "L_From", "L_To"), (Side.RIGHT, "R_From", "R_To")):
            rng = address_range(p.get(lo), p.get(hi))
            if rng is None:
                continue
            for number in range(rng.low, rng.high + 1):
                if rng.contains(number):
                    holders[(key, number)] = holders.get((key, number), 0) + 1
            candidates.append((f, side, rng.first, key))
    unique = [c for c in candidates if holders[(c[3], c[2])] == 1]
    return random.Random(5222).sample(unique, n)


def test_sampled_real_addresses_validate_and_geocode_on_their_segment(lvf, centerlines):
    sample = _sample_addresses(centerlines)
    assert len(sample) == 100
    for feature, side, number, _ in sample:
        p = feature["properties"]
        zip_code = p.get("ZIP_Left" if side is Side.LEFT else "ZIP_Right")
        civic = cambridge(HNO=str(number), RD=p["Street_Name"], STS=p.get("Street_Type"), PC=zip_code)
        result = lvf.validate(civic)
        where = f"{civic.one_line()} ({p['ID']})"
        assert result.valid, (where, result.validation)
        assert result.validation.invalid == [], where
        assert result.segment is not None and result.segment.id == p["ID"], where
        assert result.side is side, where
        assert result.point is not None
        assert _distance_m(result.point, result.segment.coords) < 50, where
        # On the side of the matching range (the sign of the cross product with the
        # segment's direction says which side of the line a point is on).
        assert _side_of(result.segment.coords, result.point.lon, result.point.lat) is side, where


def test_city_hall_795_massachusetts_ave(lvf: Lvf):
    result = lvf.validate(cambridge(HNO="795", RD="Massachusetts", STS="Ave", PC="02139"))
    assert result.valid
    assert result.validation.valid == ["country", "A1", "A3", "STS", "HNO", "PC", "RD"]
    assert result.validation.invalid == result.validation.unchecked == []
    assert result.street == "MASSACHUSETTS AVE"
    # Cambridge City Hall, 795 Massachusetts Ave, is at about 42.3671 N, 71.1058 W.
    assert _GEOD.inv(result.point.lon, result.point.lat, -71.1058, 42.3671)[2] < 100
    assert lvf.geocode(cambridge(HNO="795", RD="MASSACHUSETTS AVE")) == result.point


@pytest.mark.parametrize("street", ["MASS AVE", "Mass Ave", "mass. av", "Mass Avenue"])
def test_mass_ave_alias(lvf: Lvf, street: str):
    result = lvf.validate(cambridge(HNO="795", RD=street, PC="02139"))
    assert result.valid and result.street == "MASSACHUSETTS AVE"
    assert "RD" in result.validation.valid


def test_data_aliases_are_loaded(lvf: Lvf):
    """The centerline ``Alias`` field names Mt Auburn St "Mount Auburn St", JFK St "Boylston St"."""
    assert lvf.validate(cambridge(HNO="12", RD="Mount Auburn Street")).valid
    old_name = lvf.validate(cambridge(HNO="6", RD="Boylston St"))
    assert old_name.valid and old_name.street == "JFK ST"


def test_brattle_street(lvf: Lvf):
    # The Brattle Theatre, 40 Brattle St: left side of Brattle_St_1 (40-44).
    theatre = lvf.validate(cambridge(HNO="40", RD="Brattle St", PC="02138"))
    assert theatre.valid and theatre.segment.id == "Brattle_St_1" and theatre.side is Side.LEFT
    # Cambridge's data numbers Brattle St from 3 (right side 3-8 of Brattle_St_3), so No. 1
    # is no address of Brattle St: the street is right, the number is not.
    one = lvf.validate(cambridge(HNO="1", RD="Brattle St"))
    assert not one.valid
    assert "RD" in one.validation.valid and "HNO" in one.validation.invalid
    # Without a suffix, "1 Brattle" is ambiguous by name; the number settles it (Brattle Cir 1-7).
    either = lvf.validate(cambridge(HNO="1", RD="Brattle"))
    assert either.valid and either.street == "BRATTLE CIR"
    assert sorted(either.candidates) == ["BRATTLE CIR", "BRATTLE ST"]


def _side_of(coords, lon: float, lat: float) -> Side:
    line = _metres(shapely.LineString(coords))
    pt = _metres(shapely.Point(lon, lat))
    along = line.project(pt)
    a = line.interpolate(max(0.0, along - 1.0))
    b = line.interpolate(min(line.length, along + 1.0))
    cross = (b.x - a.x) * (pt.y - a.y) - (b.y - a.y) * (pt.x - a.x)
    return Side.LEFT if cross > 0 else Side.RIGHT


def test_public_safety_buildings_validate_near_their_real_location(lvf, shared_data):
    """Fire and police station addresses from the city's files, geocoded from centerline
    ranges alone, land within 60 m of the stations' surveyed points (all are under 42 m)."""
    count = 0
    for name in ("PUBLICSAFETY_FireStations.geojson", "PUBLICSAFETY_PoliceStation.geojson"):
        for f in json.loads((shared_data / "cambridge" / name).read_text())["features"]:
            number, street = f["properties"]["ADDRESS"].split(" ", 1)
            result = lvf.validate(cambridge(HNO=number, RD=street))
            assert result.valid, f["properties"]["ADDRESS"]
            lon, lat = f["geometry"]["coordinates"][:2]
            assert _GEOD.inv(lon, lat, result.point.lon, result.point.lat)[2] < 60
            # The surveyed building is on the side of the street the ranges say: the data's
            # left/right follows the line's drawing direction, as the LVF assumes.
            assert _side_of(result.segment.coords, lon, lat) is result.side, f["properties"]
            count += 1
    assert count == 10


# --- invalid elements -----------------------------------------------------------------


def test_wrong_number_is_hno_invalid_street_valid(lvf: Lvf):
    result = lvf.validate(cambridge(HNO="99999", RD="Massachusetts Ave"))
    assert not result.valid and result.point is None
    assert result.validation.invalid == ["HNO"]
    assert "RD" in result.validation.valid
    # A number inside a range but of the other side's parity: 40-44 and 29-45 on Brattle_St_1
    # hold 42 and 43; 41 lies in 29-45 (odd) so it is valid; 46-48 / 47-49 next door.
    assert lvf.validate(cambridge(HNO="41", RD="Brattle St")).valid
    assert lvf.validate(cambridge(HNO="7", RD="Brattle Cir")).valid
    assert lvf.validate(cambridge(HNO="8", RD="Brattle Cir")).validation.invalid == ["HNO"]


def test_not_a_number(lvf: Lvf):
    result = lvf.validate(cambridge(HNO="rear", RD="Brattle St"))
    assert result.validation.invalid == ["HNO"] and not result.valid


def test_unknown_street_is_rd_invalid(lvf: Lvf):
    result = lvf.validate(cambridge(HNO="10", RD="Nowhere", STS="St"))
    assert not result.valid
    assert result.validation.invalid == ["STS", "RD"]
    assert "HNO" in result.validation.unchecked  # no street to check a number against
    assert result.candidates == []


def test_wrong_suffix_names_the_element_that_holds_it(lvf: Lvf):
    apart = lvf.validate(cambridge(HNO="40", RD="Brattle", STS="Avenue"))
    assert apart.validation.invalid == ["STS"] and "RD" in apart.validation.valid
    together = lvf.validate(cambridge(HNO="40", RD="Brattle Avenue"))
    assert together.validation.invalid == ["RD"]
    assert not apart.valid and not together.valid


def test_wrong_zip_is_pc_invalid(lvf: Lvf):
    result = lvf.validate(cambridge(HNO="795", RD="Massachusetts Ave", PC="02138"))
    assert result.validation.invalid == ["PC"] and not result.valid
    assert result.point is None
    assert lvf.validate(cambridge(HNO="795", RD="Mass Ave", PC="02139-4307")).valid


def test_wrong_town_state_country(lvf: Lvf):
    town = lvf.validate(
        CivicAddress(country="US", A1="MA", A3="Boston", HNO="795", RD="Massachusetts Ave")
    )
    assert town.validation.invalid == ["A3"] and not town.valid
    assert "RD" in town.validation.valid and "HNO" in town.validation.valid
    state = lvf.validate(CivicAddress(A1="NH", A3="Cambridge", HNO="795", RD="Mass Ave"))
    assert state.validation.invalid == ["A1"]
    assert lvf.validate(CivicAddress(A1="Massachusetts", HNO="795", RD="Mass Ave")).valid
    country = lvf.validate(CivicAddress(country="CA", HNO="795", RD="Mass Ave"))
    assert country.validation.invalid == ["country"]


def test_other_elements_are_unchecked(lvf: Lvf):
    result = lvf.validate(
        cambridge(A2="Middlesex", HNO="795", RD="Mass Ave", FLR="2", UNIT="201", NAM="City Hall")
    )
    assert result.valid
    assert result.validation.unchecked == ["A2", "FLR", "NAM", "UNIT"]


def test_street_without_number_is_valid_at_street_level(lvf: Lvf):
    result = lvf.validate(cambridge(RD="Brattle St"))
    assert result.valid and result.point is None and result.street == "BRATTLE ST"
    assert result.validation.valid == ["country", "A1", "A3", "RD"]


# --- towns and address points ---------------------------------------------------------


def test_town_field_scopes_streets(centerlines: Path, tmp_path: Path):
    """A file with a ``Town`` field (the demo state's schema): each street is looked up in
    the caller's town; a feature without the field falls back to the default town."""
    features = json.loads(centerlines.read_text())["features"]
    brattle = [f for f in features if f["properties"]["ID"] == "Brattle_St_1"][0]
    broadway = [f for f in features if f["properties"]["Street_Name"] == "Broadway"][0]
    brattle["properties"]["Town"] = "Somerville"
    path = tmp_path / "towns.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [brattle, broadway]}))
    lvf = Lvf.from_geojson(path, default_town="Cambridge", default_state="MA")
    assert lvf.towns == {"SOMERVILLE", "CAMBRIDGE"}
    assert lvf.validate(CivicAddress(A3="Somerville", HNO="40", RD="Brattle St")).valid
    elsewhere = lvf.validate(CivicAddress(A3="Cambridge", HNO="40", RD="Brattle St"))
    assert elsewhere.validation.invalid == ["RD"] and "A3" in elsewhere.validation.valid


def test_address_points_are_authoritative(centerlines: Path, shared_data: Path):
    stations = shared_data / "cambridge" / "PUBLICSAFETY_FireStations.geojson"
    points = load_address_points(stations, address_field="ADDRESS", default_town="Cambridge")
    assert len(points) == 8 and points[0].number == 491 and points[0].street.key == "BROADWAY"
    lvf = Lvf.from_geojson(
        centerlines, default_town="Cambridge", default_state="MA", address_points=points
    )
    headquarters = lvf.validate(cambridge(HNO="491", RD="Broadway"))
    assert headquarters.valid and headquarters.address_point is points[0]
    assert headquarters.point == points[0].point
    # A number that is no address point still goes through the ranges.
    assert lvf.validate(cambridge(HNO="493", RD="Broadway")).address_point is None


def test_address_point_loader_errors(tmp_path: Path):
    path = tmp_path / "ap.geojson"
    feature = {"type": "Feature", "id": 7, "properties": {"ADDRESS": "Broadway"},
               "geometry": {"type": "Point", "coordinates": [-71.1, 42.37]}}  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(LvfDataError, match="feature 7: no house number"):
        load_address_points(path, default_town="Cambridge")
    feature["properties"]["ADDRESS"] = "12 Broadway"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(LvfDataError, match="no town"):
        load_address_points(path)
    one = load_address_points(path, default_town="Cambridge")
    assert (one[0].number, one[0].suffix, one[0].town) == (12, "", "CAMBRIDGE")
    feature["properties"] = {"N": "12A", "S": "Broadway", "TOWN": "Somerville"}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    split = load_address_points(path, number_field="N", street_field="S", town_field="TOWN")
    assert (split[0].number, split[0].suffix, split[0].town) == (12, "A", "SOMERVILLE")


def test_custom_field_names(tmp_path: Path):
    feature = {
        "type": "Feature",
        "properties": {"NAME": "Main", "TYPE": "Street", "LF": 1, "LT": 9, "RF": 2, "RT": 10,
                       "CITY": "Springfield", "ST": "MA", "ZL": "01103", "ZR": "01103"},
        "geometry": {"type": "LineString", "coordinates": [[-72.59, 42.10], [-72.589, 42.10]]},
    }  # fmt: skip
    path = tmp_path / "custom.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    fields = CenterlineFields(
        street_name="NAME", street_type="TYPE", l_from="LF", l_to="LT", r_from="RF",
        r_to="RT", zip_left="ZL", zip_right="ZR", town="CITY", state="ST", id=None, alias=None,
    )  # fmt: skip
    lvf = Lvf.from_geojson(path, fields=fields)
    result = lvf.validate(CivicAddress(A1="MA", A3="Springfield", HNO="5", RD="Main St", PC="01103"))
    assert result.valid and result.side is Side.LEFT and result.segment.id == "0"
    assert result.point.lat > 42.10  # left of an eastward line: north
