"""Model kinds behind one interface: importing this package registers every kind ``load_stylizer`` knows."""
from .base import STYLIZERS, PRECISIONS, Stylizer, check_swap_mode, default_device, register
from .inverse import InverseStylizer
from .variational import VariationalStylizer, slerp

__all__ = ["STYLIZERS", "PRECISIONS", "Stylizer", "InverseStylizer", "VariationalStylizer", "check_swap_mode",
           "default_device", "register", "slerp"]
