"""Finance marts: the reports a finance team opens first, as SQL over the finance tables."""

from finance_assets.marts.assets import MartsConfig, build_mart_assets, mart_names
from finance_assets.marts.catalog import CHECKS, MARTS, Mart, MartCheck

__all__ = ["CHECKS", "MARTS", "Mart", "MartCheck", "MartsConfig", "build_mart_assets",
           "mart_names"]
