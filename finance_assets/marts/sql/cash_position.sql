-- Cash position, one snapshot per as-of date: per bank account, the balance the API
-- reports and in base currency, and what moved in the 30 days up to as_of (as_of − 29
-- to as_of). A `credit` adds to the account and a `debit` reduces it, as on a bank
-- statement; `excluded` transactions are left out.
WITH moves AS (
    SELECT t._organization AS organization, t.account_id,
           sum(t.amount) FILTER (t.debit_or_credit = 'credit'
                                 AND t.date > a.as_of - INTERVAL 30 DAY) AS inflow_30d,
           sum(t.amount) FILTER (t.debit_or_credit = 'debit'
                                 AND t.date > a.as_of - INTERVAL 30 DAY) AS outflow_30d,
           count(*) FILTER (t.status = 'uncategorized') AS uncategorized_count,
           max(t.date) AS last_transaction_date
    FROM finance.transactions AS t
    JOIN accounts() AS a ON a._organization = t._organization AND a.id = t.account_id
    WHERE t._deleted_at IS NULL AND t.status <> 'excluded' AND t.date <= a.as_of
    GROUP BY t._organization, t.account_id
)
SELECT a._organization AS organization, a.as_of, a.id AS account_id, a.account_name,
       a.account_type, a.currency_code, a.balance, a.exchange_rate,
       to_base(a.balance, a.exchange_rate) AS balance_base,
       coalesce(m.inflow_30d, 0) AS inflow_30d, coalesce(m.outflow_30d, 0) AS outflow_30d,
       coalesce(m.uncategorized_count, 0) AS uncategorized_count, m.last_transaction_date
FROM accounts() AS a
LEFT JOIN moves AS m ON m.organization = a._organization AND m.account_id = a.id
