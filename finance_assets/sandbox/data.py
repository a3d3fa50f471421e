"""Deterministic generator of the sandbox's accounting data.

Everything derives from ``seed`` and ``scale`` and from a fixed epoch (never the
wall clock), so two sandboxes with the same seed serve byte-identical data. The
data is deliberately awkward: ids above 2^53, money a float cannot hold, mixed
UTC offsets, unicode and escapes in text, nulls, undocumented extra fields.
"""

from __future__ import annotations

import datetime as dt
import random
import typing
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel

from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.schema import field_specs

Record = dict[str, typing.Any]

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
SPAN_SECONDS = 2 * 365 * 86400  # generated records are created over two years
END = EPOCH + dt.timedelta(seconds=SPAN_SECONDS)
MAX_AMOUNT = Decimal("9999999999999999.99")
UNREPRESENTABLE = Decimal("1234567890123456.78")  # a float rounds this
CENT = Decimal("0.01")
P_NULL = 0.22  # share of nulls in every nullable field
CURSOR_FIELDS = ("id", "created_time", "last_modified_time")

# Offsets used for timestamps; "Z" is rendered as the letter, not +00:00.
OFFSETS: tuple[tuple[str, int], ...] = (
    ("Z", 0), ("+00:00", 0), ("+05:30", 330), ("-08:00", -480), ("-04:00", -240),
    ("+01:00", 60), ("+09:00", 540), ("-03:30", -210), ("+05:45", 345), ("-05:00", -300),
)

# Records per resource at scale 1 (about 20,000 in all) and the minimum at any scale.
# Small reference tables grow with sqrt(scale); organizations stay at one.
BASE_COUNTS: dict[str, tuple[int, int]] = {
    "organizations": (1, 1), "users": (8, 2), "taxes": (6, 3), "banking": (5, 2),
    "items": (400, 5), "contacts": (1100, 8), "transactions": (3000, 5),
    "invoices": (4000, 6), "estimates": (1200, 3), "sales_orders": (1200, 3),
    "creditnotes": (600, 3), "customer_payments": (2500, 4), "bills": (2500, 4),
    "purchase_orders": (1200, 3), "expenses": (1500, 3), "journals": (800, 3),
}
SMALL_TABLES = ("users", "taxes", "banking")
RESOURCE_INDEX = {e.name: i for i, e in enumerate(ENDPOINTS)}
BIG = Decimal(10**9)  # documents above this are edge cases, kept out of sums

PEOPLE = (
    "Priya Raman", "Tom Becker", "Zoë Müller", "José Ñúñez", "渡辺 健", "李小龙",
    "محمد العلي", "דוד כהן", "Renée O'Brien", "Łukasz Wąsik", 'Ana "Nina" Silva',
    "Søren Kierkegård", "Nguyễn Văn An", "Ola Nordmann", "Chloé Dubois", "Björk Guðmundsdóttir",
)
COMPANIES = (
    "Harborview Analytics", "Straße & Söhne GmbH", "株式会社サンプル", "شركة النخيل",
    "חברת הדוגמה בע\"מ", "Back\\slash Tools Ltd", "🚀 Rocket Supplies", 'The "Quoted" Co',
    "Acme Corp", "Globex Ltd", "Initech", "Umbrella Café", "Øresund Shipping", "Taller Peña",
)
TEXTS = (
    "Thank you for your business.", "Line one\nLine two\r\nLine three", "Tab\tseparated\tvalues",
    'She said "pay by Friday"', "Path C:\\temp\\new\\invoice.pdf", "Emoji 🎉💰✅",
    "مرحبا بالعالم", "שלום עולם", "中文备注：请按时付款", "Ünïcödé àccents çà et là",
    "Trailing backslash \\", "Mixed: naïve café — “smart quotes” ‘too’", "",
)
ACCOUNTS = ("Cash", "Accounts Receivable", "Accounts Payable", "Sales", "Rent Expense",
            "Payroll Expense", "Office Supplies", "Retained Earnings", "Sales Tax Payable")
UNITS = ("pcs", "hrs", "kg", "box", "m²", "licence")
CURRENCIES = (("USD", Decimal(1)), ("EUR", Decimal("1.083215")), ("GBP", Decimal("1.267")),
              ("INR", Decimal("0.012034")), ("JPY", Decimal("0.006712")))
RATES = dict(CURRENCIES)
def void_at_the_limit(document: dict, status: str) -> str:
    """A document whose amount sits at the limit of the wire format (to prove exact
    decimals end to end) is void: no report counts it, so reports keep real proportions."""
    return "void" if document["total"] >= UNREPRESENTABLE else status


def excluded_at_the_limit(at_the_limit: bool, status: str) -> str:
    """A bank transaction at the limit of the wire format is excluded from cash flows."""
    return "excluded" if at_the_limit else status


