"""The engine-neutral tensor: a shape, a safetensors dtype name and raw little-endian bytes.

Every engine takes its parameters as Tensors and gives its weights, gradients and optimizer state
back as Tensors, so a checkpoint written by one engine is read by every other. Only the standard
library is needed (`array`), which keeps the core running where NumPy is not (the browser).

    t = Tensor.from_floats((2, 3), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    t.to_floats()          # [0.1, ..., 0.6]: row-major
"""

import math
import sys
from array import array
from dataclasses import dataclass

TYPECODES = {"F64": "d", "F32": "f"}   # safetensors dtype -> array typecode
ITEMSIZE = {"F64": 8, "F32": 4}


@dataclass
class Tensor:
    shape: tuple
    dtype: str      # "F64" or "F32", as safetensors names them
    data: bytes     # row-major, little-endian

    @classmethod
    def from_floats(cls, shape, floats, dtype: str = "F64") -> "Tensor":
        buf = array(TYPECODES[dtype], floats)
        if sys.byteorder != "little":
            buf.byteswap()
        return cls(tuple(shape), dtype, buf.tobytes())

    def to_floats(self) -> list[float]:
        return self._array().tolist()

    def is_finite(self) -> bool:
        """No nan or inf in it (the sum of the array is finite; entries near 1e308 would also fail)."""
        return math.isfinite(sum(self._array()))

    def _array(self) -> array:
        buf = array(TYPECODES[self.dtype])
        buf.frombytes(self.data)
        if sys.byteorder != "little":
            buf.byteswap()
        return buf

    def rows(self) -> list[list[float]]:
        """A matrix as a list of rows of floats."""
        flat, cols = self.to_floats(), self.shape[-1]
        return [flat[i:i + cols] for i in range(0, len(flat), cols)]
