"""Reading pickled data files (the SMPL model's .pkl release) without running code from them.

A pickle names the functions that rebuild its objects, and loading calls them: a crafted file can name
`os.system`. This unpickler resolves only the names plain array data needs (numpy arrays, dtypes and
scalars, scipy's sparse matrices, the generic object rebuild they go through) and refuses any other by
name, as the "Restricting Globals" section of Python's pickle documentation describes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (out-of-band buffers)
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry an array's bytes
    ("copy_reg", "_reconstructor"),  # Python 2 pickles (the SMPL release), mapped by fix_imports
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("scipy.sparse.csc", "csc_matrix"),
    ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"),
}


class UnsafePickle(ValueError):
    """A pickle that names something other than plain array data; the message names the file."""


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path, encoding: str):
        super().__init__(fh, encoding=encoding)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.split(".")[0] == "chumpy":  # the original SMPL release pickles chumpy arrays
            raise UnsafePickle(
                f"{self.path}: holds chumpy objects; use a chumpy-free SMPL file (.npz, or a .pkl with plain numpy arrays)"
            )
        raise UnsafePickle(
            f"{self.path}: refused: the pickle asks to run '{module}.{name}', which a data file never needs "
            "(a crafted file could run code); convert it to .npz or .npy"
        )


def load_data_pickle(path: str | Path, encoding: str = "latin1"):
    """The arrays (in dicts, lists, tuples) of a pickle file, or UnsafePickle naming what it would have run."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _DataUnpickler(fh, path, encoding).load()
        except ModuleNotFoundError as e:  # an allowed name whose module is not installed (scipy)
            raise UnsafePickle(f"{path}: needs the '{e.name}' module to read (pip install {e.name})") from None
        except (pickle.UnpicklingError, EOFError) as e:
            raise UnsafePickle(f"{path}: not a readable pickle ({e})") from None
