-- The mart's own integrity: each customer's buckets add up to its total, and the totals
-- of the as-of date add up to Σ open invoice balances in base currency.
SELECT organization, 'ar_aging/' || customer_id AS record,
       'buckets ' || ("current" + days_1_30 + days_31_60 + days_61_90 + days_over_90)
           || ' <> total ' || total AS problem
FROM marts.ar_aging JOIN as_of_dates USING (organization, as_of)
WHERE "current" + days_1_30 + days_31_60 + days_61_90 + days_over_90 <> total
UNION ALL
SELECT d.organization, 'ar_aging/total',
       'Σ total ' || coalesce(m.total, 0) || ' <> Σ open invoice balances '
           || coalesce(o.total, 0)
FROM as_of_dates AS d
LEFT JOIN (SELECT organization, sum(total) AS total FROM marts.ar_aging
           JOIN as_of_dates USING (organization, as_of) GROUP BY 1) AS m
    ON m.organization = d.organization
LEFT JOIN (SELECT _organization AS organization, sum(balance_base) AS total
           FROM open_invoices() GROUP BY 1) AS o
    ON o.organization = d.organization
WHERE coalesce(m.total, 0) <> coalesce(o.total, 0)
