"""The project's Dagster Components (``dg list components`` shows them)."""

from finance_assets.components.finance_api_ingestion import FinanceApiIngestion
from finance_assets.components.finance_marts import FinanceMarts

__all__ = ["FinanceApiIngestion", "FinanceMarts"]
