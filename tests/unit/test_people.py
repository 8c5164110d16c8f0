"""Simulated personal data looks like the real thing, so scanners are tested on what they will meet."""

from __future__ import annotations

import random
import re
from datetime import date

from citybrain.sim.city import build_city
from citybrain.sim.people import People, id_check_digit, is_valid_id_number


def test_check_digit_matches_the_gb11643_worked_example() -> None:
    assert id_check_digit("11010519491231002") == "X"
    assert is_valid_id_number("11010519491231002X")
    assert not is_valid_id_number("110105194912310021")
    assert not is_valid_id_number("1101051949123100")


def test_people_have_valid_ids_mobiles_and_addresses_in_the_city() -> None:
    city = build_city(7)
    people = People(random.Random(3), city)
    street = city.streets[5]
    for _ in range(200):
        assert is_valid_id_number(people.id_number(street, date(1950, 3, 1)))
        assert re.fullmatch(r"1[3-9]\d{9}", people.mobile())
    address = people.address(street)
    assert address.startswith(city.name + city.district(street.district_code).name + street.name)
