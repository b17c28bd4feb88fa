import dataclasses

import pytest

from effdl.core import Config, ConfigError, Registry, UnknownNameError, check_choice, check_range


def test_registry_lookup_and_callable_passthrough():
    reg = Registry("criterion")
    reg.add("l1", abs, description="absolute value")
    assert reg.get("L1") is abs
    assert reg.get(max) is max  # a callable is accepted as it is
    assert "l1" in reg and len(reg) == 1


def test_registry_unknown_name_lists_valid_and_suggests():
    reg = Registry("criterion")
    reg.add("l1", abs)
    reg.add("l2", abs)
    with pytest.raises(UnknownNameError, match=r"unknown criterion 'l3'; valid criterions: l1, l2; did you mean"):
        reg.get("l3")


def test_registry_rejects_duplicates_and_non_callables():
    reg = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("A", 2)
    with pytest.raises(ConfigError, match="expected a thing name"):
        reg.get(3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Demo(Config):
    ratio: float = 0.5
    widths: tuple[int, ...] = (1, 2)
    name: str = "x"
    limit: float | None = None

    def validate(self):
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True, hint="use ratio=0.5")


def test_config_round_trip_through_plain_dict():
    cfg = _Demo(ratio=0.25, widths=(3, 4), limit=2.0)
    data = cfg.to_dict()
    assert data == {"type": "_Demo", "version": 1, "ratio": 0.25, "widths": [3, 4], "name": "x", "limit": 2.0}
    assert _Demo.from_dict(data) == cfg
    assert _Demo.from_dict({"ratio": 0}).ratio == 0.0  # ints coerce to float fields


def test_config_errors_are_explicit():
    with pytest.raises(ConfigError, match=r"ratio must be in \[0.0, 1.0\), got ratio=1.5; use ratio=0.5"):
        _Demo(ratio=1.5)
    with pytest.raises(ConfigError, match=r"has no field.*'ratoi'.*valid fields: ratio, widths, name, limit"):
        _Demo.from_dict({"ratoi": 0.1})
    with pytest.raises(ConfigError, match="name must be of type str"):
        _Demo.from_dict({"name": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Demo().ratio = 0.1  # type: ignore[misc]


def test_check_helpers():
    check_choice("opt", "sgd", ["sgd"])
    with pytest.raises(ConfigError, match="must be a number"):
        check_range("lr", "fast")
    with pytest.raises(ConfigError):
        check_range("lr", float("nan"), 0.0)
