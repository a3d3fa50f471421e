"""Pydantic models of the 16 records, written from the API contract.

Money and rates are exact ``Decimal`` with the contract's precision and scale;
ids are digit strings; timestamps are offset-aware. Undocumented fields are kept
(``extra="allow"``). A nullable field is typed ``T | None``; any other field is
non-nullable, and the warehouse and the checks read nullability from here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class DecimalType:
    """Precision and scale of a decimal field (``x-precision``/``x-scale``)."""

    precision: int
    scale: int


def _decimal(precision: int, scale: int) -> object:
    return Annotated[
        Decimal,
        Field(max_digits=precision, decimal_places=scale),
        DecimalType(precision, scale),
    ]


Id = Annotated[str, Field(pattern=r"^[0-9]+$")]
Timestamp = AwareDatetime
Amount = _decimal(18, 2)
ExchangeRate = Annotated[_decimal(18, 6), Field(gt=0)]
Quantity = _decimal(18, 6)
UnitRate = _decimal(22, 6)
TaxPercentage = Annotated[_decimal(7, 4), Field(ge=0)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
ActiveStatus = Literal["active", "inactive"]


class Record(BaseModel):
    """Base of every API object: keeps undocumented fields."""

    model_config = ConfigDict(extra="allow", frozen=False)


class Resource(Record):
    """A top-level record: primary key ``id`` and the cursor field."""

    id: Id
    created_time: Timestamp
    last_modified_time: Timestamp


# ---------- nested objects ----------
class LineItem(Record):
    line_item_id: Id
    item_id: Id | None
    description: str | None
    quantity: Quantity
    rate: UnitRate
    tax_id: Id | None
    tax_percentage: TaxPercentage
    item_total: Amount


class JournalLineItem(Record):
    line_item_id: Id
    account_name: str
    debit_or_credit: Literal["debit", "credit"]
    amount: Amount
    description: str | None
    contact_id: Id | None


class AppliedInvoice(Record):
    invoice_id: Id
    amount_applied: Amount


# ---------- records ----------
class User(Resource):
    name: str
    email: str
    role: Literal["admin", "accountant", "staff", "timesheet_staff"]
    status: Literal["active", "inactive", "invited"]
    mobile: str | None
    organization_id: Id
    last_login_time: Timestamp | None


class BankAccount(Resource):
    account_name: str
    account_type: Literal["bank", "credit_card", "payment_clearing"]
    account_number: str | None
    bank_name: str | None
    routing_number: str | None
    currency_code: CurrencyCode
    balance: Amount
    bank_balance: Amount | None
    is_active: bool
    is_primary_account: bool
    description: str | None
    organization_id: Id


class Organization(Resource):
    name: str
    legal_name: str | None
    email: str
    country_code: CountryCode
    currency_code: CurrencyCode
    time_zone: str
    fiscal_year_start_month: Annotated[int, Field(ge=1, le=12)]
    industry: str | None
    tax_registration_number: str | None
    is_default_org: bool
    status: ActiveStatus


class Contact(Resource):
    contact_name: str
    company_name: str | None
    contact_type: Literal["customer", "vendor"]
    contact_sub_type: Literal["business", "individual"]
    status: ActiveStatus
    email: str | None
    phone: str | None
    website: str | None
    currency_code: CurrencyCode
    payment_terms: Annotated[int, Field(ge=0)]
    payment_terms_label: str
    outstanding_receivable_amount: Amount
    outstanding_payable_amount: Amount
    unused_credits_receivable_amount: Amount
    tax_id: Id | None
    billing_country_code: CountryCode | None
    notes: str | None


class Bill(Resource):
    bill_number: str
    reference_number: str | None
    vendor_id: Id
    vendor_name: str
    status: Literal["draft", "open", "overdue", "partially_paid", "paid", "void"]
    date: dt.date
    due_date: dt.date
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    total: Amount
    balance: Amount
    notes: str | None
    line_items: list[LineItem]


class Estimate(Resource):
    estimate_number: str
    reference_number: str | None
    customer_id: Id
    customer_name: str
    status: Literal["draft", "sent", "accepted", "declined", "expired", "invoiced"]
    date: dt.date
    expiry_date: dt.date | None
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    total: Amount
    invoice_id: Id | None
    salesperson_name: str | None
    notes: str | None
    line_items: list[LineItem]


class Item(Resource):
    name: str
    sku: str | None
    description: str | None
    item_type: Literal["sales", "purchases", "sales_and_purchases", "inventory"]
    product_type: Literal["goods", "service"]
    status: ActiveStatus
    unit: str | None
    rate: UnitRate
    purchase_rate: UnitRate | None
    tax_id: Id | None
    stock_on_hand: Quantity | None
    reorder_level: Quantity | None


class Invoice(Resource):
    invoice_number: str
    reference_number: str | None
    customer_id: Id
    customer_name: str
    status: Literal[
        "draft", "sent", "viewed", "overdue", "partially_paid", "paid", "void"
    ]
    date: dt.date
    due_date: dt.date
    payment_terms: Annotated[int, Field(ge=0)]
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    discount_total: Amount
    total: Amount
    balance: Amount
    last_payment_date: dt.date | None
    notes: str | None
    line_items: list[LineItem]


class Expense(Resource):
    date: dt.date
    account_id: Id
    expense_account_name: str
    vendor_id: Id | None
    vendor_name: str | None
    customer_id: Id | None
    is_billable: bool
    status: Literal["non_billable", "unbilled", "invoiced", "reimbursed"]
    reference_number: str | None
    description: str | None
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    tax_id: Id | None
    sub_total: Amount
    tax_amount: Amount
    total: Amount
    transaction_id: Id | None
    user_id: Id


class CreditNote(Resource):
    creditnote_number: str
    reference_number: str | None
    customer_id: Id
    customer_name: str
    invoice_id: Id | None
    status: Literal["draft", "open", "closed", "void"]
    date: dt.date
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    total: Amount
    balance: Amount
    notes: str | None
    line_items: list[LineItem]


class CustomerPayment(Resource):
    payment_number: str
    customer_id: Id
    customer_name: str
    payment_mode: Literal[
        "cash", "check", "bank_transfer", "credit_card", "bank_remittance", "other"
    ]
    date: dt.date
    account_id: Id
    reference_number: str | None
    description: str | None
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    amount: Amount
    unused_amount: Amount
    bank_charges: Amount
    transaction_id: Id | None
    applied_invoices: list[AppliedInvoice]


class PurchaseOrder(Resource):
    purchaseorder_number: str
    reference_number: str | None
    vendor_id: Id
    vendor_name: str
    status: Literal["draft", "open", "billed", "cancelled", "closed"]
    date: dt.date
    delivery_date: dt.date | None
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    total: Amount
    bill_id: Id | None
    notes: str | None
    line_items: list[LineItem]


class SalesOrder(Resource):
    salesorder_number: str
    reference_number: str | None
    customer_id: Id
    customer_name: str
    status: Literal[
        "draft", "open", "partially_invoiced", "invoiced", "closed", "void"
    ]
    date: dt.date
    shipment_date: dt.date | None
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    sub_total: Amount
    tax_total: Amount
    total: Amount
    salesperson_name: str | None
    notes: str | None
    line_items: list[LineItem]


class Journal(Resource):
    journal_number: str
    reference_number: str | None
    date: dt.date
    reporting_method: Literal["accrual_and_cash", "accrual_only", "cash_only"]
    status: Literal["draft", "published"]
    currency_code: CurrencyCode
    exchange_rate: ExchangeRate
    total: Amount
    notes: str | None
    user_id: Id
    line_items: list[JournalLineItem]


class Tax(Resource):
    tax_name: str
    tax_percentage: TaxPercentage
    tax_type: Literal["tax", "compound_tax", "tax_group"]
    tax_authority_name: str | None
    is_default_tax: bool
    status: ActiveStatus


class BankTransaction(Resource):
    account_id: Id
    transaction_type: Literal[
        "deposit",
        "withdrawal",
        "transfer_in",
        "transfer_out",
        "customer_payment",
        "vendor_payment",
        "expense",
        "card_payment",
        "refund",
        "interest",
        "bank_charges",
    ]
    date: dt.date
    amount: Amount
    debit_or_credit: Literal["debit", "credit"]
    status: Literal[
        "uncategorized", "categorized", "matched", "manually_added", "excluded"
    ]
    description: str | None
    reference_number: str | None
    payee: str | None
    contact_id: Id | None
    currency_code: CurrencyCode
    source: Literal["bank_feed", "statement_import", "manual"]
