"""Simulated residents' personal data: names, mobile numbers, resident ID numbers, addresses.

All fictional, but shaped like the real thing so that personal-data scanners and
pseudonymisation are tested on what they will meet: 11-digit mobile numbers with real
prefixes, 18-digit resident identity numbers with a valid GB 11643 check digit.
"""

from __future__ import annotations

import random
from datetime import date

from citybrain.city.model import City, Street

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰红建国志红梅德福淑珍海燕文秀凤云亮鹏飞晨宇欣怡浩然子涵雨轩"
MOBILE_PREFIXES = ["133", "135", "136", "137", "138", "139", "150", "151", "152", "155", "158", "159", "166", "173",
                   "177", "180", "181", "185", "186", "187", "188", "189", "191", "198", "199"]
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character (ISO 7064 MOD 11-2) of an 18-digit resident ID number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def is_valid_id_number(text: str) -> bool:
    """Is ``text`` an 18-character resident ID number whose check character is right?"""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    return text[17].upper() == id_check_digit(text[:17])


class People:
    """Draws personal data for callers and residents from one random stream."""

    def __init__(self, rng: random.Random, city: City) -> None:
        self.rng = rng
        self.city = city

    def full_name(self) -> str:
        n = 1 if self.rng.random() < 0.35 else 2
        return self.rng.choice(SURNAMES) + "".join(self.rng.choice(GIVEN) for _ in range(n))

    def caller_name(self) -> str:
        """What an operator writes down: often a surname and a courtesy title."""
        if self.rng.random() < 0.4:
            return self.rng.choice(SURNAMES) + self.rng.choice(["先生", "女士", "阿姨", "大爷"])
        return self.full_name()

    def mobile(self) -> str:
        return self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"

    def id_number(self, street: Street, birth: date) -> str:
        first17 = f"{street.district_code}{birth:%Y%m%d}{self.rng.randrange(1000):03d}"
        return first17 + id_check_digit(first17)

    def address(self, street: Street) -> str:
        """A home address in ``street`` (a district standing in for streets: in the district, no street)."""
        district = self.city.district(street.district_code)
        community = self.rng.choice(street.communities)
        where = "" if street.is_district else f"{street.name}{community}"
        return (f"{self.city.name}{district.name}{where}{self.rng.randint(1, 30)}号楼"
                f"{self.rng.randint(1, 6)}单元{self.rng.randint(1, 28)}{self.rng.randint(1, 4):02d}室")

    def email(self) -> str:
        return f"user{self.rng.randrange(10**6):06d}@{self.rng.choice(['qq.com', '163.com', '126.com', 'sina.com'])}"