# The as-of date the aging edge cases are laid out for: open documents due on it and
# exactly 30, 31, 60, 61, 90 and 91 days before it, in currencies with 6-decimal rates.
EDGE_AS_OF = dt.date(2025, 12, 31)
EDGE_DAYS_PAST_DUE = (0, 30, 31, 60, 61, 90, 91)
EDGE_CURRENCIES = ("EUR", "INR", "JPY")
# Rules of the contract the sandbox can break (``broken_rules``), each on its own records.
BREAKABLE_RULES = ("line_item_totals", "invoice_sub_totals", "invoice_totals",
                   "invoice_payment_terms", "base_currency_rates", "bank_transaction_amounts",
                   "journal_balance", "payment_allocation")


def q2(value: Decimal) -> Decimal:
    """Round money to cents, half up, as the contract's arithmetic does."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def nullable_fields(model: type[BaseModel]) -> set[str]:
    """Fields the model admits null in (the models are the nullability authority)."""
    return {f.name for f in field_specs(model) if f.nullable}


# What ``bad_records`` puts in a field: values the schema cannot hold, by kind of field.
BAD_VALUES: dict[str, typing.Any] = {
    "amount": "12,50 EUR",  # a non-numeric amount
    "date": "31/02/2024",  # an unparseable date
    "type": {"unexpected": "object"},  # a wrong type
}


def field_kinds(model: type[BaseModel]) -> dict[str, list[str]]:
    """Top-level fields by the bad value that breaks them (never the id or cursor times).

    Decimals take the non-numeric amount, dates the unparseable date, every other field
    (instants included) the wrong type.
    """
    out: dict[str, list[str]] = {kind: [] for kind in BAD_VALUES}
    for field in field_specs(model):
        if field.name not in CURSOR_FIELDS:
            bad = {"decimal": "amount", "date": "date"}.get(field.kind, "type")
            out[bad].append(field.name)
    return out


def render_time(instant: dt.datetime, offset: tuple[str, int]) -> str:
    """RFC 3339 text of an instant in the given offset, whole seconds."""
    label, minutes = offset
    text = instant.astimezone(dt.timezone(dt.timedelta(minutes=minutes))).isoformat()
    return text[:-6] + "Z" if label == "Z" else text


def counts_for(scale: float) -> dict[str, int]:
    """Records per resource at this scale, never below the resource's minimum."""
    out = {}
    for name, (base, minimum) in BASE_COUNTS.items():
        factor = scale**0.5 if name in SMALL_TABLES else scale
        out[name] = 1 if name == "organizations" else max(minimum, round(base * factor))
    return out


