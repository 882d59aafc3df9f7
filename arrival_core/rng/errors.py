"""The RNG layer's own exceptions: they name the function and the value at fault, never a state or a code.

The pipeline maps them to the canonical code of the state that drew (`pipeline.shell.rng_failure`), as
distribution libraries keep their errors free of their callers' concerns.
"""
from __future__ import annotations


class RngArgumentError(ValueError):
    """A distribution received an argument outside its domain (a λ, a shape or a uniform)."""

    def __init__(self, function: str, argument: str, rule: str, element: int, value: float, invalid: int,
                 size: int) -> None:
        self.function, self.argument, self.element, self.value = function, argument, element, value
        super().__init__(f"{function}: {argument} must be {rule}; element {element} is {value!r} "
                         f"({invalid} invalid of {size})")


class CounterWrapError(ValueError):
    """A block offset pushes a stream's 128-bit Philox counter past 2**128 (abort_on_wrap)."""

    def __init__(self, function: str, rng_key: int, offset: int, element: int) -> None:
        self.function, self.rng_key, self.offset, self.element = function, rng_key, offset, element
        super().__init__(f"{function}: the Philox counter of stream key {rng_key} wraps past 2**128 at offset "
                         f"{offset} (element {element}); abort_on_wrap")
