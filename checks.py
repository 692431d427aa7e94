"""What a setting of config.py must be beyond the type of its default, as its annotation: `DROPOUT: within(0, 1,
open='high') = 0.2` is a number in [0, 1); a setting without one takes any value of its default's type.
utils.config_problem asks every check before a command works; a check's text is what its error says was expected.
"""
import math


class Check:
    def __init__(self, test, expected, values=None):
        self.test, self.expected, self.values = test, expected, values    # values: one_of's, for a parser's choices

    def __call__(self, value):
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def __repr__(self):
        return self.expected


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(*values):
    return Check(lambda v: any(v == c and type(v) is type(c) for c in values), ' or '.join(map(repr, values)), values)


def count(low):
    return Check(lambda v: _integer(v) and v >= low, f'an integer of at least {low}')


def odd(low=1):
    return Check(lambda v: _integer(v) and v >= low and v % 2 == 1, f'an odd integer of at least {low}')


def at_least(low):
    return Check(lambda v: _number(v) and v >= low, f'a number >= {low:g}')


def above(low):
    return Check(lambda v: _number(v) and v > low, f'a number > {low:g}')


def within(low, high, open=''):
    """A number in [low, high]; open 'low', 'high' or 'both' leaves that end out."""
    left, right = open in ('low', 'both'), open in ('high', 'both')
    return Check(lambda v: _number(v) and (low < v if left else low <= v) and (v < high if right else v <= high),
                 f"a number in {'(' if left else '['}{low:g}, {high:g}{')' if right else ']'}")


def list_of(check, length=None):
    return Check(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and (length is None or len(v) == length)
                 and all(map(check, v)),
                 f"a list of {'' if length is None else f'{length} '}items, each {check.expected}")


def dict_of(check):
    return Check(lambda v: isinstance(v, dict) and all(map(check, v.values())),
                 f'a dict of values, each {check.expected}')


def matches(test, expected):
    """Any other rule: test(value) -> bool, and what it expects in words."""
    return Check(test, expected)