class Generator:
    """Builds records; kept alive by the sandbox to make inserts and updates."""

    def __init__(self, seed: int, scale: float) -> None:
        self.seed = seed
        self.scale = scale
        self.rng = random.Random(seed)
        self.data: dict[str, list[Record]] = {}
        self._seq: dict[str, int] = {}
        self._line_seq = 0
        self._makers: dict[str, Callable[[dt.date], Record]] = {
            "organizations": self._organization, "users": self._user, "taxes": self._tax,
            "banking": self._bank_account, "items": self._item, "contacts": self._contact,
            "transactions": self._bank_transaction, "invoices": self._invoice,
            "estimates": self._estimate, "sales_orders": self._sales_order,
            "creditnotes": self._creditnote, "customer_payments": self._customer_payment,
            "bills": self._bill, "purchase_orders": self._purchase_order,
            "expenses": self._expense, "journals": self._journal,
        }
        assert set(self._makers) == {e.name for e in ENDPOINTS}
        # Invoices per customer, for payments whose applied invoices must match it.
        self._invoices_by_customer: dict[str, list[Record]] = {}
        self._bills_by_vendor: dict[str, list[Record]] = {}

    # ---------- small helpers ----------
    def opt(self, value: typing.Any) -> typing.Any:
        """The value, or None in a fair share of cases (nullable fields)."""
        return None if self.rng.random() < P_NULL else value

    def new_id(self, name: str) -> str:
        """Next id of a resource: mostly 17-19 digits, some just above 2^53, lengths mixed.

        Mixed lengths make string order differ from numeric order, which the
        contract's numeric id ordering must survive.
        """
        seq = self._seq.get(name, 0) + 1
        self._seq[name] = seq
        index = RESOURCE_INDEX[name]
        if seq % 29 == 7:  # 16 digits, odd, above 2^53: not a float
            return str(9007199254740993 + 2 * (index * 100000 + seq))
        digits = 17 + index % 3
        return str(4815 * 10 ** (digits - 4) + index * 10 ** (digits - 7) + seq)

    def line_id(self) -> str:
        self._line_seq += 1
        return str(7300000000000000000 + self.seed % 1000 * 10**12 + self._line_seq)

    def money(self, low: int, high: int) -> Decimal:
        """A cent amount between low and high units."""
        return Decimal(self.rng.randint(low * 100, high * 100)).scaleb(-2)

    def pick(self, name: str) -> Record:
        return self.rng.choice(self.data[name])

    def text(self) -> str:
        return self.rng.choice(TEXTS)

    def currency(self) -> tuple[str, Decimal]:
        return CURRENCIES[0] if self.rng.random() < 0.7 else self.rng.choice(CURRENCIES[1:])

    def stamp(self, record: Record, created: dt.datetime, now: dt.datetime | None = None) -> None:
        """Set created/last-modified times; last_modified >= created as instants."""
        rng = self.rng
        record["created_time"] = render_time(created, rng.choice(OFFSETS))
        if now is not None:
            modified = now
        elif rng.random() < 0.3:
            modified = created  # equal instants, often in another offset
        else:  # later, but still before the end of the generated span
            later = created + dt.timedelta(seconds=rng.randint(1, 200 * 86400))
            modified = max(created, min(later, END))
        record["last_modified_time"] = render_time(modified, rng.choice(OFFSETS))

    # ---------- generation ----------
    def generate(self) -> dict[str, list[Record]]:
        """All resources, each sorted as the API serves it."""
        for name, count in counts_for(self.scale).items():
            instants = sorted(
                EPOCH + dt.timedelta(seconds=self.rng.randrange(SPAN_SECONDS))
                for _ in range(count)
            )
            for i in range(1, count, 11):  # ties: same instant, id decides
                instants[i] = instants[i - 1]
            self.data[name] = []
            for instant in instants:
                self.make(name, instant)
        self._add_edges()
        self._add_aging_edges()
        self._settle_contacts()
        return self.data

    def make(self, name: str, created: dt.datetime, now: dt.datetime | None = None,
             record_id: str | None = None) -> Record:
        """Build one record of a resource, register it and return it."""
        record: Record = {"id": record_id or self.new_id(name)}
        record.update(self._makers[name](created.date()))
        self.stamp(record, created, now)
        self.data[name].append(record)
        if name == "invoices":
            self._invoices_by_customer.setdefault(record["customer_id"], []).append(record)
        elif name == "bills":
            self._bills_by_vendor.setdefault(record["vendor_id"], []).append(record)
        return record

    def _add_edges(self) -> None:
        """Extra undocumented fields on a few records and nested lines."""
        for name, records in self.data.items():
            for record in self.rng.sample(records, min(3, len(records))):
                record["custom_fields"] = {"cf_region": "EMEA", "cf_score": Decimal("0.1"),
                                           "cf_tags": ["ü", "東京"], "cf_nested": {"k": None}}
                record["legacy_amount"] = UNREPRESENTABLE
            children = [c for c in BY_NAME[name].children if c == "line_items"]
            lines = [line for r in records for c in children for line in r[c]]
            for line in self.rng.sample(lines, min(3, len(lines))):
                line["project_code"] = "PRJ-Ω-7"
                line["line_discount_rate"] = Decimal("0.125000")

    def _add_aging_edges(self) -> None:
        """Open invoices and bills due exactly on ``EDGE_AS_OF`` and 30, 31, 60, 61, 90 and
        91 days before it (in EUR, INR and JPY where the contacts allow), one overpaid
        (a negative balance) and a void invoice that still shows a balance."""
        rng = random.Random(f"{self.seed}:aging-edges")
        for name in ("invoices", "bills"):
            pool = [r for r in self.data[name]
                    if r["total"] < BIG and r["status"] not in ("draft", "void")]
            chosen = rng.sample(pool, min(len(pool), len(EDGE_DAYS_PAST_DUE) + 1))
            for i, record in enumerate(chosen[:len(EDGE_DAYS_PAST_DUE)]):
                wanted = EDGE_CURRENCIES[i % len(EDGE_CURRENCIES)]
                better = [r for r in pool if r["currency_code"] == wanted and r not in chosen]
                if better:  # swap for a document of a contact in that currency
                    record = chosen[i] = rng.choice(better)
                due = EDGE_AS_OF - dt.timedelta(days=EDGE_DAYS_PAST_DUE[i])
                self._set_due(record, due)
                record["status"] = "overdue" if EDGE_DAYS_PAST_DUE[i] else "open" if (
                    name == "bills") else "sent"
                record["balance"] = record["total"]
            if len(chosen) > len(EDGE_DAYS_PAST_DUE):
                overpaid = chosen[-1]
                self._set_due(overpaid, EDGE_AS_OF - dt.timedelta(days=10))
                overpaid["status"] = "paid"
                overpaid["balance"] = -q2(overpaid["total"] / 10) or Decimal("-0.01")
        void = [r for r in self.data["invoices"] if r["status"] == "void"]
        if void:
            voided = rng.choice(void)
            voided["balance"] = voided["total"]

    @staticmethod
    def _set_due(record: Record, due: dt.date) -> None:
        """Move a document to a due date, keeping invoices' payment_terms exact."""
        terms = record.get("payment_terms", (dt.date.fromisoformat(record["due_date"])
                                             - dt.date.fromisoformat(record["date"])).days)
        record["due_date"] = due.isoformat()
        record["date"] = (due - dt.timedelta(days=terms)).isoformat()

    def _settle_contacts(self) -> None:
        """Each contact's outstanding amounts are what its open documents say (documents
        are in the contact's currency), capped at the contract's largest amount."""
        open_sums: dict[tuple[str, str], Decimal] = {}
        for name, party, field in (
            ("invoices", "customer_id", "outstanding_receivable_amount"),
            ("bills", "vendor_id", "outstanding_payable_amount"),
            ("creditnotes", "customer_id", "unused_credits_receivable_amount"),
        ):
            for r in self.data[name]:
                if r["status"] not in ("draft", "void"):
                    key = (r[party], field)
                    open_sums[key] = open_sums.get(key, Decimal("0.00")) + r["balance"]
        for contact in self.data["contacts"]:
            for field in ("outstanding_receivable_amount", "outstanding_payable_amount",
                          "unused_credits_receivable_amount"):
                total = open_sums.get((contact["id"], field), Decimal("0.00"))
                contact[field] = min(total, MAX_AMOUNT)

    def apply_broken_rules(self, rules: typing.Iterable[str]) -> dict[str, list[str]]:
        """Break each named contract rule on one record of its own (and nothing else);
        returns the ids broken per rule, as ``resource/id``."""
        broken: dict[str, list[str]] = {}
        taken: set[str] = set()
        for rule in rules:
            if rule not in BREAKABLE_RULES:
                raise ValueError(f"unknown rule {rule!r}; choose from {BREAKABLE_RULES}")
            rng = random.Random(f"{self.seed}:{rule}:broken")
            name, pick = _BREAKERS[rule]
            pool = [r for r in self.data[name] if r["id"] not in taken and pick(r)]
            record = rng.choice(pool)
            taken.add(record["id"])
            _break(rule, record)
            broken[rule] = [f"{name}/{record['id']}"]
        return broken

    def apply_null_violations(self, per_resource: int) -> None:
        """Null a non-nullable field (never id or the ordering/cursor times) in K records."""
        if per_resource <= 0:
            return
        for name, records in self.data.items():
            model = BY_NAME[name].model
            nullable = nullable_fields(model)
            fields = [f for f in model.model_fields if f not in nullable | set(CURSOR_FIELDS)]
            rng = random.Random(f"{self.seed}:{name}:null-violations")
            for j, record in enumerate(rng.sample(records, min(per_resource, len(records)))):
                record[fields[j % len(fields)]] = None

    def apply_bad_records(self, per_resource: int) -> None:
        """Break K records per resource with a value the schema cannot hold.

        The kinds take turns (non-numeric amount, unparseable date, wrong type) where
        the model has such a field; id and the cursor times stay valid, so order holds.
        """
        if per_resource <= 0:
            return
        for name, records in self.data.items():
            kinds = {k: v for k, v in field_kinds(BY_NAME[name].model).items() if v}
            order = [k for k in BAD_VALUES if k in kinds]
            rng = random.Random(f"{self.seed}:{name}:bad-records")
            for j, record in enumerate(rng.sample(records, min(per_resource, len(records)))):
                kind = order[j % len(order)]
                record[rng.choice(kinds[kind])] = BAD_VALUES[kind]

    # ---------- documents with line items (shared by six resources) ----------
    def line(self) -> Record:
        """A LineItem; item_total = quantity x rate to the cent."""
        rng = self.rng
        item = self.pick("items") if rng.random() < 0.85 else None
        kind = rng.random()
        if kind < 0.6:
            quantity = Decimal(rng.randint(1, 40))
        elif kind < 0.9:
            quantity = Decimal(rng.randint(1, 99999)).scaleb(-3)
        else:
            quantity = Decimal(rng.randint(1, 10**7)).scaleb(-6)
        rate = item["rate"] if item else Decimal(rng.randint(100, 2_000_000)).scaleb(-4)
        tax = self.pick("taxes") if rng.random() < 0.7 else None
        return self._line(item, quantity, rate, tax, self.opt(self.text()))

    def _line(self, item: Record | None, quantity: Decimal, rate: Decimal,
              tax: Record | None, description: str | None) -> Record:
        return {
            "line_item_id": self.line_id(),
            "item_id": item["id"] if item else None,
            "description": description,
            "quantity": quantity,
            "rate": rate,
            "tax_id": tax["id"] if tax else None,
            "tax_percentage": tax["tax_percentage"] if tax else Decimal(0),
            "item_total": q2(quantity * rate),
        }

    def edge_lines(self) -> list[Record]:
        """A single untaxed line whose total is the maximum or a float-unsafe amount."""
        rate = MAX_AMOUNT if self.rng.random() < 0.5 else UNREPRESENTABLE
        return [self._line(None, Decimal(1), rate, None, "Edge: exact decimal")]

    def document(self, date: dt.date, number_field: str, prefix: str,
                 party: str, discount: bool = False) -> Record:
        """Fields shared by documents with line items: party, dates, money, lines."""
        rng = self.rng
        role = "customer" if party == "customer" else "vendor"
        contact = self.contact_of(role)
        self.currency()  # drawn as before, so the rest of the data stays the same
        code, rate = contact["currency_code"], RATES[contact["currency_code"]]
        edge = rng.random() < 0.002
        lines = self.edge_lines() if edge else [self.line() for _ in range(rng.randint(1, 5))]
        record: Record = {
            number_field: f"{prefix}-{rng.randint(1, 999999):06d}",
            "reference_number": self.opt(f"REF/{rng.randint(1, 99999)}"),
            f"{party}_id": contact["id"],
            f"{party}_name": contact["contact_name"],
            "date": date.isoformat(),
            "currency_code": code,
            "exchange_rate": rate,
            "notes": self.opt(self.text()),
            "line_items": lines,
        }
        record.update(totals(lines, discount, rng, Decimal("0.00") if edge else None))
        return record

    def contact_of(self, role: str) -> Record:
        contacts = [c for c in self.data["contacts"][:50] if c["contact_type"] == role]
        for _ in range(20):
            contact = self.pick("contacts")
            if contact["contact_type"] == role:
                return contact
        return contacts[0] if contacts else self.pick("contacts")

    def balance(self, total: Decimal, status: str) -> Decimal:
        """Open amount consistent with the status: 0 <= balance <= total."""
        if status in ("paid", "void", "closed"):
            return Decimal("0.00")
        if status == "partially_paid":
            return q2(total * Decimal(self.rng.randint(1, 99)) / 100)
        return total

    def later(self, date: dt.date, low: int, high: int) -> str:
        return (date + dt.timedelta(days=self.rng.randint(low, high))).isoformat()

    # ---------- one maker per resource ----------
    def _organization(self, date: dt.date) -> Record:
        return {
            "name": "Harborview Analytics", "legal_name": "Harborview Analytics LLC",
            "email": "accounts@harborview.example.com", "country_code": "US",
            "currency_code": "USD", "time_zone": "America/New_York",
            "fiscal_year_start_month": 1, "industry": None,
            "tax_registration_number": "US-12-3456789", "is_default_org": True,
            "status": "active",
        }

    def _user(self, date: dt.date) -> Record:
        rng = self.rng
        name = rng.choice(PEOPLE)
        last_login = EPOCH + dt.timedelta(seconds=rng.randrange(SPAN_SECONDS))
        return {
            "name": name, "email": f"user{rng.randint(1, 10**6)}@example.com",
            "role": rng.choice(("admin", "accountant", "staff", "timesheet_staff")),
            "status": rng.choice(("active", "active", "inactive", "invited")),
            "mobile": self.opt(f"+1 212 555 {rng.randint(0, 9999):04d}"),
            "organization_id": self.data["organizations"][0]["id"],
            "last_login_time": self.opt(render_time(last_login, rng.choice(OFFSETS))),
        }

    def _tax(self, date: dt.date) -> Record:
        rng = self.rng
        percentage = rng.choice(("8.875", "20", "18", "5.5", "0", "13", "2.1234", "7.25"))
        return {
            "tax_name": f"{rng.choice(('Sales Tax', 'VAT', 'GST', 'HST', 'Taxe'))} {percentage}%",
            "tax_percentage": Decimal(percentage),
            "tax_type": rng.choice(("tax", "tax", "compound_tax", "tax_group")),
            "tax_authority_name": self.opt(rng.choice(("NY DTF", "HMRC", "Finanzamt München"))),
            "is_default_tax": not self.data["taxes"], "status": "active",
        }

    def _bank_account(self, date: dt.date) -> Record:
        rng = self.rng
        balance = UNREPRESENTABLE if rng.random() < 0.1 else self.money(-5000, 900000)
        return {
            "account_name": rng.choice(("Operating Checking", "Company Card", "Savings €",
                                        "Stripe Clearing", "Payroll")),
            "account_type": rng.choice(("bank", "credit_card", "payment_clearing")),
            "account_number": self.opt(f"XXXXXX{rng.randint(0, 9999):04d}"),
            "bank_name": self.opt(rng.choice(("First Harbor Bank", "Crédit Agricole"))),
            "routing_number": self.opt(f"{rng.randint(0, 999999999):09d}"),
            "currency_code": self.currency()[0], "balance": balance,
            "bank_balance": self.opt(balance + self.money(-100, 100)),
            "is_active": rng.random() < 0.9, "is_primary_account": not self.data["banking"],
            "description": self.opt(self.text()),
            "organization_id": self.data["organizations"][0]["id"],
        }

    def _item(self, date: dt.date) -> Record:
        rng = self.rng
        six = rng.random() < 0.2
        rate = Decimal(rng.randint(1, 10**9)).scaleb(-6) if six else self.money(1, 5000)
        return {
            "name": f"{rng.choice(('Widget', 'Consulting', 'Lizenz', '部品', 'Café beans'))} "
                    f"{rng.randint(1, 9999)}",
            "sku": self.opt(f"SKU-{rng.randint(1, 10**6):06d}"),
            "description": self.opt(self.text()),
            "item_type": rng.choice(("sales", "purchases", "sales_and_purchases", "inventory")),
            "product_type": rng.choice(("goods", "service")),
            "status": rng.choice(("active", "active", "inactive")),
            "unit": self.opt(rng.choice(UNITS)), "rate": rate,
            "purchase_rate": self.opt(q2(rate * Decimal("0.6"))),
            "tax_id": self.opt(self.pick("taxes")["id"]),
            "stock_on_hand": self.opt(Decimal(rng.randint(-5, 5000))),
            "reorder_level": self.opt(Decimal(rng.randint(0, 50000)).scaleb(-3)),
        }

    def _contact(self, date: dt.date) -> Record:
        rng = self.rng
        index = len(self.data["contacts"])
        contact_type = ("customer", "vendor")[index % 2] if index < 8 else (
            "customer" if rng.random() < 0.6 else "vendor")
        terms = rng.choice((0, 15, 30, 45, 60))
        edge = rng.random() < 0.005
        return {
            "contact_name": rng.choice(PEOPLE + COMPANIES),
            "company_name": self.opt(rng.choice(COMPANIES)),
            "contact_type": contact_type,
            "contact_sub_type": rng.choice(("business", "individual")),
            "status": rng.choice(("active", "active", "inactive")),
            "email": self.opt(f"contact{rng.randint(1, 10**6)}@example.org"),
            "phone": self.opt(f"+44 20 7946 {rng.randint(0, 9999):04d}"),
            "website": self.opt("https://example.com/ünï"),
            "currency_code": self.currency()[0], "payment_terms": terms,
            "payment_terms_label": f"Net {terms}" if terms else "Due on receipt",
            "outstanding_receivable_amount": MAX_AMOUNT if edge else self.money(0, 50000),
            "outstanding_payable_amount": self.money(0, 50000),
            "unused_credits_receivable_amount": self.money(0, 500),
            "tax_id": self.opt(self.pick("taxes")["id"]),
            "billing_country_code": self.opt(rng.choice(("US", "DE", "JP", "AE", "IL", "IN"))),
            "notes": self.opt(self.text()),
        }

    def _bank_transaction(self, date: dt.date) -> Record:
        rng = self.rng
        edge = rng.random() < 0.002
        account = self.pick("banking")
        return {
            "account_id": account["id"],
            "transaction_type": rng.choice((
                "deposit", "withdrawal", "transfer_in", "transfer_out", "customer_payment",
                "vendor_payment", "expense", "card_payment", "refund", "interest",
                "bank_charges")),
            "date": date.isoformat(),
            "amount": (MAX_AMOUNT if rng.random() < 0.5 else UNREPRESENTABLE)
            if edge else self.money(1, 20000),
            "debit_or_credit": rng.choice(("debit", "credit")),
            # (drawn either way, so the records after it stay the same)
            "status": excluded_at_the_limit(edge, rng.choice(
                ("uncategorized", "categorized", "matched", "manually_added", "excluded"))),
            "description": self.opt(self.text()),
            "reference_number": self.opt(f"TX{rng.randint(1, 10**8)}"),
            "payee": self.opt(rng.choice(PEOPLE + COMPANIES)),
            "contact_id": self.opt(self.pick("contacts")["id"]),
            "currency_code": account["currency_code"],
            "source": rng.choice(("bank_feed", "statement_import", "manual")),
        }

    def _invoice(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "invoice_number", "INV", "customer", discount=True)
        status = void_at_the_limit(record, rng.choice(
            ("draft", "sent", "viewed", "overdue", "partially_paid", "paid", "void")))
        terms = rng.choice((0, 15, 30, 60))
        record.update(
            status=status, due_date=self.later(date, terms, terms), payment_terms=terms,
            balance=self.balance(record["total"], status),
            last_payment_date=self.later(date, 1, 40)
            if status in ("paid", "partially_paid") else None,
        )
        return record

    def _estimate(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "estimate_number", "EST", "customer")
        invoices = self._invoices_by_customer.get(record["customer_id"], [])
        record.update(
            status=rng.choice(("draft", "sent", "accepted", "declined", "expired", "invoiced")),
            expiry_date=self.opt(self.later(date, 7, 60)),
            invoice_id=self.opt(rng.choice(invoices)["id"]) if invoices else None,
            salesperson_name=self.opt(rng.choice(PEOPLE)),
        )
        return record

    def _sales_order(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "salesorder_number", "SO", "customer")
        record.update(
            status=rng.choice(("draft", "open", "partially_invoiced", "invoiced", "closed",
                               "void")),
            shipment_date=self.opt(self.later(date, 1, 30)),
            salesperson_name=self.opt(rng.choice(PEOPLE)),
        )
        return record

    def _creditnote(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "creditnote_number", "CN", "customer")
        status = void_at_the_limit(record, rng.choice(("draft", "open", "closed", "void")))
        invoices = self._invoices_by_customer.get(record["customer_id"], [])
        record.update(
            status=status, balance=self.balance(record["total"], status),
            invoice_id=self.opt(rng.choice(invoices)["id"]) if invoices else None,
        )
        return record

    def _bill(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "bill_number", "BILL", "vendor")
        status = void_at_the_limit(record, rng.choice(
            ("draft", "open", "overdue", "partially_paid", "paid", "void")))
        record.update(status=status, due_date=self.later(date, 0, 60),
                      balance=self.balance(record["total"], status))
        return record

    def _purchase_order(self, date: dt.date) -> Record:
        rng = self.rng
        record = self.document(date, "purchaseorder_number", "PO", "vendor")
        bills = self._bills_by_vendor.get(record["vendor_id"], [])
        record.update(
            status=rng.choice(("draft", "open", "billed", "cancelled", "closed")),
            delivery_date=self.opt(self.later(date, 1, 45)),
            bill_id=self.opt(rng.choice(bills)["id"]) if bills else None,
        )
        return record

    def _customer_payment(self, date: dt.date) -> Record:
        """A payment of one customer, applied to some of that customer's invoices."""
        rng = self.rng
        invoice = self.pick("invoices")
        invoices = [i for i in self._invoices_by_customer[invoice["customer_id"]]
                    if i["total"] < BIG]
        chosen = rng.sample(invoices, min(len(invoices), rng.randint(0, 3)))
        applied = [{"invoice_id": inv["id"],
                    "amount_applied": q2(inv["total"] * Decimal(rng.randint(1, 100)) / 100)}
                   for inv in chosen]
        unused = self.money(0, 200) if rng.random() < 0.3 or not applied else Decimal("0.00")
        return {
            "payment_number": f"PAY-{rng.randint(1, 999999):06d}",
            "customer_id": invoice["customer_id"], "customer_name": invoice["customer_name"],
            "payment_mode": rng.choice(("cash", "check", "bank_transfer", "credit_card",
                                        "bank_remittance", "other")),
            "date": date.isoformat(), "account_id": self.pick("banking")["id"],
            "reference_number": self.opt(f"CHK{rng.randint(1, 99999)}"),
            "description": self.opt(self.text()),
            "currency_code": invoice["currency_code"], "exchange_rate": invoice["exchange_rate"],
            "amount": sum((a["amount_applied"] for a in applied), unused),
            "unused_amount": unused, "bank_charges": self.money(0, 5),
            "transaction_id": self.opt(self.pick("transactions")["id"]),
            "applied_invoices": applied,
        }

    def _expense(self, date: dt.date) -> Record:
        rng = self.rng
        vendor = self.opt(self.contact_of("vendor"))
        billable = rng.random() < 0.3
        tax = self.opt(self.pick("taxes"))
        sub_total = self.money(1, 5000)
        tax_amount = q2(sub_total * tax["tax_percentage"] / 100) if tax else Decimal("0.00")
        code, rate = self.currency()
        return {
            "date": date.isoformat(), "account_id": self.pick("banking")["id"],
            "expense_account_name": rng.choice(ACCOUNTS[4:7]),
            "vendor_id": vendor["id"] if vendor else None,
            "vendor_name": vendor["contact_name"] if vendor else None,
            "customer_id": self.contact_of("customer")["id"] if billable else None,
            "is_billable": billable,
            "status": rng.choice(("unbilled", "invoiced")) if billable else rng.choice(
                ("non_billable", "reimbursed")),
            "reference_number": self.opt(f"EXP{rng.randint(1, 99999)}"),
            "description": self.opt(self.text()),
            "currency_code": code, "exchange_rate": rate,
            "tax_id": tax["id"] if tax else None, "sub_total": sub_total,
            "tax_amount": tax_amount, "total": sub_total + tax_amount,
            "transaction_id": self.opt(self.pick("transactions")["id"]),
            "user_id": self.pick("users")["id"],
        }

    def _journal(self, date: dt.date) -> Record:
        rng = self.rng
        total = UNREPRESENTABLE if rng.random() < 0.003 else self.money(10, 100000)
        code, rate = self.currency()
        return {
            "journal_number": f"JRN-{rng.randint(1, 99999):05d}",
            "reference_number": self.opt(f"J{rng.randint(1, 9999)}"),
            "date": date.isoformat(),
            "reporting_method": rng.choice(("accrual_and_cash", "accrual_only", "cash_only")),
            "status": rng.choice(("draft", "published")),
            "currency_code": code, "exchange_rate": rate, "total": total,
            "notes": self.opt(self.text()), "user_id": self.pick("users")["id"],
            "line_items": self.journal_lines(total),
        }

    def journal_lines(self, total: Decimal) -> list[Record]:
        """Balanced lines: debits and credits each sum to the journal total."""
        lines = []
        for side in ("debit", "credit"):
            for amount in self.split(total, self.rng.randint(1, 3)):
                lines.append({
                    "line_item_id": self.line_id(),
                    "account_name": self.rng.choice(ACCOUNTS), "debit_or_credit": side,
                    "amount": amount, "description": self.opt(self.text()),
                    "contact_id": self.opt(self.pick("contacts")["id"]),
                })
        return lines

    def split(self, total: Decimal, parts: int) -> list[Decimal]:
        """Split an amount into positive cent parts that sum to it exactly."""
        cents = int(total * 100)
        if cents < parts:
            return [total]
        cuts = sorted(self.rng.sample(range(1, cents), parts - 1))
        bounds = [0, *cuts, cents]
        return [Decimal(b - a).scaleb(-2) for a, b in zip(bounds, bounds[1:], strict=False)]

    # ---------- updates ----------
    def update(self, name: str, record: Record, now: dt.datetime, change_children: bool) -> None:
        """Change a record in place as an edit in the source system would."""
        rng = self.rng
        record["last_modified_time"] = render_time(now, rng.choice(OFFSETS))
        children = BY_NAME[name].children
        if change_children and "line_items" in children and name != "journals":
            self.change_lines(record)
        elif change_children and name == "journals":
            record["line_items"] = self.journal_lines(record["total"])
        elif change_children and "applied_invoices" in children and record["applied_invoices"]:
            applied = record["applied_invoices"]
            applied.pop(rng.randrange(len(applied)))
            record["amount"] = sum((a["amount_applied"] for a in applied),
                                   record["unused_amount"])
        for field in ("notes", "description", "payee", "mobile", "tax_authority_name", "name"):
            if field in record:
                record[field] = f"Edited {now.isoformat()} ✎"
                break

    def change_lines(self, record: Record) -> None:
        """Add, remove or change a line item, then recompute the totals exactly."""
        rng = self.rng
        lines = record["line_items"]
        action = rng.choice(("add", "remove", "change")) if len(lines) > 1 else "add"
        if record["total"] >= BIG:  # an edge amount: replace rather than overflow
            lines[:] = [self.line()]
        elif action == "add":
            lines.append(self.line())
        elif action == "remove":
            lines.pop(rng.randrange(len(lines)))
        else:
            line = rng.choice(lines)
            line["quantity"] = line["quantity"] + 1
            line["item_total"] = q2(line["quantity"] * line["rate"])
        old_total = record["total"]
        discount = "discount_total" in record
        record.update(totals(lines, discount, rng, record.get("discount_total")))
        if "balance" in record:
            record["balance"] = record["total"] if record["balance"] == old_total else min(
                record["balance"], record["total"])


