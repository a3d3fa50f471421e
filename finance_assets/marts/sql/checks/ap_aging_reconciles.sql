-- The mart's own integrity: each vendor's buckets add up to its total, and the totals
-- of the as-of date add up to Σ open bill balances in base currency.
SELECT organization, 'ap_aging/' || vendor_id AS record,
       'buckets ' || ("current" + days_1_30 + days_31_60 + days_61_90 + days_over_90)
           || ' <> total ' || total AS problem
FROM marts.ap_aging JOIN as_of_dates USING (organization, as_of)
WHERE "current" + days_1_30 + days_31_60 + days_61_90 + days_over_90 <> total
UNION ALL
SELECT d.organization, 'ap_aging/total',
       'Σ total ' || coalesce(m.total, 0) || ' <> Σ open bill balances '
           || coalesce(o.total, 0)
FROM as_of_dates AS d
LEFT JOIN (SELECT organization, sum(total) AS total FROM marts.ap_aging
           JOIN as_of_dates USING (organization, as_of) GROUP BY 1) AS m
    ON m.organization = d.organization
LEFT JOIN (SELECT _organization AS organization, sum(balance_base) AS total
           FROM open_bills() GROUP BY 1) AS o
    ON o.organization = d.organization
WHERE coalesce(m.total, 0) <> coalesce(o.total, 0)
