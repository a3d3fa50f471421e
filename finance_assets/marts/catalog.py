"""The one declarative list of the finance marts and of the checks that guard them.

Each mart is a SELECT in ``sql/<name>.sql`` over the ``finance`` tables (and the
definitions of ``sql/_shared.sql``); each check a SELECT in ``sql/checks/<name>.sql``
returning one row per violation (``organization``, ``record``, ``problem``). Add a mart
or a check here and in its file; the factory in ``assets.py`` does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCHEMA = "marts"
MONEY = "DECIMAL(38,2)"

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    description: str


@dataclass(frozen=True)
class Mart:
    """One mart: its table, grain and columns, and the finance resources it reads."""

    name: str
    grain: str
    description: str
    reads: tuple[str, ...]  # endpoint names (finance asset keys in the ingestion)
    columns: tuple[Column, ...]
    snapshot: bool = False  # one set of rows per as-of date, replaced when rebuilt

    @property
    def table(self) -> str:
        return f"{SCHEMA}.{self.name}"


@dataclass(frozen=True)
class MartCheck:
    """One check of a mart; ERROR checks state a rule the contract or the mart promises."""

    name: str
    mart: str
    severity: Severity
    description: str


ORG = Column("organization", "VARCHAR", "Organization key (`_organization` of the finance tables).")
AS_OF = Column("as_of", "DATE", "The as-of date of the snapshot.")


def _money(*names: str, what: str = "in base currency") -> tuple[Column, ...]:
    return tuple(Column(n, MONEY, f"{n.replace('_', ' ').capitalize()}, {what}.") for n in names)


def _aging(party: str) -> tuple[Column, ...]:
    return (
        ORG, AS_OF,
        Column(f"{party}_id", "VARCHAR", f"The {party} (a contact id)."),
        Column(f"{party}_name", "VARCHAR", "The contact's name (the document's if no contact)."),
        Column("current", MONEY, "Not yet due: as_of − due_date ≤ 0."),
        Column("days_1_30", MONEY, "1 to 30 days past due."),
        Column("days_31_60", MONEY, "31 to 60 days past due."),
        Column("days_61_90", MONEY, "61 to 90 days past due."),
        Column("days_over_90", MONEY, "More than 90 days past due."),
        Column("total", MONEY, "Σ of the buckets."),
    )  # fmt: skip


MARTS: tuple[Mart, ...] = (
    Mart(
        "ar_aging", "organization, as_of, customer",
        "Who owes us what and for how long: open invoice balances (balance ≠ 0; not "
        "draft, void or deleted) in base currency by days past due on the as-of date.",
        ("invoices", "contacts", "organizations"), _aging("customer"), snapshot=True,
    ),
    Mart(
        "ap_aging", "organization, as_of, vendor",
        "What we owe and for how long: open bill balances in base currency by days past "
        "due on the as-of date.",
        ("bills", "contacts", "organizations"), _aging("vendor"), snapshot=True,
    ),
    Mart(
        "cash_position", "organization, as_of, bank account",
        "Where the cash is: each bank account's balance as the API reports it and in base "
        "currency, and its bank transactions of the 30 days up to the as-of date.",
        ("banking", "transactions", "invoices", "bills", "creditnotes", "customer_payments",
         "expenses", "journals", "organizations"),
        (ORG, AS_OF,
         Column("account_id", "VARCHAR", "The bank account."),
         Column("account_name", "VARCHAR", "Its name."),
         Column("account_type", "VARCHAR", "bank, credit_card or payment_clearing."),
         Column("currency_code", "VARCHAR", "The account's currency."),
         Column("balance", "DECIMAL(18,2)", "Book balance in the account's currency (API)."),
         Column("exchange_rate", "DECIMAL(18,6)",
                "Base per account currency: 1, else the latest document's rate; NULL if none."),
         Column("balance_base", MONEY, "The balance in base currency."),
         Column("inflow_30d", MONEY, "Σ credit transactions, as_of − 29 to as_of."),
         Column("outflow_30d", MONEY, "Σ debit transactions, as_of − 29 to as_of."),
         Column("uncategorized_count", "BIGINT", "Uncategorized transactions up to as_of."),
         Column("last_transaction_date", "DATE", "Latest transaction up to as_of.")),
        snapshot=True,
    ),  # fmt: skip
    Mart(
        "revenue_by_month", "organization, month, customer",
        "What we sold: invoiced (sub_total − discount_total) less credited (credit notes' "
        "sub_total) per month of the document's date, in base currency.",
        ("invoices", "creditnotes", "contacts", "organizations"),
        (ORG, Column("month", "DATE", "First day of the documents' month."),
         Column("customer_id", "VARCHAR", "The customer."),
         Column("customer_name", "VARCHAR", "The contact's name."),
         *_money("invoiced", "credited", "net")),
    ),  # fmt: skip
    Mart(
        "trial_balance", "organization, ledger account",
        "Whether the books balance: debits and credits per account from published manual "
        "journals, in base currency.",
        ("journals", "organizations"),
        (ORG, Column("account_name", "VARCHAR", "Ledger account."),
         *_money("debit", "credit", "net")),
    ),  # fmt: skip
    Mart(
        "customer_balances", "organization, customer",
        "The month-end reconciliation: open invoice and credit-note balances per customer "
        "in the contact's currency next to the contact's own outstanding amounts.",
        ("invoices", "creditnotes", "contacts"),
        (ORG, Column("customer_id", "VARCHAR", "The customer contact."),
         Column("customer_name", "VARCHAR", "Its name."),
         Column("currency_code", "VARCHAR", "The contact's currency."),
         *_money("open_invoice_balance", what="in the contact's currency"),
         Column("outstanding_receivable_amount", "DECIMAL(18,2)", "The contact's (API)."),
         *_money("receivable_difference", "open_credit_balance",
                 what="in the contact's currency"),
         Column("unused_credits_receivable_amount", "DECIMAL(18,2)", "The contact's (API)."),
         *_money("credits_difference", what="in the contact's currency"),
         Column("other_currency_documents", "BIGINT",
                "Open documents in another currency (not summed).")),
    ),  # fmt: skip
    Mart(
        "finance_kpis", "organization, as_of",
        "The headline numbers per as-of date: AR, overdue AR and its share, AP, cash, "
        "90-day revenue, DSO and DPO, in base currency.",
        ("invoices", "creditnotes", "bills", "banking", "customer_payments", "expenses",
         "journals", "organizations"),
        (ORG, AS_OF, Column("base_currency", "VARCHAR", "The organization's currency."),
         *_money("ar_total", "ar_overdue"),
         Column("ar_overdue_pct", MONEY, "Overdue AR as a percentage of AR."),
         *_money("ap_total", "cash"),
         Column("accounts_without_rate", "BIGINT", "Accounts left out of cash (no rate)."),
         *_money("revenue_90d", "bills_90d"),
         Column("dso_days", MONEY, "AR ÷ 90-day revenue × 90; NULL without revenue."),
         Column("dpo_days", MONEY, "AP ÷ 90-day bill totals × 90; NULL without bills.")),
        snapshot=True,
    ),  # fmt: skip
)

CHECKS: tuple[MartCheck, ...] = (
    MartCheck("line_item_totals", "revenue_by_month", "ERROR",
              "Contract: every line's item_total = quantity × rate, to the cent."),
    MartCheck("invoice_sub_totals", "revenue_by_month", "ERROR",
              "Contract: an invoice's sub_total = Σ its lines' item_total."),
    MartCheck("invoice_totals", "ar_aging", "ERROR",
              "Contract: an invoice's total = sub_total − discount_total + tax_total."),
    MartCheck("invoice_payment_terms", "ar_aging", "ERROR",
              "Contract: an invoice's payment_terms = days from date to due_date."),
    MartCheck("base_currency_rates", "ar_aging", "ERROR",
              "Contract: exchange_rate = 1 on documents in the base currency."),
    MartCheck("ar_aging_reconciles", "ar_aging", "ERROR",
              "Buckets add up to each total; Σ totals = Σ open invoice balances in base."),
    MartCheck("ap_aging_reconciles", "ap_aging", "ERROR",
              "Buckets add up to each total; Σ totals = Σ open bill balances in base."),
    MartCheck("bank_transaction_amounts", "cash_position", "ERROR",
              "Contract: a bank transaction's amount is positive; debit_or_credit gives its way."),
    MartCheck("journal_balance", "trial_balance", "ERROR",
              "Contract: a journal's debit lines = its credit lines = its total."),
    MartCheck("trial_balance_nets_to_zero", "trial_balance", "ERROR",
              "Σ debits = Σ credits over every account, in base currency."),
    MartCheck("payment_allocation", "customer_balances", "ERROR",
              "Contract: a customer payment's amount = Σ amount_applied + unused_amount."),
    MartCheck("referential_integrity", "customer_balances", "WARN",
              "Customers, vendors, items, taxes, applied invoices and bank accounts referred "
              "to exist."),
    MartCheck("customer_balance_differences", "customer_balances", "WARN",
              "Contacts' outstanding amounts equal their open documents' balances."),
)  # fmt: skip

BY_NAME: dict[str, Mart] = {m.name: m for m in MARTS}
assert {c.mart for c in CHECKS} <= set(BY_NAME)
