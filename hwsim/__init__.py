"""hwsim: approximate multiplier netlists -> RTL-verified lookup tables with error and cost figures."""
from hwsim.errors import AxlabError, NetlistError
from hwsim.lut import Lut, exact_lut, exact_table, operand_values, table_sha256

__all__ = ["AxlabError", "NetlistError", "Lut", "exact_lut", "exact_table", "operand_values", "table_sha256"]
