"""The one declarative list of the 16 API endpoints (mirrors the seed's dlt config).

Everything else (the sandbox, the client, the warehouse tables, the assets and
their checks) is derived from this list; add an endpoint here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from finance_assets import models as m
from finance_assets.schema import field_specs


@dataclass(frozen=True)
class Endpoint:
    """One list endpoint: resource name, path, data selector and record schema."""

    name: str
    path: str
    data_selector: str
    model: type[m.Resource]
    description: str
    primary_key: str = "id"
    cursor_field: str = "last_modified_time"
    # Typically among the largest resources (daily documents): a first load starts these
    # first, so the longest pass does not begin last; later runs go by the rows held.
    high_volume: bool = False

    @property
    def children(self) -> dict[str, type[BaseModel]]:
        """Nested arrays of the record (each a child table): field name -> item model."""
        return {f.name: f.item_model for f in field_specs(self.model) if f.item_model is not None}


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("users", "/v1/users", "users", m.User, "Users of the organization."),
    Endpoint("banking", "/v1/bankaccounts", "bankaccounts", m.BankAccount, "Bank, card and clearing accounts with balances."),
    Endpoint("organizations", "/v1/organizations", "organizations", m.Organization, "The organization and its settings."),
    Endpoint("contacts", "/v1/contacts", "contacts", m.Contact, "Customers and vendors with outstanding amounts."),
    Endpoint("bills", "/v1/bills", "bills", m.Bill, "Vendor bills with line items.", high_volume=True),
    Endpoint("estimates", "/v1/estimates", "estimates", m.Estimate, "Sales estimates (quotes) with line items."),
    Endpoint("items", "/v1/items", "items", m.Item, "Goods and services sold or bought."),
    Endpoint("invoices", "/v1/invoices", "invoices", m.Invoice, "Customer invoices with line items.", high_volume=True),
    Endpoint("expenses", "/v1/expenses", "expenses", m.Expense, "Expenses paid from bank accounts."),
    Endpoint("creditnotes", "/v1/creditnotes", "creditnotes", m.CreditNote, "Customer credit notes with line items."),
    Endpoint("customer_payments", "/v1/customerpayments", "customerpayments", m.CustomerPayment, "Customer payments and the invoices they settle.", high_volume=True),
    Endpoint("purchase_orders", "/v1/purchaseorders", "purchaseorders", m.PurchaseOrder, "Purchase orders with line items."),
    Endpoint("sales_orders", "/v1/salesorders", "salesorders", m.SalesOrder, "Sales orders with line items."),
    Endpoint("journals", "/v1/journals", "journals", m.Journal, "Manual journals; debits equal credits."),
    Endpoint("taxes", "/v1/settings/taxes", "taxes", m.Tax, "Tax rates."),
    Endpoint("transactions", "/v1/banktransactions", "banktransactions", m.BankTransaction, "Bank transactions from feeds, imports and manual entry.", high_volume=True),
)

BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}
BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
