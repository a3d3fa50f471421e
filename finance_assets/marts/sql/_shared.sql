-- Definitions every mart and check shares, created on the run's connection before they
-- run. `as_of_dates(organization, as_of, base_currency)` is the run's as-of date per
-- organization (its `time_zone` decides "today"); every finance table carries
-- `_organization`, so each join matches it as well as the id.

-- A document amount in base currency: amount × exchange_rate (units of base currency per
-- unit of the document's currency), rounded to the cent half away from zero, per document.
CREATE OR REPLACE TEMP MACRO to_base(amount, exchange_rate) AS
    ROUND(CAST(amount AS DECIMAL(38, 2)) * exchange_rate, 2);

-- n ÷ d rounded to the cent half away from zero, exactly (DuckDB divides decimals as
-- doubles); NULL when d is zero. n and d have at most two decimals.
CREATE OR REPLACE TEMP MACRO ratio(n, d) AS CASE WHEN d = 0 THEN NULL ELSE
    CAST(sign(n) * sign(d) * (
        (200 * abs(CAST(n * 100 AS HUGEINT)) + abs(CAST(d * 100 AS HUGEINT)))
        // (2 * abs(CAST(d * 100 AS HUGEINT)))
    ) AS DECIMAL(38, 0)) * CAST(0.01 AS DECIMAL(3, 2)) END;

-- Documents that count: not soft-deleted, not draft or void, dated on or before as_of.
CREATE OR REPLACE TEMP MACRO counted_invoices() AS TABLE
    SELECT i.*, d.as_of, to_base(i.balance, i.exchange_rate) AS balance_base
    FROM finance.invoices AS i JOIN as_of_dates AS d ON d.organization = i._organization
    WHERE i._deleted_at IS NULL AND i.status NOT IN ('draft', 'void') AND i.date <= d.as_of;

CREATE OR REPLACE TEMP MACRO counted_bills() AS TABLE
    SELECT b.*, d.as_of, to_base(b.balance, b.exchange_rate) AS balance_base
    FROM finance.bills AS b JOIN as_of_dates AS d ON d.organization = b._organization
    WHERE b._deleted_at IS NULL AND b.status NOT IN ('draft', 'void') AND b.date <= d.as_of;

CREATE OR REPLACE TEMP MACRO counted_creditnotes() AS TABLE
    SELECT c.*, d.as_of, to_base(c.balance, c.exchange_rate) AS balance_base
    FROM finance.creditnotes AS c JOIN as_of_dates AS d ON d.organization = c._organization
    WHERE c._deleted_at IS NULL AND c.status NOT IN ('draft', 'void') AND c.date <= d.as_of;

-- Open: something is still due (a negative balance is an overpayment, and counts too).
CREATE OR REPLACE TEMP MACRO open_invoices() AS TABLE
    SELECT * FROM counted_invoices() WHERE balance <> 0;

CREATE OR REPLACE TEMP MACRO open_bills() AS TABLE
    SELECT * FROM counted_bills() WHERE balance <> 0;

-- Bank accounts carry no exchange rate: an account's currency converts at the rate of the
-- latest document in that currency dated on or before as_of (latest date, then highest
-- id), 1 in the base currency, NULL when no document names the currency.
CREATE OR REPLACE TEMP MACRO currency_rates() AS TABLE
    WITH documents AS (
        SELECT _organization, id, date, currency_code, exchange_rate FROM finance.invoices
            WHERE _deleted_at IS NULL
        UNION ALL SELECT _organization, id, date, currency_code, exchange_rate
            FROM finance.bills WHERE _deleted_at IS NULL
        UNION ALL SELECT _organization, id, date, currency_code, exchange_rate
            FROM finance.creditnotes WHERE _deleted_at IS NULL
        UNION ALL SELECT _organization, id, date, currency_code, exchange_rate
            FROM finance.customer_payments WHERE _deleted_at IS NULL
        UNION ALL SELECT _organization, id, date, currency_code, exchange_rate
            FROM finance.expenses WHERE _deleted_at IS NULL
        UNION ALL SELECT _organization, id, date, currency_code, exchange_rate
            FROM finance.journals WHERE _deleted_at IS NULL
    )
    SELECT d.organization, x.currency_code,
           CASE WHEN x.currency_code = d.base_currency THEN CAST(1 AS DECIMAL(18, 6))
                ELSE arg_max(x.exchange_rate, (x.date, CAST(x.id AS HUGEINT))) END
               AS exchange_rate
    FROM documents AS x JOIN as_of_dates AS d
        ON d.organization = x._organization AND x.date <= d.as_of
    GROUP BY d.organization, d.base_currency, x.currency_code;

-- Bank accounts that exist, each with the rate that converts its balance.
CREATE OR REPLACE TEMP MACRO accounts() AS TABLE
    SELECT a.*, d.as_of,
           CASE WHEN a.currency_code = d.base_currency THEN CAST(1 AS DECIMAL(18, 6))
                ELSE r.exchange_rate END AS exchange_rate
    FROM finance.banking AS a
    JOIN as_of_dates AS d ON d.organization = a._organization
    LEFT JOIN currency_rates() AS r
        ON r.organization = a._organization AND r.currency_code = a.currency_code
    WHERE a._deleted_at IS NULL;

-- Invoice revenue (sub_total − discount_total) and credit notes (sub_total), in base
-- currency per document, on the document's date.
CREATE OR REPLACE TEMP MACRO sales() AS TABLE
    SELECT _organization AS organization, as_of, date, customer_id, customer_name,
           to_base(sub_total - discount_total, exchange_rate) AS invoiced,
           CAST(0 AS DECIMAL(38, 2)) AS credited
    FROM counted_invoices()
    UNION ALL
    SELECT _organization, as_of, date, customer_id, customer_name,
           CAST(0 AS DECIMAL(38, 2)), to_base(sub_total, exchange_rate)
    FROM counted_creditnotes();
