from dataclasses import dataclass, field
from typing import Literal

import pytest

from goalrank.config import ADDED_LATER, check, from_dict, load_values, to_dict
from goalrank.errors import ConfigError


@dataclass
class Inner:
    width: int = 4
    rate: float = 0.5

    def __post_init__(self) -> None:
        check(self.width >= 1, "inner.width", ">= 1", self.width)


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    seeds: tuple[int, ...] = (0,)
    inner: Inner = field(default_factory=Inner)


def test_overrides_are_coerced_to_field_types(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "y"\n[inner]\nwidth = 8\n')
    config = from_dict(Outer, load_values(path, ["inner.rate=0.25", "flag=true", "mode=b", "seeds=1,2,3"]))
    assert config == Outer(name="y", flag=True, mode="b", seeds=(1, 2, 3), inner=Inner(8, 0.25))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["nope=1"], "unknown key(s) ['nope']"),
        (["inner.depth=1"], "config.inner: unknown key(s) ['depth']"),
        (["inner.width=0"], "inner.width=0: expected >= 1"),
        (["inner.width=abc"], "config.inner.width='abc': expected int"),
        (["mode=c"], "expected one of ['a', 'b']"),
        (["flag=maybe"], "expected bool"),
        (["novalue"], "expected key=value"),
        (["inner.rate=inf"], "config.inner.rate='inf': expected a finite number"),
        (["inner.rate=nan"], "config.inner.rate='nan': expected a finite number"),
        (["inner.rate=1e400"], "config.inner.rate='1e400': expected a finite number"),
    ],
)
def test_bad_values_raise_one_clear_config_error(overrides, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, load_values(None, overrides))
    assert message in str(info.value)


def test_missing_or_invalid_toml_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_values(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_values(bad)


def test_toml_infinities_and_overflowing_integers_are_config_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[inner]\nwidth = 1e400\n")  # TOML reads it as inf: int(inf) overflows
    with pytest.raises(ConfigError, match="config.inner.width=inf: expected int"):
        from_dict(Outer, load_values(path))
    path.write_text("[inner]\nrate = inf\n")
    with pytest.raises(ConfigError, match="expected a finite number"):
        from_dict(Outer, load_values(path))


def test_missing_required_fields_are_named():
    @dataclass
    class Needs:
        run: str
        port: int = 1

    named = r"missing required key\(s\) \['run'\] \(give the --run flag or --set run=...\)"
    with pytest.raises(ConfigError, match=named):
        from_dict(Needs, {"port": 2})


def test_from_dict_keeps_typed_values():
    assert from_dict(Inner, {"width": 3, "rate": 1}) == Inner(3, 1.0)
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Inner, {"width": 2.5})


def test_a_config_that_is_not_utf8_is_one_config_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match=r"c.toml: not UTF-8 text \(byte 8\)"):
        load_values(path)


@dataclass
class Grown:
    """Outer's inner table after a field was added to it: the old behaviour is its default."""

    width: int = 4
    rate: float = 0.5
    kind: str = field(default="old", metadata={ADDED_LATER: "2026-12-07"})


@dataclass
class GrownOuter:
    name: str = "x"
    inner: Grown = field(default_factory=Grown)


def test_a_field_added_later_is_left_out_of_the_dict_while_it_holds_its_default():
    before = to_dict(Outer(name="run"))
    after = to_dict(GrownOuter(name="run"))
    assert after == {"name": "run", "inner": {"width": 4, "rate": 0.5}}  # a run's record (and name) as before
    assert before["inner"] == after["inner"]
    changed = to_dict(GrownOuter(inner=Grown(kind="new")))
    assert changed["inner"]["kind"] == "new"
    assert from_dict(GrownOuter, after) == GrownOuter(name="run")  # the default comes back on reading
    assert from_dict(GrownOuter, changed) == GrownOuter(inner=Grown(kind="new"))


@dataclass
class GrownByFactory:
    kinds: tuple[str, ...] = field(default_factory=tuple, metadata={ADDED_LATER: "2026-12-07"})


def test_a_field_added_later_needs_a_plain_default_to_be_left_out():
    with pytest.raises(TypeError, match="GrownByFactory.kinds: a field marked added_later needs a plain default"):
        to_dict(GrownByFactory())
