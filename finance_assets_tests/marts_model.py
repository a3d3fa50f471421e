"""The marts computed in Python from the sandbox's own records, independently of the SQL:
exact Decimals, each document converted to base currency and rounded half away from zero
alone, as the issue states the rules."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from finance_assets.sandbox import Sandbox

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
ORG = "default"
Rows = dict[tuple, tuple]


def base(amount: Decimal, rate: Decimal) -> Decimal:
    return (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def ratio(n: Decimal, d: Decimal) -> Decimal | None:
    return None if d == 0 else (n / d).quantize(CENT, rounding=ROUND_HALF_UP)


class Books:
    """One organization's records as the sandbox serves them now (deleted ones are gone)."""

    def __init__(self, sb: Sandbox, as_of: dt.date) -> None:
        self.as_of = as_of
        self.r: dict[str, list[dict[str, Any]]] = {
            n: sb.records(n) for n in (
                "organizations", "contacts", "invoices", "bills", "creditnotes", "banking",
                "transactions", "customer_payments", "expenses", "journals")
        }  # fmt: skip
        self.base_currency = self.r["organizations"][0]["currency_code"]
        self.contacts = {c["id"]: c for c in self.r["contacts"]}

    def counted(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.r[name]
                if d["status"] not in ("draft", "void") and day(d["date"]) <= self.as_of]

    def name_of(self, party_id: str, names: list[str]) -> str:
        contact = self.contacts.get(party_id)
        return contact["contact_name"] if contact else min(names)

    def aging(self, name: str, party: str) -> Rows:
        buckets: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * 5)
        names: dict[str, list[str]] = defaultdict(list)
        for d in self.counted(name):
            if d["balance"] == 0:
                continue
            late = (self.as_of - day(d["due_date"])).days
            i = 0 if late <= 0 else 1 if late <= 30 else 2 if late <= 60 else 3 if late <= 90 else 4
            buckets[d[f"{party}_id"]][i] += base(d["balance"], d["exchange_rate"])
            names[d[f"{party}_id"]].append(d[f"{party}_name"])
        return {(ORG, self.as_of, pid): (self.name_of(pid, names[pid]), *b, sum(b))
                for pid, b in buckets.items()}

    def rate(self, currency: str) -> Decimal | None:
        if currency == self.base_currency:
            return Decimal(1)
        latest = max(((day(d["date"]), int(d["id"]), d["exchange_rate"])
                      for n in ("invoices", "bills", "creditnotes", "customer_payments",
                                "expenses", "journals")
                      for d in self.r[n]
                      if d["currency_code"] == currency and day(d["date"]) <= self.as_of),
                     default=None)  # fmt: skip
        return latest[2] if latest else None

    def cash_position(self) -> Rows:
        out: Rows = {}
        start = self.as_of - dt.timedelta(days=29)
        for a in self.r["banking"]:
            moves = [t for t in self.r["transactions"] if t["account_id"] == a["id"]
                     and t["status"] != "excluded" and day(t["date"]) <= self.as_of]
            recent = [t for t in moves if day(t["date"]) >= start]
            rate = self.rate(a["currency_code"])
            out[(ORG, self.as_of, a["id"])] = (
                a["account_name"], a["account_type"], a["currency_code"], a["balance"], rate,
                base(a["balance"], rate) if rate is not None else None,
                sum((t["amount"] for t in recent if t["debit_or_credit"] == "credit"), ZERO),
                sum((t["amount"] for t in recent if t["debit_or_credit"] == "debit"), ZERO),
                sum(t["status"] == "uncategorized" for t in moves),
                max((day(t["date"]) for t in moves), default=None),
            )
        return out

    def sales(self) -> list[tuple[dt.date, str, str, Decimal, Decimal]]:
        """(date, customer, name, invoiced, credited) per counted document."""
        return [
            *((day(i["date"]), i["customer_id"], i["customer_name"],
               base(i["sub_total"] - i["discount_total"], i["exchange_rate"]), ZERO)
              for i in self.counted("invoices")),
            *((day(c["date"]), c["customer_id"], c["customer_name"], ZERO,
               base(c["sub_total"], c["exchange_rate"])) for c in self.counted("creditnotes")),
        ]  # fmt: skip

    def revenue_by_month(self) -> Rows:
        sums: dict[tuple, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
        names: dict[str, list[str]] = defaultdict(list)
        for date, customer, name, invoiced, credited in self.sales():
            key = (ORG, date.replace(day=1), customer)
            sums[key][0] += invoiced
            sums[key][1] += credited
            names[customer].append(name)
        return {k: (self.name_of(k[2], names[k[2]]), i, c, i - c) for k, (i, c) in sums.items()}

    def trial_balance(self) -> Rows:
        sums: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
        for j in self.r["journals"]:
            if j["status"] != "published":
                continue
            for side, column in (("debit", 0), ("credit", 1)):
                running = ZERO
                for line in [li for li in j["line_items"] if li["debit_or_credit"] == side]:
                    before = base(running, j["exchange_rate"])
                    running += line["amount"]
                    sums[line["account_name"]][column] += base(running, j["exchange_rate"]) - before
        return {(ORG, a): (d, c, d - c) for a, (d, c) in sums.items()}

    def customer_balances(self) -> Rows:
        out: Rows = {}
        for c in self.r["contacts"]:
            if c["contact_type"] != "customer":
                continue
            sums, other = [ZERO, ZERO], 0
            for i, name in enumerate(("invoices", "creditnotes")):
                for d in self.r[name]:
                    if (d["customer_id"] != c["id"] or d["status"] in ("draft", "void")
                            or d["balance"] == 0):
                        continue
                    if d["currency_code"] == c["currency_code"]:
                        sums[i] += d["balance"]
                    else:
                        other += 1
            owed, credit = c["outstanding_receivable_amount"], c["unused_credits_receivable_amount"]
            out[(ORG, c["id"])] = (c["contact_name"], c["currency_code"], sums[0], owed,
                                   owed - sums[0], sums[1], credit, credit - sums[1], other)
        return out

    def finance_kpis(self) -> Rows:
        ar = [(d, base(d["balance"], d["exchange_rate"])) for d in self.counted("invoices")
              if d["balance"] != 0]
        ar_total = sum((b for _, b in ar), ZERO)
        overdue = sum((b for d, b in ar if day(d["due_date"]) < self.as_of), ZERO)
        ap_total = sum((base(d["balance"], d["exchange_rate"]) for d in self.counted("bills")
                        if d["balance"] != 0), ZERO)
        start = self.as_of - dt.timedelta(days=89)
        revenue = sum((i - c for date, _, _, i, c in self.sales() if date >= start), ZERO)
        billed = sum((base(b["total"], b["exchange_rate"]) for b in self.counted("bills")
                      if day(b["date"]) >= start), ZERO)
        rates = [(a, self.rate(a["currency_code"])) for a in self.r["banking"]]
        cash = sum((base(a["balance"], r) for a, r in rates if r is not None), ZERO)
        return {(ORG, self.as_of): (
            self.base_currency, ar_total, overdue, ratio(overdue * 100, ar_total), ap_total,
            cash, sum(r is None for _, r in rates), revenue, billed,
            ratio(ar_total * 90, revenue) if revenue > 0 else None,
            ratio(ap_total * 90, billed) if billed > 0 else None,
        )}  # fmt: skip

    def mart(self, name: str) -> Rows:
        if name == "ar_aging":
            return self.aging("invoices", "customer")
        if name == "ap_aging":
            return self.aging("bills", "vendor")
        return getattr(self, name)()
