"""The project's Dagster Components (``dg list components`` shows them)."""

from finance_assets.components.finance_api_ingestion import FinanceApiIngestion

__all__ = ["FinanceApiIngestion"]
