-- Trial balance per ledger account from the lines of published manual journals, in base
-- currency. A journal is one document: each side's lines are converted by cumulative
-- rounding (a line's base amount is the rounded running total up to it, less the rounded
-- running total before it), so each side sums to the journal's amount in base currency
-- rounded once, and debits equal credits to the cent as they do in the journal.
WITH lines AS (
    SELECT j._organization AS organization, l.account_name, l.debit_or_credit,
           to_base(sum(l.amount) OVER side, j.exchange_rate)
             - coalesce(to_base(sum(l.amount) OVER side - l.amount, j.exchange_rate), 0)
             AS amount_base
    FROM finance.journals AS j
    JOIN finance.journals__line_items AS l
        ON l._organization = j._organization AND l.parent_id = j.id
    WHERE j._deleted_at IS NULL AND j.status = 'published'
    WINDOW side AS (PARTITION BY j._organization, j.id, l.debit_or_credit
                    ORDER BY l.position ROWS UNBOUNDED PRECEDING)
)
SELECT organization, account_name,
       coalesce(sum(amount_base) FILTER (debit_or_credit = 'debit'), 0) AS debit,
       coalesce(sum(amount_base) FILTER (debit_or_credit = 'credit'), 0) AS credit,
       coalesce(sum(amount_base) FILTER (debit_or_credit = 'debit'), 0)
         - coalesce(sum(amount_base) FILTER (debit_or_credit = 'credit'), 0) AS net
FROM lines
GROUP BY organization, account_name
