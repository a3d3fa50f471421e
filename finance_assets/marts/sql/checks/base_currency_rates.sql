-- The contract: exchange_rate is 1 when the record's currency is the base currency.
WITH documents AS (
    SELECT 'invoices' AS resource, _organization, id, currency_code, exchange_rate, _deleted_at
        FROM finance.invoices
    UNION ALL SELECT 'bills', _organization, id, currency_code, exchange_rate, _deleted_at
        FROM finance.bills
    UNION ALL SELECT 'creditnotes', _organization, id, currency_code, exchange_rate, _deleted_at
        FROM finance.creditnotes
    UNION ALL SELECT 'customer_payments', _organization, id, currency_code, exchange_rate,
        _deleted_at FROM finance.customer_payments
    UNION ALL SELECT 'expenses', _organization, id, currency_code, exchange_rate, _deleted_at
        FROM finance.expenses
    UNION ALL SELECT 'journals', _organization, id, currency_code, exchange_rate, _deleted_at
        FROM finance.journals
)
SELECT x._organization AS organization, x.resource || '/' || x.id AS record,
       'exchange_rate ' || x.exchange_rate || ' in the base currency ' || x.currency_code
           AS problem
FROM documents AS x JOIN as_of_dates AS d ON d.organization = x._organization
WHERE x._deleted_at IS NULL AND x.currency_code = d.base_currency AND x.exchange_rate <> 1