def totals(lines: list[Record], discount: bool, rng: random.Random,
           discount_total: Decimal | None = None) -> Record:
    """sub_total, tax_total (per line, to the cent), discount and total of a document."""
    sub_total = sum((line["item_total"] for line in lines), Decimal("0.00"))
    tax_total = sum((q2(line["item_total"] * line["tax_percentage"] / 100) for line in lines),
                    Decimal("0.00"))
    out: Record = {"sub_total": sub_total, "tax_total": tax_total}
    if discount:
        if discount_total is None:
            discount_total = q2(sub_total * Decimal(rng.choice((0, 0, 0, 5, 10))) / 100)
        discount_total = min(discount_total, sub_total)
        out["discount_total"] = discount_total
        out["total"] = sub_total - discount_total + tax_total
    else:
        out["total"] = sub_total + tax_total
    return out


def _small(r: Record) -> bool:
    return r.get("total", r.get("amount", Decimal(0))) < BIG


_BREAKERS: dict[str, tuple[str, typing.Callable[[Record], bool]]] = {
    "line_item_totals": ("invoices", lambda r: _small(r) and bool(r["line_items"])),
    "invoice_sub_totals": ("invoices", _small),
    "invoice_totals": ("invoices", _small),
    "invoice_payment_terms": ("invoices", _small),
    "base_currency_rates": ("invoices", lambda r: r["currency_code"] == "USD"),
    "bank_transaction_amounts": ("transactions", _small),
    "journal_balance": ("journals", lambda r: _small(r) and r["status"] == "published"),
    "payment_allocation": ("customer_payments", _small),
}


def _break(rule: str, r: Record) -> None:
    """One record made to break one rule, keeping the other rules whole."""
    cent = Decimal("0.01")
    if rule == "line_item_totals":  # the line is off; sub_total and total follow it
        r["line_items"][0]["item_total"] += cent
        r["sub_total"] += cent
        r["total"] += cent
    elif rule == "invoice_sub_totals":  # sub_total is off; total follows it
        r["sub_total"] += Decimal(1)
        r["total"] += Decimal(1)
    elif rule == "invoice_totals":
        r["total"] += cent
    elif rule == "invoice_payment_terms":
        r["due_date"] = (dt.date.fromisoformat(r["due_date"]) + dt.timedelta(days=1)).isoformat()
    elif rule == "base_currency_rates":
        r["exchange_rate"] = Decimal("1.000001")
    elif rule == "bank_transaction_amounts":
        r["amount"] = -r["amount"]
    elif rule == "journal_balance":
        next(li for li in r["line_items"] if li["debit_or_credit"] == "debit")["amount"] += cent
    elif rule == "payment_allocation":
        r["amount"] += cent
